{#- Fragments shared by an entity's three procedures (templates/postgresql/entity/*.sql).
    `e` is a dbtools.upsert.specs.EntitySpec; `ref(alias, name)` spells a column of a row: alias
    'c' means the procedure's own column variables c_<name> (a prefix no other variable uses,
    so no column name can collide with them), anything else alias."name". -#}

{%- macro ref(alias, name) -%}
{%- if alias == 'c' -%}c_{{ name }}{%- else -%}{{ alias }}.{{ q(name) }}{%- endif -%}
{%- endmacro -%}

{#- The first reason a row is rejected for, or NULL. The order (required fields in column
    order, lengths, JSON, references) and the texts are the same on SQL Server. -#}
{%- macro reject_reason(e, alias) -%}
CASE
{%- for c in e.columns if c.required %}
            WHEN {{ ref(alias, c.name) }} IS NULL THEN 'missing required field {{ c.name }}'
{%- endfor %}
{%- for c in e.columns if c.type == 'string' %}
            WHEN length({{ ref(alias, c.name) }}) > {{ c.length }} THEN '{{ c.name }} is longer than {{ c.length }} characters'
{%- endfor %}
{%- for c in e.columns if c.type == 'json' %}
            WHEN NOT ({{ ref(alias, c.name) }} IS JSON OBJECT OR {{ ref(alias, c.name) }} IS JSON ARRAY)
                THEN '{{ c.name }} is not a JSON object or array'
{%- endfor %}
{%- for c in e.columns if c.references %}
            WHEN {{ ref(alias, c.name) }} IS NOT NULL AND NOT EXISTS (SELECT 1 FROM {{ tbl(c.references) }} AS lk
                             WHERE lk.{{ q(e.lookup(c.references).column.name) }} = {{ ref(alias, c.name) }})
                THEN '{{ c.name }} is not in {{ c.references }}'
{%- endfor %}
        END
{%- endmacro -%}

{#- "col1", "col2", ... for the entity's columns, optionally prefixed by an alias. -#}
{%- macro column_list(e, alias=None) -%}
{%- for c in e.columns -%}{% if alias %}{{ alias }}.{% endif %}{{ q(c.name) }}{{ ", " if not loop.last }}{%- endfor -%}
{%- endmacro -%}

{#- The key columns in key order, "a", "b", optionally prefixed by an alias (as column_list). -#}
{%- macro key_list(e, alias=None) -%}
{%- for k in e.keys -%}{% if alias %}{{ alias }}.{% endif %}{{ q(k) }}{{ ", " if not loop.last }}{%- endfor -%}
{%- endmacro -%}

{#- A row's key as one value: alias."a" for a one-column key, (alias."a", alias."b") for a
    composite one. -#}
{%- macro key_row(e, alias) -%}
{%- if e.keys | length > 1 -%}({{ key_list(e, alias) }}){%- else -%}{{ key_list(e, alias) }}{%- endif -%}
{%- endmacro -%}

{#- The key of `left` equals the key of `right`, column by column (aliases as ref spells them:
    'c' is the procedure's variables). -#}
{%- macro key_match(e, left, right) -%}
{%- for k in e.keys -%}{{ ref(left, k) }} = {{ ref(right, k) }}{{ " AND " if not loop.last }}{%- endfor -%}
{%- endmacro -%}

{%- macro update_set_excluded(e) -%}
{%- for c in e.columns if c.name not in e.keys %}
            {{ q(c.name) }} = EXCLUDED.{{ q(c.name) }},
{%- endfor %}
            {{ q(e.version) }} = t.{{ q(e.version) }} + 1
{%- endmacro -%}

{%- macro count_outputs() -%}
    INOUT "RowsReceived" bigint DEFAULT NULL,
    INOUT "RowsInserted" bigint DEFAULT NULL,
    INOUT "RowsUpdated" bigint DEFAULT NULL,
    INOUT "RowsSkipped" bigint DEFAULT NULL,
    INOUT "RowsConflicted" bigint DEFAULT NULL,
    INOUT "RowsRejected" bigint DEFAULT NULL,
    INOUT "Replayed" boolean DEFAULT NULL,
    IN "Help" boolean DEFAULT false,
    INOUT "Version" text DEFAULT NULL,
    INOUT "VersionDate" date DEFAULT NULL
{%- endmacro -%}

{#- Apply one batch: `source` is a FROM item with RowNumber, the entity's columns and
    ExpectedRowVersion. Expects v_batch_id and the v_* counters declared (batch_declarations).
    Semantics (entities/README.md): rejected rows go to the reject table; among the valid rows
    of one key the newest ordering value wins (ties: the lowest RowNumber) and the others are
    skipped; a winner is inserted when its key is new, updated when it is newer than the
    stored row, skipped otherwise; a winner with ExpectedRowVersion is conflicted unless the
    stored row has that version. -#}
{%- macro batch_declarations() -%}
    v_received bigint := 0;
    v_rejected bigint := 0;
    v_inserted bigint := 0;
    v_updated bigint := 0;
    v_conflicted bigint := 0;
    v_expected bigint := 0;
    v_bad_numbers bigint;
    v_row record;
    v_current_version bigint;
    v_current_ordering {{ e.ordering_column.target_type(engine_info) }};
{%- endmacro -%}

{%- macro apply_batch(e, source) -%}
    -- Check requirements: a RowNumber on every row, none twice (they name rejected rows).
    -- count(DISTINCT) counts distinct non-NULL values, so it is short of count(*) exactly when a
    -- RowNumber is NULL or repeated; it sorts, and rows numbered in order sort at once (a hash
    -- of every RowNumber took three times as long).
    SELECT count(*) - count(DISTINCT s."RowNumber") INTO v_bad_numbers
    FROM {{ source }} AS s;
    IF v_bad_numbers > 0 THEN
        RAISE EXCEPTION USING ERRCODE = '22023',
            MESSAGE = 'Every row needs a RowNumber, unique within the batch; nothing was changed.';
    END IF;

    -- Rejects, then the newest valid version of each key, inserted or applied when newer.
    -- Winners go in key order, so concurrent batches lock shared keys in the same order.
    WITH checked AS MATERIALIZED (
        SELECT s."RowNumber", {{ column_list(e, 's') }}, s."ExpectedRowVersion",
            {{ reject_reason(e, 's') }} AS "Reason"
        FROM {{ source }} AS s
    ), rejected AS (
        INSERT INTO {{ tbl(e.rejects) }} ("BatchId", "RowNumber", "Reason", {{ column_list(e) }}, "ExpectedRowVersion")
        SELECT v_batch_id, c."RowNumber", c."Reason", {{ column_list(e, 'c') }}, c."ExpectedRowVersion"
        FROM checked AS c
        WHERE c."Reason" IS NOT NULL
    ), upserted AS (
        -- Straight from the DISTINCT ON (not a CTE), so its key order serves the ORDER BY: one sort.
        INSERT INTO {{ tbl(e.table) }} AS t ({{ column_list(e) }})
        SELECT {% for c in e.columns %}w.{{ q(c.name) }}{% if c.type == 'json' %}::json{% endif %}{{ ", " if not loop.last }}{% endfor %}
        FROM (
            SELECT DISTINCT ON ({{ key_list(e, 'c') }}) c.*
            FROM checked AS c
            WHERE c."Reason" IS NULL
            ORDER BY {{ key_list(e, 'c') }}, c.{{ q(e.ordering) }} DESC, c."RowNumber"
        ) AS w
        WHERE w."ExpectedRowVersion" IS NULL
        ORDER BY {{ key_list(e, 'w') }}
        ON CONFLICT ({{ key_list(e) }}) DO UPDATE SET
{{- update_set_excluded(e) }}
        WHERE t.{{ q(e.ordering) }} < EXCLUDED.{{ q(e.ordering) }}
        RETURNING (t.xmax = 0) AS "Inserted"
    )
    -- One pass over checked for its counts (the rejected CTE inserts exactly its rows with a
    -- Reason), one over upserted: a data-modifying CTE runs to completion whether read or not.
    SELECT k.received, k.rejected, u.inserted, u.updated, k.expected
    FROM (SELECT count(*) AS received,
                 count(*) FILTER (WHERE c."Reason" IS NOT NULL) AS rejected,
                 count(*) FILTER (WHERE c."Reason" IS NULL AND c."ExpectedRowVersion" IS NOT NULL) AS expected
          FROM checked AS c) AS k,
         (SELECT count(*) FILTER (WHERE u."Inserted") AS inserted,
                 count(*) FILTER (WHERE NOT u."Inserted") AS updated
          FROM upserted AS u) AS u
    INTO v_received, v_rejected, v_inserted, v_updated, v_expected;

    -- Winners that carry ExpectedRowVersion (optimistic concurrency; usually few): each stored
    -- row is locked before it is compared, so the outcome is exact under concurrency. (v_expected
    -- counts the valid rows that carry one; whether such a row is its key's winner is decided here.)
    IF v_expected > 0 THEN
        FOR v_row IN
            SELECT w.* FROM (
                SELECT DISTINCT ON ({{ key_list(e, 's') }}) s.*
                FROM {{ source }} AS s
                WHERE ({{ reject_reason(e, 's') }}) IS NULL
                  AND {{ key_row(e, 's') }} IN (SELECT {{ key_list(e, 'x') }} FROM {{ source }} AS x WHERE x."ExpectedRowVersion" IS NOT NULL)
                ORDER BY {{ key_list(e, 's') }}, s.{{ q(e.ordering) }} DESC, s."RowNumber"
            ) AS w
            WHERE w."ExpectedRowVersion" IS NOT NULL
            ORDER BY {{ key_list(e, 'w') }}
        LOOP
            SELECT t.{{ q(e.version) }}, t.{{ q(e.ordering) }} INTO v_current_version, v_current_ordering
            FROM {{ tbl(e.table) }} AS t
            WHERE {{ key_match(e, 't', 'v_row') }}
            FOR UPDATE;
            IF NOT FOUND OR v_current_version <> v_row."ExpectedRowVersion" THEN
                v_conflicted := v_conflicted + 1;
            ELSIF v_current_ordering < v_row.{{ q(e.ordering) }} THEN
                UPDATE {{ tbl(e.table) }} AS t SET
{%- for c in e.columns if c.name not in e.keys %}
                    {{ q(c.name) }} = v_row.{{ q(c.name) }}{% if c.type == 'json' %}::json{% endif %},
{%- endfor %}
                    {{ q(e.version) }} = t.{{ q(e.version) }} + 1
                WHERE {{ key_match(e, 't', 'v_row') }};
                v_updated := v_updated + 1;
            END IF;
        END LOOP;
    END IF;

    "RowsReceived" := v_received;
    "RowsRejected" := v_rejected;
    "RowsInserted" := v_inserted;
    "RowsUpdated" := v_updated;
    "RowsConflicted" := v_conflicted;
    "RowsSkipped" := v_received - v_rejected - v_inserted - v_updated - v_conflicted;
    "Replayed" := false;
    INSERT INTO {{ job('UpsertBatchLog') }} ("BatchId", "EntityName", "RowsReceived", "RowsInserted", "RowsUpdated",
        "RowsSkipped", "RowsConflicted", "RowsRejected")
    VALUES (v_batch_id, '{{ e.entity }}', "RowsReceived", "RowsInserted", "RowsUpdated",
        "RowsSkipped", "RowsConflicted", "RowsRejected");
{%- endmacro -%}

{#- A batch id already in UpsertBatchLog was applied before (a retry after an unknown commit
    outcome): its logged counts are returned and "Replayed" is set; the caller then applies
    nothing. -#}
{%- macro logged_counts(e) -%}
    SELECT b."RowsReceived", b."RowsInserted", b."RowsUpdated", b."RowsSkipped", b."RowsConflicted", b."RowsRejected"
    INTO "RowsReceived", "RowsInserted", "RowsUpdated", "RowsSkipped", "RowsConflicted", "RowsRejected"
    FROM {{ job('UpsertBatchLog') }} AS b
    WHERE b."BatchId" = v_batch_id;
    "Replayed" := FOUND;
{%- endmacro -%}
