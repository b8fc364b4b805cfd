{%- from "common/header.sql" import header -%}
{%- from "postgresql/entity/macros.sql" import reject_reason, column_list, key_list, key_match, update_set_excluded with context -%}
{%- from "postgresql/uuid7.sql" import new_uuid7 -%}
{#- The key in words: its column, or (a, b) for a composite key. -#}
{%- set key_words = e.keys[0] if e.keys | length == 1 else "(" ~ e.keys | join(", ") ~ ")" -%}
CREATE OR REPLACE PROCEDURE {{ job(e.upsert_one) }}(
{%- for c in e.columns %}
    IN {{ q(c.name) }} {{ c.loose_type(engine_info) }} DEFAULT NULL,
{%- endfor %}
    IN "ExpectedRowVersion" bigint DEFAULT NULL,
    IN "BatchId" uuid DEFAULT NULL,
    IN "RowNumber" bigint DEFAULT 1,
    INOUT "Outcome" text DEFAULT NULL,
    INOUT "Reason" text DEFAULT NULL,
    INOUT "RowVersion" bigint DEFAULT NULL,
    IN "Help" boolean DEFAULT false,
    INOUT "Version" text DEFAULT NULL,
    INOUT "VersionDate" date DEFAULT NULL
)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $procedure$
#variable_conflict use_column
{{ header(e.upsert_one,
          'Upsert one ' ~ e.entity ~ ' (rendered from ' ~ e.source ~ '): inserted when ' ~ key_words ~ ' is new,
    updated when ' ~ e.ordering ~ ' is newer than the stored row, skipped otherwise; conflicted when
    ExpectedRowVersion is given and differs from the stored version; rejected (kept in
    ' ~ e.rejects ~ ' under BatchId and RowNumber, with the reason) when invalid. Returns Outcome,
    Reason and the stored RowVersion.', origin) }}
DECLARE
{%- for c in e.columns %}
    c_{{ c.name }} {{ c.loose_type(engine_info) }} := {{ q(c.name) }};
{%- endfor %}
    v_expected bigint := "ExpectedRowVersion";
    v_batch_id uuid := "BatchId";
    v_row_number bigint := coalesce("RowNumber", 1);
    v_reason text;
    v_inserted boolean;
    v_current_version bigint;
    v_current_ordering {{ e.ordering_column.target_type(engine_info) }};
    v_uuid7_bytes bytea;
BEGIN
    "Version" := '{{ package_version }}';
    "VersionDate" := DATE '{{ version_date }}';
    IF "Help" THEN
        RAISE NOTICE '%', E'{{ e.upsert_one }}: upsert one {{ e.entity }}, newest {{ e.ordering }} wins per {{ e.keys | join(', ') }}.\n'
            || E'  {% for c in e.columns %}"{{ c.name }}"{{ ", " if not loop.last }}{% endfor %}\n'
            || E'  "ExpectedRowVersion"  optional: update only a row stored with this version\n'
            || E'  "BatchId", "RowNumber" optional: where a rejected row is filed\n'
            || E'Returns Outcome (Inserted | Updated | Skipped | Conflicted | Rejected), Reason, RowVersion.';
        RETURN;
    END IF;

    v_reason := {{ reject_reason(e, 'c') }};
    IF v_reason IS NOT NULL THEN
        IF v_batch_id IS NULL THEN
            {{ new_uuid7('v_batch_id') | indent(4) }}
        END IF;
        -- A replay (the same reject of the same row version under the same BatchId and RowNumber,
        -- e.g. a call retried after an unknown commit outcome) reports the row rejected again and
        -- files nothing more. Any other reject is filed, also under a BatchId and RowNumber used
        -- before. An attempt overlapping a still-running first one may file it twice.
        INSERT INTO {{ tbl(e.rejects) }} ("BatchId", "RowNumber", "Reason", {{ column_list(e) }}, "ExpectedRowVersion")
        SELECT v_batch_id, v_row_number, v_reason, {% for c in e.columns %}c_{{ c.name }}{{ ", " if not loop.last }}{% endfor %}, v_expected
        WHERE NOT EXISTS (SELECT 1 FROM {{ tbl(e.rejects) }} AS r
                          WHERE r."BatchId" = v_batch_id AND r."RowNumber" = v_row_number AND r."Reason" = v_reason
                            AND ({{ key_list(e, 'r') }}, r.{{ q(e.ordering) }}, r."ExpectedRowVersion")
                                IS NOT DISTINCT FROM ({% for k in e.keys %}c_{{ k }}, {% endfor %}c_{{ e.ordering }}, v_expected));
        "Outcome" := 'Rejected';
        "Reason" := v_reason;
        RETURN;
    END IF;

    IF v_expected IS NULL THEN
        -- Atomic under concurrency: a concurrent insert of the same key turns into the update.
        INSERT INTO {{ tbl(e.table) }} AS t ({{ column_list(e) }})
        VALUES ({% for c in e.columns %}c_{{ c.name }}{% if c.type == 'json' %}::json{% endif %}{{ ", " if not loop.last }}{% endfor %})
        ON CONFLICT ({{ key_list(e) }}) DO UPDATE SET
{{- update_set_excluded(e) }}
        WHERE t.{{ q(e.ordering) }} < EXCLUDED.{{ q(e.ordering) }}
        RETURNING (t.xmax = 0), t.{{ q(e.version) }} INTO v_inserted, "RowVersion";
        IF FOUND THEN
            "Outcome" := CASE WHEN v_inserted THEN 'Inserted' ELSE 'Updated' END;
            RETURN;
        END IF;
        -- Not newer: ON CONFLICT locked the stored row, so this reads what was compared.
        SELECT t.{{ q(e.version) }} INTO "RowVersion" FROM {{ tbl(e.table) }} AS t WHERE {{ key_match(e, 't', 'c') }};
        "Outcome" := 'Skipped';
        RETURN;
    END IF;

    SELECT t.{{ q(e.version) }}, t.{{ q(e.ordering) }} INTO v_current_version, v_current_ordering
    FROM {{ tbl(e.table) }} AS t
    WHERE {{ key_match(e, 't', 'c') }}
    FOR UPDATE;
    IF NOT FOUND OR v_current_version <> v_expected THEN
        "Outcome" := 'Conflicted';
        "RowVersion" := v_current_version;
    ELSIF v_current_ordering < c_{{ e.ordering }} THEN
        UPDATE {{ tbl(e.table) }} AS t SET
{%- for c in e.columns if c.name not in e.keys %}
            {{ q(c.name) }} = c_{{ c.name }}{% if c.type == 'json' %}::json{% endif %},
{%- endfor %}
            {{ q(e.version) }} = t.{{ q(e.version) }} + 1
        WHERE {{ key_match(e, 't', 'c') }}
        RETURNING t.{{ q(e.version) }} INTO "RowVersion";
        "Outcome" := 'Updated';
    ELSE
        "Outcome" := 'Skipped';
        "RowVersion" := v_current_version;
    END IF;
END;
$procedure$
