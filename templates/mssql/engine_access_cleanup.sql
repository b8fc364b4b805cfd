{#- The clean-up both engine_access.sql and engine_access_drop.sql run in each database of
    @Databases (IsConfigured = 1: also match the certificate by name). -#}
{%- macro set_cleanup_sql() -%}
-- Run in each database (its sys.sp_executesql): removes what an earlier deployment left there.
-- Certificates are matched on the old certificate's thumbprint and, where @MatchName = 1 (the
-- job database and the configured databases), on the package's certificate name: their module
-- signatures and countersignatures, the users made from them, then the certificates.
SET @SqlCleanup = N'
DECLARE @Certs TABLE (CertificateId int NOT NULL PRIMARY KEY, Thumbprint varbinary(32) NOT NULL, CertSid varbinary(85) NULL);
DECLARE @SqlDrop nvarchar(max);
DECLARE @ModuleId int;
DECLARE @CryptType char(4);
DECLARE @Name sysname;
DECLARE @Count int = 0;
INSERT INTO @Certs (CertificateId, Thumbprint, CertSid)
SELECT c.certificate_id, c.thumbprint, c.sid
FROM sys.certificates AS c
WHERE c.thumbprint = @Thumbprint OR (@MatchName = 1 AND c.name = @CertName);
IF @@ROWCOUNT = 0 RETURN;
WHILE 1 = 1
BEGIN
    SET @ModuleId = NULL;
    SELECT TOP (1) @ModuleId = cp.major_id, @CryptType = cp.crypt_type, @Name = sc.name
    FROM sys.crypt_properties AS cp
    JOIN @Certs AS c ON c.Thumbprint = cp.thumbprint
    JOIN sys.certificates AS sc ON sc.certificate_id = c.CertificateId
    WHERE cp.class = 1 AND cp.crypt_type IN (''SPVC'', ''CPVC'')
    ORDER BY cp.major_id, cp.crypt_type;
    IF @ModuleId IS NULL BREAK;
    SET @SqlDrop = N''DROP '' + CASE WHEN @CryptType = ''CPVC'' THEN N''COUNTER '' ELSE N'''' END
        + N''SIGNATURE FROM '' + QUOTENAME(OBJECT_SCHEMA_NAME(@ModuleId)) + N''.'' + QUOTENAME(OBJECT_NAME(@ModuleId))
        + N'' BY CERTIFICATE '' + QUOTENAME(@Name) + N'';'';
    IF @SqlDrop IS NULL
        THROW 50000, N''A module signed by the old engine certificate could not be named; its signature was not removed.'', 1;
    EXEC sys.sp_executesql @SqlDrop;
    SET @Count += 1;
END;
WHILE 1 = 1
BEGIN
    SET @Name = NULL;
    SELECT TOP (1) @Name = dp.name
    FROM sys.database_principals AS dp
    JOIN @Certs AS c ON c.CertSid = dp.sid
    WHERE dp.type = ''C''
    ORDER BY dp.principal_id;
    IF @Name IS NULL BREAK;
    SET @SqlDrop = N''DROP USER '' + QUOTENAME(@Name) + N'';'';
    EXEC sys.sp_executesql @SqlDrop;
    SET @Count += 1;
END;
WHILE 1 = 1
BEGIN
    SET @Name = NULL;
    SELECT TOP (1) @Name = sc.name
    FROM sys.certificates AS sc
    JOIN @Certs AS c ON c.CertificateId = sc.certificate_id
    ORDER BY sc.certificate_id;
    IF @Name IS NULL BREAK;
    SET @SqlDrop = N''DROP CERTIFICATE '' + QUOTENAME(@Name) + N'';'';
    EXEC sys.sp_executesql @SqlDrop;
    SET @Count += 1;
END;
PRINT N''  '' + QUOTENAME(DB_NAME()) + N'': removed '' + CONVERT(nvarchar(11), @Count)
    + N'' signature(s), certificate user(s) and certificate(s) of an earlier deployment.'';';
{%- endmacro -%}

{%- macro cleanup_every_database() -%}
    SET @DatabaseId = 0;
    WHILE 1 = 1
    BEGIN
        SELECT TOP (1) @DatabaseId = d.DatabaseId, @DatabaseName = d.DatabaseName, @IsConfigured = d.IsConfigured
        FROM @Databases AS d
        WHERE d.DatabaseId > @DatabaseId
        ORDER BY d.DatabaseId;
        IF @@ROWCOUNT = 0 BREAK;
        SET @SqlProc = QUOTENAME(@DatabaseName) + N'.sys.sp_executesql';
        EXEC @ReturnCode = @SqlProc @SqlCleanup,
            N'@CertName sysname, @Thumbprint varbinary(32), @MatchName bit',
            @CertName = @CertName, @Thumbprint = @OldThumbprint, @MatchName = @IsConfigured;
    END;
{%- endmacro -%}
