{%- from "common/header.sql" import header -%}
{%- from "mssql/errors.sql" import raise_collected -%}
{%- from "mssql/sync.sql" import lock_declarations, take_scope_lock -%}
CREATE OR ALTER PROCEDURE {{ job('usp_Sync_Promote') }}
    @SessionId uniqueidentifier = NULL,
    @LastPageNumber int = NULL,
    @Status nvarchar(20) = NULL OUTPUT,
    @RowsReceived bigint = NULL OUTPUT,
    @RowsInserted bigint = NULL OUTPUT,
    @RowsUpdated bigint = NULL OUTPUT,
    @RowsSkipped bigint = NULL OUTPUT,
    @RowsRejected bigint = NULL OUTPUT,
    @Replayed bit = NULL OUTPUT,
    @Help bit = 0,
    @Version nvarchar(20) = NULL OUTPUT,
    @VersionDate date = NULL OUTPUT
AS
{{ header('usp_Sync_Promote',
          'Promote a sync session (docs/sync.md): once every page from 1 to the last has arrived,
    validate the staged rows (required fields, types, lengths, lookups, the session''s scope;
    rejects keep their page, row and reason), resolve duplicates of the key within the session to
    the newest, apply the winners to the entity''s table with the newest-wins rule, remove the
    session''s staged rows and advance the scope''s sync point to the session''s start, all in one
    transaction. Refuses while a page is missing. A promote that fails leaves the table untouched
    and the session Failed and resumable (error 50014 names the cause). Promoting a Promoted
    session returns its counts (@Replayed = 1). Call it outside a transaction: it commits the
    Promoting status first, then the promotion (@@TRANCOUNT > 0 is refused).
    @RowsReceived = @RowsInserted + @RowsUpdated + @RowsSkipped + @RowsRejected.') }}
BEGIN
    SET NOCOUNT ON;
    SET XACT_ABORT ON;
    -- It commits its own transactions: a caller's implicit-transactions mode would nest them.
    SET IMPLICIT_TRANSACTIONS OFF;

    DECLARE @Errors TABLE (ErrorId int IDENTITY(1, 1) PRIMARY KEY, Message nvarchar(2000) NOT NULL);
    DECLARE @ErrorText nvarchar(max);
    DECLARE @HelpText nvarchar(max);
    DECLARE @Entity nvarchar(128);
    DECLARE @Scope nvarchar(300);
    DECLARE @SessionStatus nvarchar(20);
    DECLARE @SupersededBy uniqueidentifier;
    DECLARE @KnownLast int;
    DECLARE @SyncType nvarchar(20);
    DECLARE @StartedAt datetime2(7);
    {{ lock_declarations() }}
    DECLARE @Missing nvarchar(max);
    DECLARE @MissingCount int;
    DECLARE @PagesStaged bigint;
    DECLARE @PagesRejected bigint;
    DECLARE @Staged bigint;
    DECLARE @Inserted bigint;
    DECLARE @Updated bigint;
    DECLARE @Skipped bigint;
    DECLARE @Rejected bigint;
    DECLARE @Now datetime2(7);
    DECLARE @Promoting bit = 0;
    DECLARE @ErrorNumber int;
    DECLARE @SessionText nvarchar(36) = LOWER(CONVERT(nvarchar(36), @SessionId));

    BEGIN TRY
        SET @Version = N'{{ package_version }}';
        SET @VersionDate = CONVERT(date, '{{ version_date }}', 23);
        IF @Help = 1
        BEGIN
            SET @HelpText = N'usp_Sync_Promote: apply a sync session''s staged pages to the entity''s table.' + NCHAR(10)
                + N'  @SessionId       required; from usp_Sync_Begin' + NCHAR(10)
                + N'  @LastPageNumber  the last page''s number; required unless the page marked last was recorded' + NCHAR(10)
                + N'Returns @Status, @RowsReceived, @RowsInserted, @RowsUpdated, @RowsSkipped, @RowsRejected, @Replayed.';
            PRINT @HelpText;
            RETURN;
        END;
        SET @Status = NULL;
        SET @RowsReceived = NULL;
        SET @RowsInserted = NULL;
        SET @RowsUpdated = NULL;
        SET @RowsSkipped = NULL;
        SET @RowsRejected = NULL;
        SET @Replayed = NULL;

        ------------------------------------------------------------------- check parameters
        IF @@TRANCOUNT > 0
            INSERT INTO @Errors (Message)
            VALUES (N'usp_Sync_Promote commits its own transactions: call it outside a transaction (@@TRANCOUNT is '
                    + CONVERT(nvarchar(11), @@TRANCOUNT) + N').');
        IF @SessionId IS NULL
            INSERT INTO @Errors (Message) VALUES (N'@SessionId is required: the session usp_Sync_Begin opened.');
        IF @LastPageNumber < 1
            INSERT INTO @Errors (Message) VALUES (N'@LastPageNumber must be 1 or more, got ' + CONVERT(nvarchar(11), @LastPageNumber) + N'.');
    {{ raise_collected(50010) }}
        SELECT @Entity = s.[EntityName], @Scope = s.[Scope]
        FROM {{ job('SyncSession') }} AS s
        WHERE s.[SessionId] = @SessionId;
        IF @Entity IS NULL
        BEGIN
            SET @ErrorText = N'@SessionId ' + @SessionText + N' is not a sync session.';
            THROW 50010, @ErrorText, 1;
        END;
        {{ take_scope_lock() }}
        SELECT @SessionStatus = s.[Status], @SupersededBy = s.[SupersededBy], @KnownLast = s.[LastPageNumber],
               @SyncType = s.[SyncType], @StartedAt = s.[StartedAt],
               @RowsReceived = s.[RowsReceived], @RowsInserted = s.[RowsInserted], @RowsUpdated = s.[RowsUpdated],
               @RowsSkipped = s.[RowsSkipped], @RowsRejected = s.[RowsRejected]
        FROM {{ job('SyncSession') }} AS s
        WHERE s.[SessionId] = @SessionId;
        IF @SessionStatus = N'Promoted'
        BEGIN
            SET @Status = @SessionStatus;
            SET @Replayed = 1;
            RETURN;
        END;
        SET @RowsReceived = NULL;
        SET @RowsInserted = NULL;
        SET @RowsUpdated = NULL;
        SET @RowsSkipped = NULL;
        SET @RowsRejected = NULL;
        IF @SessionStatus = N'Superseded'
        BEGIN
            SET @ErrorText = N'Session ' + @SessionText + N' was superseded by session '
                + LOWER(CONVERT(nvarchar(36), @SupersededBy)) + N'; it cannot be promoted.';
            THROW 50010, @ErrorText, 1;
        END;

        ------------------------------------------------------------------- every page up to the last
        IF @KnownLast IS NOT NULL AND @LastPageNumber IS NOT NULL AND @KnownLast <> @LastPageNumber
        BEGIN
            SET @ErrorText = N'Session ' + @SessionText + N': @LastPageNumber is ' + CONVERT(nvarchar(11), @LastPageNumber)
                + N', but page ' + CONVERT(nvarchar(11), @KnownLast) + N' was received as the last page.';
            THROW 50010, @ErrorText, 1;
        END;
        SET @LastPageNumber = ISNULL(@KnownLast, @LastPageNumber);
        IF @LastPageNumber IS NULL
        BEGIN
            SET @ErrorText = N'Session ' + @SessionText + N': the last page is not known yet (no page was marked last); '
                + N'load it, or pass @LastPageNumber.';
            THROW 50010, @ErrorText, 1;
        END;
        IF EXISTS (SELECT 1 FROM {{ job('SyncSessionPage') }} AS p
                   WHERE p.[SessionId] = @SessionId AND p.[PageNumber] > @LastPageNumber)
        BEGIN
            SET @ErrorText = N'Session ' + @SessionText + N': pages after page ' + CONVERT(nvarchar(11), @LastPageNumber)
                + N' were received, so it is not the last page.';
            THROW 50010, @ErrorText, 1;
        END;
        -- Missing pages: every received page counted once (PageNumber is the key), so the count of
        -- pages 1..last that are missing is last minus the received ones; the first 20 are named.
        SELECT @MissingCount = @LastPageNumber - COUNT(*)
        FROM {{ job('SyncSessionPage') }} AS p
        WHERE p.[SessionId] = @SessionId AND p.[PageNumber] BETWEEN 1 AND @LastPageNumber;
        IF @MissingCount > 0
        BEGIN
            -- The first 20 missing pages: each run of missing pages starts at 1 or right after a
            -- received page and ends before the next received page (or at the last page).
            SELECT @Missing = STRING_AGG(CONVERT(nvarchar(max), m.[PageNumber]), N', ') WITHIN GROUP (ORDER BY m.[PageNumber])
            FROM (
                SELECT TOP (20) r.[RunStart] + d.[Offset] AS [PageNumber]
                FROM (
                    SELECT c.[PageNumber] AS [RunStart],
                           ISNULL((SELECT MIN(n.[PageNumber]) FROM {{ job('SyncSessionPage') }} AS n
                                   WHERE n.[SessionId] = @SessionId AND n.[PageNumber] > c.[PageNumber]),
                                  @LastPageNumber + 1) - 1 AS [RunEnd]
                    FROM (SELECT 1 AS [PageNumber]
                          UNION ALL
                          SELECT p.[PageNumber] + 1 FROM {{ job('SyncSessionPage') }} AS p
                          WHERE p.[SessionId] = @SessionId AND p.[PageNumber] < @LastPageNumber) AS c
                    WHERE NOT EXISTS (SELECT 1 FROM {{ job('SyncSessionPage') }} AS p
                                      WHERE p.[SessionId] = @SessionId AND p.[PageNumber] = c.[PageNumber])
                ) AS r
                CROSS JOIN (VALUES (0), (1), (2), (3), (4), (5), (6), (7), (8), (9), (10), (11), (12), (13), (14), (15),
                                   (16), (17), (18), (19)) AS d ([Offset])
                WHERE r.[RunStart] + d.[Offset] <= r.[RunEnd]
                ORDER BY r.[RunStart] + d.[Offset]
            ) AS m;
            SET @ErrorText = N'Session ' + @SessionText + N' cannot be promoted: ' + CONVERT(nvarchar(11), @MissingCount)
                + N' pages missing up to the last page ' + CONVERT(nvarchar(11), @LastPageNumber) + N': '
                + ISNULL(@Missing, N'?') + CASE WHEN @MissingCount > 20 THEN N', ...' ELSE N'' END
                + N'. Resume the session to load them.';
            THROW 50010, @ErrorText, 1;
        END;

        UPDATE s
        SET s.[Status] = N'Promoting', s.[LastPageNumber] = @LastPageNumber, s.[ErrorMessage] = NULL, s.[EndedAt] = NULL
        FROM {{ job('SyncSession') }} AS s
        WHERE s.[SessionId] = @SessionId;

        ------------------------------------------------------------------- promote, in one transaction
        BEGIN TRY
            SET @Promoting = 1;
            BEGIN TRANSACTION;
    {%- for e in sync_entities %}
            {{ "IF" if loop.first else "ELSE IF" }} @Entity = N'{{ e.entity }}'
                EXEC {{ job(e.sync_promote) }} @SessionId = @SessionId, @Scope = @Scope, @RowsStaged = @Staged OUTPUT,
                    @RowsInserted = @Inserted OUTPUT, @RowsUpdated = @Updated OUTPUT, @RowsSkipped = @Skipped OUTPUT,
                    @RowsRejected = @Rejected OUTPUT;
    {%- endfor %}
    {%- if sync_entities %}
            ELSE
    {%- endif %}
            BEGIN
                SET @ErrorText = N'Entity ' + @Entity + N' is not loaded by sync sessions.';
                THROW 50010, @ErrorText, 1;
            END;
            SELECT @RowsReceived = ISNULL(SUM(CONVERT(bigint, p.[RowsReceived])), 0),
                   @PagesStaged = ISNULL(SUM(CONVERT(bigint, p.[RowsStaged])), 0),
                   @PagesRejected = ISNULL(SUM(CONVERT(bigint, p.[RowsRejected])), 0)
            FROM {{ job('SyncSessionPage') }} AS p
            WHERE p.[SessionId] = @SessionId;
            IF @PagesStaged <> @Staged
            BEGIN
                SET @ErrorText = N'Session ' + @SessionText + N': its pages recorded ' + CONVERT(nvarchar(20), @PagesStaged)
                    + N' staged rows, but ' + CONVERT(nvarchar(20), @Staged) + N' are in staging; load the pages again (start a new session).';
                THROW 50015, @ErrorText, 1;
            END;
            SET @Now = SYSUTCDATETIME();
            SET @RowsInserted = @Inserted;
            SET @RowsUpdated = @Updated;
            SET @RowsSkipped = @Skipped;
            SET @RowsRejected = @Rejected + @PagesRejected;
            UPDATE s
            SET s.[Status] = N'Promoted', s.[RowsReceived] = @RowsReceived, s.[RowsInserted] = @RowsInserted,
                s.[RowsUpdated] = @RowsUpdated, s.[RowsSkipped] = @RowsSkipped, s.[RowsRejected] = @RowsRejected,
                s.[EndedAt] = @Now
            FROM {{ job('SyncSession') }} AS s
            WHERE s.[SessionId] = @SessionId;
            -- The scope's lock is held, so no other session writes its state row meanwhile.
            UPDATE st
            SET st.[LastSyncPoint] = @StartedAt, st.[LastSessionId] = @SessionId,
                st.[IsInitialFullSyncDone] = CASE WHEN @SyncType = N'Full' THEN 1 ELSE st.[IsInitialFullSyncDone] END,
                st.[UpdatedAt] = @Now
            FROM {{ job('SyncScopeState') }} AS st
            WHERE st.[EntityName] = @Entity AND st.[Scope] = @Scope;
            IF @@ROWCOUNT = 0
                INSERT INTO {{ job('SyncScopeState') }} ([EntityName], [Scope], [LastSyncPoint], [LastSessionId],
                                                         [IsInitialFullSyncDone], [UpdatedAt])
                VALUES (@Entity, @Scope, @StartedAt, @SessionId, CASE WHEN @SyncType = N'Full' THEN 1 ELSE 0 END, @Now);
            COMMIT TRANSACTION;
            SET @Status = N'Promoted';
            SET @Replayed = 0;
        END TRY
        BEGIN CATCH
            IF @@TRANCOUNT > 0
                ROLLBACK TRANSACTION;
            SET @ErrorText = ERROR_MESSAGE();
            SET @ErrorNumber = ERROR_NUMBER();
            UPDATE s
            SET s.[Status] = N'Failed', s.[ErrorMessage] = @ErrorText, s.[EndedAt] = SYSUTCDATETIME()
            FROM {{ job('SyncSession') }} AS s
            WHERE s.[SessionId] = @SessionId;
            -- A deadlock victim or a lock timeout is raised as it is, so the caller's retry policy sees a
            -- transient error and promotes again (a Failed session can be promoted).
            IF @ErrorNumber IN (1205, 1222)
                THROW;
            SET @ErrorText = N'Promote of session ' + @SessionText + N' failed: ' + LEFT(@ErrorText, 1500)
                + N'. The table is unchanged; the session is Failed and can be promoted again (dbtools sync resumes it).';
            SET @ErrorText = REPLACE(@ErrorText, N'%', N'%%');
            THROW 50014, @ErrorText, 1;
        END CATCH;
    END TRY
    BEGIN CATCH
        -- The promotion's own CATCH (above) rolled back and recorded a failure; nothing is open here.
        IF @@TRANCOUNT > 0 AND @Promoting = 1
            ROLLBACK TRANSACTION;
        THROW;
    END CATCH;
END;
