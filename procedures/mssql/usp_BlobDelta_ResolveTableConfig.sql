{%- from "common/header.sql" import header -%}
{%- from "mssql/errors.sql" import raise_collected -%}
CREATE OR ALTER PROCEDURE {{ job('usp_BlobDelta_ResolveTableConfig') }}
    @TableName nvarchar(400),
    @SourceObject nvarchar(776) = NULL OUTPUT,
    @TargetObject nvarchar(776) = NULL OUTPUT,
    @MetadataObject nvarchar(776) = NULL OUTPUT,
    @MetadataIdColumn sysname = NULL OUTPUT,
    @MetadataModifiedOnCol sysname = NULL OUTPUT,
    @MetadataBusinessUnitCol sysname = NULL OUTPUT,
    @SafetyBufferMinutes int = NULL OUTPUT,
    @ScriptSet nvarchar(50) = NULL OUTPUT,
    @IsActive bit = NULL OUTPUT,
    @BusinessUnitObject nvarchar(776) = NULL OUTPUT,
    @BusinessUnitIdColumn sysname = NULL OUTPUT,
    @Debug tinyint = 0
AS
{{ header('usp_BlobDelta_ResolveTableConfig',
          'Resolves one configured table: quoted three-part names of its source, target, metadata
    and business-unit tables, their column names and the safety buffer, after checking that
    every one of them exists and is visible to the caller. All problems are reported in one
    error 50010. XACT_ABORT is ON: that error also rolls back a transaction the caller had
    open.') }}
BEGIN
    SET NOCOUNT ON;
    SET XACT_ABORT ON;

    DECLARE @Errors TABLE (ErrorId int IDENTITY(1, 1) PRIMARY KEY, Message nvarchar(2000) NOT NULL);
    DECLARE @ErrorText nvarchar(max);
    DECLARE @Configured nvarchar(max);
    DECLARE @Objects TABLE (
        Position int NOT NULL PRIMARY KEY,
        Role nvarchar(20) NOT NULL,
        ConfigPrefix nvarchar(20) NOT NULL,
        DatabaseName sysname NOT NULL,
        SchemaName sysname NOT NULL,
        ObjectName sysname NOT NULL,
        AllowView bit NOT NULL,
        ObjectId int NULL
    );
    DECLARE @Columns TABLE (
        Position int NOT NULL PRIMARY KEY,
        Role nvarchar(20) NOT NULL,
        ConfigColumn sysname NOT NULL,
        ColumnName sysname NOT NULL
    );
    DECLARE @SourceDatabase sysname, @SourceSchema sysname, @SourceTable sysname;
    DECLARE @TargetDatabase sysname, @TargetSchema sysname, @TargetTable sysname;
    DECLARE @MetadataDatabase sysname, @MetadataSchema sysname, @MetadataTable sysname;
    DECLARE @BusinessUnitDatabase sysname, @BusinessUnitSchema sysname, @BusinessUnitTable sysname;
    DECLARE @ColumnObject nvarchar(776);
    DECLARE @Position int;
    DECLARE @Role nvarchar(20);
    DECLARE @ConfigPrefix nvarchar(20);
    DECLARE @DatabaseName sysname;
    DECLARE @SchemaName sysname;
    DECLARE @ObjectName sysname;
    DECLARE @AllowView bit;
    DECLARE @QualifiedName nvarchar(776);
    DECLARE @ObjectId int;
    DECLARE @ColumnObjectId int;
    DECLARE @ConfigColumn sysname;
    DECLARE @ColumnName sysname;
    DECLARE @Found int;
    DECLARE @SqlColumnExists nvarchar(max);

    BEGIN TRY
        ----------------------------------------------------------------- check parameters
        IF @TableName IS NULL OR LTRIM(RTRIM(@TableName)) = N''
            INSERT INTO @Errors (Message)
            VALUES (N'@TableName is required: give the TableName of a row in dbo.BlobDeltaTableConfig.');
        ELSE
        BEGIN
            SELECT
                @SourceDatabase = c.SourceDatabase, @SourceSchema = c.SourceSchema, @SourceTable = c.SourceTable,
                @TargetDatabase = c.TargetDatabase, @TargetSchema = c.TargetSchema, @TargetTable = c.TargetTable,
                @MetadataDatabase = c.MetadataDatabase, @MetadataSchema = c.MetadataSchema, @MetadataTable = c.MetadataTable,
                @BusinessUnitDatabase = c.BusinessUnitDatabase, @BusinessUnitSchema = c.BusinessUnitSchema,
                @BusinessUnitTable = c.BusinessUnitTable, @BusinessUnitIdColumn = c.BusinessUnitIdColumn,
                @MetadataIdColumn = c.MetadataIdColumn,
                @MetadataModifiedOnCol = c.MetadataModifiedOnCol,
                @MetadataBusinessUnitCol = c.MetadataBusinessUnitCol,
                @SafetyBufferMinutes = c.SafetyBufferMinutes,
                @ScriptSet = c.ScriptSet,
                @IsActive = c.IsActive
            FROM {{ job('BlobDeltaTableConfig') }} AS c
            WHERE c.TableName = @TableName;

            IF @@ROWCOUNT = 0
            BEGIN
                SELECT @Configured = STRING_AGG(CONVERT(nvarchar(max), c.TableName), N', ')
                    WITHIN GROUP (ORDER BY c.TableName COLLATE Latin1_General_BIN2) -- the order every message uses
                FROM {{ job('BlobDeltaTableConfig') }} AS c;
                INSERT INTO @Errors (Message)
                VALUES (LEFT(N'@TableName ''' + @TableName + N''' is not configured in dbo.BlobDeltaTableConfig; allowed values: '
                             + ISNULL(@Configured, N'(no tables configured)'), 2000));
            END
            ELSE IF @BusinessUnitDatabase IS NULL OR @BusinessUnitTable IS NULL
                INSERT INTO @Errors (Message)
                VALUES (LEFT(N'Table ''' + @TableName + N''': BlobDeltaTableConfig.BusinessUnitDatabase and BusinessUnitTable '
                             + N'are required (the business-unit table that scopes a run, e.g. Gwent_LA_FileTable.dbo.LA_BU).', 2000));
        END;

        {{ raise_collected(50010) }}

        ----------------------------------------------------------------- check the catalog
        INSERT INTO @Objects (Position, Role, ConfigPrefix, DatabaseName, SchemaName, ObjectName, AllowView)
        VALUES
            (1, N'source', N'Source', @SourceDatabase, @SourceSchema, @SourceTable, 1),
            (2, N'target', N'Target', @TargetDatabase, @TargetSchema, @TargetTable, 0),
            (3, N'metadata', N'Metadata', @MetadataDatabase, @MetadataSchema, @MetadataTable, 1),
            (4, N'business unit', N'BusinessUnit', @BusinessUnitDatabase, ISNULL(@BusinessUnitSchema, N'dbo'), @BusinessUnitTable, 1);

        INSERT INTO @Columns (Position, Role, ConfigColumn, ColumnName)
        SELECT v.Position, v.Role, v.ConfigColumn, v.ColumnName
        FROM (
            VALUES
                (1, N'metadata', N'MetadataIdColumn', @MetadataIdColumn),
                (2, N'metadata', N'MetadataModifiedOnCol', @MetadataModifiedOnCol),
                (3, N'metadata', N'MetadataBusinessUnitCol', @MetadataBusinessUnitCol),
                (4, N'business unit', N'BusinessUnitIdColumn', @BusinessUnitIdColumn)
        ) AS v (Position, Role, ConfigColumn, ColumnName)
        WHERE v.ColumnName IS NOT NULL;

        SET @Position = 0;
        WHILE 1 = 1
        BEGIN
            SELECT TOP (1)
                @Position = o.Position,
                @Role = o.Role,
                @ConfigPrefix = o.ConfigPrefix,
                @DatabaseName = o.DatabaseName,
                @SchemaName = o.SchemaName,
                @ObjectName = o.ObjectName,
                @AllowView = o.AllowView
            FROM @Objects AS o
            WHERE o.Position > @Position
            ORDER BY o.Position;
            IF @@ROWCOUNT = 0 BREAK;

            SET @QualifiedName = QUOTENAME(@DatabaseName) + N'.' + QUOTENAME(@SchemaName) + N'.' + QUOTENAME(@ObjectName);
            SET @ObjectId = NULL;
            IF DB_ID(@DatabaseName) IS NULL
                INSERT INTO @Errors (Message)
                VALUES (LEFT(N'Table ''' + @TableName + N''': ' + @Role + N' database ' + QUOTENAME(@DatabaseName)
                             + N' does not exist or is not visible to the caller (BlobDeltaTableConfig.' + @ConfigPrefix + N'Database).', 2000));
            ELSE IF CONVERT(nvarchar(60), DATABASEPROPERTYEX(@DatabaseName, 'Status')) <> N'ONLINE'
                INSERT INTO @Errors (Message)
                VALUES (LEFT(N'Table ''' + @TableName + N''': ' + @Role + N' database ' + QUOTENAME(@DatabaseName)
                             + N' is not online (state ' + ISNULL(CONVERT(nvarchar(60), DATABASEPROPERTYEX(@DatabaseName, 'Status')), N'unknown')
                             + N').', 2000));
            -- HAS_DBACCESS asks whether the caller's login may enter the database. The engine's rights
            -- there come from its signature, which gives rights but not entry: the login needs a user
            -- there, with CONNECT and no other rights. It is also 0 for a SINGLE_USER database in use
            -- by another session (documented), and probably for a user whose CONNECT is revoked or a
            -- RESTRICTED_USER database: the user-access state is named when it is not MULTI_USER.
            -- Keep the text this short: four such lines must fit the 1,000-character cap of the errors.
            ELSE IF ISNULL(HAS_DBACCESS(@DatabaseName), 0) = 0
                INSERT INTO @Errors (Message)
                VALUES (LEFT(N'Table ''' + @TableName + N''': ' + @Role + N' database ' + QUOTENAME(@DatabaseName)
                             + CASE WHEN CONVERT(nvarchar(60), DATABASEPROPERTYEX(@DatabaseName, 'UserAccess')) <> N'MULTI_USER'
                                    THEN N' is ' + CONVERT(nvarchar(60), DATABASEPROPERTYEX(@DatabaseName, 'UserAccess'))
                                         + N' and closed to the caller''s login'
                                    ELSE N' has no user for the caller''s login or its CONNECT is revoked' END
                             + N' (BlobDeltaTableConfig.' + @ConfigPrefix + N'Database); it needs CONNECT only.', 2000));
            ELSE
            BEGIN
                SET @ObjectId = OBJECT_ID(@QualifiedName, N'U');
                IF @ObjectId IS NULL AND @AllowView = 1
                    SET @ObjectId = OBJECT_ID(@QualifiedName, N'V');
                IF @ObjectId IS NULL
                    INSERT INTO @Errors (Message)
                    VALUES (LEFT(N'Table ''' + @TableName + N''': ' + @Role
                                 + CASE WHEN @AllowView = 1 THEN N' table or view ' ELSE N' table ' END + @QualifiedName
                                 + N' does not exist or is not visible to the caller.', 2000));
            END;

            UPDATE @Objects SET ObjectId = @ObjectId WHERE Position = @Position;
            IF @Role = N'source' SET @SourceObject = @QualifiedName;
            IF @Role = N'target' SET @TargetObject = @QualifiedName;
            IF @Role = N'metadata' SET @MetadataObject = @QualifiedName;
            IF @Role = N'business unit' SET @BusinessUnitObject = @QualifiedName;
        END;

        SET @Position = 0;
        WHILE 1 = 1
        BEGIN
            SELECT TOP (1)
                @Position = c.Position,
                @ConfigColumn = c.ConfigColumn,
                @ColumnName = c.ColumnName,
                @ColumnObjectId = o.ObjectId,
                @DatabaseName = o.DatabaseName,
                @ColumnObject = QUOTENAME(o.DatabaseName) + N'.' + QUOTENAME(o.SchemaName) + N'.' + QUOTENAME(o.ObjectName),
                @Role = o.Role
            FROM @Columns AS c
            JOIN @Objects AS o ON o.Role = c.Role
            WHERE c.Position > @Position
            ORDER BY c.Position;
            IF @@ROWCOUNT = 0 BREAK;
            IF @ColumnObjectId IS NULL CONTINUE; -- its table is missing: already reported

            SET @SqlColumnExists = N'SELECT @Found = COUNT(*) FROM ' + QUOTENAME(@DatabaseName)
                + N'.sys.columns AS c WHERE c.object_id = @ObjectId AND c.name = @ColumnName;';
            IF @Debug >= 2
                RAISERROR(N'%s', 0, 1, @SqlColumnExists) WITH NOWAIT;
            SET @Found = NULL;
            EXEC sys.sp_executesql
                @SqlColumnExists,
                N'@ObjectId int, @ColumnName sysname, @Found int OUTPUT',
                @ObjectId = @ColumnObjectId,
                @ColumnName = @ColumnName,
                @Found = @Found OUTPUT;
            IF ISNULL(@Found, 0) = 0
                INSERT INTO @Errors (Message)
                VALUES (LEFT(N'Table ''' + @TableName + N''': column ' + QUOTENAME(@ColumnName)
                             + N' (BlobDeltaTableConfig.' + @ConfigColumn + N') does not exist in ' + @Role + N' table '
                             + @ColumnObject + N'.', 2000));
        END;

        {{ raise_collected(50010) }}

        IF @Debug >= 1
            RAISERROR(N'Resolved %s: source %s, target %s, metadata %s.', 0, 1,
                      @TableName, @SourceObject, @TargetObject, @MetadataObject) WITH NOWAIT;
    END TRY
    BEGIN CATCH
        THROW;
    END CATCH;
END;
