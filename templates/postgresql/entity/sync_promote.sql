{%- from "common/header.sql" import header -%}
{%- from "postgresql/entity/macros.sql" import reject_reason, column_list with context -%}
{%- set scope = e.column(e.sync.scope) -%}
{%- macro column_list_of(names, alias=None) -%}
{%- for n in names -%}{% if alias %}{{ alias }}.{% endif %}{{ q(n) }}{{ ", " if not loop.last }}{%- endfor -%}
{%- endmacro -%}
CREATE OR REPLACE PROCEDURE {{ job(e.sync_promote) }}(
    IN "SessionId" uuid,
    IN "Scope" text,
    INOUT "RowsStaged" bigint DEFAULT NULL,
    INOUT "RowsInserted" bigint DEFAULT NULL,
    INOUT "RowsUpdated" bigint DEFAULT NULL,
    INOUT "RowsSkipped" bigint DEFAULT NULL,
    INOUT "RowsRejected" bigint DEFAULT NULL
)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
-- A session's rows are sorted and kept in memory instead of spilling to disk.
SET work_mem = '64MB'
AS $procedure$
#variable_conflict use_column
{{ header(e.sync_promote,
          'Apply the ' ~ e.entity ~ ' rows a sync session staged in ' ~ e.staging ~ ' (rendered from
    ' ~ e.source ~ '); called by usp_Sync_Promote inside its transaction, never on its own. A row is
    rejected (kept in ' ~ e.rejects ~ ' with its page, row and reason) when the upsert paths would
    reject it, or when its ' ~ e.sync.scope ~ ' is not the session''s scope. Among the valid rows of one
    ' ~ e.keys | join(', ') ~ ' the newest ' ~ e.ordering ~ ' wins (ties: the later page, then the later
    row); a winner is inserted when new, applied when newer than the stored row, skipped otherwise.
    The session''s staged rows are removed.', origin) }}
DECLARE
    v_session uuid := "SessionId";
    v_scope text := "Scope";
BEGIN
    WITH checked AS MATERIALIZED (
        SELECT s."BatchId", s."PageNumber", s."RowNumber", {{ column_list(e, 's') }},
            coalesce(({{ reject_reason(e, 's') }}),
                     CASE WHEN s.{{ q(scope.name) }}::text <> v_scope
                          THEN '{{ scope.name }} is not the session''s scope' END) AS "Reason"
        FROM {{ tbl(e.staging) }} AS s
        WHERE s."SessionId" = v_session
    ), rejected AS (
        INSERT INTO {{ tbl(e.rejects) }} ("BatchId", "RowNumber", "Reason", {{ column_list(e) }}, "SessionId", "PageNumber")
        SELECT c."BatchId", c."RowNumber", c."Reason", {{ column_list(e, 'c') }}, v_session, c."PageNumber"
        FROM checked AS c
        WHERE c."Reason" IS NOT NULL
        RETURNING 1
    ), upserted AS (
        -- Winners in key order, so a concurrent writer of the same keys locks them in the same order.
        INSERT INTO {{ tbl(e.table) }} AS t ({{ column_list(e) }})
        SELECT {% for c in e.columns %}w.{{ q(c.name) }}{% if c.type == 'json' %}::json{% endif %}{{ ", " if not loop.last }}{% endfor %}
        FROM (
            SELECT DISTINCT ON ({{ column_list_of(e.keys, 'c') }}) c.*
            FROM checked AS c
            WHERE c."Reason" IS NULL
            ORDER BY {{ column_list_of(e.keys, 'c') }}, c.{{ q(e.ordering) }} DESC, c."PageNumber" DESC, c."RowNumber" DESC
        ) AS w
        ORDER BY {{ column_list_of(e.keys, 'w') }}
        ON CONFLICT ({{ column_list_of(e.keys) }}) DO UPDATE SET
{%- for c in e.columns if c.name not in e.keys %}
            {{ q(c.name) }} = EXCLUDED.{{ q(c.name) }},
{%- endfor %}
            {{ q(e.version) }} = t.{{ q(e.version) }} + 1
        WHERE t.{{ q(e.ordering) }} < EXCLUDED.{{ q(e.ordering) }}
        RETURNING (t.xmax = 0) AS "Inserted"
    )
    SELECT (SELECT count(*) FROM checked),
           (SELECT count(*) FROM rejected),
           (SELECT count(*) FROM upserted AS u WHERE u."Inserted"),
           (SELECT count(*) FROM upserted AS u WHERE NOT u."Inserted")
    INTO "RowsStaged", "RowsRejected", "RowsInserted", "RowsUpdated";
    "RowsSkipped" := "RowsStaged" - "RowsRejected" - "RowsInserted" - "RowsUpdated";

    DELETE FROM {{ tbl(e.staging) }} AS s WHERE s."SessionId" = v_session;
END;
$procedure$
