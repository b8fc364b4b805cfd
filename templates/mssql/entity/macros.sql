{#- Fragments shared by an entity's three procedures (templates/mssql/entity/*.sql), the SQL
    Server twins of templates/postgresql/entity/macros.sql. `e` is a dbtools.upsert.specs.EntitySpec;
    `ref(alias, name)` spells a column of a row: alias 'v' means the procedure's own parameter
    @<name>, anything else alias.[name]. Each macro leaves the first line's indentation to its
    call site. -#}

{%- macro ref(alias, name) -%}
{%- if alias == 'v' -%}@{{ name }}{%- else -%}{{ alias }}.{{ q(name) }}{%- endif -%}
{%- endmacro -%}

{#- A loose value (parameter, row type, staging) as the target column's type. Only strings
    differ (nvarchar(max) -> nvarchar(n)); use it on values that passed reject_reason, since
    CONVERT to a shorter nvarchar truncates silently. -#}
{%- macro as_target(c, expr) -%}
{%- if c.loose_type(engine_info) != c.target_type(engine_info) -%}
CONVERT({{ c.target_type(engine_info) }}, {{ expr }})
{%- else -%}
{{ expr }}
{%- endif -%}
{%- endmacro -%}

{#- The key columns in key order, [a], [b], optionally prefixed by an alias (as column_list). -#}
{%- macro key_list(e, alias=None) -%}
{%- for k in e.keys -%}{% if alias %}{{ alias }}.{% endif %}{{ q(k) }}{{ ", " if not loop.last }}{%- endfor -%}
{%- endmacro -%}

{#- The key of `left` equals the key of `right`, column by column (aliases as ref spells them).
    Alias 'v' (the procedure's parameters, loose types) is converted to the target's types
    (as_target), so the comparison seeks the target's key. -#}
{%- macro key_match(e, left, right) -%}
{%- for c in e.key_columns -%}
{%- set l = ref(left, c.name) if left != 'v' else as_target(c, ref(left, c.name)) -%}
{%- set r = ref(right, c.name) if right != 'v' else as_target(c, ref(right, c.name)) -%}
{{ l }} = {{ r }}{{ " AND " if not loop.last }}
{%- endfor -%}
{%- endmacro -%}

{#- The first reason a row is rejected for, or NULL: the same order (required fields in column
    order, lengths, JSON, references) and texts as on PostgreSQL. Lengths: DATALENGTH counts the
    byte pairs nvarchar(n) stores (LEN would ignore trailing spaces). ISJSON without a type
    constraint is 1 for an object or array only, and NULL for NULL. -#}
{%- macro reject_reason(e, alias) -%}
CASE
{%- for c in e.columns if c.required %}
            WHEN {{ ref(alias, c.name) }} IS NULL THEN N'missing required field {{ c.name }}'
{%- endfor %}
{%- for c in e.columns if c.type == 'string' %}
            WHEN DATALENGTH({{ ref(alias, c.name) }}) > {{ 2 * c.length }} THEN N'{{ c.name }} is longer than {{ c.length }} characters'
{%- endfor %}
{%- for c in e.columns if c.type == 'json' %}
            WHEN ISJSON({{ ref(alias, c.name) }}) = 0 THEN N'{{ c.name }} is not a JSON object or array'
{%- endfor %}
{%- for c in e.columns if c.references %}
            WHEN {{ ref(alias, c.name) }} IS NOT NULL AND NOT EXISTS (SELECT 1 FROM {{ tbl(c.references) }} AS lk
                             WHERE lk.{{ q(e.lookup(c.references).column.name) }} = {{ ref(alias, c.name) }}
{%- if c.type == 'string' %}
                               AND lk.{{ q(e.lookup(c.references).column.name) }} = {{ ref(alias, c.name) }} COLLATE Latin1_General_100_BIN2
                               AND DATALENGTH(lk.{{ q(e.lookup(c.references).column.name) }}) = DATALENGTH({{ ref(alias, c.name) }})
{%- endif %})
                THEN N'{{ c.name }} is not in {{ c.references }}'
{%- endfor %}
        END
{%- endmacro -%}

{#- [col1], [col2], ... for the entity's columns, optionally prefixed by an alias. -#}
{%- macro column_list(e, alias=None) -%}
{%- for c in e.columns -%}{% if alias %}{{ alias }}.{% endif %}{{ q(c.name) }}{{ ", " if not loop.last }}{%- endfor -%}
{%- endmacro -%}

{%- macro count_outputs() -%}
@RowsReceived bigint = NULL OUTPUT,
    @RowsInserted bigint = NULL OUTPUT,
    @RowsUpdated bigint = NULL OUTPUT,
    @RowsSkipped bigint = NULL OUTPUT,
    @RowsConflicted bigint = NULL OUTPUT,
    @RowsRejected bigint = NULL OUTPUT,
    @Replayed bit = NULL OUTPUT,
    @Help bit = 0,
    @Version nvarchar(20) = NULL OUTPUT,
    @VersionDate date = NULL OUTPUT
{%- endmacro -%}

{%- macro batch_declarations() -%}
DECLARE @StartedTransaction bit = 0;
    DECLARE @BadNumbers bigint;
    DECLARE @HelpText nvarchar(max);
{%- endmacro -%}

{#- OUTPUT parameters are input too: clear what a caller may have passed in. -#}
{%- macro reset_counts() -%}
SET @RowsReceived = NULL;
        SET @RowsInserted = NULL;
        SET @RowsUpdated = NULL;
        SET @RowsSkipped = NULL;
        SET @RowsConflicted = NULL;
        SET @RowsRejected = NULL;
        SET @Replayed = NULL;
{%- endmacro -%}

{#- The winners of a batch: its newest valid row per key, in the target's types. Clustered on
    the key, so the statements that join it to the target visit keys in key order. Strings take
    the database's collation (a temporary table would take tempdb's), like the target's. -#}
{%- macro winners_table(e) -%}
CREATE TABLE #dbtools_UpsertWinners (
{%- for c in e.columns %}
            {{ q(c.name) }} {{ c.target_type(engine_info) }}{{ " COLLATE DATABASE_DEFAULT" if c.type in ("string", "json") }} {{ "NOT NULL" if c.name in e.keys else "NULL" }},
{%- endfor %}
            [RowNumber] bigint NOT NULL,
            [ExpectedRowVersion] binary(8) NULL,
            [dbtools_Outcome] nvarchar(10) NULL,
            PRIMARY KEY CLUSTERED ({{ key_list(e) }})
        );
{%- endmacro -%}

{#- Transactions: begin one only when the caller has none open, and commit or roll back only
    that one. Inside a caller's transaction the work is part of it; an error dooms it (XACT_ABORT
    ON) and the caller rolls it back. Expects @StartedTransaction bit = 0. -#}
{%- macro begin_transaction() -%}
IF @@TRANCOUNT = 0
        BEGIN
            BEGIN TRANSACTION;
            SET @StartedTransaction = 1;
        END;
{%- endmacro -%}

{%- macro commit_transaction() -%}
IF @StartedTransaction = 1
            COMMIT TRANSACTION;
{%- endmacro -%}

{%- macro catch_block() -%}
BEGIN CATCH
        IF @StartedTransaction = 1 AND @@TRANCOUNT > 0
            ROLLBACK TRANSACTION;
        THROW;
    END CATCH;
{%- endmacro -%}

{#- A batch id already in UpsertBatchLog was applied before (a retry after an unknown commit
    outcome): its logged counts are returned and @Replayed is set; the caller then applies
    nothing. A plain read on purpose: UPDLOCK, SERIALIZABLE on an absent id would lock the gap
    after the newest id (batch ids are UUIDv7, so every new one falls there) and serialise all
    batches of all entities. Two calls with one new id both apply, and the second fails on
    PK_UpsertBatchLog and rolls back; its retry is then a replay. -#}
{%- macro logged_counts() -%}
SELECT
            @RowsReceived = b.[RowsReceived],
            @RowsInserted = b.[RowsInserted],
            @RowsUpdated = b.[RowsUpdated],
            @RowsSkipped = b.[RowsSkipped],
            @RowsConflicted = b.[RowsConflicted],
            @RowsRejected = b.[RowsRejected]
        FROM {{ job('UpsertBatchLog') }} AS b
        WHERE b.[BatchId] = @BatchId;
        SET @Replayed = CASE WHEN @@ROWCOUNT = 1 THEN 1 ELSE 0 END;
{%- endmacro -%}

{#- Apply one batch: `source` is a table (or table variable) with RowNumber, the entity's
    columns and ExpectedRowVersion, `filter` an optional condition on its alias s. Runs inside
    the transaction; expects @BatchId, the count OUTPUT parameters, @BadNumbers and
    #dbtools_UpsertWinners (winners_table). Semantics (entities/README.md): rejected rows go to
    the reject table; among the valid rows of one key the newest ordering value wins (ties: the
    lowest RowNumber) and the others are skipped; a winner is inserted when its key is new,
    updated when it is newer than the stored row, skipped otherwise; a winner with
    ExpectedRowVersion is conflicted unless the stored row has that version. -#}
{%- macro apply_batch(e, source, filter=None) -%}
{%- set where = " WHERE " ~ filter if filter else "" -%}
-- Check requirements: a RowNumber on every row, none twice (they name rejected rows).
            SELECT @RowsReceived = COUNT_BIG(*), @BadNumbers = COUNT_BIG(*) - COUNT_BIG(DISTINCT s.[RowNumber])
            FROM {{ source }} AS s{{ where }};
            IF @BadNumbers > 0
            BEGIN
                THROW 50010, N'Every row needs a RowNumber, unique within the batch; nothing was changed.', 1;
            END;

            -- Rejected rows, with the first reason each fails for.
            INSERT INTO {{ tbl(e.rejects) }} ([BatchId], [RowNumber], [Reason], {{ column_list(e) }}, [ExpectedRowVersion])
            SELECT @BatchId, c.[RowNumber], c.[Reason], {{ column_list(e, 'c') }}, c.[ExpectedRowVersion]
            FROM (
                SELECT s.[RowNumber], {{ column_list(e, 's') }}, s.[ExpectedRowVersion],
                    {{ reject_reason(e, 's') | indent(12) }} AS [Reason]
                FROM {{ source }} AS s{{ where }}
            ) AS c
            WHERE c.[Reason] IS NOT NULL
            ORDER BY c.[RowNumber];
            SET @RowsRejected = ROWCOUNT_BIG();

            -- The newest valid row of each key (ties: the lowest RowNumber); the others are skipped.
            INSERT INTO #dbtools_UpsertWinners ({{ column_list(e) }}, [RowNumber], [ExpectedRowVersion])
            SELECT {% for c in e.columns %}{{ as_target(c, 'r.' ~ q(c.name)) }}{{ ", " if not loop.last }}{% endfor %}, r.[RowNumber], r.[ExpectedRowVersion]
            FROM (
                SELECT s.[RowNumber], {{ column_list(e, 's') }}, s.[ExpectedRowVersion],
                    ROW_NUMBER() OVER (PARTITION BY {% for c in e.key_columns %}{{ as_target(c, 's.' ~ q(c.name)) }}{{ ", " if not loop.last }}{% endfor %}
                                       ORDER BY s.{{ q(e.ordering) }} DESC, s.[RowNumber] ASC) AS [dbtools_Rank]
                FROM {{ source }} AS s
                WHERE {% if filter %}{{ filter }}
                  AND {% endif %}({{ reject_reason(e, 's') | indent(12) }}) IS NULL
            ) AS r
            WHERE r.[dbtools_Rank] = 1;

            -- Classify each winner against the stored row, read with update locks that are held to
            -- commit (SERIALIZABLE also locks the gap where an absent key would go), so the
            -- statements below find exactly what was classified. FORCESEEK: seeks in key order
            -- (the winners' clustered key), never a scan that would lock the whole table.
            UPDATE w
            SET w.[dbtools_Outcome] = CASE
                    WHEN t.{{ q(e.keys[0]) }} IS NULL AND w.[ExpectedRowVersion] IS NULL THEN N'Inserted'
                    WHEN t.{{ q(e.keys[0]) }} IS NULL THEN N'Conflicted'
                    WHEN w.[ExpectedRowVersion] IS NOT NULL AND w.[ExpectedRowVersion] <> t.{{ q(e.version) }} THEN N'Conflicted'
                    WHEN t.{{ q(e.ordering) }} < w.{{ q(e.ordering) }} THEN N'Updated'
                    ELSE N'Skipped'
                END
            FROM #dbtools_UpsertWinners AS w
            LEFT OUTER JOIN {{ tbl(e.table) }} AS t WITH (UPDLOCK, SERIALIZABLE, FORCESEEK)
                ON {{ key_match(e, 't', 'w') }}
            OPTION (MAXDOP 1); -- a serial plan locks keys in key order: no deadlock between two batches

            SELECT @RowsConflicted = COUNT_BIG(*)
            FROM #dbtools_UpsertWinners AS w
            WHERE w.[dbtools_Outcome] = N'Conflicted';

            -- Newer rows; the predicate is checked again, so nothing older ever overwrites newer.
            -- The row version ({{ e.version }}, rowversion) changes with every update.
            UPDATE t
            SET
{%- for c in e.columns if c.name not in e.keys %}
                {{ q(c.name) }} = w.{{ q(c.name) }}{{ "," if not loop.last }}
{%- endfor %}
            FROM {{ tbl(e.table) }} AS t WITH (UPDLOCK, SERIALIZABLE, FORCESEEK)
            INNER JOIN #dbtools_UpsertWinners AS w ON {{ key_match(e, 'w', 't') }}
            WHERE w.[dbtools_Outcome] = N'Updated'
              AND t.{{ q(e.ordering) }} < w.{{ q(e.ordering) }}
              AND (w.[ExpectedRowVersion] IS NULL OR t.{{ q(e.version) }} = w.[ExpectedRowVersion])
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

            SET @RowsSkipped = @RowsReceived - @RowsRejected - @RowsInserted - @RowsUpdated - @RowsConflicted;
            INSERT INTO {{ job('UpsertBatchLog') }} ([BatchId], [EntityName], [RowsReceived], [RowsInserted], [RowsUpdated],
                [RowsSkipped], [RowsConflicted], [RowsRejected])
            VALUES (@BatchId, N'{{ e.entity }}', @RowsReceived, @RowsInserted, @RowsUpdated,
                @RowsSkipped, @RowsConflicted, @RowsRejected);
{%- endmacro -%}
