{%- from "common/header.sql" import header -%}
{%- from "mssql/entity/macros.sql" import reject_reason, column_list, key_list, key_match, as_target, winners_table with context -%}
{%- set scope = e.column(e.sync.scope) -%}
CREATE OR ALTER PROCEDURE {{ job(e.sync_promote) }}
    @SessionId uniqueidentifier,
    @Scope nvarchar(300),
    @RowsStaged bigint = NULL OUTPUT,
    @RowsInserted bigint = NULL OUTPUT,
    @RowsUpdated bigint = NULL OUTPUT,
    @RowsSkipped bigint = NULL OUTPUT,
    @RowsRejected bigint = NULL OUTPUT
AS
{{ header(e.sync_promote,
          'Apply the ' ~ e.entity ~ ' rows a sync session staged in ' ~ e.staging ~ ' (rendered from
    ' ~ e.source ~ '); called by usp_Sync_Promote inside its transaction, never on its own. A row is
    rejected (kept in ' ~ e.rejects ~ ' with its page, row and reason) when the upsert paths would
    reject it, or when its ' ~ e.sync.scope ~ ' is not the session''s scope. Among the valid rows of one
    ' ~ e.keys | join(', ') ~ ' the newest ' ~ e.ordering ~ ' wins (ties: the later page, then the later
    row); a winner is inserted when new, applied when newer than the stored row, skipped otherwise.
    The session''s staged rows are removed.', origin) }}
BEGIN
    SET NOCOUNT ON;
    SET XACT_ABORT ON;

    BEGIN TRY
        IF @@TRANCOUNT = 0
            THROW 50010, N'{{ e.sync_promote }} runs inside the transaction of usp_Sync_Promote; call usp_Sync_Promote.', 1;

        SELECT @RowsStaged = COUNT_BIG(*)
        FROM {{ tbl(e.staging) }} AS s
        WHERE s.[SessionId] = @SessionId;

        -- Rejected rows, with the first reason each fails for, and their page and row.
        INSERT INTO {{ tbl(e.rejects) }} ([BatchId], [RowNumber], [Reason], {{ column_list(e) }}, [SessionId], [PageNumber])
        SELECT c.[BatchId], c.[RowNumber], c.[Reason], {{ column_list(e, 'c') }}, @SessionId, c.[PageNumber]
        FROM (
            SELECT s.[BatchId], s.[PageNumber], s.[RowNumber], {{ column_list(e, 's') }},
                -- ISNULL takes the first argument's type, nvarchar(longest reason above): widen it
                -- to the Reason column's nvarchar(400), or a longer scope reason would be cut.
                ISNULL(CONVERT(nvarchar(400), {{ reject_reason(e, 's') | indent(4) }}),
                       CASE WHEN {% if scope.type == 'string' %}DATALENGTH(s.{{ q(scope.name) }}) <> DATALENGTH(@Scope) OR s.{{ q(scope.name) }} COLLATE Latin1_General_100_BIN2 <> @Scope{% else %}CONVERT(nvarchar(300), s.{{ q(scope.name) }}) <> @Scope{% endif %}
                            THEN N'{{ scope.name }} is not the session''s scope' END) AS [Reason]
            FROM {{ tbl(e.staging) }} AS s
            WHERE s.[SessionId] = @SessionId
        ) AS c
        WHERE c.[Reason] IS NOT NULL
        ORDER BY c.[PageNumber], c.[RowNumber];
        SET @RowsRejected = ROWCOUNT_BIG();

        -- The newest valid row of each key (ties: the later page, then the later row).
        {{ winners_table(e) }}
        INSERT INTO #dbtools_UpsertWinners ({{ column_list(e) }}, [RowNumber], [ExpectedRowVersion])
        SELECT {% for c in e.columns %}{{ as_target(c, 'r.' ~ q(c.name)) }}{{ ", " if not loop.last }}{% endfor %}, r.[RowNumber], NULL
        FROM (
            SELECT s.[RowNumber], {{ column_list(e, 's') }},
                ROW_NUMBER() OVER (PARTITION BY {% for c in e.key_columns %}{{ as_target(c, 's.' ~ q(c.name)) }}{{ ", " if not loop.last }}{% endfor %}
                                   ORDER BY s.{{ q(e.ordering) }} DESC, s.[PageNumber] DESC, s.[RowNumber] DESC) AS [dbtools_Rank]
            FROM {{ tbl(e.staging) }} AS s
            WHERE s.[SessionId] = @SessionId
              AND ({{ reject_reason(e, 's') | indent(4) }}) IS NULL
              AND {% if scope.type == 'string' %}DATALENGTH(s.{{ q(scope.name) }}) = DATALENGTH(@Scope) AND s.{{ q(scope.name) }} COLLATE Latin1_General_100_BIN2 = @Scope{% else %}CONVERT(nvarchar(300), s.{{ q(scope.name) }}) = @Scope{% endif %}
        ) AS r
        WHERE r.[dbtools_Rank] = 1;

        -- Classify each winner against the stored row, read with update locks held to commit
        -- (SERIALIZABLE also locks the gap where an absent key would go); seeks in key order.
        UPDATE w
        SET w.[dbtools_Outcome] = CASE
                WHEN t.{{ q(e.keys[0]) }} IS NULL THEN N'Inserted'
                WHEN t.{{ q(e.ordering) }} < w.{{ q(e.ordering) }} THEN N'Updated'
                ELSE N'Skipped'
            END
        FROM #dbtools_UpsertWinners AS w
        LEFT OUTER JOIN {{ tbl(e.table) }} AS t WITH (UPDLOCK, SERIALIZABLE, FORCESEEK)
            ON {{ key_match(e, 't', 'w') }}
        OPTION (MAXDOP 1);

        -- Newer rows; the predicate is checked again, so nothing older ever overwrites newer.
        UPDATE t
        SET
    {%- for c in e.columns if c.name not in e.keys %}
            {{ q(c.name) }} = w.{{ q(c.name) }}{{ "," if not loop.last }}
    {%- endfor %}
        FROM {{ tbl(e.table) }} AS t WITH (UPDLOCK, SERIALIZABLE, FORCESEEK)
        INNER JOIN #dbtools_UpsertWinners AS w ON {{ key_match(e, 'w', 't') }}
        WHERE w.[dbtools_Outcome] = N'Updated'
          AND t.{{ q(e.ordering) }} < w.{{ q(e.ordering) }}
        OPTION (MAXDOP 1);
        SET @RowsUpdated = ROWCOUNT_BIG();

        -- New keys, in key order; their gaps are locked since the classification.
        INSERT INTO {{ tbl(e.table) }} ({{ column_list(e) }})
        SELECT {{ column_list(e, 'w') }}
        FROM #dbtools_UpsertWinners AS w
        WHERE w.[dbtools_Outcome] = N'Inserted'
        ORDER BY {{ key_list(e, 'w') }}
        OPTION (MAXDOP 1);
        SET @RowsInserted = ROWCOUNT_BIG();
        SET @RowsSkipped = @RowsStaged - @RowsRejected - @RowsInserted - @RowsUpdated;

        DELETE s
        FROM {{ tbl(e.staging) }} AS s
        WHERE s.[SessionId] = @SessionId;
    END TRY
    BEGIN CATCH
        -- The caller's transaction is doomed (XACT_ABORT ON); usp_Sync_Promote rolls it back.
        THROW;
    END CATCH;
END;
