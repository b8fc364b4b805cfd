{%- from "common/header.sql" import header -%}
{%- from "mssql/errors.sql" import raise_collected -%}
{%- from "mssql/uuid7.sql" import new_uuid7 -%}
{%- from "mssql/sync.sql" import lock_declarations, take_scope_lock -%}
CREATE OR ALTER PROCEDURE {{ job('usp_Sync_Begin') }}
    @Entity nvarchar(128) = NULL,
    @Scope nvarchar(4000) = NULL OUTPUT,
    @SyncType nvarchar(20) = NULL OUTPUT,
    @Resume bit = 0,
    @AsOf datetime2(7) = NULL,
    @SessionId uniqueidentifier = NULL OUTPUT,
    @SinceDate datetime2(7) = NULL OUTPUT,
    @FirstPageNumber int = NULL OUTPUT,
    @LastPageNumber int = NULL OUTPUT,
    @Resumed bit = NULL OUTPUT,
    @Help bit = 0,
    @Version nvarchar(20) = NULL OUTPUT,
    @VersionDate date = NULL OUTPUT
AS
{{ header('usp_Sync_Begin',
          'Open a paged sync session for one scope of an entity (docs/sync.md). Takes the scope''s
    session-owned application lock, held until the session (connection) ends: a second sync of the
    scope is refused (error 50013) with the holder''s SessionId. Full when @SyncType = Full, or when
    the scope never completed a full sync: clears the staged rows of the scope''s sessions (only that
    scope''s) and sets @SinceDate = now - the entity''s full_since_months months - full_since_days
    days. Incremental: @SinceDate = the scope''s last sync point - buffer_seconds. The scope''s live
    session (Open, Promoting or Failed) is superseded and its staged rows removed, unless
    @Resume = 1 asks to continue it: then its @SessionId and @SinceDate come back with
    @FirstPageNumber, the first page it has not received. @AsOf replaces the clock (tests, replays).
    Runs in the caller''s transaction when there is one, else in its own.') }}
BEGIN
    SET NOCOUNT ON;
    SET XACT_ABORT ON;
    -- A caller in implicit-transactions mode (pyodbc with autocommit off) would otherwise turn the
    -- BEGIN TRANSACTION below into a second level (Msg 266 at the end). Restored on return; a
    -- transaction the caller already has open is joined, not ended.
    SET IMPLICIT_TRANSACTIONS OFF;

    DECLARE @Errors TABLE (ErrorId int IDENTITY(1, 1) PRIMARY KEY, Message nvarchar(2000) NOT NULL);
    DECLARE @ErrorText nvarchar(max);
    DECLARE @HelpText nvarchar(max);
    DECLARE @StartedTransaction bit = 0;
    DECLARE @GivenEntity nvarchar(128) = @Entity;
    DECLARE @Now datetime2(7) = ISNULL(@AsOf, SYSUTCDATETIME());
    {{ lock_declarations() }}
    DECLARE @FullDone bit;
    DECLARE @LastSyncPoint datetime2(7);
    DECLARE @Live uniqueidentifier;
    DECLARE @LiveType nvarchar(20);
    DECLARE @LiveSince datetime2(7);
    DECLARE @LiveLast int;
    DECLARE @NewSession uniqueidentifier;
    DECLARE @Uuid7Random binary(10);
    DECLARE @Uuid7Ms bigint;

    BEGIN TRY
        SET @Version = N'{{ package_version }}';
        SET @VersionDate = CONVERT(date, '{{ version_date }}', 23);
        IF @Help = 1
        BEGIN
            SET @HelpText = N'usp_Sync_Begin: open (or resume) a paged sync session for one scope of an entity.' + NCHAR(10)
                + N'  @Entity     required; one of: {{ sync_entities | map(attribute="entity") | join(", ") }}' + NCHAR(10)
                + N'  @Scope      required (OUTPUT: canonical); the value of the entity''s scope column' + NCHAR(10)
                + N'  @SyncType   NULL (Full until the scope completed one, then Incremental), Full or Incremental; OUTPUT: the type used' + NCHAR(10)
                + N'  @Resume     1: continue the scope''s live session instead of superseding it' + NCHAR(10)
                + N'  @AsOf       the clock (UTC) to use instead of now' + NCHAR(10)
                + N'Returns @SessionId, @SinceDate, @FirstPageNumber, @LastPageNumber (resumed: once its last page arrived), @Resumed.';
            PRINT @HelpText;
            RETURN;
        END;
        SET @SessionId = NULL;
        SET @SinceDate = NULL;
        SET @FirstPageNumber = NULL;
        SET @LastPageNumber = NULL;
        SET @Resumed = NULL;

        ------------------------------------------------------------------- check parameters
        SET @Entity = NULL;
{%- if sync_entities %}
        SELECT @Entity = x.[Entity]
        FROM (VALUES {% for e in sync_entities %}(N'{{ e.entity }}'){{ ", " if not loop.last }}{% endfor %}) AS x ([Entity])
        WHERE x.[Entity] = @GivenEntity COLLATE Latin1_General_100_CI_AS;
{%- endif %}
        IF @Entity IS NULL
            INSERT INTO @Errors (Message)
            VALUES (N'@Entity ' + ISNULL(N'''' + @GivenEntity + N'''', N'NULL')
                    + N' is not an entity loaded by sync sessions; allowed values: {{ sync_entities | map(attribute="entity") | join(", ") or "(none)" }}.');
        IF @Scope IS NULL OR LTRIM(RTRIM(@Scope)) = N''
            INSERT INTO @Errors (Message)
            VALUES (N'@Scope is required: the value of the entity''s scope column (for example a service provider id).');
        ELSE IF DATALENGTH(@Scope) > 600
            INSERT INTO @Errors (Message) VALUES (N'@Scope is longer than 300 characters.');
{%- for e in sync_entities if e.column(e.sync.scope).type in ('int', 'bigint') %}
        ELSE IF @Entity = N'{{ e.entity }}'
        BEGIN
            -- The scope column is an integer: the scope is its decimal text, canonical ('7', never '07').
            -- A digit is required: SQL Server converts '-' and '+' to 0 (PostgreSQL refuses them).
            IF TRY_CONVERT({{ e.column(e.sync.scope).type }}, @Scope) IS NULL OR @Scope COLLATE Latin1_General_100_BIN2 NOT LIKE N'%[0-9]%'
                INSERT INTO @Errors (Message)
                VALUES (N'@Scope ''' + LEFT(@Scope, 100) + N''' is not a valid {{ e.sync.scope }} ({{ e.column(e.sync.scope).type }}).');
            ELSE
                SET @Scope = CONVERT(nvarchar(300), TRY_CONVERT({{ e.column(e.sync.scope).type }}, @Scope));
        END;
{%- endfor %}
{%- for e in sync_entities if e.column(e.sync.scope).type == 'string' %}
        ELSE IF @Entity = N'{{ e.entity }}' AND DATALENGTH(@Scope) <> DATALENGTH(LTRIM(RTRIM(@Scope)))
            -- SQL Server's = ignores trailing spaces; PostgreSQL's does not: neither may hold any.
            INSERT INTO @Errors (Message) VALUES (N'@Scope must not begin or end with spaces.');
{%- endfor %}
        IF @SyncType IS NOT NULL AND @SyncType NOT IN (N'Full', N'Incremental')
            INSERT INTO @Errors (Message)
            VALUES (N'@SyncType ''' + @SyncType + N''' is not valid; allowed values: Full, Incremental, or NULL (Full until the scope completed one).');
        IF @Resume IS NULL
            INSERT INTO @Errors (Message) VALUES (N'@Resume must be 0 or 1.');
{{ raise_collected(50010) }}

        ------------------------------------------------------------------- the scope's lock
        {{ take_scope_lock() }}

        IF @@TRANCOUNT = 0
        BEGIN
            BEGIN TRANSACTION;
            SET @StartedTransaction = 1;
        END;
        SELECT @FullDone = st.[IsInitialFullSyncDone], @LastSyncPoint = st.[LastSyncPoint]
        FROM {{ job('SyncScopeState') }} AS st
        WHERE st.[EntityName] = @Entity AND st.[Scope] = @Scope;
        SELECT @Live = s.[SessionId], @LiveType = s.[SyncType], @LiveSince = s.[SinceDate], @LiveLast = s.[LastPageNumber]
        FROM {{ job('SyncSession') }} AS s WITH (UPDLOCK)
        WHERE s.[EntityName] = @Entity AND s.[Scope] = @Scope AND s.[Status] IN (N'Open', N'Promoting', N'Failed');

        ------------------------------------------------------------------- resume
        IF @Resume = 1 AND @Live IS NOT NULL AND (@SyncType IS NULL OR @SyncType = @LiveType)
        BEGIN
            UPDATE s SET s.[Status] = N'Open', s.[EndedAt] = NULL
            FROM {{ job('SyncSession') }} AS s
            WHERE s.[SessionId] = @Live;
            -- The first page not received: 1, or the page after a received one, that is missing.
            SELECT @FirstPageNumber = MIN(c.[PageNumber])
            FROM (SELECT 1 AS [PageNumber]
                  UNION ALL
                  SELECT p.[PageNumber] + 1 FROM {{ job('SyncSessionPage') }} AS p WHERE p.[SessionId] = @Live) AS c
            WHERE NOT EXISTS (SELECT 1 FROM {{ job('SyncSessionPage') }} AS p
                              WHERE p.[SessionId] = @Live AND p.[PageNumber] = c.[PageNumber]);
            SET @SessionId = @Live;
            SET @SinceDate = @LiveSince;
            SET @SyncType = @LiveType;
            SET @LastPageNumber = @LiveLast;
            SET @Resumed = 1;
        END
        ELSE
        BEGIN
            ------------------------------------------------------------------- a new session
            IF @SyncType IS NULL OR ISNULL(@FullDone, 0) = 0
                SET @SyncType = CASE WHEN ISNULL(@FullDone, 0) = 1 THEN N'Incremental' ELSE N'Full' END;
            {{ new_uuid7('@NewSession') | indent(4) }}
{%- for e in sync_entities %}
            {{ "IF" if loop.first else "ELSE IF" }} @Entity = N'{{ e.entity }}'
            BEGIN
                SET @SinceDate = CASE WHEN @SyncType = N'Full'
                                      THEN DATEADD(DAY, -{{ e.sync.full_since_days }}, DATEADD(MONTH, -{{ e.sync.full_since_months }}, @Now))
                                      ELSE DATEADD(SECOND, -{{ e.sync.buffer_seconds }}, @LastSyncPoint) END;
                -- The scope's staging: what its earlier sessions staged (a full sync starts from nothing;
                -- an incremental one never promotes what a superseded session left).
                DELETE st
                FROM {{ e.table_object(engine_info, e.staging) }} AS st
                WHERE st.[SessionId] IN (SELECT s.[SessionId] FROM {{ job('SyncSession') }} AS s
                                         WHERE s.[EntityName] = @Entity AND s.[Scope] = @Scope);
            END;
{%- endfor %}
            UPDATE s
            SET s.[Status] = N'Superseded', s.[SupersededBy] = @NewSession, s.[EndedAt] = @Now
            FROM {{ job('SyncSession') }} AS s
            WHERE s.[EntityName] = @Entity AND s.[Scope] = @Scope AND s.[Status] IN (N'Open', N'Promoting', N'Failed');
            INSERT INTO {{ job('SyncSession') }} ([SessionId], [EntityName], [Scope], [SyncType], [SinceDate], [Status], [StartedAt])
            VALUES (@NewSession, @Entity, @Scope, @SyncType, @SinceDate, N'Open', @Now);
            SET @SessionId = @NewSession;
            SET @FirstPageNumber = 1;
            SET @LastPageNumber = NULL;
            SET @Resumed = 0;
        END;
        IF @StartedTransaction = 1
            COMMIT TRANSACTION;
    END TRY
    BEGIN CATCH
        IF @StartedTransaction = 1 AND @@TRANCOUNT > 0
            ROLLBACK TRANSACTION;
        THROW;
    END CATCH;
END;
