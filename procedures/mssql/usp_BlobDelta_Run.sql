{%- from "common/header.sql" import header -%}
{%- from "mssql/errors.sql" import raise_collected -%}
{%- from "mssql/uuid7.sql" import new_uuid7 -%}
{#- A table's failure as @Failures records it: "Table 'X': message", unless the message already
    names its table (the resolver's and the lease holder's do). -#}
{%- macro failure_message() -%}
CASE WHEN CHARINDEX(N'Table ''' + @CurrentTable + N'''', @Error) = 1 THEN @Error ELSE N'Table ''' + @CurrentTable + N''': ' + @Error END
{%- endmacro -%}
CREATE OR ALTER PROCEDURE {{ job('usp_BlobDelta_Run') }}
    @Mode nvarchar(20) = N'AllTables',
    @TableName nvarchar(400) = NULL,
    @BatchSize int = 500,
    @MaxDOP int = 0, -- honoured on PostgreSQL (max_parallel_workers_per_gather); validated and recorded here
    @BusinessUnitId uniqueidentifier = NULL,
    @SyncType nvarchar(20) = N'Incremental',
    @Execute bit = 1,
    @ResumeRunId uniqueidentifier = NULL,
    @ExcludedStreamId uniqueidentifier = NULL,
    @Debug tinyint = 0,
    @Wait bit = 0,
    @RunId uniqueidentifier = NULL OUTPUT,
    @Status nvarchar(20) = NULL OUTPUT,
    @Plan nvarchar(max) = NULL OUTPUT
AS
{{ header('usp_BlobDelta_Run',
          'The delta engine. For each table in scope: window on the metadata ModifiedOn column
    [WindowStart, WindowEnd), a lease, the stored step scripts run in batches (each batch one
    transaction with its BlobDeltaRunStep row), then the watermark moves to WindowEnd. A failed
    table is logged, its lease released, and the next table runs. @Execute = 0 returns the
    plan (JSON in @Plan, and as a result set) and changes nothing. A @RunId passed in names the
    new run (idempotent retries); @ResumeRunId continues an interrupted one. A run executes in one
    session at a time (sp_getapplock on its RunId, owned by the session): a resume or a retry while
    another session still works the run fails with error 50012, or waits with @Wait = 1 (a run
    that ended meanwhile is reported as it ended). Call it outside a transaction (@@TRANCOUNT = 0),
    a plan too: it commits after every batch, which is what makes runs visible and resumable. Validation problems are reported together in one error 50010; with
    XACT_ABORT ON, any error also rolls back a transaction the caller had open.
    @MaxDOP is validated and recorded in BlobDeltaRun; SQL Server has no per-session MAXDOP, so
    it is honoured only on PostgreSQL (max_parallel_workers_per_gather).') }}
BEGIN
    SET NOCOUNT ON;
    SET XACT_ABORT ON;
    -- With IMPLICIT_TRANSACTIONS ON (an ODBC/JDBC manual-commit connection), BEGIN TRANSACTION would
    -- nest inside a hidden outer transaction and no batch would really commit.
    SET IMPLICIT_TRANSACTIONS OFF;
    -- The lease and the batch bookkeeping assume READ COMMITTED (the PostgreSQL default); the
    -- setting reverts when the procedure returns.
    SET TRANSACTION ISOLATION LEVEL READ COMMITTED;
    -- The step cursor stays open across the batches' COMMITs (ANSI_DEFAULTS ON would close it).
    SET CURSOR_CLOSE_ON_COMMIT OFF;

    DECLARE @EntryTranCount int = @@TRANCOUNT;
    DECLARE @GivenRunId uniqueidentifier = @RunId; -- in: an optional caller-chosen RunId for a new run
    DECLARE @Errors TABLE (ErrorId int IDENTITY(1, 1) PRIMARY KEY, Message nvarchar(2000) NOT NULL);
    DECLARE @ErrorText nvarchar(max);
    DECLARE @Configured nvarchar(max);
    DECLARE @Tables TABLE (Position int NOT NULL PRIMARY KEY, TableName nvarchar(400) NOT NULL);
    DECLARE @PlanRows TABLE (
        Position int NOT NULL PRIMARY KEY,
        TableName nvarchar(400) NOT NULL,
        WindowStart datetime2(3) NULL,
        WindowEnd datetime2(3) NULL,
        [Rows] bigint NULL,
        Error nvarchar(max) NULL,
        Skipped nvarchar(max) NULL
    );
    -- Per table in a plan: what each step of a run would insert, update and delete.
    DECLARE @PlanSteps TABLE (
        Position int NOT NULL,
        StepNumber int NOT NULL,
        StepName nvarchar(50) NOT NULL,
        RowsInserted bigint NOT NULL,
        RowsUpdated bigint NOT NULL,
        RowsDeleted bigint NOT NULL,
        PRIMARY KEY (Position, StepNumber)
    );
    -- One table's scripts, filled once per table: its steps in the order they run (queue
    -- population first), and its plan script.
    DECLARE @Scripts TABLE (
        Position int NOT NULL PRIMARY KEY,
        StepNumber smallint NOT NULL,
        StepName nvarchar(50) NOT NULL,
        ScriptText nvarchar(max) NOT NULL,
        Filled nvarchar(max) NULL
    );

    DECLARE @Failures TABLE (FailureId int IDENTITY(1, 1) PRIMARY KEY, Message nvarchar(max) NOT NULL);

    -- The run header of @ResumeRunId.
    DECLARE @ResumeFound bit = 0;
    DECLARE @ResumeStatus nvarchar(20);
    DECLARE @ResumeMode nvarchar(20);
    DECLARE @ResumeTableName nvarchar(400);
    DECLARE @ResumeBusinessUnitId uniqueidentifier;
    DECLARE @ResumeRunType nvarchar(20);
    DECLARE @ResumeBatchSize int;
    DECLARE @ResumeMaxDOP int;
    DECLARE @ResumeRunStartedAt datetime2(3);

    -- The run.
    DECLARE @CurrentRunId uniqueidentifier;
    DECLARE @RunIdText nvarchar(36);
    DECLARE @RunKind nvarchar(10);
    DECLARE @RunStartedAt datetime2(3);
    DECLARE @RunStatus nvarchar(20);
    DECLARE @RunLockResource nvarchar(255);  -- sp_getapplock resource: one session per run
    DECLARE @RunLockResult int;
    DECLARE @RunLockTimeout int;
    DECLARE @HoldsRunLock bit = 0;
    DECLARE @TableCount int;
    DECLARE @Uuid7Random binary(10);
    DECLARE @Uuid7Ms bigint;

    -- One table.
    DECLARE @TablePosition int;
    DECLARE @CurrentTable nvarchar(400);
    DECLARE @Error nvarchar(max);
    DECLARE @HasWindow bit;
    DECLARE @WindowStart datetime2(3);
    DECLARE @WindowEnd datetime2(3);
    DECLARE @Now datetime2(3);
    DECLARE @Rows bigint;
    DECLARE @HolderRunId uniqueidentifier;
    DECLARE @HolderExpiresAt datetime2(3);
    DECLARE @WatermarkModifiedOn datetime2(3);
    DECLARE @WatermarkLastRunId uniqueidentifier;

    -- usp_BlobDelta_ResolveTableConfig's outputs.
    DECLARE @SourceObject nvarchar(776);
    DECLARE @TargetObject nvarchar(776);
    DECLARE @MetadataObject nvarchar(776);
    DECLARE @MetadataIdColumn sysname;
    DECLARE @MetadataModifiedOnCol sysname;
    DECLARE @MetadataBusinessUnitCol sysname;
    DECLARE @SafetyBufferMinutes int;
    DECLARE @ScriptSet nvarchar(50);
    DECLARE @IsActive bit;
    DECLARE @BusinessUnitObject nvarchar(776);
    DECLARE @BusinessUnitIdColumn sysname;
    DECLARE @KeyColumn sysname;
    DECLARE @FixedColumn sysname;          -- a column the Hierarchical update lists leave out (is_directory)

    -- The rest of the table's configuration.
    DECLARE @SourceDatabase sysname, @SourceSchema sysname, @SourceTable sysname;
    DECLARE @TargetDatabase sysname, @TargetSchema sysname, @TargetTable sysname;
    DECLARE @MetadataDatabase sysname, @MetadataSchema sysname, @MetadataTable sysname;
    DECLARE @BusinessUnitDatabase sysname, @BusinessUnitSchema sysname, @BusinessUnitTable sysname;
    DECLARE @FullSyncBaselineMonths int;
    DECLARE @FullSyncBaselineDays int;
    DECLARE @LeaseMinutes int;
    DECLARE @InitialBaseline datetime2(3);
    DECLARE @QueuePopulationScriptName nvarchar(128);
    DECLARE @TargetObjectId int;
    DECLARE @SourceObjectId int;
    DECLARE @TargetWasEmpty bit;           -- a first load (the target held no row when the run opened the table) whose shortcut still holds
    DECLARE @BatchTargetWasEmpty bit;      -- what the batch gets: 0 when its first-load attempt hit a key
    DECLARE @TargetHasUniqueKey bit;       -- the target has a unique index on exactly the id column
    DECLARE @TargetParentComputed int;     -- the target's parent_path_locator is a computed column
    DECLARE @TargetIsFileTable bit;        -- the target is a FileTable (else a FileTable-shaped or plain table)
    DECLARE @TargetKeyIsIdentity int;      -- the target's key column is an IDENTITY column
    DECLARE @TargetGeneratedColumn sysname; -- the target's key or ModifiedOn column, when computed or GENERATED ALWAYS
    DECLARE @TargetNameCollation sysname;  -- how the target compares names (its name column's collation)
    DECLARE @SourceNameCollation sysname;  -- and how the source does

    -- Quoted names for the placeholders (QUOTENAME only) and the dynamic SQL.
    DECLARE @QuotedSource nvarchar(776);
    DECLARE @QuotedTarget nvarchar(776);
    DECLARE @QuotedMetadata nvarchar(776);
    DECLARE @QuotedBusinessUnit nvarchar(776);
    DECLARE @QuotedQueue nvarchar(776);
    DECLARE @QuotedVersion nvarchar(776);
    DECLARE @QuotedDeletionLog nvarchar(776);
    DECLARE @QuotedSourceUpdate nvarchar(max);
    DECLARE @QuotedIdColumn nvarchar(258);
    DECLARE @QuotedKeyColumn nvarchar(258);
    DECLARE @QuotedModifiedColumn nvarchar(258);
    DECLARE @QuotedBusinessUnitColumn nvarchar(258);
    DECLARE @QuotedBusinessUnitIdColumn nvarchar(258);
    DECLARE @QuotedColumns nvarchar(max);
    DECLARE @QuotedSourceColumns nvarchar(max);
    DECLARE @QuotedUpdate nvarchar(max);
    DECLARE @QuotedSelfColumns nvarchar(max);
    DECLARE @QuotedSourceRow nvarchar(max);
    DECLARE @SqlCount nvarchar(max);
    DECLARE @SqlClear nvarchar(max);
    DECLARE @SqlEmpty nvarchar(max);
    DECLARE @SqlColumns nvarchar(max);
    DECLARE @SqlStepScript nvarchar(max);
    DECLARE @SqlStep nvarchar(max);
    DECLARE @SqlPlan nvarchar(max);
    DECLARE @SqlUnplaced nvarchar(max);
    DECLARE @ScriptPosition int;
    DECLARE @ScriptCount int;
    DECLARE @Cleared bigint;                -- rows a Full sync's clean slate removed
    DECLARE @HolderSkipped nvarchar(max);   -- a plan: why a run now would skip the table
    DECLARE @PlanFullSync bit;              -- a plan: the run would start with a Full sync's clean slate

    -- Steps and batches.
    DECLARE @StepNumber smallint;
    DECLARE @StepName nvarchar(50);
    DECLARE @StepFailed bit;
    DECLARE @BatchNumber int;
    DECLARE @BatchRows int;
    DECLARE @Position datetime2(3);        -- keyset: the last ModifiedOn of the step's previous completed batch
    DECLARE @AfterModifiedOn datetime2(3); -- what the next batch gets: @Position less 1 ms
    DECLARE @LastModifiedOn datetime2(3);  -- what the batch reports (a script may leave it NULL)
    DECLARE @Total bigint;
    DECLARE @TotalAfter bigint;
    DECLARE @TotalAfterText nvarchar(20);
    DECLARE @ErrorNumber int;
    DECLARE @ScriptDone bit;               -- the batch's script finished (a later error is the engine's own)
    DECLARE @Deadlocks int;                -- times the batch in hand was chosen as a deadlock victim (1205)
    DECLARE @PendingError nvarchar(max);   -- a failure being recorded: kept should the recording fail
    DECLARE @FailureText nvarchar(max);
    DECLARE @BatchInserted int;            -- what the batch's script reports (revision 0010): rows inserted,
    DECLARE @BatchUpdated int;             -- updated,
    DECLARE @BatchDeleted int;             -- deleted,
    DECLARE @BatchMoved int;               -- and moved along with a folder

    -- @Debug >= 2: the filled script, line by line (RAISERROR prints at most 2047 characters).
    DECLARE @PrintOffset bigint;
    DECLARE @PrintLength bigint;
    DECLARE @PrintBreak bigint;
    DECLARE @PrintLine nvarchar(2000);

    BEGIN TRY
        SET @Debug = ISNULL(@Debug, 0);

        ----------------------------------------------------------------- check parameters
        -- SQL Server only: PostgreSQL refuses a COMMIT inside a transaction block by itself. A plan
        -- writes nothing, but under XACT_ABORT any error inside it (a table that cannot be read)
        -- would doom the caller's transaction, and the procedure would end in error 266.
        IF @EntryTranCount > 0
            INSERT INTO @Errors (Message)
            VALUES (N'usp_BlobDelta_Run commits after every batch (and a plan''s errors would doom the caller''s '
                    + N'transaction); call it outside a transaction (@@TRANCOUNT = 0).');

        IF @ResumeRunId IS NOT NULL
        BEGIN
            SELECT
                @ResumeFound = 1,
                @ResumeStatus = r.Status,
                @ResumeMode = r.Mode,
                @ResumeTableName = r.TableName,
                @ResumeBusinessUnitId = r.BusinessUnitId,
                @ResumeRunType = r.RunType,
                @ResumeBatchSize = r.BatchSize,
                @ResumeMaxDOP = r.MaxDOP,
                @ResumeRunStartedAt = r.RunStartedAt
            FROM {{ job('BlobDeltaRun') }} AS r
            WHERE r.RunId = @ResumeRunId;

            IF @ResumeFound = 0
                INSERT INTO @Errors (Message)
                VALUES (N'@ResumeRunId ''' + LOWER(CONVERT(nvarchar(36), @ResumeRunId)) + N''' is not a run in dbo.BlobDeltaRun.');
            ELSE IF @ResumeStatus NOT IN (N'Running', N'Failed') AND ISNULL(@Wait, 0) = 0
                INSERT INTO @Errors (Message)
                VALUES (N'@ResumeRunId ''' + LOWER(CONVERT(nvarchar(36), @ResumeRunId)) + N''' has status ' + @ResumeStatus
                        + N'; only Running or Failed runs can be resumed.');
            ELSE
            BEGIN
                -- A resumed run keeps the parameters it was started with.
                SET @Mode = @ResumeMode;
                SET @TableName = @ResumeTableName;
                SET @BusinessUnitId = @ResumeBusinessUnitId;
                SET @SyncType = @ResumeRunType;
                SET @BatchSize = @ResumeBatchSize;
                SET @MaxDOP = @ResumeMaxDOP;
            END;
            IF @Execute IS NULL OR @Execute <> 1
                INSERT INTO @Errors (Message)
                VALUES (N'@ResumeRunId cannot be combined with @Execute = 0.');
        END;
        IF @GivenRunId IS NOT NULL AND @ResumeRunId IS NULL AND @Execute = 1
           AND EXISTS (SELECT 1 FROM {{ job('BlobDeltaRun') }} AS r WHERE r.RunId = @GivenRunId)
            INSERT INTO @Errors (Message)
            VALUES (N'@RunId ''' + LOWER(CONVERT(nvarchar(36), @GivenRunId)) + N''' already exists in dbo.BlobDeltaRun; '
                    + N'continue it with @ResumeRunId.');

        -- Allowed values are matched exactly (binary), as on PostgreSQL.
        IF @Mode IS NULL OR @Mode COLLATE Latin1_General_BIN2 NOT IN (N'AllTables', N'SingleTable')
            INSERT INTO @Errors (Message)
            VALUES (N'@Mode ' + ISNULL(N'''' + REPLACE(@Mode, N'''', N'''''') + N'''', N'NULL')
                    + N' is not allowed; allowed values: AllTables, SingleTable.');
        IF @SyncType IS NULL OR @SyncType COLLATE Latin1_General_BIN2 NOT IN (N'Incremental', N'Full')
            INSERT INTO @Errors (Message)
            VALUES (N'@SyncType ' + ISNULL(N'''' + REPLACE(@SyncType, N'''', N'''''') + N'''', N'NULL')
                    + N' is not allowed; allowed values: Incremental, Full.');
        IF @Mode COLLATE Latin1_General_BIN2 = N'SingleTable' AND (@TableName IS NULL OR LTRIM(RTRIM(@TableName)) = N'')
            INSERT INTO @Errors (Message)
            VALUES (N'@TableName is required when @Mode = ''SingleTable''.');
        ELSE IF @Mode COLLATE Latin1_General_BIN2 = N'AllTables' AND @TableName IS NOT NULL
            INSERT INTO @Errors (Message)
            VALUES (LEFT(N'@TableName must be NULL when @Mode = ''AllTables'' (got '''
                         + REPLACE(@TableName, N'''', N'''''') + N''').', 2000));
        ELSE IF @Mode COLLATE Latin1_General_BIN2 = N'SingleTable' AND NOT EXISTS (
            SELECT 1 FROM {{ job('BlobDeltaTableConfig') }} AS c WHERE c.TableName = @TableName
        )
        BEGIN
            SELECT @Configured = STRING_AGG(CONVERT(nvarchar(max), c.TableName), N', ')
                WITHIN GROUP (ORDER BY c.TableName COLLATE Latin1_General_BIN2)
            FROM {{ job('BlobDeltaTableConfig') }} AS c;
            INSERT INTO @Errors (Message)
            VALUES (LEFT(N'@TableName ''' + REPLACE(@TableName, N'''', N'''''')
                         + N''' is not configured in dbo.BlobDeltaTableConfig; allowed values: '
                         + ISNULL(@Configured, N'(no tables configured)') + N'.', 2000));
        END;
        IF @BatchSize IS NULL OR @BatchSize < 1
            INSERT INTO @Errors (Message)
            VALUES (N'@BatchSize must be 1 or more (got ' + ISNULL(CONVERT(nvarchar(11), @BatchSize), N'NULL') + N').');
        IF @MaxDOP IS NULL OR @MaxDOP < 0
            INSERT INTO @Errors (Message)
            VALUES (N'@MaxDOP must be 0 or more (got ' + ISNULL(CONVERT(nvarchar(11), @MaxDOP), N'NULL') + N').');
        IF @Execute IS NULL
            INSERT INTO @Errors (Message)
            VALUES (N'@Execute must be 1 (run) or 0 (plan only).');

        {{ raise_collected(50010) }}

        INSERT INTO @Tables (Position, TableName)
        SELECT ROW_NUMBER() OVER (ORDER BY c.TableName COLLATE Latin1_General_BIN2), c.TableName
        FROM {{ job('BlobDeltaTableConfig') }} AS c
        WHERE (@Mode = N'SingleTable' AND c.TableName = @TableName)
           OR (@Mode = N'AllTables' AND c.IsActive = 1);
        SET @TableCount = @@ROWCOUNT;

        ----------------------------------------------------------------- run header
        IF @Execute = 1
        BEGIN
            -- A caller-supplied RunId makes the call idempotent: a retry after a dropped
            -- connection resumes this run instead of starting a second one.
            SET @CurrentRunId = ISNULL(@ResumeRunId, @GivenRunId);
            IF @CurrentRunId IS NULL
            BEGIN
                {{ new_uuid7('@CurrentRunId') }}
            END;

            -- One session per run: a resume or a retry while the session that works the run is still
            -- at it (a NOCOUNT ON request whose client died keeps running) is refused, or waits.
            SET @RunLockResource = N'dbtools.BlobDeltaRun.' + LOWER(CONVERT(nvarchar(36), @CurrentRunId));
            SET @RunIdText = LOWER(CONVERT(nvarchar(36), @CurrentRunId));
            -- This very session may still hold it: a call that was cancelled (an attention skips every
            -- CATCH) on a connection a pool handed back. Taking it again would count it twice.
            IF APPLOCK_MODE(N'public', @RunLockResource, N'Session') = N'NoLock'
            BEGIN
                SET @RunLockTimeout = CASE WHEN ISNULL(@Wait, 0) = 1 THEN -1 ELSE 0 END;
                EXEC @RunLockResult = sys.sp_getapplock
                    @Resource = @RunLockResource,
                    @LockMode = N'Exclusive',
                    @LockOwner = N'Session',
                    @LockTimeout = @RunLockTimeout;
                IF @RunLockResult IN (-1, -2)
                BEGIN
                    SET @ErrorText = N'Run ' + @RunIdText + N' is still executing in another session; wait for it to end, '
                        + N'or resume with @Wait = 1 (dbtools resume --wait), which waits for that session first.';
                    THROW 50012, @ErrorText, 1;
                END;
                IF @RunLockResult < 0
                BEGIN
                    SET @ErrorText = N'Run ' + @RunIdText + N': sp_getapplock returned '
                        + CONVERT(nvarchar(11), @RunLockResult) + N' for the run''s session lock.';
                    THROW 50012, @ErrorText, 1;
                END;
            END;
            SET @HoldsRunLock = 1;

            IF @ResumeRunId IS NOT NULL
            BEGIN
                SELECT @ResumeStatus = r.Status
                FROM {{ job('BlobDeltaRun') }} AS r
                WHERE r.RunId = @ResumeRunId;
                IF @ResumeStatus NOT IN (N'Running', N'Failed')
                BEGIN
                    -- Waited for the session that worked it, and it finished the run: report that, change nothing.
                    EXEC sys.sp_releaseapplock @Resource = @RunLockResource, @LockOwner = N'Session';
                    SET @HoldsRunLock = 0;
                    SET @RunId = @CurrentRunId;
                    SET @Status = @ResumeStatus;
                    RETURN;
                END;
                SET @RunStartedAt = @ResumeRunStartedAt;
                SET @RunKind = N'resumed';
                UPDATE r
                SET Status = N'Running', RunCompletedAt = NULL, ErrorMessage = NULL
                FROM {{ job('BlobDeltaRun') }} AS r
                WHERE r.RunId = @CurrentRunId;
            END
            ELSE
            BEGIN
                SET @RunStartedAt = SYSUTCDATETIME();
                SET @RunKind = N'new';
                INSERT INTO {{ job('BlobDeltaRun') }}
                    (RunId, RunType, Mode, TableName, BusinessUnitId, BatchSize, MaxDOP, RunStartedAt, Status)
                VALUES
                    (@CurrentRunId, @SyncType, @Mode, @TableName, @BusinessUnitId, @BatchSize, @MaxDOP, @RunStartedAt, N'Running');
            END;
            SET @RunId = @CurrentRunId;
            IF @Debug >= 1
            BEGIN
                SET @RunIdText = LOWER(CONVERT(nvarchar(36), @CurrentRunId));
                RAISERROR(N'Run %s (%s): %d table(s), sync %s, batch size %d.', 0, 1,
                          @RunIdText, @RunKind, @TableCount, @SyncType, @BatchSize) WITH NOWAIT;
            END;
        END
        ELSE
            SET @RunStartedAt = SYSUTCDATETIME();

        ----------------------------------------------------------------- tables
        IF @Execute = 0
            -- What a table's plan script reports: per step, rows inserted, updated and deleted.
            CREATE TABLE #dbtools_Plan (
                StepNumber int NOT NULL PRIMARY KEY,
                RowsInserted bigint NOT NULL,
                RowsUpdated bigint NOT NULL,
                RowsDeleted bigint NOT NULL
            );
        SET @PlanFullSync = CASE WHEN @SyncType = N'Full' THEN 1 ELSE 0 END;
        SET @TablePosition = 0;
        WHILE 1 = 1
        BEGIN
            SELECT TOP (1) @TablePosition = t.Position, @CurrentTable = t.TableName
            FROM @Tables AS t
            WHERE t.Position > @TablePosition
            ORDER BY t.Position;
            IF @@ROWCOUNT = 0 BREAK;

            SET @Error = NULL;
            SET @HasWindow = 0;
            SET @WindowStart = NULL;
            SET @WindowEnd = NULL;
            SET @WatermarkModifiedOn = NULL;
            SET @WatermarkLastRunId = NULL;

            -- Resolve names, check the catalog and compute the window. Nothing is written here.
            BEGIN TRY
                EXEC {{ job('usp_BlobDelta_ResolveTableConfig') }}
                    @TableName = @CurrentTable,
                    @SourceObject = @SourceObject OUTPUT,
                    @TargetObject = @TargetObject OUTPUT,
                    @MetadataObject = @MetadataObject OUTPUT,
                    @MetadataIdColumn = @MetadataIdColumn OUTPUT,
                    @MetadataModifiedOnCol = @MetadataModifiedOnCol OUTPUT,
                    @MetadataBusinessUnitCol = @MetadataBusinessUnitCol OUTPUT,
                    @SafetyBufferMinutes = @SafetyBufferMinutes OUTPUT,
                    @ScriptSet = @ScriptSet OUTPUT,
                    @IsActive = @IsActive OUTPUT,
                    @BusinessUnitObject = @BusinessUnitObject OUTPUT,
                    @BusinessUnitIdColumn = @BusinessUnitIdColumn OUTPUT;

                SELECT
                    @SourceDatabase = c.SourceDatabase, @SourceSchema = c.SourceSchema, @SourceTable = c.SourceTable,
                    @TargetDatabase = c.TargetDatabase, @TargetSchema = c.TargetSchema, @TargetTable = c.TargetTable,
                    @MetadataDatabase = c.MetadataDatabase, @MetadataSchema = c.MetadataSchema, @MetadataTable = c.MetadataTable,
                    @BusinessUnitDatabase = c.BusinessUnitDatabase, @BusinessUnitSchema = c.BusinessUnitSchema,
                    @BusinessUnitTable = c.BusinessUnitTable,
                    @FullSyncBaselineMonths = c.FullSyncBaselineMonths,
                    @FullSyncBaselineDays = c.FullSyncBaselineDays,
                    @LeaseMinutes = c.LeaseMinutes,
                    @InitialBaseline = c.InitialBaseline,
                    @QueuePopulationScriptName = c.QueuePopulationScriptName
                FROM {{ job('BlobDeltaTableConfig') }} AS c
                WHERE c.TableName = @CurrentTable;

                SELECT @WatermarkModifiedOn = w.LastHighWaterModifiedOn, @WatermarkLastRunId = w.LastRunId
                FROM {{ job('BlobDeltaHighWatermark') }} AS w
                WHERE w.TableName = @CurrentTable;

                SET @KeyColumn = CASE @ScriptSet WHEN N'Hierarchical' THEN N'stream_id' ELSE @MetadataIdColumn END;

                -- Identifiers for the placeholders and the engine's own statements, always quoted.
                SET @QuotedSource = QUOTENAME(@SourceDatabase) + N'.' + QUOTENAME(@SourceSchema) + N'.' + QUOTENAME(@SourceTable);
                SET @QuotedTarget = QUOTENAME(@TargetDatabase) + N'.' + QUOTENAME(@TargetSchema) + N'.' + QUOTENAME(@TargetTable);
                SET @QuotedMetadata = QUOTENAME(@MetadataDatabase) + N'.' + QUOTENAME(@MetadataSchema) + N'.'
                    + QUOTENAME(@MetadataTable);
                SET @QuotedBusinessUnit = QUOTENAME(@BusinessUnitDatabase) + N'.' + QUOTENAME(ISNULL(@BusinessUnitSchema, N'dbo'))
                    + N'.' + QUOTENAME(@BusinessUnitTable);
                SET @QuotedQueue = QUOTENAME(DB_NAME()) + N'.{{ job("BlobDeltaMissingParentsQueue") }}';
                SET @QuotedVersion = QUOTENAME(DB_NAME()) + N'.{{ job("BlobDeltaTargetVersion") }}';
                SET @QuotedDeletionLog = QUOTENAME(DB_NAME()) + N'.{{ job("BlobDeltaDeletionLog") }}';
                SET @QuotedIdColumn = QUOTENAME(@MetadataIdColumn);
                SET @QuotedKeyColumn = QUOTENAME(@KeyColumn);
                SET @QuotedModifiedColumn = QUOTENAME(@MetadataModifiedOnCol);
                SET @QuotedBusinessUnitColumn = QUOTENAME(@MetadataBusinessUnitCol);
                SET @QuotedBusinessUnitIdColumn = QUOTENAME(@BusinessUnitIdColumn);

                IF @Execute = 1 AND @ResumeRunId IS NOT NULL
                BEGIN
                    SELECT TOP (1) @WindowStart = s.WindowStart, @WindowEnd = s.WindowEnd
                    FROM {{ job('BlobDeltaRunStep') }} AS s
                    WHERE s.RunId = @CurrentRunId AND s.TableName = @CurrentTable AND s.StepNumber = 0
                      AND s.Status = N'Completed'
                    ORDER BY s.BatchNumber DESC;
                    IF @@ROWCOUNT > 0
                        SET @HasWindow = 1;
                END;
                IF @HasWindow = 0
                BEGIN
                    SET @WindowEnd = DATEADD(MINUTE, -@SafetyBufferMinutes, @RunStartedAt);
                    -- PostgreSQL's timestamp - interval: months first, then days.
                    IF @SyncType = N'Full'
                        SET @WindowStart = DATEADD(DAY, -@FullSyncBaselineDays, DATEADD(MONTH, -@FullSyncBaselineMonths, @RunStartedAt));
                    ELSE IF @WatermarkModifiedOn IS NOT NULL
                        SET @WindowStart = DATEADD(MINUTE, -@SafetyBufferMinutes, @WatermarkModifiedOn);
                    ELSE IF @InitialBaseline IS NOT NULL
                        SET @WindowStart = @InitialBaseline;
                    ELSE
                        SET @WindowStart = DATEADD(DAY, -@FullSyncBaselineDays, DATEADD(MONTH, -@FullSyncBaselineMonths, @RunStartedAt));
                END;

                -- {ColumnList}, {SourceColumnList}, {UpdateList} and {SourceUpdateList}: the target's columns that
                -- can be written (not computed, as a FileTable's parent_path_locator, file_type and cached_file_size
                -- are; not identity, not rowversion, not GENERATED ALWAYS, not a column set whose sparse columns are
                -- listed) and that the source also has, in target column
                -- order; the key is never updated, nor a Hierarchical row's is_directory. Names are matched case-insensitively (Latin1_General_100_CI_AS
                -- on both sides, so two databases' catalog collations never conflict).
                SET @TargetObjectId = OBJECT_ID(@TargetObject);
                SET @SourceObjectId = OBJECT_ID(@SourceObject);
                SET @SqlColumns = CONVERT(nvarchar(max), N'SELECT') -- nvarchar(max) from the start: never cut at 4000
                    + N' @ColumnList = STRING_AGG(CONVERT(nvarchar(max), QUOTENAME(tc.name)), N'', '')'
                    + N' WITHIN GROUP (ORDER BY tc.column_id),'
                    + N' @SourceColumnList = STRING_AGG(CONVERT(nvarchar(max), N''s.'' + QUOTENAME(tc.name)), N'', '')'
                    + N' WITHIN GROUP (ORDER BY tc.column_id),'
                    + N' @UpdateList = STRING_AGG(CASE WHEN tc.name <> @KeyColumn AND (@FixedColumn IS NULL OR tc.name <> @FixedColumn)'
                    + N' THEN CONVERT(nvarchar(max), N''t.'' + QUOTENAME(tc.name) + N'' = b.'' + QUOTENAME(tc.name)) END, N'', '')'
                    + N' WITHIN GROUP (ORDER BY tc.column_id),'
                    + N' @SourceUpdateList = STRING_AGG(CASE WHEN tc.name <> @KeyColumn AND (@FixedColumn IS NULL OR tc.name <> @FixedColumn)'
                    + N' THEN CONVERT(nvarchar(max), N''t.'' + QUOTENAME(tc.name) + N'' = s.'' + QUOTENAME(tc.name)) END, N'', '')'
                    + N' WITHIN GROUP (ORDER BY tc.column_id)'
                    + N' FROM ' + QUOTENAME(@TargetDatabase) + N'.sys.columns AS tc'
                    + N' WHERE tc.object_id = @TargetObjectId'
                    -- Never a column the server fills (computed, identity, rowversion: 189, GENERATED ALWAYS such as a
                    -- temporal table's period columns or a ledger's: Msg 13536), as PostgreSQL leaves out its generated
                    -- columns. A sparse column set only when none of its sparse columns is listed: a list naming both is
                    -- Msg 360, and a source with the sparse columns has them copied one by one.
                    + N' AND tc.is_computed = 0 AND tc.is_identity = 0 AND tc.system_type_id <> 189'
                    + N' AND tc.generated_always_type = 0'
                    + N' AND (tc.is_column_set = 0 OR NOT EXISTS (SELECT 1 FROM ' + QUOTENAME(@TargetDatabase) + N'.sys.columns AS sp'
                    + N' WHERE sp.object_id = @TargetObjectId AND sp.is_sparse = 1'
                    + N' AND EXISTS (SELECT 1 FROM ' + QUOTENAME(@SourceDatabase) + N'.sys.columns AS ss'
                    + N' WHERE ss.object_id = @SourceObjectId'
                    + N' AND ss.name COLLATE Latin1_General_100_CI_AS = sp.name COLLATE Latin1_General_100_CI_AS)))'
                    + N' AND EXISTS (SELECT 1 FROM ' + QUOTENAME(@SourceDatabase) + N'.sys.columns AS sc'
                    + N' WHERE sc.object_id = @SourceObjectId'
                    + N' AND sc.name COLLATE Latin1_General_100_CI_AS = tc.name COLLATE Latin1_General_100_CI_AS);'
                    -- Every source column (but a graph table's internal ones), read from the metadata row when
                    -- the metadata table is the source.
                    + N' SELECT @SelfColumnList = STRING_AGG(CONVERT(nvarchar(max), N''m.'' + QUOTENAME(sc.name)), N'', '')'
                    + N' WITHIN GROUP (ORDER BY sc.column_id)'
                    + N' FROM ' + QUOTENAME(@SourceDatabase) + N'.sys.columns AS sc'
                    + N' WHERE sc.object_id = @SourceObjectId AND sc.graph_type IS NULL;'
                    -- A Hierarchical target computes parent_path_locator from path_locator, as a FileTable does.
                    + N' SELECT @ParentComputed = COUNT(*) FROM ' + QUOTENAME(@TargetDatabase) + N'.sys.columns AS pc'
                    + N' WHERE pc.object_id = @TargetObjectId AND pc.name = N''parent_path_locator'' AND pc.is_computed = 1;'
                    -- The target's kind: OBJECTPROPERTY(, 'TableIsFileTable') sees the current database only.
                    + N' SELECT @IsFileTable = ft.is_filetable FROM ' + QUOTENAME(@TargetDatabase) + N'.sys.tables AS ft'
                    + N' WHERE ft.object_id = @TargetObjectId;'
                    + N' SELECT @KeyIsIdentity = COUNT(*) FROM ' + QUOTENAME(@TargetDatabase) + N'.sys.columns AS kc'
                    + N' WHERE kc.object_id = @TargetObjectId AND kc.name = @IdColumn AND kc.is_identity = 1;'
                    + N' SELECT TOP (1) @GeneratedColumn = gc.name FROM ' + QUOTENAME(@TargetDatabase) + N'.sys.columns AS gc'
                    + N' WHERE gc.object_id = @TargetObjectId AND gc.name IN (@IdColumn, @ModifiedOnColumn)'
                    + N' AND (gc.is_computed = 1 OR gc.generated_always_type <> 0) ORDER BY gc.column_id;'
                    -- How each side compares names (a FileTable's is its FILETABLE_COLLATE_FILENAME).
                    + N' SELECT @TargetNameCollation = nc.collation_name FROM ' + QUOTENAME(@TargetDatabase) + N'.sys.columns AS nc'
                    + N' WHERE nc.object_id = @TargetObjectId AND nc.name = N''name'';'
                    + N' SELECT @SourceNameCollation = nc.collation_name FROM ' + QUOTENAME(@SourceDatabase) + N'.sys.columns AS nc'
                    + N' WHERE nc.object_id = @SourceObjectId AND nc.name = N''name'';';
                -- Appended to the nvarchar(max) variable: one expression of nvarchar(n) parts would be cut at 4000.
                SET @SqlColumns = @SqlColumns
                    -- A unique index or constraint whose only key column is the id column (not filtered, not
                    -- disabled, not IGNORE_DUP_KEY), and no INSTEAD OF INSERT trigger that could swallow a row:
                    -- what lets a first load insert without looking (a copy it missed makes the insert fail).
                    -- Checked when the table opens: change no target's keys or triggers during a run.
                    + N' SET @HasUniqueKey = CASE WHEN EXISTS (SELECT 1 FROM ' + QUOTENAME(@TargetDatabase) + N'.sys.indexes AS i'
                    + N' WHERE i.object_id = @TargetObjectId AND i.is_unique = 1 AND i.has_filter = 0'
                    + N' AND i.is_disabled = 0 AND i.is_hypothetical = 0 AND i.ignore_dup_key = 0'
                    + N' AND EXISTS (SELECT 1 FROM ' + QUOTENAME(@TargetDatabase) + N'.sys.index_columns AS ic'
                    + N' WHERE ic.object_id = i.object_id AND ic.index_id = i.index_id AND ic.key_ordinal > 0)'
                    + N' AND NOT EXISTS (SELECT 1 FROM ' + QUOTENAME(@TargetDatabase) + N'.sys.index_columns AS ic'
                    + N' JOIN ' + QUOTENAME(@TargetDatabase) + N'.sys.columns AS c'
                    + N' ON c.object_id = ic.object_id AND c.column_id = ic.column_id'
                    + N' WHERE ic.object_id = i.object_id AND ic.index_id = i.index_id AND ic.key_ordinal > 0'
                    + N' AND c.name <> @IdColumn))'
                    + N' AND NOT EXISTS (SELECT 1 FROM ' + QUOTENAME(@TargetDatabase) + N'.sys.triggers AS tr'
                    + N' JOIN ' + QUOTENAME(@TargetDatabase) + N'.sys.trigger_events AS te ON te.object_id = tr.object_id'
                    + N' WHERE tr.parent_id = @TargetObjectId AND tr.is_instead_of_trigger = 1 AND tr.is_disabled = 0'
                    + N' AND te.type_desc = N''INSERT'')'
                    -- Nor any IGNORE_DUP_KEY index: it could discard the row before the id's key sees it.
                    + N' AND NOT EXISTS (SELECT 1 FROM ' + QUOTENAME(@TargetDatabase) + N'.sys.indexes AS x'
                    + N' WHERE x.object_id = @TargetObjectId AND x.ignore_dup_key = 1) THEN 1 ELSE 0 END;';
                -- OUTPUT parameters are in/out: a catalog row not found must not leave the previous table's value.
                SET @TargetHasUniqueKey = NULL;
                SET @TargetIsFileTable = NULL;
                SET @TargetNameCollation = NULL;
                SET @SourceNameCollation = NULL;
                SET @TargetParentComputed = NULL;
                SET @TargetKeyIsIdentity = NULL;
                SET @TargetGeneratedColumn = NULL;
                -- A FileTable sets is_directory once: a blob never changes kind, so it is never updated.
                SET @FixedColumn = CASE WHEN @ScriptSet = N'Hierarchical' THEN N'is_directory' END;
                EXEC sys.sp_executesql
                    @SqlColumns,
                    N'@TargetObjectId int, @SourceObjectId int, @IdColumn sysname, @ModifiedOnColumn sysname, @KeyColumn sysname, @FixedColumn sysname, @ColumnList nvarchar(max) OUTPUT, @SourceColumnList nvarchar(max) OUTPUT, @UpdateList nvarchar(max) OUTPUT, @SourceUpdateList nvarchar(max) OUTPUT, @SelfColumnList nvarchar(max) OUTPUT, @HasUniqueKey bit OUTPUT, @ParentComputed int OUTPUT, @IsFileTable bit OUTPUT, @KeyIsIdentity int OUTPUT, @GeneratedColumn sysname OUTPUT, @TargetNameCollation sysname OUTPUT, @SourceNameCollation sysname OUTPUT',
                    @TargetObjectId = @TargetObjectId,
                    @SourceObjectId = @SourceObjectId,
                    @IdColumn = @MetadataIdColumn,
                    @ModifiedOnColumn = @MetadataModifiedOnCol,
                    @KeyColumn = @KeyColumn,
                    @FixedColumn = @FixedColumn,
                    @ColumnList = @QuotedColumns OUTPUT,
                    @SourceColumnList = @QuotedSourceColumns OUTPUT,
                    @UpdateList = @QuotedUpdate OUTPUT,
                    @SourceUpdateList = @QuotedSourceUpdate OUTPUT,
                    @SelfColumnList = @QuotedSelfColumns OUTPUT,
                    @HasUniqueKey = @TargetHasUniqueKey OUTPUT,
                    @ParentComputed = @TargetParentComputed OUTPUT,
                    @IsFileTable = @TargetIsFileTable OUTPUT,
                    @KeyIsIdentity = @TargetKeyIsIdentity OUTPUT,
                    @GeneratedColumn = @TargetGeneratedColumn OUTPUT,
                    @TargetNameCollation = @TargetNameCollation OUTPUT,
                    @SourceNameCollation = @SourceNameCollation OUTPUT;
                -- The engine moves a folder's subtree by rewriting path_locator alone: a stored parent
                -- column would go stale.
                IF @Debug >= 1
                BEGIN
                    SET @PrintLine = CASE WHEN @TargetIsFileTable = 1 THEN N'a FileTable'
                                          WHEN @ScriptSet = N'Hierarchical' THEN N'a FileTable-shaped table'
                                          ELSE N'a table' END;
                    RAISERROR(N'%s: the target %s is %s.', 0, 1, @CurrentTable, @TargetObject, @PrintLine) WITH NOWAIT;
                END;
                -- A FileTable computes it (and its file_type and cached_file_size, which the column lists leave out).
                IF @ScriptSet = N'Hierarchical' AND ISNULL(@TargetIsFileTable, 0) = 0 AND ISNULL(@TargetParentComputed, 0) = 0
                BEGIN
                    SET @ErrorText = N'the target''s parent_path_locator must be computed from path_locator, as in a '
                        + N'FileTable; a stored column would not follow a moved folder (README, "Hierarchical targets").';
                    THROW 50014, @ErrorText, 1;
                END;
                -- Step 2a frees the names a run writes, comparing them as the target does: both sides must.
                IF @ScriptSet = N'Hierarchical' AND ISNULL(@TargetNameCollation, N'') <> ISNULL(@SourceNameCollation, N'')
                BEGIN
                    SET @ErrorText = N'the source''s and the target''s name columns compare names differently (collations '
                        + ISNULL(@SourceNameCollation, N'none') + N' and ' + ISNULL(@TargetNameCollation, N'none')
                        + N'); give them the same collation.';
                    THROW 50014, @ErrorText, 1;
                END;
                -- The engine never writes an identity column (Msg 544): a key that is one cannot be copied.
                IF @ScriptSet <> N'Hierarchical' AND ISNULL(@TargetKeyIsIdentity, 0) > 0
                BEGIN
                    SET @ErrorText = N'the target''s key column ' + QUOTENAME(@MetadataIdColumn) + N' is an identity '
                        + N'column; the engine copies keys from the source and never writes an identity column.';
                    THROW 50014, @ErrorText, 1;
                END;
                -- Nor a computed or GENERATED ALWAYS one (Msg 271, 13536), and newest-wins compares the target's
                -- ModifiedOn with the metadata's: a value the server makes up (a load time) would stop every update.
                IF @ScriptSet <> N'Hierarchical' AND @TargetGeneratedColumn IS NOT NULL
                BEGIN
                    SET @ErrorText = N'the target''s column ' + QUOTENAME(@TargetGeneratedColumn) + N' is computed by the '
                        + N'server; the engine copies the key and ModifiedOn columns from the source and compares them, '
                        + N'so neither may be computed or generated.';
                    THROW 50014, @ErrorText, 1;
                END;
                -- {SourceRow}: the source row s for the metadata row m, joined on the key, or the metadata
                -- row itself (its columns under the source's names) when the metadata table is the source table.
                IF DB_ID(@MetadataDatabase) = DB_ID(@SourceDatabase) AND OBJECT_ID(@MetadataObject) = @SourceObjectId
                    SET @QuotedSourceRow = N'CROSS APPLY (SELECT ' + @QuotedSelfColumns + N') AS s';
                ELSE
                    SET @QuotedSourceRow = N'JOIN ' + @QuotedSource + N' AS s ON s.' + @QuotedIdColumn + N' = m.' + @QuotedIdColumn;

                -- The table's scripts in the order a run executes them: queue population (step 2a) first,
                -- before step 1, so that what it queues follows from the target as the run found it; then
                -- the active steps; last the plan script of the set (a plan runs only that one).
                DELETE FROM @Scripts;
                INSERT INTO @Scripts (Position, StepNumber, StepName, ScriptText)
                SELECT ROW_NUMBER() OVER (ORDER BY x.Sort, x.StepNumber), x.StepNumber, x.StepName, x.ScriptText
                FROM (
                    SELECT 0 AS Sort, CONVERT(smallint, 2) AS StepNumber, CONVERT(nvarchar(50), N'QueuePopulation') AS StepName,
                           q.ScriptText
                    FROM {{ job('BlobDeltaQueuePopulationScript') }} AS q
                    WHERE q.ScriptName = @QueuePopulationScriptName AND q.IsActive = 1
                      AND EXISTS (SELECT 1 FROM {{ job('BlobDeltaStepScript') }} AS s2
                                  WHERE s2.ScriptSet = @ScriptSet AND s2.StepNumber = 2 AND s2.IsActive = 1)
                    UNION ALL
                    SELECT 1, s.StepNumber, s.StepName, s.ScriptText
                    FROM {{ job('BlobDeltaStepScript') }} AS s
                    WHERE s.ScriptSet = @ScriptSet AND s.IsActive = 1
                    UNION ALL
                    SELECT 2, CONVERT(smallint, -1), CONVERT(nvarchar(50), N'Plan'), p.ScriptText
                    FROM {{ job('BlobDeltaPlanScript') }} AS p
                    WHERE p.ScriptSet = @ScriptSet AND p.IsActive = 1
                ) AS x;
                SET @ScriptCount = @@ROWCOUNT;

                -- Fill every placeholder once. The stored scripts (trusted text seeded by the migrations)
                -- are the base; only QUOTENAME'd names go into them, values are sp_executesql parameters.
                -- A '{' inside a name is held as NCHAR(1) until every placeholder is filled, so a name that
                -- looks like a placeholder is never filled again (a one-pass fill). A placeholder without a
                -- value (a NULL name) is held as NCHAR(2): a script that uses one is NULL, as PostgreSQL's
                -- EXECUTE of NULL would report it; a script that does not use it is unaffected.
                SET @ScriptPosition = 0;
                WHILE @ScriptPosition < @ScriptCount
                BEGIN
                    SET @ScriptPosition += 1;
                    SELECT @SqlStepScript = x.ScriptText FROM @Scripts AS x WHERE x.Position = @ScriptPosition;
                    -- Sentinels are matched in a binary collation: other collations may give control
                    -- characters no weight and not find them.
                    SET @SqlStep = REPLACE(REPLACE(@SqlStepScript COLLATE Latin1_General_100_BIN2, NCHAR(1), N''), NCHAR(2), N'');
                    SET @SqlStep = REPLACE(@SqlStep, N'{SourceObject}', ISNULL(REPLACE(@QuotedSource, N'{', NCHAR(1)), NCHAR(2)));
                    SET @SqlStep = REPLACE(@SqlStep, N'{TargetObject}', ISNULL(REPLACE(@QuotedTarget, N'{', NCHAR(1)), NCHAR(2)));
                    SET @SqlStep = REPLACE(@SqlStep, N'{MetadataObject}', ISNULL(REPLACE(@QuotedMetadata, N'{', NCHAR(1)), NCHAR(2)));
                    SET @SqlStep = REPLACE(@SqlStep, N'{BusinessUnitObject}', ISNULL(REPLACE(@QuotedBusinessUnit, N'{', NCHAR(1)), NCHAR(2)));
                    SET @SqlStep = REPLACE(@SqlStep, N'{QueueObject}', ISNULL(REPLACE(@QuotedQueue, N'{', NCHAR(1)), NCHAR(2)));
                    SET @SqlStep = REPLACE(@SqlStep, N'{VersionObject}', ISNULL(REPLACE(@QuotedVersion, N'{', NCHAR(1)), NCHAR(2)));
                    SET @SqlStep = REPLACE(@SqlStep, N'{DeletionLogObject}', ISNULL(REPLACE(@QuotedDeletionLog, N'{', NCHAR(1)), NCHAR(2)));
                    SET @SqlStep = REPLACE(@SqlStep, N'{MetadataIdColumn}', ISNULL(REPLACE(@QuotedIdColumn, N'{', NCHAR(1)), NCHAR(2)));
                    SET @SqlStep = REPLACE(@SqlStep, N'{MetadataModifiedOnCol}', ISNULL(REPLACE(@QuotedModifiedColumn, N'{', NCHAR(1)), NCHAR(2)));
                    SET @SqlStep = REPLACE(@SqlStep, N'{MetadataBusinessUnitCol}', ISNULL(REPLACE(@QuotedBusinessUnitColumn, N'{', NCHAR(1)), NCHAR(2)));
                    SET @SqlStep = REPLACE(@SqlStep, N'{BusinessUnitIdColumn}', ISNULL(REPLACE(@QuotedBusinessUnitIdColumn, N'{', NCHAR(1)), NCHAR(2)));
                    SET @SqlStep = REPLACE(@SqlStep, N'{SourceColumnList}', ISNULL(REPLACE(@QuotedSourceColumns, N'{', NCHAR(1)), NCHAR(2)));
                    SET @SqlStep = REPLACE(@SqlStep, N'{ColumnList}', ISNULL(REPLACE(@QuotedColumns, N'{', NCHAR(1)), NCHAR(2)));
                    SET @SqlStep = REPLACE(@SqlStep, N'{UpdateList}', ISNULL(REPLACE(@QuotedUpdate, N'{', NCHAR(1)), NCHAR(2)));
                    SET @SqlStep = REPLACE(@SqlStep, N'{SourceUpdateList}', ISNULL(REPLACE(@QuotedSourceUpdate, N'{', NCHAR(1)), NCHAR(2)));
                    SET @SqlStep = REPLACE(@SqlStep, N'{SourceRow}', ISNULL(REPLACE(@QuotedSourceRow, N'{', NCHAR(1)), NCHAR(2)));
                    IF CHARINDEX(NCHAR(2), @SqlStep COLLATE Latin1_General_100_BIN2) > 0
                        SET @SqlStep = NULL;
                    ELSE
                        SET @SqlStep = REPLACE(@SqlStep COLLATE Latin1_General_100_BIN2, NCHAR(1), N'{');
                    UPDATE x SET Filled = @SqlStep FROM @Scripts AS x WHERE x.Position = @ScriptPosition;
                END;
            END TRY
            BEGIN CATCH
                IF XACT_STATE() <> 0 ROLLBACK TRANSACTION;
                SET @Error = ERROR_MESSAGE();
            END CATCH;

            ------------------------------------------------------------- plan only
            -- The table's plan script computes, from the target as it is now and with the steps' own
            -- predicates, what each step of a run would insert, update and delete; it writes nothing
            -- but #dbtools_Plan. A lease another run holds now would make a run skip the table.
            IF @Execute = 0
            BEGIN
                SET @Rows = NULL;
                SET @HolderSkipped = NULL;
                IF @Error IS NULL
                BEGIN
                    BEGIN TRY
                        SELECT @HolderRunId = w.LeaseRunId, @HolderExpiresAt = w.RunLeaseExpiresAt
                        FROM {{ job('BlobDeltaHighWatermark') }} AS w
                        WHERE w.TableName = @CurrentTable AND w.IsRunning = 1 AND w.RunLeaseExpiresAt >= @RunStartedAt;
                        IF @@ROWCOUNT > 0
                            SET @HolderSkipped = N'Table ''' + @CurrentTable + N''' is being processed by run '
                                + ISNULL(LOWER(CONVERT(nvarchar(36), @HolderRunId)), N'<NULL>')
                                + N' (lease expires ' + CONVERT(nvarchar(23), @HolderExpiresAt, 121) + N' UTC); a run now would skip it.';
                        ELSE
                        BEGIN
                            SET @SqlPlan = NULL;
                            SELECT @SqlPlan = x.Filled FROM @Scripts AS x WHERE x.StepName = N'Plan' AND x.StepNumber = -1;
                            IF @@ROWCOUNT = 0
                            BEGIN
                                SET @ErrorText = N'Script set ' + @ScriptSet + N' has no active plan script in dbo.BlobDeltaPlanScript.';
                                THROW 50013, @ErrorText, 1;
                            END;
                            IF @SqlPlan IS NULL
                                -- A placeholder's value is NULL: PostgreSQL's EXECUTE text.
                                THROW 50013, N'query string argument of EXECUTE is null', 1;
                            IF @Debug >= 2
                            BEGIN
                                -- PRINT stops at 4,000 characters: the plan in pieces.
                                SET @PrintOffset = 1;
                                SET @PrintLength = DATALENGTH(@SqlPlan) / 2;
                                WHILE @PrintOffset <= @PrintLength
                                BEGIN
                                    PRINT SUBSTRING(@SqlPlan, @PrintOffset, 4000);
                                    SET @PrintOffset = @PrintOffset + 4000;
                                END;
                            END;
                            TRUNCATE TABLE #dbtools_Plan;
                            -- The parameters a run's batches get; @FullSync: the run starts with a Full sync's clean slate.
                            EXEC sys.sp_executesql
                                @SqlPlan,
                                N'@BatchSize int, @ExcludedStreamId uniqueidentifier, @WindowStart datetime2(3), @WindowEnd datetime2(3), @BusinessUnitId uniqueidentifier, @RunId uniqueidentifier, @TableName nvarchar(400), @AfterModifiedOn datetime2(3), @TargetWasEmpty bit, @FullSync bit',
                                @BatchSize = @BatchSize,
                                @ExcludedStreamId = @ExcludedStreamId,
                                @WindowStart = @WindowStart,
                                @WindowEnd = @WindowEnd,
                                @BusinessUnitId = @BusinessUnitId,
                                @RunId = NULL,
                                @TableName = @CurrentTable,
                                @AfterModifiedOn = NULL,
                                @TargetWasEmpty = 0,
                                @FullSync = @PlanFullSync;
                            -- Only the steps a run executes: the window (0) and the active scripts of the set.
                            INSERT INTO @PlanSteps (Position, StepNumber, StepName, RowsInserted, RowsUpdated, RowsDeleted)
                            SELECT @TablePosition, p.StepNumber, n.StepName, p.RowsInserted, p.RowsUpdated, p.RowsDeleted
                            FROM #dbtools_Plan AS p
                            JOIN (SELECT 0 AS StepNumber, CONVERT(nvarchar(50), N'Window') AS StepName
                                  UNION ALL
                                  SELECT x.StepNumber, x.StepName FROM @Scripts AS x
                                  WHERE x.StepNumber > 0 AND x.StepName <> N'QueuePopulation') AS n
                              ON n.StepNumber = p.StepNumber;
                            SELECT @Rows = ISNULL(SUM(s.RowsInserted + s.RowsUpdated + s.RowsDeleted), 0)
                            FROM @PlanSteps AS s
                            WHERE s.Position = @TablePosition AND s.StepNumber > 0;
                        END;
                    END TRY
                    BEGIN CATCH
                        IF XACT_STATE() <> 0 ROLLBACK TRANSACTION;
                        SET @Error = ERROR_MESSAGE();
                        SET @Rows = NULL;
                        DELETE FROM @PlanSteps WHERE Position = @TablePosition;
                    END CATCH;
                END;
                INSERT INTO @PlanRows (Position, TableName, WindowStart, WindowEnd, [Rows], Error, Skipped)
                VALUES (@TablePosition, @CurrentTable, @WindowStart, @WindowEnd, @Rows, @Error, @HolderSkipped);
                CONTINUE;
            END;

            ------------------------------------------------------------- execute
            IF @ResumeRunId IS NOT NULL AND @WatermarkLastRunId = @CurrentRunId
                CONTINUE; -- finished by this run before it was interrupted

            -- One transaction: the lease, a Full sync's clean slate and the step 0 'Window' row.
            IF @Error IS NULL
            BEGIN
                BEGIN TRY
                    SET @Now = SYSUTCDATETIME();
                    BEGIN TRANSACTION;

                    INSERT INTO {{ job('BlobDeltaHighWatermark') }} (TableName)
                    SELECT @CurrentTable
                    WHERE NOT EXISTS (
                        SELECT 1 FROM {{ job('BlobDeltaHighWatermark') }} AS w WITH (UPDLOCK, HOLDLOCK)
                        WHERE w.TableName = @CurrentTable
                    );

                    -- The lease: one atomic UPDATE. Its search takes update locks and qualifies the row on
                    -- the latest committed data, also under RCSI: a competing run waits here, then sees
                    -- this run's committed lease and is skipped.
                    UPDATE w
                    SET IsRunning = 1,
                        RunLeaseExpiresAt = DATEADD(MINUTE, @LeaseMinutes, @Now),
                        LeaseRunId = @CurrentRunId
                    FROM {{ job('BlobDeltaHighWatermark') }} AS w
                    WHERE w.TableName = @CurrentTable
                      AND (w.IsRunning = 0 OR w.RunLeaseExpiresAt < @Now OR w.LeaseRunId = @CurrentRunId);

                    IF @@ROWCOUNT = 0
                    BEGIN
                        SELECT @HolderRunId = w.LeaseRunId, @HolderExpiresAt = w.RunLeaseExpiresAt
                        FROM {{ job('BlobDeltaHighWatermark') }} AS w
                        WHERE w.TableName = @CurrentTable;
                        -- <NULL> is how PostgreSQL's RAISE shows a NULL argument.
                        SET @Error = N'Table ''' + @CurrentTable + N''' is being processed by run '
                            + ISNULL(LOWER(CONVERT(nvarchar(36), @HolderRunId)), N'<NULL>')
                            + N' (lease expires ' + ISNULL(CONVERT(nvarchar(23), @HolderExpiresAt, 121), N'<NULL>')
                            + N' UTC); skipped.';
                    END
                    ELSE IF @HasWindow = 0
                    BEGIN
                        SET @Cleared = 0;
                        IF @SyncType = N'Full'
                        BEGIN
                            -- Full sync starts from a clean slate for the scope: this table's queue and target rows.
                            DELETE q
                            FROM {{ job('BlobDeltaMissingParentsQueue') }} AS q
                            WHERE q.TableName = @CurrentTable
                              AND (@BusinessUnitId IS NULL OR q.BusinessUnit = @BusinessUnitId);

                            IF @ScriptSet = N'Hierarchical'
                                -- One unit's clean slate keeps every row that has a descendant of another unit (or
                                -- of none), so no row of another unit loses its parent; the rest of that unit's
                                -- rows go, deepest first (a FileTable refuses to delete a directory that still
                                -- holds anything), with their recorded versions.
                                SET @SqlClear = N'CREATE TABLE #dbtools_Doomed (stream_id uniqueidentifier NOT NULL PRIMARY KEY, Depth int NOT NULL);'
                                    + N' INSERT INTO #dbtools_Doomed (stream_id, Depth)'
                                    + N' SELECT t.stream_id, t.path_locator.GetLevel() FROM ' + @QuotedTarget + N' AS t'
                                    + N' WHERE @BusinessUnitId IS NULL OR (EXISTS (SELECT 1 FROM ' + @QuotedMetadata + N' AS m'
                                    + N' WHERE m.' + @QuotedIdColumn + N' = t.stream_id AND m.' + @QuotedBusinessUnitColumn + N' = @BusinessUnitId)'
                                    + N' AND NOT EXISTS (SELECT 1 FROM ' + @QuotedTarget + N' AS d'
                                    + N' WHERE d.path_locator.IsDescendantOf(t.path_locator) = 1 AND d.path_locator <> t.path_locator'
                                    + N' AND NOT EXISTS (SELECT 1 FROM ' + @QuotedMetadata + N' AS md'
                                    + N' WHERE md.' + @QuotedIdColumn + N' = d.stream_id AND md.' + @QuotedBusinessUnitColumn
                                    + N' = @BusinessUnitId)));'
                                    + N' DECLARE @Depth int = (SELECT MAX(x.Depth) FROM #dbtools_Doomed AS x);'
                                    + N' SET @Cleared = 0;'
                                    + N' WHILE @Depth >= 1'
                                    + N' BEGIN'
                                    + N' DELETE t FROM ' + @QuotedTarget + N' AS t JOIN #dbtools_Doomed AS x ON x.stream_id = t.stream_id'
                                    + N' WHERE x.Depth = @Depth;'
                                    + N' SET @Cleared += @@ROWCOUNT;'
                                    + N' SET @Depth -= 1;'
                                    + N' END;'
                                    + N' DELETE v FROM ' + @QuotedVersion + N' AS v WHERE v.TableName = @TableName'
                                    + N' AND (@BusinessUnitId IS NULL OR EXISTS (SELECT 1 FROM #dbtools_Doomed AS x WHERE x.stream_id = v.stream_id));'
                                    + N' DROP TABLE #dbtools_Doomed;';
                            ELSE
                                SET @SqlClear = N'DELETE t FROM ' + @QuotedTarget + N' AS t WHERE @BusinessUnitId IS NULL OR EXISTS '
                                    + N'(SELECT 1 FROM ' + @QuotedMetadata + N' AS m WHERE m.' + @QuotedIdColumn + N' = t.'
                                    + @QuotedKeyColumn + N' AND m.' + @QuotedBusinessUnitColumn + N' = @BusinessUnitId);'
                                    + N' SET @Cleared = @@ROWCOUNT;';
                            IF @SqlClear IS NULL
                                SET @Error = N'null values cannot be formatted as an SQL identifier';
                            ELSE
                                EXEC sys.sp_executesql
                                    @SqlClear,
                                    N'@BusinessUnitId uniqueidentifier, @TableName nvarchar(400), @Cleared bigint OUTPUT',
                                    @BusinessUnitId = @BusinessUnitId,
                                    @TableName = @CurrentTable,
                                    @Cleared = @Cleared OUTPUT;
                        END;

                        -- A first load: the target holds no row (after a Full sync's clean slate), so every
                        -- row it will hold was written by this run's batches (the lease keeps other runs out).
                        SET @TargetWasEmpty = NULL;
                        IF @Error IS NULL AND @SyncType = N'Full' AND @BusinessUnitId IS NULL
                            SET @TargetWasEmpty = 1; -- just emptied by the clean slate above
                        ELSE IF @Error IS NULL
                        BEGIN
                            -- No shared row locks: the flag only decides whether batches try the shortcut, the
                            -- target's key keeps it right, and a lock wait here (holding the lease) could deadlock
                            -- with a batch of the run whose expired lease this one took over.
                            SET @SqlEmpty = N'SET @TargetWasEmpty = CASE WHEN EXISTS (SELECT 1 FROM ' + @QuotedTarget
                                + N' WITH (READUNCOMMITTED)) THEN 0 ELSE 1 END;';
                            IF @SqlEmpty IS NULL
                                SET @Error = N'null values cannot be formatted as an SQL identifier';
                            ELSE
                                EXEC sys.sp_executesql
                                    @SqlEmpty,
                                    N'@TargetWasEmpty bit OUTPUT',
                                    @TargetWasEmpty = @TargetWasEmpty OUTPUT;
                        END;

                        IF @Error IS NULL
                            INSERT INTO {{ job('BlobDeltaRunStep') }}
                                (RunId, TableName, StepNumber, StepName, BatchNumber, RowsProcessed, TotalRowsProcessed,
                                 RowsInserted, RowsUpdated, RowsDeleted,
                                 WindowStart, WindowEnd, TargetWasEmpty, BatchStartedAt, BatchCompletedAt, Status)
                            SELECT @CurrentRunId, @CurrentTable, 0, N'Window', ISNULL(MAX(s.BatchNumber), 0) + 1, 0, 0,
                                   0, 0, @Cleared,
                                   @WindowStart, @WindowEnd, @TargetWasEmpty, @Now, @Now, N'Completed'
                            FROM {{ job('BlobDeltaRunStep') }} AS s
                            WHERE s.RunId = @CurrentRunId AND s.TableName = @CurrentTable AND s.StepNumber = 0;
                    END
                    ELSE IF @Error IS NULL
                        -- A resumed first load stays one only if no other run has worked the table since
                        -- (opened it, or resumed and ran a batch): it may have written rows past this run's
                        -- positions.
                        UPDATE s
                        SET TargetWasEmpty = 0
                        FROM {{ job('BlobDeltaRunStep') }} AS s
                        WHERE s.RunId = @CurrentRunId AND s.TableName = @CurrentTable AND s.StepNumber = 0
                          AND s.Status = N'Completed' AND s.TargetWasEmpty = 1
                          AND EXISTS (SELECT 1 FROM {{ job('BlobDeltaRunStep') }} AS o WITH (READUNCOMMITTED)
                                      WHERE o.TableName = @CurrentTable AND o.RunStepId > s.RunStepId
                                        AND o.RunId <> @CurrentRunId AND o.Status = N'Completed');

                    IF @Error IS NULL
                        COMMIT TRANSACTION; -- the lease and the window are visible from here on
                    ELSE
                        ROLLBACK TRANSACTION;
                END TRY
                BEGIN CATCH
                    IF XACT_STATE() <> 0 ROLLBACK TRANSACTION;
                    SET @Error = ERROR_MESSAGE();
                END CATCH;
            END;

            -- From here to the watermark, an error no batch caught (the job tables' own bookkeeping, a
            -- deadlock while a failure was being recorded, the watermark UPDATE) fails this table alone:
            -- the lease released, a Failed row, the message for the header; the next table runs.
            BEGIN TRY
                SET @PendingError = NULL;
                IF @Error IS NOT NULL
                BEGIN
                    SET @Now = SYSUTCDATETIME();
                    SET @PendingError = @Error;
                    BEGIN TRANSACTION;
                    INSERT INTO {{ job('BlobDeltaRunStep') }}
                        (RunId, TableName, StepNumber, StepName, BatchNumber, WindowStart, WindowEnd,
                         BatchStartedAt, BatchCompletedAt, Status, ErrorMessage)
                    SELECT @CurrentRunId, @CurrentTable, 0, N'Window', ISNULL(MAX(s.BatchNumber), 0) + 1, @WindowStart, @WindowEnd,
                           @Now, @Now, N'Failed', @Error
                    FROM {{ job('BlobDeltaRunStep') }} AS s
                    WHERE s.RunId = @CurrentRunId AND s.TableName = @CurrentTable AND s.StepNumber = 0;
                    UPDATE w
                    SET IsRunning = 0, RunLeaseExpiresAt = NULL, LeaseRunId = NULL
                    FROM {{ job('BlobDeltaHighWatermark') }} AS w
                    WHERE w.TableName = @CurrentTable AND w.LeaseRunId = @CurrentRunId;
                    COMMIT TRANSACTION;
                    INSERT INTO @Failures (Message) VALUES ({{ failure_message() }});
                    CONTINUE;
                END;

                -- A first load (recorded on the window row; a resume may have cleared it above).
                SET @TargetWasEmpty = 0;
                SELECT TOP (1) @TargetWasEmpty = ISNULL(s.TargetWasEmpty, 0)
                FROM {{ job('BlobDeltaRunStep') }} AS s
                WHERE s.RunId = @CurrentRunId AND s.TableName = @CurrentTable AND s.StepNumber = 0 AND s.Status = N'Completed'
                ORDER BY s.BatchNumber DESC;

                -- Without a unique key on the id column a plain insert could duplicate a row: every batch
                -- looks rows up (the key was read when the table opened, above).
                IF ISNULL(@TargetHasUniqueKey, 0) = 0
                    SET @TargetWasEmpty = 0;

                ------------------------------------------------------------- steps
                -- The table's scripts, filled when it was opened (@Scripts), in the order a run executes them.
                SET @StepFailed = 0;
                SET @ScriptPosition = 0;
                WHILE @StepFailed = 0
                BEGIN
                    SET @ScriptPosition += 1;
                    SET @StepName = NULL;
                    SELECT @StepNumber = x.StepNumber, @StepName = x.StepName, @SqlStep = x.Filled
                    FROM @Scripts AS x
                    WHERE x.Position = @ScriptPosition AND x.StepNumber > 0; -- not the plan script
                    IF @StepName IS NULL BREAK;

                    -- A step is done when it has a completed batch that found nothing more to do;
                    -- queue population runs once (it is idempotent anyway).
                    IF EXISTS (
                        SELECT 1 FROM {{ job('BlobDeltaRunStep') }} AS s
                        WHERE s.RunId = @CurrentRunId AND s.TableName = @CurrentTable AND s.StepNumber = @StepNumber
                          AND s.StepName = @StepName AND s.Status = N'Completed'
                          AND (s.RowsProcessed = 0 OR @StepName = N'QueuePopulation')
                    )
                        CONTINUE;

                    -- Keyset position: a batch starts at the last ModifiedOn of the step's previous
                    -- completed batch in this run (also after a resume), so no batch re-reads the window.
                    SELECT @Position = MAX(s.LastModifiedOn)
                    FROM {{ job('BlobDeltaRunStep') }} AS s
                    WHERE s.RunId = @CurrentRunId AND s.TableName = @CurrentTable AND s.StepNumber = @StepNumber
                      AND s.StepName = @StepName AND s.Status = N'Completed';

                    IF @Debug >= 2 AND @SqlStep IS NOT NULL
                    BEGIN
                        SET @PrintOffset = 1;
                        SET @PrintLength = DATALENGTH(@SqlStep) / 2;
                        WHILE @PrintOffset <= @PrintLength
                        BEGIN
                            SET @PrintBreak = CHARINDEX(NCHAR(10), @SqlStep, @PrintOffset);
                            IF @PrintBreak = 0
                                SET @PrintBreak = @PrintLength + 1;
                            IF @PrintBreak - @PrintOffset > 2000
                            BEGIN
                                SET @PrintLine = SUBSTRING(@SqlStep, @PrintOffset, 2000);
                                SET @PrintOffset = @PrintOffset + 2000;
                            END
                            ELSE
                            BEGIN
                                SET @PrintLine = REPLACE(SUBSTRING(@SqlStep, @PrintOffset, @PrintBreak - @PrintOffset), NCHAR(13), N'');
                                SET @PrintOffset = @PrintBreak + 1;
                            END;
                            RAISERROR(N'%s', 0, 1, @PrintLine) WITH NOWAIT;
                        END;
                    END;

                    WHILE 1 = 1
                    BEGIN
                        SET @Now = SYSUTCDATETIME();
                        -- Batch numbers run per step number (queue population and its batches share step 2);
                        -- a failed batch keeps its number and the retry gets the next one.
                        SELECT
                            @BatchNumber = ISNULL(MAX(s.BatchNumber), 0) + 1,
                            @Total = ISNULL(SUM(CASE WHEN s.Status = N'Completed' AND s.StepName = @StepName
                                                     THEN CONVERT(bigint, s.RowsProcessed) ELSE 0 END), 0)
                        FROM {{ job('BlobDeltaRunStep') }} AS s
                        WHERE s.RunId = @CurrentRunId AND s.TableName = @CurrentTable AND s.StepNumber = @StepNumber;
                        SET @Error = NULL;
                        SET @BatchRows = NULL;
                        SET @LastModifiedOn = NULL;
                        -- Positions are kept to the millisecond; a finer ModifiedOn may have been rounded up,
                        -- so the batch starts 1 ms early (rows already copied are skipped by the scripts).
                        SET @AfterModifiedOn = DATEADD(MILLISECOND, -1, @Position);

                        SET @BatchTargetWasEmpty = @TargetWasEmpty;
                        SET @ErrorNumber = NULL;
                        SET @Deadlocks = 0;
                        IF @SqlStep IS NULL
                            -- A placeholder's value is NULL (REPLACE returns NULL): PostgreSQL's EXECUTE text.
                            SET @Error = N'query string argument of EXECUTE is null';
                        ELSE
                        WHILE 1 = 1
                        BEGIN
                            -- One batch, one transaction: the script's work, its RunStep row and the lease renewal.
                            -- MaxDOP: SQL Server cannot cap parallelism per session; the step scripts run with the
                            -- server's and database's MAXDOP (the value is recorded in BlobDeltaRun).
                            BEGIN TRY
                                BEGIN TRANSACTION;
                                SET @ScriptDone = 0;
                                SET @BatchInserted = NULL;
                                SET @BatchUpdated = NULL;
                                SET @BatchDeleted = NULL;
                                SET @BatchMoved = NULL;
                                EXEC sys.sp_executesql
                                    @SqlStep,
                                    N'@BatchSize int, @ExcludedStreamId uniqueidentifier, @WindowStart datetime2(3), @WindowEnd datetime2(3), @BusinessUnitId uniqueidentifier, @RunId uniqueidentifier, @TableName nvarchar(400), @RowsProcessed int OUTPUT, @AfterModifiedOn datetime2(3), @LastModifiedOn datetime2(3) OUTPUT, @TargetWasEmpty bit, @RowsInserted int OUTPUT, @RowsUpdated int OUTPUT, @RowsDeleted int OUTPUT, @RowsMoved int OUTPUT',
                                    @BatchSize = @BatchSize,
                                    @ExcludedStreamId = @ExcludedStreamId,
                                    @WindowStart = @WindowStart,
                                    @WindowEnd = @WindowEnd,
                                    @BusinessUnitId = @BusinessUnitId,
                                    @RunId = @CurrentRunId,
                                    @TableName = @CurrentTable,
                                    @RowsProcessed = @BatchRows OUTPUT,
                                    @AfterModifiedOn = @AfterModifiedOn,
                                    @LastModifiedOn = @LastModifiedOn OUTPUT,
                                    @TargetWasEmpty = @BatchTargetWasEmpty,
                                    @RowsInserted = @BatchInserted OUTPUT,
                                    @RowsUpdated = @BatchUpdated OUTPUT,
                                    @RowsDeleted = @BatchDeleted OUTPUT,
                                    @RowsMoved = @BatchMoved OUTPUT;
                                SET @ScriptDone = 1;
                                SET @BatchRows = ISNULL(@BatchRows, 0);
                                SET @LastModifiedOn = ISNULL(@LastModifiedOn, @Position);
                                SET @TotalAfter = @Total + @BatchRows;
                                INSERT INTO {{ job('BlobDeltaRunStep') }}
                                    (RunId, TableName, StepNumber, StepName, BatchNumber, RowsProcessed, TotalRowsProcessed,
                                     RowsInserted, RowsUpdated, RowsDeleted, RowsMoved,
                                     WindowStart, WindowEnd, LastModifiedOn, BatchStartedAt, BatchCompletedAt, Status)
                                VALUES
                                    (@CurrentRunId, @CurrentTable, @StepNumber, @StepName, @BatchNumber, @BatchRows, @TotalAfter,
                                     @BatchInserted, @BatchUpdated, @BatchDeleted, @BatchMoved,
                                     @WindowStart, @WindowEnd, @LastModifiedOn, @Now, SYSUTCDATETIME(), N'Completed');
                                UPDATE w
                                SET RunLeaseExpiresAt = DATEADD(MINUTE, @LeaseMinutes, SYSUTCDATETIME())
                                FROM {{ job('BlobDeltaHighWatermark') }} AS w
                                WHERE w.TableName = @CurrentTable AND w.LeaseRunId = @CurrentRunId;
                                IF @@ROWCOUNT = 0
                                    THROW 50011, N'The lease on this table was taken over by another run; the batch was rolled back.', 1;
                                IF @BatchTargetWasEmpty = 0 AND @TargetWasEmpty = 1
                                    -- This batch ran again after a copied row came back (below). Others may follow:
                                    -- the rest of this load (and a resume) looks every row up.
                                    UPDATE s
                                    SET TargetWasEmpty = 0
                                    FROM {{ job('BlobDeltaRunStep') }} AS s
                                    WHERE s.RunId = @CurrentRunId AND s.TableName = @CurrentTable AND s.StepNumber = 0
                                      AND s.Status = N'Completed' AND s.TargetWasEmpty = 1;
                                COMMIT TRANSACTION;
                                SET @TargetWasEmpty = @BatchTargetWasEmpty;
                            END TRY
                            BEGIN CATCH
                                IF XACT_STATE() <> 0 ROLLBACK TRANSACTION;
                                SET @Error = ERROR_MESSAGE();
                                SET @ErrorNumber = ERROR_NUMBER();
                            END CATCH;
                            -- A first load's batch inserted a row the target already held (Msg 2627/2601): a row
                            -- this run copied whose ModifiedOn moved past the position since (a late write). Run the
                            -- batch again with every target lookup (a script that ignores the flag fails the same way).
                            IF @Error IS NOT NULL AND @BatchTargetWasEmpty = 1 AND @ScriptDone = 0 AND @ErrorNumber IN (2601, 2627)
                            BEGIN
                                IF @Debug >= 1
                                    RAISERROR(N'%s step %d %s batch %d: a copied row came back; the batch runs again with target lookups.',
                                              0, 1, @CurrentTable, @StepNumber, @StepName, @BatchNumber) WITH NOWAIT;
                                SET @BatchTargetWasEmpty = 0;
                                SET @Error = NULL;
                                SET @ErrorNumber = NULL;
                                SET @BatchRows = NULL;
                                SET @LastModifiedOn = NULL;
                                CONTINUE;
                            END;
                            -- A deadlock victim (Msg 1205): the batch was rolled back whole, and a batch can always
                            -- run again. A few times, then it fails as any other would and the table with it; a
                            -- resume runs it again.
                            IF @Error IS NOT NULL AND @ErrorNumber = 1205 AND @Deadlocks < {{ batch_retries }}
                            BEGIN
                                SET @Deadlocks += 1;
                                IF @Debug >= 1
                                    RAISERROR(N'%s step %d %s batch %d: chosen as a deadlock victim; the batch runs again (%d of {{ batch_retries }}).',
                                              0, 1, @CurrentTable, @StepNumber, @StepName, @BatchNumber, @Deadlocks) WITH NOWAIT;
                                WAITFOR DELAY '00:00:00.100';
                                SET @Error = NULL;
                                SET @ErrorNumber = NULL;
                                SET @BatchRows = NULL;
                                SET @LastModifiedOn = NULL;
                                CONTINUE;
                            END;
                            BREAK;
                        END;

                        IF @Error IS NOT NULL
                        BEGIN
                            -- The batch was rolled back; record it, give the table up and go to the next one.
                            -- Lock order, as in a batch's transaction: BlobDeltaRunStep, then the lease row. (A table's opening
                            -- transaction takes the lease row first and then, for a full sync, the target's rows; taking over an
                            -- expired lease while the old run's batch still works, the two can deadlock (1205): a batch chosen
                            -- runs again and finds its lease gone (50011), or the new run's table fails. Nothing is lost.)
                            SET @PendingError = N'step ' + CONVERT(nvarchar(6), @StepNumber) + N' ' + @StepName
                                + N', batch ' + CONVERT(nvarchar(11), @BatchNumber) + N': ' + @Error;
                            BEGIN TRANSACTION;
                            INSERT INTO {{ job('BlobDeltaRunStep') }}
                                (RunId, TableName, StepNumber, StepName, BatchNumber, RowsProcessed, TotalRowsProcessed,
                                 WindowStart, WindowEnd, BatchStartedAt, BatchCompletedAt, Status, ErrorMessage)
                            VALUES
                                (@CurrentRunId, @CurrentTable, @StepNumber, @StepName, @BatchNumber, 0, @Total,
                                 @WindowStart, @WindowEnd, @Now, SYSUTCDATETIME(), N'Failed', @Error);
                            UPDATE w
                            SET IsRunning = 0, RunLeaseExpiresAt = NULL, LeaseRunId = NULL
                            FROM {{ job('BlobDeltaHighWatermark') }} AS w
                            WHERE w.TableName = @CurrentTable AND w.LeaseRunId = @CurrentRunId;
                            COMMIT TRANSACTION;
                            INSERT INTO @Failures (Message)
                            VALUES (N'Table ''' + @CurrentTable + N''', step ' + CONVERT(nvarchar(6), @StepNumber) + N' ' + @StepName
                                    + N', batch ' + CONVERT(nvarchar(11), @BatchNumber) + N': ' + @Error);
                            SET @StepFailed = 1;
                            BREAK;
                        END;

                        SET @Position = @LastModifiedOn; -- committed with this batch's RunStep row

                        IF @Debug >= 1
                        BEGIN
                            SET @TotalAfterText = CONVERT(nvarchar(20), @TotalAfter); -- RAISERROR takes no bigint argument
                            RAISERROR(N'%s step %d %s batch %d: %d row(s), %s in all.', 0, 1,
                                      @CurrentTable, @StepNumber, @StepName, @BatchNumber, @BatchRows, @TotalAfterText) WITH NOWAIT;
                        END;
                        IF @BatchRows = 0 OR @StepName = N'QueuePopulation'
                            BREAK;
                    END;
                END;

                IF @StepFailed = 1
                    CONTINUE;

                ------------------------------------------------------------- table done
                -- Step 3 places a changed child only where its parent is; step 2a placed every parent the
                -- changed children needed when the run began. A folder moved since (while the run ran) leaves
                -- its changed children unplaced, and a window that moved on would lose them: the table fails
                -- instead, its watermark stays, and the next run (a new one: a resume keeps step 2a's view)
                -- places them.
                -- An error here (an object gone, a deadlock) goes to the table's CATCH: step 0, as on PostgreSQL.
                SET @Error = NULL;
                IF @ScriptSet = N'Hierarchical'
                BEGIN
                    SET @Rows = 0;
                    SET @SqlUnplaced = N'SELECT @Unplaced = COUNT_BIG(*) FROM ' + @QuotedMetadata + N' AS m'
                        + N' JOIN ' + @QuotedSource + N' AS s ON s.stream_id = m.' + @QuotedIdColumn
                        + N' WHERE m.' + @QuotedModifiedColumn + N' >= @WindowStart AND m.' + @QuotedModifiedColumn + N' < @WindowEnd'
                        + N' AND (@BusinessUnitId IS NULL OR m.' + @QuotedBusinessUnitColumn + N' = @BusinessUnitId)'
                        + N' AND EXISTS (SELECT 1 FROM ' + @QuotedBusinessUnit + N' AS bu WHERE bu.' + @QuotedBusinessUnitIdColumn
                        + N' = m.' + @QuotedBusinessUnitColumn + N')'
                        + N' AND s.parent_path_locator IS NOT NULL'
                        + N' AND NOT EXISTS (SELECT 1 FROM ' + @QuotedTarget + N' AS p WHERE p.path_locator = s.parent_path_locator)'
                        + N' AND (NOT EXISTS (SELECT 1 FROM ' + @QuotedTarget + N' AS t WHERE t.stream_id = s.stream_id)'
                        + N' OR NOT EXISTS (SELECT 1 FROM ' + @QuotedVersion + N' AS v WHERE v.TableName = @TableName'
                        + N' AND v.stream_id = s.stream_id AND v.ModifiedOn >= CONVERT(datetime2(7), SWITCHOFFSET(CONVERT(datetimeoffset(7), m.'
                        + @QuotedModifiedColumn + N'), ''+00:00''))))'
                        + N' OPTION (RECOMPILE);';
                    IF @SqlUnplaced IS NULL
                        THROW 50013, N'null values cannot be formatted as an SQL identifier', 1;
                    EXEC sys.sp_executesql
                        @SqlUnplaced,
                        N'@WindowStart datetime2(3), @WindowEnd datetime2(3), @BusinessUnitId uniqueidentifier, @TableName nvarchar(400), @Unplaced bigint OUTPUT',
                        @WindowStart = @WindowStart,
                        @WindowEnd = @WindowEnd,
                        @BusinessUnitId = @BusinessUnitId,
                        @TableName = @CurrentTable,
                        @Unplaced = @Rows OUTPUT;
                    IF @Rows > 0
                        SET @Error = CONVERT(nvarchar(20), @Rows) + N' changed blob(s) of the window could not be placed: their '
                            + N'folder is not where the source has it (it moved while this run ran, or the source has an '
                            + N'orphan). The watermark stays; a new run (not a resume) places them.';
                END;
                IF @Error IS NOT NULL
                BEGIN
                    SET @Now = SYSUTCDATETIME();
                    SET @PendingError = @Error;
                    BEGIN TRANSACTION;
                    INSERT INTO {{ job('BlobDeltaRunStep') }}
                        (RunId, TableName, StepNumber, StepName, BatchNumber, RowsProcessed, TotalRowsProcessed,
                         WindowStart, WindowEnd, BatchStartedAt, BatchCompletedAt, Status, ErrorMessage)
                    SELECT @CurrentRunId, @CurrentTable, 3, N'Children', ISNULL(MAX(s.BatchNumber), 0) + 1, 0, 0,
                           @WindowStart, @WindowEnd, @Now, @Now, N'Failed', @Error
                    FROM {{ job('BlobDeltaRunStep') }} AS s
                    WHERE s.RunId = @CurrentRunId AND s.TableName = @CurrentTable AND s.StepNumber = 3;
                    UPDATE w
                    SET IsRunning = 0, RunLeaseExpiresAt = NULL, LeaseRunId = NULL
                    FROM {{ job('BlobDeltaHighWatermark') }} AS w
                    WHERE w.TableName = @CurrentTable AND w.LeaseRunId = @CurrentRunId;
                    COMMIT TRANSACTION;
                    INSERT INTO @Failures (Message) VALUES ({{ failure_message() }});
                    CONTINUE;
                END;

                -- The watermark serves every business unit: a run limited to one leaves it (and
                -- IsInitialFullLoadDone) alone, or the next run would skip the other units' rows.
                UPDATE w
                SET LastHighWaterModifiedOn = CASE
                        WHEN @BusinessUnitId IS NOT NULL THEN w.LastHighWaterModifiedOn
                        WHEN w.LastHighWaterModifiedOn IS NULL OR w.LastHighWaterModifiedOn < @WindowEnd THEN @WindowEnd
                        ELSE w.LastHighWaterModifiedOn
                    END,
                    LastRunId = @CurrentRunId,
                    LastRunCompletedAt = SYSUTCDATETIME(),
                    IsInitialFullLoadDone = CASE
                        WHEN w.IsInitialFullLoadDone = 1 OR (@SyncType = N'Full' AND @BusinessUnitId IS NULL) THEN 1
                        ELSE 0
                    END,
                    IsRunning = 0,
                    RunLeaseExpiresAt = NULL,
                    LeaseRunId = NULL
                FROM {{ job('BlobDeltaHighWatermark') }} AS w
                WHERE w.TableName = @CurrentTable AND w.LeaseRunId = @CurrentRunId;
                IF @@ROWCOUNT = 0
                    INSERT INTO @Failures (Message)
                    VALUES (N'Table ''' + @CurrentTable + N''': the lease was taken over by another run before the watermark could move.');
            END TRY
            BEGIN CATCH
                IF XACT_STATE() <> 0 ROLLBACK TRANSACTION;
                -- A failure whose own recording failed keeps both messages.
                SET @Error = CASE WHEN @PendingError IS NULL THEN ERROR_MESSAGE()
                                  ELSE @PendingError + N' (recording this failure failed: ' + ERROR_MESSAGE() + N')' END;
                BEGIN TRY
                    SET @Now = SYSUTCDATETIME();
                    BEGIN TRANSACTION;
                    INSERT INTO {{ job('BlobDeltaRunStep') }}
                        (RunId, TableName, StepNumber, StepName, BatchNumber, WindowStart, WindowEnd,
                         BatchStartedAt, BatchCompletedAt, Status, ErrorMessage)
                    SELECT @CurrentRunId, @CurrentTable, 0, N'Window', ISNULL(MAX(s.BatchNumber), 0) + 1, @WindowStart, @WindowEnd,
                           @Now, @Now, N'Failed', @Error
                    FROM {{ job('BlobDeltaRunStep') }} AS s
                    WHERE s.RunId = @CurrentRunId AND s.TableName = @CurrentTable AND s.StepNumber = 0;
                    UPDATE w
                    SET IsRunning = 0, RunLeaseExpiresAt = NULL, LeaseRunId = NULL
                    FROM {{ job('BlobDeltaHighWatermark') }} AS w
                    WHERE w.TableName = @CurrentTable AND w.LeaseRunId = @CurrentRunId;
                    COMMIT TRANSACTION;
                END TRY
                BEGIN CATCH
                    -- Not even that could be recorded: the outermost CATCH gives back every lease the
                    -- run holds and marks it Failed, with this table's error (@Failures) and its own.
                    IF XACT_STATE() <> 0 ROLLBACK TRANSACTION;
                    INSERT INTO @Failures (Message) VALUES ({{ failure_message() }});
                    THROW;
                END CATCH;
                INSERT INTO @Failures (Message) VALUES ({{ failure_message() }});
            END CATCH;
        END;

        ----------------------------------------------------------------- finish
        IF @Execute = 0
        BEGIN
            SET @Plan = (
                SELECT
                    p.TableName AS [table],
                    CONVERT(char(23), p.WindowStart, 121) AS window_start,
                    CONVERT(char(23), p.WindowEnd, 121) AS window_end,
                    p.[Rows] AS [rows],
                    p.Error AS [error],
                    p.Skipped AS skipped,
                    JSON_QUERY(ISNULL((
                        SELECT s.StepNumber AS step, s.StepName AS name, s.RowsInserted AS inserted,
                               s.RowsUpdated AS updated, s.RowsDeleted AS deleted
                        FROM @PlanSteps AS s
                        WHERE s.Position = p.Position
                        ORDER BY s.StepNumber
                        FOR JSON PATH), N'[]')) AS steps
                FROM @PlanRows AS p
                ORDER BY p.Position
                FOR JSON PATH, INCLUDE_NULL_VALUES
            );
            SET @Plan = ISNULL(@Plan, N'[]');
            SET @Status = N'Planned';
            -- The same plan as a result set, for SSMS: a row per table and step.
            SELECT
                p.TableName AS [table],
                CONVERT(char(23), p.WindowStart, 121) AS window_start,
                CONVERT(char(23), p.WindowEnd, 121) AS window_end,
                p.[Rows] AS [rows],
                p.Error AS [error],
                p.Skipped AS skipped,
                s.StepNumber AS step,
                s.StepName AS step_name,
                s.RowsInserted AS inserted,
                s.RowsUpdated AS updated,
                s.RowsDeleted AS deleted
            FROM @PlanRows AS p
            LEFT JOIN @PlanSteps AS s ON s.Position = p.Position
            ORDER BY p.Position, s.StepNumber;
            RETURN;
        END;

        SET @RunStatus = CASE WHEN EXISTS (SELECT 1 FROM @Failures) THEN N'Failed' ELSE N'Succeeded' END;
        SET @Status = @RunStatus;
        SELECT @ErrorText = STRING_AGG(f.Message, NCHAR(10)) WITHIN GROUP (ORDER BY f.FailureId)
        FROM @Failures AS f;
        UPDATE r
        SET Status = @RunStatus,
            RunCompletedAt = SYSUTCDATETIME(),
            ErrorMessage = NULLIF(@ErrorText, N'')
        FROM {{ job('BlobDeltaRun') }} AS r
        WHERE r.RunId = @CurrentRunId;
        EXEC sys.sp_releaseapplock @Resource = @RunLockResource, @LockOwner = N'Session';
        SET @HoldsRunLock = 0;
    END TRY
    BEGIN CATCH
        IF XACT_STATE() <> 0 ROLLBACK TRANSACTION;
        IF @HoldsRunLock = 1
        BEGIN
            -- An error no table caught (a deadlock while recording a failure, say): in a new
            -- transaction, give back every lease the run holds and mark it Failed, so that nothing
            -- waits for the lease to expire and a resume finds it. Never on a run another session
            -- works (then this session does not hold its lock).
            SET @ErrorText = ERROR_MESSAGE();
            -- The header is written when a run ends: it gets the failures collected so far, then this error.
            SELECT @FailureText = STRING_AGG(f.Message, NCHAR(10)) WITHIN GROUP (ORDER BY f.FailureId)
            FROM @Failures AS f;
            BEGIN TRY
                BEGIN TRANSACTION;
                UPDATE w
                SET IsRunning = 0, RunLeaseExpiresAt = NULL, LeaseRunId = NULL
                FROM {{ job('BlobDeltaHighWatermark') }} AS w
                WHERE w.LeaseRunId = @CurrentRunId;
                UPDATE r
                SET Status = N'Failed', RunCompletedAt = SYSUTCDATETIME(),
                    ErrorMessage = CONCAT_WS(NCHAR(10), r.ErrorMessage, @FailureText, @ErrorText)
                FROM {{ job('BlobDeltaRun') }} AS r
                WHERE r.RunId = @CurrentRunId AND r.Status = N'Running';
                COMMIT TRANSACTION;
            END TRY
            BEGIN CATCH
                IF XACT_STATE() <> 0 ROLLBACK TRANSACTION;
            END CATCH;
            -- The run's session lock outlives any transaction: release it, or this session keeps the run.
            EXEC sys.sp_releaseapplock @Resource = @RunLockResource, @LockOwner = N'Session';
        END;
        THROW;
    END CATCH;
END;
