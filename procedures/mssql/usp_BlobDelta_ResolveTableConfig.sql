{%- from "common/header.sql" import header -%}
{%- from "mssql/errors.sql" import raise_collected -%}
CREATE OR ALTER PROCEDURE {{ job('usp_BlobDelta_ResolveTableConfig') }}
    @TableName nvarchar(400),
    @SourceObject nvarchar(400) = NULL OUTPUT,
    @TargetObject nvarchar(400) = NULL OUTPUT,
    @MetadataObject nvarchar(400) = NULL OUTPUT,
    @MetadataIdColumn sysname = NULL OUTPUT,
    @MetadataModifiedOnCol sysname = NULL OUTPUT,
    @MetadataBusinessUnitCol sysname = NULL OUTPUT,
    @SafetyBufferMinutes int = NULL OUTPUT,
    @ScriptSet nvarchar(50) = NULL OUTPUT,
    @IsActive bit = NULL OUTPUT,
    @Debug tinyint = 0
AS
{{ header('usp_BlobDelta_ResolveTableConfig',
          'Resolves one configured table: quoted three-part names of its source, target and
    metadata tables, the metadata column names and the safety buffer, after checking that
    every one of them exists in the catalog. All problems are reported in one error (50010).') }}
BEGIN
    SET NOCOUNT ON;
    SET XACT_ABORT ON;

    DECLARE @Errors TABLE (ErrorId int IDENTITY(1, 1) PRIMARY KEY, Message nvarchar(2000) NOT NULL);
    DECLARE @ErrorText nvarchar(max);
    DECLARE @Configured nvarchar(max);
    DECLARE @Objects TABLE (
        Position int NOT NULL PRIMARY KEY,
        Role nvarchar(20) NOT NULL,
        DatabaseName sysname NOT NULL,
        SchemaName sysname NOT NULL,
        ObjectName sysname NOT NULL
    );
    DECLARE @Columns TABLE (Position int NOT NULL PRIMARY KEY, ConfigColumn sysname NOT NULL, ColumnName sysname NOT NULL);
    DECLARE @Position int;
    DECLARE @Role nvarchar(20);
    DECLARE @DatabaseName sysname;
    DECLARE @SchemaName sysname;
    DECLARE @ObjectName sysname;
    DECLARE @QualifiedName nvarchar(400);
    DECLARE @MetadataObjectId int;
    DECLARE @ConfigColumn sysname;
    DECLARE @ColumnName sysname;
    DECLARE @Found int;
    DECLARE @SqlColumnExists nvarchar(max);

    BEGIN TRY
        ----------------------------------------------------------------- check parameters
        IF @TableName IS NULL OR LTRIM(RTRIM(@TableName)) = N''
            INSERT INTO @Errors (Message)
            VALUES (N'@TableName is required: give the TableName of a row in dbo.BlobDeltaTableConfig.');
        ELSE IF NOT EXISTS (SELECT 1 FROM {{ job('BlobDeltaTableConfig') }} AS c WHERE c.TableName = @TableName)
        BEGIN
            SELECT @Configured = STRING_AGG(CONVERT(nvarchar(max), c.TableName), N', ')
                WITHIN GROUP (ORDER BY c.TableName)
            FROM {{ job('BlobDeltaTableConfig') }} AS c;
            INSERT INTO @Errors (Message)
            VALUES (LEFT(N'@TableName ''' + @TableName + N''' is not configured in dbo.BlobDeltaTableConfig; allowed values: '
                         + ISNULL(@Configured, N'(no tables configured)'), 2000));
        END;

        {{ raise_collected(50010) }}

        ----------------------------------------------------------------- resolve configuration
        SELECT
            @MetadataIdColumn = c.MetadataIdColumn,
            @MetadataModifiedOnCol = c.MetadataModifiedOnCol,
            @MetadataBusinessUnitCol = c.MetadataBusinessUnitCol,
            @SafetyBufferMinutes = c.SafetyBufferMinutes,
            @ScriptSet = c.ScriptSet,
            @IsActive = c.IsActive
        FROM {{ job('BlobDeltaTableConfig') }} AS c
        WHERE c.TableName = @TableName;

        INSERT INTO @Objects (Position, Role, DatabaseName, SchemaName, ObjectName)
        SELECT v.Position, v.Role, v.DatabaseName, v.SchemaName, v.ObjectName
        FROM {{ job('BlobDeltaTableConfig') }} AS c
        CROSS APPLY (
            VALUES
                (1, N'source', c.SourceDatabase, c.SourceSchema, c.SourceTable),
                (2, N'target', c.TargetDatabase, c.TargetSchema, c.TargetTable),
                (3, N'metadata', c.MetadataDatabase, c.MetadataSchema, c.MetadataTable)
        ) AS v (Position, Role, DatabaseName, SchemaName, ObjectName)
        WHERE c.TableName = @TableName;

        INSERT INTO @Columns (Position, ConfigColumn, ColumnName)
        SELECT v.Position, v.ConfigColumn, v.ColumnName
        FROM (
            VALUES
                (1, N'MetadataIdColumn', @MetadataIdColumn),
                (2, N'MetadataModifiedOnCol', @MetadataModifiedOnCol),
                (3, N'MetadataBusinessUnitCol', @MetadataBusinessUnitCol)
        ) AS v (Position, ConfigColumn, ColumnName)
        WHERE v.ColumnName IS NOT NULL;

        ----------------------------------------------------------------- check the catalog
        SET @Position = 0;
        WHILE 1 = 1
        BEGIN
            SELECT TOP (1)
                @Position = o.Position,
                @Role = o.Role,
                @DatabaseName = o.DatabaseName,
                @SchemaName = o.SchemaName,
                @ObjectName = o.ObjectName
            FROM @Objects AS o
            WHERE o.Position > @Position
            ORDER BY o.Position;
            IF @@ROWCOUNT = 0 BREAK;

            SET @QualifiedName = QUOTENAME(@DatabaseName) + N'.' + QUOTENAME(@SchemaName) + N'.' + QUOTENAME(@ObjectName);
            IF DB_ID(@DatabaseName) IS NULL
                INSERT INTO @Errors (Message)
                VALUES (LEFT(N'Table ''' + @TableName + N''': ' + @Role + N' database ' + ISNULL(QUOTENAME(@DatabaseName), @DatabaseName)
                             + N' does not exist (BlobDeltaTableConfig.' + CASE @Role WHEN N'source' THEN N'Source' WHEN N'target' THEN N'Target' ELSE N'Metadata' END
                             + N'Database).', 2000));
            ELSE IF @QualifiedName IS NULL OR OBJECT_ID(@QualifiedName, N'U') IS NULL
                INSERT INTO @Errors (Message)
                VALUES (LEFT(N'Table ''' + @TableName + N''': ' + @Role + N' table '
                             + ISNULL(@QualifiedName, @DatabaseName + N'.' + @SchemaName + N'.' + @ObjectName)
                             + N' does not exist.', 2000));
            ELSE IF @Role = N'metadata'
                SET @MetadataObjectId = OBJECT_ID(@QualifiedName, N'U');

            IF @Role = N'source' SET @SourceObject = @QualifiedName;
            IF @Role = N'target' SET @TargetObject = @QualifiedName;
            IF @Role = N'metadata' SET @MetadataObject = @QualifiedName;
        END;

        IF @MetadataObjectId IS NOT NULL
        BEGIN
            SELECT @DatabaseName = o.DatabaseName FROM @Objects AS o WHERE o.Role = N'metadata';
            SET @SqlColumnExists = N'SELECT @Found = COUNT(*) FROM ' + QUOTENAME(@DatabaseName)
                + N'.sys.columns AS c WHERE c.object_id = @ObjectId AND c.name = @ColumnName;';
            IF @Debug >= 2
                RAISERROR(N'%s', 0, 1, @SqlColumnExists) WITH NOWAIT;

            SET @Position = 0;
            WHILE 1 = 1
            BEGIN
                SELECT TOP (1) @Position = c.Position, @ConfigColumn = c.ConfigColumn, @ColumnName = c.ColumnName
                FROM @Columns AS c
                WHERE c.Position > @Position
                ORDER BY c.Position;
                IF @@ROWCOUNT = 0 BREAK;

                SET @Found = NULL;
                EXEC sys.sp_executesql
                    @SqlColumnExists,
                    N'@ObjectId int, @ColumnName sysname, @Found int OUTPUT',
                    @ObjectId = @MetadataObjectId,
                    @ColumnName = @ColumnName,
                    @Found = @Found OUTPUT;
                IF ISNULL(@Found, 0) = 0
                    INSERT INTO @Errors (Message)
                    VALUES (LEFT(N'Table ''' + @TableName + N''': column ' + ISNULL(QUOTENAME(@ColumnName), @ColumnName)
                                 + N' (BlobDeltaTableConfig.' + @ConfigColumn + N') does not exist in metadata table '
                                 + @MetadataObject + N'.', 2000));
            END;
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
