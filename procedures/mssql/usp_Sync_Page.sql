{%- from "common/header.sql" import header -%}
{%- from "mssql/errors.sql" import raise_collected -%}
{%- from "mssql/sync.sql" import lock_declarations, take_scope_lock -%}
CREATE OR ALTER PROCEDURE {{ job('usp_Sync_Page') }}
    @SessionId uniqueidentifier = NULL,
    @PageNumber int = NULL,
    @LoadId uniqueidentifier = NULL,
    @RowsReceived int = NULL,
    @IsLastPage bit = 0,
    @PagesReceived int = NULL OUTPUT,
    @LastPageNumber int = NULL OUTPUT,
    @Help bit = 0,
    @Version nvarchar(20) = NULL OUTPUT,
    @VersionDate date = NULL OUTPUT
AS
{{ header('usp_Sync_Page',
          'Record one page of an Open sync session (docs/sync.md). The caller has staged the page''s
    rows in the entity''s staging table under BatchId = @LoadId, SessionId and PageNumber (rows
    numbered from 1 within the page), and filed the rows it could not stage in the reject table
    the same way. This procedure removes what earlier loads of the same page left (so a page loaded
    again replaces itself and never duplicates rows), checks that staged plus rejected rows equal
    @RowsReceived, and records the page. Call it in the transaction that staged the rows (it runs
    in the caller''s transaction when there is one, else in its own).') }}
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
    DECLARE @Entity nvarchar(128);
    DECLARE @Scope nvarchar(300);
    DECLARE @Status nvarchar(20);
    DECLARE @SupersededBy uniqueidentifier;
    DECLARE @KnownLast int;
    {{ lock_declarations() }}
    DECLARE @Staged bigint = 0;
    DECLARE @Misplaced bigint = 0;
    DECLARE @Rejected bigint = 0;
    DECLARE @MaxPage int;
    DECLARE @Now datetime2(7) = SYSUTCDATETIME();
    DECLARE @SessionText nvarchar(36) = LOWER(CONVERT(nvarchar(36), @SessionId));

    BEGIN TRY
        SET @Version = N'{{ package_version }}';
        SET @VersionDate = CONVERT(date, '{{ version_date }}', 23);
        IF @Help = 1
        BEGIN
            SET @HelpText = N'usp_Sync_Page: record one staged page of an Open sync session.' + NCHAR(10)
                + N'  @SessionId     required; from usp_Sync_Begin' + NCHAR(10)
                + N'  @PageNumber    required; 1, 2, ...' + NCHAR(10)
                + N'  @LoadId        required; the BatchId the page''s rows were staged and rejected under' + NCHAR(10)
                + N'  @RowsReceived  required; rows the source sent in the page' + NCHAR(10)
                + N'  @IsLastPage    1 for the last page' + NCHAR(10)
                + N'Returns @PagesReceived and @LastPageNumber (NULL until the last page arrived).';
            PRINT @HelpText;
            RETURN;
        END;
        SET @PagesReceived = NULL;
        SET @LastPageNumber = NULL;

        ------------------------------------------------------------------- check parameters
        IF @SessionId IS NULL
            INSERT INTO @Errors (Message) VALUES (N'@SessionId is required: the session usp_Sync_Begin opened.');
        IF @PageNumber IS NULL OR @PageNumber < 1
            INSERT INTO @Errors (Message)
            VALUES (N'@PageNumber must be 1 or more, got ' + ISNULL(CONVERT(nvarchar(11), @PageNumber), N'NULL') + N'.');
        IF @LoadId IS NULL
            INSERT INTO @Errors (Message) VALUES (N'@LoadId is required: the BatchId the page''s rows were staged under.');
        IF @RowsReceived IS NULL OR @RowsReceived < 0
            INSERT INTO @Errors (Message)
            VALUES (N'@RowsReceived must be 0 or more, got ' + ISNULL(CONVERT(nvarchar(11), @RowsReceived), N'NULL') + N'.');
        IF @IsLastPage IS NULL
            INSERT INTO @Errors (Message) VALUES (N'@IsLastPage must be 0 or 1.');
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

        IF @@TRANCOUNT = 0
        BEGIN
            BEGIN TRANSACTION;
            SET @StartedTransaction = 1;
        END;
        -- Read again under the lock: a Begin that superseded it may have committed meanwhile.
        SELECT @Status = s.[Status], @SupersededBy = s.[SupersededBy], @KnownLast = s.[LastPageNumber]
        FROM {{ job('SyncSession') }} AS s WITH (UPDLOCK)
        WHERE s.[SessionId] = @SessionId;
        IF @Status <> N'Open'
        BEGIN
            SET @ErrorText = N'Session ' + @SessionText + N' is ' + @Status + N', not Open: it takes no more pages'
                + CASE @Status WHEN N'Superseded' THEN N' (superseded by ' + LOWER(CONVERT(nvarchar(36), @SupersededBy)) + N')'
                               WHEN N'Promoted' THEN N''
                               ELSE N'; resume it with usp_Sync_Begin @Resume = 1' END + N'.';
            THROW 50010, @ErrorText, 1;
        END;
        IF @KnownLast IS NOT NULL AND @PageNumber > @KnownLast
        BEGIN
            SET @ErrorText = N'Session ' + @SessionText + N': page ' + CONVERT(nvarchar(11), @PageNumber)
                + N' comes after the last page, ' + CONVERT(nvarchar(11), @KnownLast) + N'.';
            THROW 50010, @ErrorText, 1;
        END;
        SELECT @MaxPage = MAX(p.[PageNumber]) FROM {{ job('SyncSessionPage') }} AS p WHERE p.[SessionId] = @SessionId;
        IF @IsLastPage = 1 AND @MaxPage > @PageNumber
        BEGIN
            SET @ErrorText = N'Session ' + @SessionText + N': page ' + CONVERT(nvarchar(11), @PageNumber)
                + N' cannot be the last page, page ' + CONVERT(nvarchar(11), @MaxPage) + N' was received.';
            THROW 50010, @ErrorText, 1;
        END;

        ------------------------------------------------------------------- replace earlier loads of the page
{%- for e in sync_entities %}
        {{ "IF" if loop.first else "ELSE IF" }} @Entity = N'{{ e.entity }}'
        BEGIN
            DELETE st
            FROM {{ e.table_object(engine_info, e.staging) }} AS st
            WHERE st.[SessionId] = @SessionId AND st.[PageNumber] = @PageNumber AND st.[BatchId] <> @LoadId;
            DELETE r
            FROM {{ e.table_object(engine_info, e.rejects) }} AS r
            WHERE r.[SessionId] = @SessionId AND r.[PageNumber] = @PageNumber AND r.[BatchId] <> @LoadId;
            SELECT @Staged = COUNT_BIG(*),
                   @Misplaced = COUNT_BIG(CASE WHEN st.[SessionId] = @SessionId AND st.[PageNumber] = @PageNumber THEN NULL ELSE 1 END)
            FROM {{ e.table_object(engine_info, e.staging) }} AS st
            WHERE st.[BatchId] = @LoadId;
            SELECT @Rejected = COUNT_BIG(*)
            FROM {{ e.table_object(engine_info, e.rejects) }} AS r
            WHERE r.[BatchId] = @LoadId AND r.[SessionId] = @SessionId AND r.[PageNumber] = @PageNumber;
        END;
{%- endfor %}
        IF @Misplaced > 0 OR @Staged + @Rejected <> @RowsReceived
        BEGIN
            SET @ErrorText = N'Session ' + @SessionText + N' page ' + CONVERT(nvarchar(11), @PageNumber)
                + N': @RowsReceived is ' + CONVERT(nvarchar(11), @RowsReceived) + N', but load '
                + LOWER(CONVERT(nvarchar(36), @LoadId)) + N' staged ' + CONVERT(nvarchar(20), @Staged) + N' rows ('
                + CONVERT(nvarchar(20), @Misplaced) + N' of them under another session or page) and filed '
                + CONVERT(nvarchar(20), @Rejected) + N' rejects; load the page again.';
            THROW 50010, @ErrorText, 1;
        END;

        ------------------------------------------------------------------- record the page
        UPDATE p
        SET p.[LoadId] = @LoadId, p.[RowsReceived] = @RowsReceived, p.[RowsStaged] = @Staged,
            p.[RowsRejected] = @Rejected, p.[IsLastPage] = @IsLastPage, p.[ReceivedAt] = @Now
        FROM {{ job('SyncSessionPage') }} AS p
        WHERE p.[SessionId] = @SessionId AND p.[PageNumber] = @PageNumber;
        IF @@ROWCOUNT = 0
            INSERT INTO {{ job('SyncSessionPage') }} ([SessionId], [PageNumber], [LoadId], [RowsReceived], [RowsStaged],
                                                      [RowsRejected], [IsLastPage], [ReceivedAt])
            VALUES (@SessionId, @PageNumber, @LoadId, @RowsReceived, @Staged, @Rejected, @IsLastPage, @Now);
        UPDATE s
        SET s.[PagesReceived] = agg.[Pages], s.[RowsReceived] = agg.[Received], s.[LastPageNumber] = agg.[LastPage],
            s.[LastPageAt] = @Now
        FROM {{ job('SyncSession') }} AS s
        CROSS JOIN (SELECT COUNT(*) AS [Pages], ISNULL(SUM(CONVERT(bigint, p.[RowsReceived])), 0) AS [Received],
                           MAX(CASE WHEN p.[IsLastPage] = 1 THEN p.[PageNumber] END) AS [LastPage]
                    FROM {{ job('SyncSessionPage') }} AS p WHERE p.[SessionId] = @SessionId) AS agg
        WHERE s.[SessionId] = @SessionId;
        SELECT @PagesReceived = s.[PagesReceived], @LastPageNumber = s.[LastPageNumber]
        FROM {{ job('SyncSession') }} AS s
        WHERE s.[SessionId] = @SessionId;
        IF @StartedTransaction = 1
            COMMIT TRANSACTION;
    END TRY
    BEGIN CATCH
        IF @StartedTransaction = 1 AND @@TRANCOUNT > 0
            ROLLBACK TRANSACTION;
        THROW;
    END CATCH;
END;
