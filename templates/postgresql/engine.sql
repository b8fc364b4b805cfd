{%- from "postgresql/quoting.sql" import quotename -%}
{#- Fragments shared by the PostgreSQL engine's step functions (fn_BlobDelta_*). -#}

{#- A table's failure as the run header records it: "Table 'X': message", unless the message
    already names its table (the resolver's and the lease holder's do). -#}
{%- macro table_message(message) -%}
CASE WHEN starts_with({{ message }}, format('Table ''%s''', v_table)) THEN {{ message }} ELSE format('Table ''%s'': %s', v_table, {{ message }}) END
{%- endmacro -%}

{#- Load the run header into v_run, refusing any RunId that is not a Running run. -#}
{%- macro require_running_run() -%}
    SELECT r.* INTO v_run FROM {{ job('BlobDeltaRun') }} AS r WHERE r."RunId" = v_run_id;
    IF NOT FOUND OR v_run."Status" <> 'Running' THEN
        RAISE EXCEPTION USING ERRCODE = '22023',
            MESSAGE = format('Run %s is not a Running run in "BlobDeltaJobs"."BlobDeltaRun".', coalesce(v_run_id::text, 'NULL'));
    END IF;
{%- endmacro -%}

{#- Refuses to go on unless this session holds the run's session lock (fn_BlobDelta_RunBegin took it):
    only the session that works a run may fail its tables or abort it. Needs v_run_id. -#}
{%- macro require_run_lock() -%}
    IF NOT EXISTS (
        SELECT 1 FROM pg_catalog.pg_locks AS l
        WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1 AND l.pid = pg_catalog.pg_backend_pid()
          AND l.database = (SELECT d.oid FROM pg_catalog.pg_database AS d WHERE d.datname = pg_catalog.current_database())
          AND l.classid = ((hashtextextended('dbtools.BlobDeltaRun:' || v_run_id::text, 0) >> 32) & 4294967295)::oid
          AND l.objid = (hashtextextended('dbtools.BlobDeltaRun:' || v_run_id::text, 0) & 4294967295)::oid
    ) THEN
        RAISE EXCEPTION USING ERRCODE = '22023',
            MESSAGE = format('Run %s is not worked by this session: only the session that holds its lock may do this.',
                             coalesce(v_run_id::text, 'NULL'));
    END IF;
{%- endmacro -%}

{#- The variables usp_BlobDelta_ResolveTableConfig fills, and the call that fills them. -#}
{%- macro resolved_declarations() -%}
    v_source_object text;
    v_target_object text;
    v_metadata_object text;
    v_id_column text;
    v_modified_column text;
    v_bu_column text;
    v_buffer integer;
    v_script_set text;
    v_active boolean;
    v_bu_object text;
    v_bu_id_column text;
{%- endmacro -%}

{%- macro resolve(table_variable) -%}
CALL {{ job('usp_BlobDelta_ResolveTableConfig') }}(
            {{ table_variable }}, v_source_object, v_target_object, v_metadata_object, v_id_column, v_modified_column,
            v_bu_column, v_buffer, v_script_set, v_active, v_bu_object, v_bu_id_column);
{%- endmacro -%}

{#- The tables in a run's scope, as a predicate on BlobDeltaTableConfig AS c: the one table of
    a SingleTable run, or every active table of an AllTables run. -#}
{%- macro in_run_scope(mode, table_name) -%}
(({{ mode }} = 'SingleTable' AND c."TableName" = {{ table_name }})
       OR ({{ mode }} = 'AllTables' AND c."IsActive"))
{%- endmacro -%}

{#- What the engine cannot write, refused before anything is written (raises with the same text
    as SQL Server's twin):
    - a Hierarchical target must compute parent_path_locator from path_locator, as a FileTable
      does: the engine moves a folder's subtree by rewriting path_locator alone, and a stored
      parent column would go stale;
    - a Flat target's key must not be an identity column: the engine never writes identity
      columns (SQL Server refuses them), and an insert without the key would invent one;
    - nor may a Flat target's key or ModifiedOn column be generated: the engine never writes a
      generated column, and newest-wins compares the target's ModifiedOn with the metadata's, so a
      value the server makes up (a load time) would stop every later update. -#}
{%- macro require_supported_target() -%}
        IF v_script_set = 'Hierarchical' AND NOT EXISTS (
            SELECT 1 FROM pg_catalog.pg_attribute AS a
            WHERE a.attrelid = pg_catalog.to_regclass(v_target_object) AND a.attname = 'parent_path_locator'
              AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated <> ''
        ) THEN
            RAISE EXCEPTION USING ERRCODE = '22023', MESSAGE =
                'the target''s parent_path_locator must be computed from path_locator, as in a FileTable; a stored '
                'column would not follow a moved folder (README, "Hierarchical targets").';
        END IF;
        IF v_script_set = 'Hierarchical' AND (
            SELECT a.attcollation FROM pg_catalog.pg_attribute AS a
            WHERE a.attrelid = pg_catalog.to_regclass(v_target_object) AND a.attname = 'name' AND NOT a.attisdropped
        ) IS DISTINCT FROM (
            SELECT a.attcollation FROM pg_catalog.pg_attribute AS a
            WHERE a.attrelid = pg_catalog.to_regclass(v_source_object) AND a.attname = 'name' AND NOT a.attisdropped
        ) THEN
            -- Step 2a frees the names a run writes, comparing them as the target does: both sides must.
            RAISE EXCEPTION USING ERRCODE = '22023', MESSAGE = format(
                'the source''s and the target''s name columns compare names differently (collations %s and %s); '
                'give them the same collation.',
                coalesce((SELECT c.collname FROM pg_catalog.pg_attribute AS a JOIN pg_catalog.pg_collation AS c ON c.oid = a.attcollation
                          WHERE a.attrelid = pg_catalog.to_regclass(v_source_object) AND a.attname = 'name'), 'none'),
                coalesce((SELECT c.collname FROM pg_catalog.pg_attribute AS a JOIN pg_catalog.pg_collation AS c ON c.oid = a.attcollation
                          WHERE a.attrelid = pg_catalog.to_regclass(v_target_object) AND a.attname = 'name'), 'none'));
        END IF;
        IF v_script_set <> 'Hierarchical' AND EXISTS (
            SELECT 1 FROM pg_catalog.pg_attribute AS a
            WHERE a.attrelid = pg_catalog.to_regclass(v_target_object) AND a.attname = v_id_column
              AND a.attnum > 0 AND NOT a.attisdropped AND a.attidentity <> ''
        ) THEN
            RAISE EXCEPTION USING ERRCODE = '22023', MESSAGE = format(
                'the target''s key column %s is an identity column; the engine copies keys from the source and '
                'never writes an identity column.', {{ quotename('v_id_column') }});
        END IF;
        DECLARE
            -- A Flat target's key or ModifiedOn column that the server computes, the first in column order.
            v_generated_column text := (
                SELECT a.attname::text FROM pg_catalog.pg_attribute AS a
                WHERE v_script_set <> 'Hierarchical'
                  AND a.attrelid = pg_catalog.to_regclass(v_target_object) AND a.attname IN (v_id_column, v_modified_column)
                  AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated <> ''
                ORDER BY a.attnum LIMIT 1);
        BEGIN
            IF v_generated_column IS NOT NULL THEN
                RAISE EXCEPTION USING ERRCODE = '22023', MESSAGE = format(
                    'the target''s column %s is computed by the server; the engine copies the key and ModifiedOn columns '
                    'from the source and compares them, so neither may be computed or generated.',
                    {{ quotename('v_generated_column') }});
            END IF;
        END;
{%- endmacro -%}
