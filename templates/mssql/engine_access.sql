{%- from "mssql/engine_access_cleanup.sql" import set_cleanup_sql, cleanup_every_database -%}
{#- Module signing for the delta engine: one batch, run in the job database after every
    procedure deployment (dbtools.deploy.privileges.apply_engine_access).

    Variables: procedures (names of the package procedures in dbo), certificate (the
    certificate's name, also the name of every user made from it), job_database.

    A certificate made for this deployment signs every package procedure; its private key is
    removed right after signing, so nobody (not even dbo) can sign anything else with it. A
    user made from the certificate holds the rights the engine's dynamic SQL needs: in the job
    database (the missing-parents queue, reached by the stored step scripts) and, through a
    copy of the certificate's public key, in every database the configuration names (SELECT
    on source, metadata and business-unit tables and views, SELECT/INSERT/UPDATE/DELETE on
    target tables). No TRUSTWORTHY, no cross-database ownership chaining, no EXECUTE AS, so no
    AUTHENTICATE either: the caller's own login context is kept, the signature only adds the
    certificate users' rights (and the caller still needs to be able to enter each database).

    CREATE CERTIFICATE ... FROM BINARY and the PASSWORD clauses take constants only, so the
    public key (hexadecimal from CONVERT style 1) and the generated password (hexadecimal and
    GUID characters) are the only values written into dynamic SQL; every name goes through
    QUOTENAME and every other value is an sp_executesql parameter.

    Rules: no GO, no sqlcmd variables; SQL Server 2016 SP1 or later. -#}
/*
    Engine access: module signing of the BlobDelta engine procedures.
    Rendered by dbtools from templates/mssql/engine_access.sql; run in the job database
    after every procedure deployment, in one transaction: on any error nothing changes.
*/
SET NOCOUNT ON;
SET XACT_ABORT ON;

DECLARE @CertName sysname = N'{{ certificate | replace("'", "''") }}';
DECLARE @JobDatabase sysname = N'{{ job_database | replace("'", "''") }}';
DECLARE @Procedures TABLE (Position int IDENTITY(1, 1) PRIMARY KEY, ProcedureName sysname NOT NULL);
DECLARE @ConfiguredNames TABLE (Position int IDENTITY(1, 1) PRIMARY KEY, DatabaseName sysname NOT NULL);
DECLARE @Databases TABLE (
    DatabaseId int NOT NULL PRIMARY KEY,
    DatabaseName sysname NOT NULL,
    IsConfigured bit NOT NULL
);
DECLARE @Objects TABLE (
    Position int IDENTITY(1, 1) PRIMARY KEY,
    DatabaseId int NOT NULL,
    SchemaName sysname NOT NULL,
    ObjectName sysname NOT NULL,
    IsTarget bit NOT NULL
);
DECLARE @Message nvarchar(2048);
DECLARE @OldThumbprint varbinary(32);
DECLARE @CertificateId int;
DECLARE @PublicKey varbinary(max);
DECLARE @Password nvarchar(128);
DECLARE @PasswordLiteral nvarchar(300);   -- constant-only clause: the one value written into dynamic SQL
DECLARE @PublicKeyLiteral nvarchar(max);  -- constant-only clause: likewise (hexadecimal, CONVERT style 1)
DECLARE @Position int;
DECLARE @ProcedureName sysname;
DECLARE @DatabaseId int;
DECLARE @DatabaseName sysname;
DECLARE @IsConfigured bit;
DECLARE @SchemaName sysname;
DECLARE @ObjectName sysname;
DECLARE @IsTarget bit;
DECLARE @ReturnCode int;
DECLARE @ObjectGranted bit;
DECLARE @Signed int = 0;
DECLARE @Granted int;
DECLARE @Skipped int;
DECLARE @SqlProc nvarchar(400);
DECLARE @SqlCleanup nvarchar(max);
DECLARE @SqlCreateCertificate nvarchar(max);
DECLARE @SqlSign nvarchar(max);
DECLARE @SqlRemovePrivateKey nvarchar(max);
DECLARE @SqlJobUser nvarchar(max);
DECLARE @SqlCopy nvarchar(max);
DECLARE @SqlGrant nvarchar(max);

{{ set_cleanup_sql() }}

-- Run in a configured database: grants the certificate user its rights on one configured
-- object (SELECT; SELECT, INSERT, UPDATE, DELETE on a target), or says why it cannot.
SET @SqlGrant = N'
DECLARE @SqlGrantOne nvarchar(max);
DECLARE @ObjectType char(2);
DECLARE @QualifiedName nvarchar(520) = QUOTENAME(@SchemaName) + N''.'' + QUOTENAME(@ObjectName);
SET @Granted = 0;
SELECT @ObjectType = o.type FROM sys.objects AS o WHERE o.object_id = OBJECT_ID(@QualifiedName);
IF @ObjectType IS NULL
    PRINT N''  skipped '' + QUOTENAME(DB_NAME()) + N''.'' + @QualifiedName
        + N'': it does not exist (the engine reports it when a run reaches it).'';
ELSE IF NOT (@ObjectType = ''U'' OR (@ObjectType = ''V'' AND @IsTarget = 0))
    PRINT N''  skipped '' + QUOTENAME(DB_NAME()) + N''.'' + @QualifiedName + N'': it is not a table''
        + CASE WHEN @IsTarget = 0 THEN N'' or view.'' ELSE N'' (a target must be a table).'' END;
ELSE
BEGIN
    SET @SqlGrantOne = N''GRANT ''
        + CASE WHEN @IsTarget = 1 THEN N''SELECT, INSERT, UPDATE, DELETE'' ELSE N''SELECT'' END
        + N'' ON OBJECT::'' + @QualifiedName + N'' TO '' + QUOTENAME(@UserName) + N'';'';
    EXEC sys.sp_executesql @SqlGrantOne;
    SET @Granted = 1;
    PRINT N''  granted '' + CASE WHEN @IsTarget = 1 THEN N''SELECT, INSERT, UPDATE, DELETE'' ELSE N''SELECT'' END
        + N'' on '' + QUOTENAME(DB_NAME()) + N''.'' + @QualifiedName + N''.'';
END;';

{% if procedures -%}
INSERT INTO @Procedures (ProcedureName)
VALUES
{%- for name in procedures %}
    (N'{{ name | replace("'", "''") }}'){% if not loop.last %},{% endif %}
{%- endfor %};
{%- else -%}
-- (no package procedures were given)
{%- endif %}

BEGIN TRY
    BEGIN TRANSACTION;

    IF DB_ID(@JobDatabase) IS NULL OR DB_ID() <> DB_ID(@JobDatabase)
    BEGIN
        SET @Message = REPLACE(N'Engine access must be set up in the job database ' + QUOTENAME(@JobDatabase)
            + N', not in ' + QUOTENAME(DB_NAME()) + N'.', N'%', N'%%');
        THROW 50000, @Message, 1;
    END;

    -- A run in flight would lose its rights halfway when this commits (the old certificate
    -- and its users go): deploy when no lease is held. An expired lease does not count.
    SELECT TOP (1) @Message = REPLACE(N'Table ' + w.TableName + N' is being processed by run '
        + ISNULL(LOWER(CONVERT(nvarchar(36), w.LeaseRunId)), N'(unknown)') + N' (lease expires '
        + CONVERT(nvarchar(23), w.RunLeaseExpiresAt, 121)
        + N' UTC); deploy when no delta run is in flight, or resume that run first.', N'%', N'%%')
    FROM dbo.BlobDeltaHighWatermark AS w WITH (TABLOCK, HOLDLOCK) -- no new lease until this commits
    WHERE w.IsRunning = 1 AND w.RunLeaseExpiresAt >= SYSUTCDATETIME()
    ORDER BY w.TableName;
    IF @@ROWCOUNT > 0
        THROW 50000, @Message, 1;

    ------------------------------------------------------------------ what there is
    SELECT @OldThumbprint = c.thumbprint FROM sys.certificates AS c WHERE c.name = @CertName;

    -- Every database named in the configuration (inactive rows too: SingleTable runs them).
    INSERT INTO @ConfiguredNames (DatabaseName)
    SELECT DISTINCT x.DatabaseName
    FROM (
        SELECT c.SourceDatabase FROM dbo.BlobDeltaTableConfig AS c
        UNION
        SELECT c.TargetDatabase FROM dbo.BlobDeltaTableConfig AS c
        UNION
        SELECT c.MetadataDatabase FROM dbo.BlobDeltaTableConfig AS c
        UNION
        SELECT c.BusinessUnitDatabase FROM dbo.BlobDeltaTableConfig AS c
        WHERE c.BusinessUnitDatabase IS NOT NULL AND c.BusinessUnitTable IS NOT NULL
    ) AS x (DatabaseName)
    WHERE x.DatabaseName IS NOT NULL;

    -- The objects each configured database must grant, keyed by database_id (a name written in
    -- another case names the same database on a case-insensitive server).
    INSERT INTO @Objects (DatabaseId, SchemaName, ObjectName, IsTarget)
    SELECT DB_ID(o.DatabaseName), o.SchemaName, o.ObjectName, MAX(o.IsTarget)
    FROM (
        SELECT c.SourceDatabase, c.SourceSchema, c.SourceTable, 0 FROM dbo.BlobDeltaTableConfig AS c
        UNION ALL
        SELECT c.TargetDatabase, c.TargetSchema, c.TargetTable, 1 FROM dbo.BlobDeltaTableConfig AS c
        UNION ALL
        SELECT c.MetadataDatabase, c.MetadataSchema, c.MetadataTable, 0 FROM dbo.BlobDeltaTableConfig AS c
        UNION ALL
        SELECT c.BusinessUnitDatabase, ISNULL(c.BusinessUnitSchema, N'dbo'), c.BusinessUnitTable, 0
        FROM dbo.BlobDeltaTableConfig AS c
        WHERE c.BusinessUnitDatabase IS NOT NULL AND c.BusinessUnitTable IS NOT NULL
    ) AS o (DatabaseName, SchemaName, ObjectName, IsTarget)
    WHERE DB_ID(o.DatabaseName) IS NOT NULL
    GROUP BY DB_ID(o.DatabaseName), o.SchemaName, o.ObjectName;

    -- Databases this deployment works in: the job database and the configured ones that are
    -- online, writable and open to the deploying login (tempdb and model never). No other
    -- database on the server is touched: a database taken out of the configuration keeps an
    -- inert copy of an old certificate (nothing is signed by it any more); the README says how
    -- to remove it.
    -- All of them are also searched by certificate name (IsConfigured = 1).
    INSERT INTO @Databases (DatabaseId, DatabaseName, IsConfigured)
    SELECT d.database_id, d.name, 1
    FROM sys.databases AS d
    WHERE d.database_id NOT IN (2, 3)
      AND d.state = 0
      AND HAS_DBACCESS(d.name) = 1
      AND CONVERT(nvarchar(128), DATABASEPROPERTYEX(d.name, 'Updateability')) = N'READ_WRITE'
      AND (d.database_id = DB_ID()
           OR EXISTS (SELECT 1 FROM @ConfiguredNames AS n WHERE DB_ID(n.DatabaseName) = d.database_id));

    IF NOT EXISTS (SELECT 1 FROM @Databases AS d WHERE d.DatabaseId = DB_ID())
        THROW 50000, N'The job database is not online and writable for the deploying login.', 1;

    -- Configured databases left out, each with its reason (the engine reports them at run time).
    SET @Position = 0;
    WHILE 1 = 1
    BEGIN
        SELECT TOP (1) @Position = n.Position, @DatabaseName = n.DatabaseName
        FROM @ConfiguredNames AS n
        WHERE n.Position > @Position
        ORDER BY n.Position;
        IF @@ROWCOUNT = 0 BREAK;
        IF DB_ID(@DatabaseName) IS NULL
            PRINT N'Skipped configured database ' + QUOTENAME(@DatabaseName) + N': it does not exist.';
        ELSE IF NOT EXISTS (SELECT 1 FROM @Databases AS d WHERE d.DatabaseId = DB_ID(@DatabaseName))
            PRINT N'WARNING: skipped configured database ' + QUOTENAME(@DatabaseName)
                + N': it is not online, not writable or not open to the deploying login; the engine cannot reach it.';
    END;

    ------------------------------------------------------------------ 1. remove the old
    PRINT N'Removing the signatures and certificate copies of the previous deployment'
        + CASE WHEN @OldThumbprint IS NULL THEN N' (no certificate ' + QUOTENAME(@CertName) + N' in the job database).'
               ELSE N'.' END;
    {{ cleanup_every_database() }}

    ------------------------------------------------------------------ 2. the new certificate
    -- The password lives for this transaction only: CRYPT_GEN_RANDOM and NEWID give 105
    -- characters with upper and lower case, digits and symbols (Windows password policy).
    SET @Password = N'Bd#' + CONVERT(nvarchar(64), CRYPT_GEN_RANDOM(32), 2) + N'-q'
        + LOWER(CONVERT(nvarchar(36), NEWID()));
    SET @PasswordLiteral = N'''' + REPLACE(@Password, N'''', N'''''') + N'''';
    SET @SqlCreateCertificate = N'CREATE CERTIFICATE ' + QUOTENAME(@CertName)
        + N' ENCRYPTION BY PASSWORD = ' + @PasswordLiteral
        + N' WITH SUBJECT = N''BlobDelta engine procedure signing'', EXPIRY_DATE = ''99991231'';';
    EXEC sys.sp_executesql @SqlCreateCertificate;
    PRINT N'Created certificate ' + QUOTENAME(@CertName) + N' in ' + QUOTENAME(DB_NAME()) + N'.';

    SET @Position = 0;
    WHILE 1 = 1
    BEGIN
        SELECT TOP (1) @Position = p.Position, @ProcedureName = p.ProcedureName
        FROM @Procedures AS p
        WHERE p.Position > @Position
        ORDER BY p.Position;
        IF @@ROWCOUNT = 0 BREAK;
        IF OBJECT_ID(QUOTENAME(N'dbo') + N'.' + QUOTENAME(@ProcedureName), N'P') IS NULL
        BEGIN
            SET @Message = REPLACE(N'Cannot sign ' + QUOTENAME(N'dbo') + N'.' + QUOTENAME(@ProcedureName)
                + N': no such procedure in the job database.', N'%', N'%%');
            THROW 50000, @Message, 1;
        END;
        -- CREATE OR ALTER dropped any signature; each procedure needs its own, since a
        -- signature does not carry over into the procedures it calls.
        SET @SqlSign = N'ADD SIGNATURE TO ' + QUOTENAME(N'dbo') + N'.' + QUOTENAME(@ProcedureName)
            + N' BY CERTIFICATE ' + QUOTENAME(@CertName) + N' WITH PASSWORD = ' + @PasswordLiteral + N';';
        EXEC sys.sp_executesql @SqlSign;
        SET @Signed += 1;
        PRINT N'Signed ' + QUOTENAME(N'dbo') + N'.' + QUOTENAME(@ProcedureName) + N'.';
    END;

    -- Without the private key nothing else can ever be signed with this certificate.
    SET @SqlRemovePrivateKey = N'ALTER CERTIFICATE ' + QUOTENAME(@CertName) + N' REMOVE PRIVATE KEY;';
    EXEC sys.sp_executesql @SqlRemovePrivateKey;
    SET @Password = NULL;
    SET @PasswordLiteral = NULL;

    SELECT @CertificateId = c.certificate_id, @PublicKey = CERTENCODED(c.certificate_id)
    FROM sys.certificates AS c
    WHERE c.name = @CertName AND c.pvt_key_encryption_type = 'NA';
    IF @PublicKey IS NULL
        THROW 50000, N'The engine certificate still has its private key, or its public key cannot be read.', 1;
    SET @PublicKeyLiteral = CONVERT(nvarchar(max), @PublicKey, 1);
    PRINT N'Removed the private key of ' + QUOTENAME(@CertName) + N'.';

    ------------------------------------------------------------------ 3. the job database
    -- The stored step scripts read, fill and mark the missing-parents queue, write the copies'
    -- recorded versions and apply the deletion log through dynamic SQL, which ownership chaining
    -- does not cover. Everything else the engine does in the job database is static SQL in
    -- dbo-owned procedures on dbo-owned tables.
    SET @SqlJobUser = N'CREATE USER ' + QUOTENAME(@CertName) + N' FROM CERTIFICATE ' + QUOTENAME(@CertName) + N';'
        + N' GRANT SELECT, INSERT, UPDATE ON OBJECT::' + QUOTENAME(N'dbo') + N'.' + QUOTENAME(N'BlobDeltaMissingParentsQueue')
        + N' TO ' + QUOTENAME(@CertName) + N';'
        + N' GRANT SELECT, INSERT, UPDATE, DELETE ON OBJECT::' + QUOTENAME(N'dbo') + N'.' + QUOTENAME(N'BlobDeltaTargetVersion')
        + N' TO ' + QUOTENAME(@CertName) + N';'
        + N' GRANT SELECT, UPDATE ON OBJECT::' + QUOTENAME(N'dbo') + N'.' + QUOTENAME(N'BlobDeltaDeletionLog')
        + N' TO ' + QUOTENAME(@CertName) + N';';
    EXEC sys.sp_executesql @SqlJobUser;
    PRINT N'Created certificate user ' + QUOTENAME(@CertName) + N' in ' + QUOTENAME(DB_NAME())
        + N' with SELECT, INSERT, UPDATE on dbo.BlobDeltaMissingParentsQueue, SELECT, INSERT, UPDATE, DELETE on'
        + N' dbo.BlobDeltaTargetVersion and SELECT, UPDATE on dbo.BlobDeltaDeletionLog.';

    ------------------------------------------------------------------ 4. configured databases
    SET @Granted = 0;
    SET @Skipped = 0;
    SET @DatabaseId = 0;
    WHILE 1 = 1
    BEGIN
        SELECT TOP (1) @DatabaseId = d.DatabaseId, @DatabaseName = d.DatabaseName
        FROM @Databases AS d
        WHERE d.DatabaseId > @DatabaseId
        ORDER BY d.DatabaseId;
        IF @@ROWCOUNT = 0 BREAK;
        SET @SqlProc = QUOTENAME(@DatabaseName) + N'.sys.sp_executesql';
        IF @DatabaseId <> DB_ID()
        BEGIN
            -- The public key only: the copy can verify the signatures, never make one.
            SET @SqlCopy = N'CREATE CERTIFICATE ' + QUOTENAME(@CertName)
                + N' FROM BINARY = ' + @PublicKeyLiteral + N';'
                + N' CREATE USER ' + QUOTENAME(@CertName) + N' FROM CERTIFICATE ' + QUOTENAME(@CertName) + N';';
            EXEC @ReturnCode = @SqlProc @SqlCopy;
            PRINT N'Copied the public key of ' + QUOTENAME(@CertName) + N' to ' + QUOTENAME(@DatabaseName)
                + N' and created its certificate user there.';
        END;

        SET @Position = 0;
        WHILE 1 = 1
        BEGIN
            SELECT TOP (1) @Position = o.Position, @SchemaName = o.SchemaName, @ObjectName = o.ObjectName,
                           @IsTarget = o.IsTarget
            FROM @Objects AS o
            WHERE o.Position > @Position AND o.DatabaseId = @DatabaseId
            ORDER BY o.Position;
            IF @@ROWCOUNT = 0 BREAK;
            SET @ObjectGranted = NULL;
            EXEC @ReturnCode = @SqlProc @SqlGrant,
                N'@UserName sysname, @SchemaName sysname, @ObjectName sysname, @IsTarget bit, @Granted bit OUTPUT',
                @UserName = @CertName, @SchemaName = @SchemaName, @ObjectName = @ObjectName, @IsTarget = @IsTarget,
                @Granted = @ObjectGranted OUTPUT;
            IF @ObjectGranted = 1
                SET @Granted += 1;
            ELSE
                SET @Skipped += 1;
        END;
    END;

    COMMIT TRANSACTION;
    PRINT N'Engine access is set up: ' + CONVERT(nvarchar(11), @Signed)
        + N' procedure(s) signed, ' + CONVERT(nvarchar(11), @Granted) + N' object grant(s), '
        + CONVERT(nvarchar(11), @Skipped) + N' configured object(s) skipped.';
END TRY
BEGIN CATCH
    IF @@TRANCOUNT > 0 ROLLBACK TRANSACTION;
    THROW;
END CATCH;
