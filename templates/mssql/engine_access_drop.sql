{%- from "mssql/engine_access_cleanup.sql" import set_cleanup_sql, cleanup_every_database -%}
{#- Removes the delta engine's module signing: one batch, run in the job database by the
    downgrade of revision 0005 before the BlobDeltaOperator role is dropped.

    Variables: certificate (the certificate's name, also the name of every user made from it),
    job_database; procedures is accepted and not needed (every signature made by the
    certificate goes, whichever module carries it).

    The same clean-up as the first step of engine_access.sql: in the job database and in every
    database open to the deploying login, the certificate (matched on the job database
    certificate's thumbprint and, in the job database and the configured databases, on its
    name), the module signatures and countersignatures made with it, and the users made from it.

    Rules: no GO, no sqlcmd variables; SQL Server 2016 SP1 or later. -#}
/*
    Engine access removal: drops the BlobDelta engine's signatures, certificate users and
    certificates. Rendered by dbtools from templates/mssql/engine_access_drop.sql; run in the
    job database, in one transaction: on any error nothing changes.
*/
SET NOCOUNT ON;
SET XACT_ABORT ON;

DECLARE @CertName sysname = N'{{ certificate | replace("'", "''") }}';
DECLARE @JobDatabase sysname = N'{{ job_database | replace("'", "''") }}';
DECLARE @ConfiguredNames TABLE (Position int IDENTITY(1, 1) PRIMARY KEY, DatabaseName sysname NOT NULL);
DECLARE @Databases TABLE (
    DatabaseId int NOT NULL PRIMARY KEY,
    DatabaseName sysname NOT NULL,
    IsConfigured bit NOT NULL
);
DECLARE @Message nvarchar(2048);
DECLARE @OldThumbprint varbinary(32);
DECLARE @Position int;
DECLARE @DatabaseId int;
DECLARE @DatabaseName sysname;
DECLARE @IsConfigured bit;
DECLARE @ReturnCode int;
DECLARE @SqlProc nvarchar(400);
DECLARE @SqlConfigured nvarchar(max);
DECLARE @SqlCleanup nvarchar(max);

{{ set_cleanup_sql() }}

BEGIN TRY
    BEGIN TRANSACTION;

    IF DB_ID(@JobDatabase) IS NULL OR DB_ID() <> DB_ID(@JobDatabase)
    BEGIN
        SET @Message = REPLACE(N'Engine access must be removed in the job database ' + QUOTENAME(@JobDatabase)
            + N', not in ' + QUOTENAME(DB_NAME()) + N'.', N'%', N'%%');
        THROW 50000, @Message, 1;
    END;

    SELECT @OldThumbprint = c.thumbprint FROM sys.certificates AS c WHERE c.name = @CertName;

    -- The configured databases, read whatever revision the configuration table is at.
    IF OBJECT_ID(N'dbo.BlobDeltaTableConfig', N'U') IS NOT NULL
    BEGIN
        SET @SqlConfigured = N'SELECT c.SourceDatabase FROM dbo.BlobDeltaTableConfig AS c'
            + N' UNION SELECT c.TargetDatabase FROM dbo.BlobDeltaTableConfig AS c'
            + N' UNION SELECT c.MetadataDatabase FROM dbo.BlobDeltaTableConfig AS c';
        IF COL_LENGTH(N'dbo.BlobDeltaTableConfig', N'BusinessUnitDatabase') IS NOT NULL
            SET @SqlConfigured = @SqlConfigured
                + N' UNION SELECT c.BusinessUnitDatabase FROM dbo.BlobDeltaTableConfig AS c'
                + N' WHERE c.BusinessUnitDatabase IS NOT NULL';
        INSERT INTO @ConfiguredNames (DatabaseName)
        EXEC sys.sp_executesql @SqlConfigured;
    END;

    -- Every database open to the deploying login is searched for copies (by thumbprint); the
    -- job database and the configured ones also by name. tempdb and model never.
    INSERT INTO @Databases (DatabaseId, DatabaseName, IsConfigured)
    SELECT d.database_id, d.name,
           CASE WHEN d.database_id = DB_ID()
                  OR EXISTS (SELECT 1 FROM @ConfiguredNames AS n WHERE DB_ID(n.DatabaseName) = d.database_id)
                THEN 1 ELSE 0 END
    FROM sys.databases AS d
    WHERE d.database_id NOT IN (2, 3)
      AND d.state = 0
      AND HAS_DBACCESS(d.name) = 1
      AND CONVERT(nvarchar(128), DATABASEPROPERTYEX(d.name, 'Updateability')) = N'READ_WRITE';

    IF NOT EXISTS (SELECT 1 FROM @Databases AS d WHERE d.DatabaseId = DB_ID())
        THROW 50000, N'The job database is not online and writable for the deploying login.', 1;

    SET @Position = 0;
    WHILE 1 = 1
    BEGIN
        SELECT TOP (1) @Position = n.Position, @DatabaseName = n.DatabaseName
        FROM @ConfiguredNames AS n
        WHERE n.Position > @Position
        ORDER BY n.Position;
        IF @@ROWCOUNT = 0 BREAK;
        IF DB_ID(@DatabaseName) IS NOT NULL
           AND NOT EXISTS (SELECT 1 FROM @Databases AS d WHERE d.DatabaseId = DB_ID(@DatabaseName))
            PRINT N'WARNING: configured database ' + QUOTENAME(@DatabaseName)
                + N' is not online, not writable or not open to the deploying login; a copy of certificate '
                + QUOTENAME(@CertName) + N' and its user may remain there.';
    END;

    PRINT N'Removing the engine signatures, certificate users and certificates'
        + CASE WHEN @OldThumbprint IS NULL THEN N' (no certificate ' + QUOTENAME(@CertName) + N' in the job database).'
               ELSE N'.' END;
    {{ cleanup_every_database() }}

    COMMIT TRANSACTION;
    PRINT N'Engine access is removed.';
END TRY
BEGIN CATCH
    IF @@TRANCOUNT > 0 ROLLBACK TRANSACTION;
    THROW;
END CATCH;
