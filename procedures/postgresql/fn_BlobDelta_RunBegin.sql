{%- from "postgresql/engine.sql" import in_run_scope, require_running_run, resolved_declarations, resolve -%}
{%- from "common/header.sql" import header -%}
{%- from "postgresql/errors.sql" import raise_collected -%}
{%- from "postgresql/uuid7.sql" import new_uuid7 -%}
CREATE OR REPLACE FUNCTION {{ job('fn_BlobDelta_RunBegin') }}(
    IN "Mode" text,
    IN "TableName" text,
    IN "BatchSize" integer,
    IN "MaxDOP" integer,
    IN "BusinessUnitId" uuid,
    IN "SyncType" text,
    IN "Execute" boolean,
    IN "ResumeRunId" uuid,
    IN "RunId" uuid,
    IN "Debug" smallint,
    OUT run_id uuid,
    OUT tables text[],
    OUT plan text
)
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET "TimeZone" = 'UTC'
AS $function$
#variable_conflict use_column
{{ header('fn_BlobDelta_RunBegin',
          'Internal to usp_BlobDelta_Run (PostgreSQL): checks every parameter (all problems in one
    error, SQLSTATE 22023), then either returns the plan (Execute = false: per table its window
    and the rows it would process; nothing is written) or writes the run header (a new run,
    or a resumed one set back to Running) and returns the RunId and the tables in scope.
    SECURITY DEFINER: members of BlobDeltaOperator reach the configuration only through it.') }}
DECLARE
    v_mode text := "Mode";
    v_table_name text := "TableName";
    v_batch_size integer := "BatchSize";
    v_max_dop integer := "MaxDOP";
    v_business_unit uuid := "BusinessUnitId";
    v_sync_type text := "SyncType";
    v_execute boolean := "Execute";
    v_resume uuid := "ResumeRunId";
    v_given_run uuid := "RunId";
    v_debug smallint := coalesce("Debug", 0);
    v_errors text[] := ARRAY[]::text[];
    v_error_text text;
    v_configured text;
    v_run record;
    v_run_started timestamp(3);
    v_uuid7_bytes bytea;
    v_table text;
    v_plan jsonb := '[]'::jsonb;
    v_error text;
    v_window_start timestamp(3);
    v_window_end timestamp(3);
    v_rows bigint;
{{ resolved_declarations() }}
    v_key_column text;
    v_cfg record;
    v_sql_count text;
BEGIN
    ------------------------------------------------------------------- check parameters
    IF v_resume IS NOT NULL THEN
        SELECT r.* INTO v_run FROM {{ job('BlobDeltaRun') }} AS r WHERE r."RunId" = v_resume;
        IF NOT FOUND THEN
            v_errors := v_errors || format('@ResumeRunId ''%s'' is not a run in dbo.BlobDeltaRun.', v_resume);
        ELSIF v_run."Status" NOT IN ('Running', 'Failed') THEN
            v_errors := v_errors || format('@ResumeRunId ''%s'' has status %s; only Running or Failed runs can be resumed.',
                                           v_resume, v_run."Status");
        ELSE
            -- A resumed run keeps the parameters it was started with.
            v_mode := v_run."Mode";
            v_table_name := v_run."TableName";
            v_business_unit := v_run."BusinessUnitId";
            v_sync_type := v_run."RunType";
            v_batch_size := v_run."BatchSize";
            v_max_dop := v_run."MaxDOP";
        END IF;
        IF v_execute IS DISTINCT FROM true THEN
            v_errors := v_errors || '@ResumeRunId cannot be combined with @Execute = 0.'::text;
        END IF;
    END IF;
    IF v_given_run IS NOT NULL AND v_resume IS NULL AND v_execute IS NOT DISTINCT FROM true
       AND EXISTS (SELECT 1 FROM {{ job('BlobDeltaRun') }} AS r WHERE r."RunId" = v_given_run) THEN
        v_errors := v_errors || format('@RunId ''%s'' already exists in dbo.BlobDeltaRun; continue it with @ResumeRunId.',
                                       v_given_run);
    END IF;
    IF v_mode IS NULL OR v_mode NOT IN ('AllTables', 'SingleTable') THEN
        v_errors := v_errors || format('@Mode %s is not allowed; allowed values: AllTables, SingleTable.',
                                       coalesce(quote_literal(v_mode), 'NULL'));
    END IF;
    IF v_sync_type IS NULL OR v_sync_type NOT IN ('Incremental', 'Full') THEN
        v_errors := v_errors || format('@SyncType %s is not allowed; allowed values: Incremental, Full.',
                                       coalesce(quote_literal(v_sync_type), 'NULL'));
    END IF;
    IF v_mode = 'SingleTable' AND (v_table_name IS NULL OR btrim(v_table_name) = '') THEN
        v_errors := v_errors || '@TableName is required when @Mode = ''SingleTable''.'::text;
    ELSIF v_mode = 'AllTables' AND v_table_name IS NOT NULL THEN
        v_errors := v_errors || format('@TableName must be NULL when @Mode = ''AllTables'' (got %s).', quote_literal(v_table_name));
    ELSIF v_mode = 'SingleTable' AND NOT EXISTS (
        SELECT 1 FROM {{ job('BlobDeltaTableConfig') }} AS c WHERE c."TableName" = v_table_name
    ) THEN
        SELECT string_agg(c."TableName", ', ' ORDER BY c."TableName" COLLATE "C") INTO v_configured
        FROM {{ job('BlobDeltaTableConfig') }} AS c;
        v_errors := v_errors || left(format('@TableName %s is not configured in dbo.BlobDeltaTableConfig; allowed values: %s.',
                                            quote_literal(v_table_name), coalesce(v_configured, '(no tables configured)')), 2000);
    END IF;
    IF v_batch_size IS NULL OR v_batch_size < 1 THEN
        v_errors := v_errors || format('@BatchSize must be 1 or more (got %s).', coalesce(v_batch_size::text, 'NULL'));
    END IF;
    IF v_max_dop IS NULL OR v_max_dop < 0 THEN
        v_errors := v_errors || format('@MaxDOP must be 0 or more (got %s).', coalesce(v_max_dop::text, 'NULL'));
    END IF;
    IF v_execute IS NULL THEN
        v_errors := v_errors || '@Execute must be 1 (run) or 0 (plan only).'::text;
    END IF;

    {{ raise_collected('22023') }}

    SELECT array_agg(c."TableName" ORDER BY c."TableName" COLLATE "C") INTO tables
    FROM {{ job('BlobDeltaTableConfig') }} AS c
    WHERE {{ in_run_scope('v_mode', 'v_table_name') }};
    tables := coalesce(tables, ARRAY[]::text[]);

    ------------------------------------------------------------------- plan only
    IF NOT v_execute THEN
        v_run_started := (now() AT TIME ZONE 'UTC');
        FOREACH v_table IN ARRAY tables LOOP
            v_error := NULL;
            v_rows := NULL;
            v_window_start := NULL;
            v_window_end := NULL;
            BEGIN
                {{ resolve('v_table') }}
                SELECT c.* INTO v_cfg FROM {{ job('BlobDeltaTableConfig') }} AS c WHERE c."TableName" = v_table;
                v_key_column := CASE v_script_set WHEN 'Hierarchical' THEN 'stream_id' ELSE v_id_column END;
                SELECT w.window_start, w.window_end INTO v_window_start, v_window_end
                FROM {{ job('fn_BlobDelta_Window') }}(v_table, NULL::uuid, v_run_started, v_sync_type) AS w;
                v_sql_count := format(
                    'SELECT count(*) FROM %I.%I AS s JOIN %I.%I AS m ON m.%I = s.%I JOIN %I.%I AS bu ON bu.%I = m.%I '
                    'WHERE m.%I >= $1 AND m.%I < $2 AND ($3 IS NULL OR m.%I = $3)',
                    v_cfg."SourceDatabase", v_cfg."SourceTable", v_cfg."MetadataDatabase", v_cfg."MetadataTable",
                    v_id_column, v_key_column, v_cfg."BusinessUnitDatabase", v_cfg."BusinessUnitTable",
                    v_bu_id_column, v_bu_column, v_modified_column, v_modified_column, v_bu_column);
                EXECUTE v_sql_count INTO v_rows USING v_window_start, v_window_end, v_business_unit;
            EXCEPTION WHEN OTHERS THEN
                v_error := SQLERRM;
            END;
            v_plan := v_plan || jsonb_build_array(jsonb_build_object(
                'table', v_table,
                'window_start', to_char(v_window_start, 'YYYY-MM-DD HH24:MI:SS.MS'),
                'window_end', to_char(v_window_end, 'YYYY-MM-DD HH24:MI:SS.MS'),
                'rows', v_rows,
                'error', v_error));
        END LOOP;
        plan := v_plan::text;
        RETURN;
    END IF;

    ------------------------------------------------------------------- run header
    IF v_resume IS NOT NULL THEN
        run_id := v_resume;
        UPDATE {{ job('BlobDeltaRun') }} AS r
        SET "Status" = 'Running', "RunCompletedAt" = NULL, "ErrorMessage" = NULL
        WHERE r."RunId" = run_id;
    ELSE
        -- A caller-supplied RunId makes the call idempotent: a retry after a dropped
        -- connection resumes this run instead of starting a second one.
        run_id := v_given_run;
        IF run_id IS NULL THEN
            {{ new_uuid7('run_id') }}
        END IF;
        v_run_started := (now() AT TIME ZONE 'UTC');
        -- session_user: the login that asked, not this function's owner.
        INSERT INTO {{ job('BlobDeltaRun') }}
            ("RunId", "RunType", "Mode", "TableName", "BusinessUnitId", "BatchSize", "MaxDOP", "RequestedBy",
             "RunStartedAt", "Status")
        VALUES (run_id, v_sync_type, v_mode, v_table_name, v_business_unit, v_batch_size, v_max_dop, session_user,
                v_run_started, 'Running');
    END IF;
    IF v_debug >= 1 THEN
        RAISE NOTICE 'Run % (%): % table(s), sync %, batch size %.', run_id,
            CASE WHEN v_resume IS NULL THEN 'new' ELSE 'resumed' END, cardinality(tables), v_sync_type, v_batch_size;
    END IF;
END;
$function$
