{%- from "postgresql/engine.sql" import require_supported_target, in_run_scope, require_running_run, resolved_declarations, resolve -%}
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
    IN "ExcludedStreamId" uuid DEFAULT NULL,
    IN "Wait" boolean DEFAULT false,
    OUT run_id uuid,
    OUT tables text[],
    OUT plan text,
    OUT lock_key bigint,
    OUT state text
)
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET "TimeZone" = 'UTC'
AS $function$
#variable_conflict use_column
{{ header('fn_BlobDelta_RunBegin',
          'Internal to usp_BlobDelta_Run (PostgreSQL): checks every parameter (all problems in one
    error, SQLSTATE 22023), then either returns the plan (Execute = false: per table its window,
    whether a held lease would skip it, and per step the rows the run would insert, update and
    delete, from the table''s plan script; nothing is written) or takes the run''s session lock
    and writes the run header (a new run, or a resumed one set back to Running) and returns the
    RunId, the tables in scope and the lock key. The lock is a session-level advisory lock on the
    RunId: a run executes in one session at a time. Taken without waiting, it fails with SQLSTATE
    55P03 naming the run and the session that holds it; with Wait it waits, and a resumed run
    that ended meanwhile comes back with its final status in state, unchanged. The caller
    releases the lock (pg_advisory_unlock(lock_key)) when the run ends.
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
    v_excluded uuid := "ExcludedStreamId";
    v_wait boolean := coalesce("Wait", false);
    v_holder record;
    v_holder_pid integer;
    v_skipped text;
    v_steps jsonb;
    v_step record;
    v_step_name text;
    v_plan_script text;
    v_sql_plan text;
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
BEGIN
    ------------------------------------------------------------------- check parameters
    IF v_resume IS NOT NULL THEN
        SELECT r.* INTO v_run FROM {{ job('BlobDeltaRun') }} AS r WHERE r."RunId" = v_resume;
        IF NOT FOUND THEN
            v_errors := v_errors || format('@ResumeRunId ''%s'' is not a run in "BlobDeltaJobs"."BlobDeltaRun".', v_resume);
        ELSIF v_run."Status" NOT IN ('Running', 'Failed') AND NOT v_wait THEN
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
        v_errors := v_errors || format('@RunId ''%s'' already exists in "BlobDeltaJobs"."BlobDeltaRun"; continue it with @ResumeRunId.',
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
        v_errors := v_errors || left(format('@TableName %s is not configured in "BlobDeltaJobs"."BlobDeltaTableConfig"; allowed values: %s.',
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
            v_skipped := NULL;
            v_steps := '[]'::jsonb;
            BEGIN
                {{ resolve('v_table') }}
{{ require_supported_target() }}
                SELECT w.window_start, w.window_end INTO v_window_start, v_window_end
                FROM {{ job('fn_BlobDelta_Window') }}(v_table, NULL::uuid, v_run_started, v_sync_type) AS w;
                -- A lease another run holds now makes a run skip the table.
                SELECT w."LeaseRunId", w."RunLeaseExpiresAt" INTO v_holder
                FROM {{ job('BlobDeltaHighWatermark') }} AS w
                WHERE w."TableName" = v_table AND w."IsRunning" AND w."RunLeaseExpiresAt" >= v_run_started;
                IF FOUND THEN
                    v_skipped := format('Table ''%s'' is being processed by run %s (lease expires %s UTC); a run now would skip it.',
                        v_table, v_holder."LeaseRunId", to_char(v_holder."RunLeaseExpiresAt", 'YYYY-MM-DD HH24:MI:SS.MS'));
                ELSE
                    SELECT p."ScriptText" INTO v_plan_script
                    FROM {{ job('BlobDeltaPlanScript') }} AS p
                    WHERE p."ScriptSet" = v_script_set AND p."IsActive";
                    IF NOT FOUND THEN
                        RAISE EXCEPTION 'Script set % has no active plan script in "BlobDeltaJobs"."BlobDeltaPlanScript".', v_script_set;
                    END IF;
                    v_sql_plan := {{ job('fn_BlobDelta_FillScript') }}(v_table, v_plan_script);
                    IF v_debug >= 2 THEN
                        RAISE NOTICE '%', v_sql_plan;
                    END IF;
                    v_rows := 0;
                    -- The same parameters a run's batches get; $10: the run starts with a Full sync's clean slate.
                    FOR v_step IN EXECUTE v_sql_plan
                        USING v_batch_size, v_excluded, v_window_start, v_window_end, v_business_unit, NULL::uuid,
                              v_table, NULL::timestamp(3), false, v_sync_type = 'Full'
                    LOOP
                        -- Only the steps a run executes: the window (0) and the active scripts of the set.
                        SELECT x.step_name INTO v_step_name
                        FROM (SELECT 0 AS step_number, 'Window'::text AS step_name
                              UNION ALL
                              SELECT s."StepNumber", s."StepName" FROM {{ job('BlobDeltaStepScript') }} AS s
                              WHERE s."ScriptSet" = v_script_set AND s."IsActive") AS x
                        WHERE x.step_number = v_step.step_number;
                        CONTINUE WHEN NOT FOUND;
                        v_steps := v_steps || jsonb_build_array(jsonb_build_object(
                            'step', v_step.step_number, 'name', v_step_name, 'inserted', v_step.inserted,
                            'updated', v_step.updated, 'deleted', v_step.deleted));
                        IF v_step.step_number > 0 THEN
                            v_rows := v_rows + v_step.inserted + v_step.updated + v_step.deleted;
                        END IF;
                    END LOOP;
                END IF;
            EXCEPTION WHEN OTHERS THEN
                v_error := SQLERRM;
                v_rows := NULL;
                v_steps := '[]'::jsonb;
            END;
            v_plan := v_plan || jsonb_build_array(jsonb_build_object(
                'table', v_table,
                'window_start', to_char(v_window_start, 'YYYY-MM-DD HH24:MI:SS.MS'),
                'window_end', to_char(v_window_end, 'YYYY-MM-DD HH24:MI:SS.MS'),
                'rows', v_rows,
                'error', v_error,
                'skipped', v_skipped,
                'steps', v_steps));
        END LOOP;
        plan := v_plan::text;
        RETURN;
    END IF;

    ------------------------------------------------------------------- run header
    -- A caller-supplied RunId makes the call idempotent: a retry after a dropped connection
    -- resumes this run instead of starting a second one.
    run_id := coalesce(v_resume, v_given_run);
    IF run_id IS NULL THEN
        {{ new_uuid7('run_id') }}
    END IF;

    -- One session per run: a resume or a retry while the session that works the run is still
    -- at it (its client was killed, say) is refused or waits; never a second worker beside it.
    lock_key := hashtextextended('dbtools.BlobDeltaRun:' || run_id::text, 0);
    IF v_wait THEN
        PERFORM pg_catalog.pg_advisory_lock(lock_key);
    ELSIF NOT pg_catalog.pg_try_advisory_lock(lock_key) THEN
        SELECT l.pid INTO v_holder_pid
        FROM pg_catalog.pg_locks AS l
        WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1
          AND l.database = (SELECT d.oid FROM pg_catalog.pg_database AS d WHERE d.datname = pg_catalog.current_database())
          AND l.classid = ((lock_key >> 32) & 4294967295)::oid AND l.objid = (lock_key & 4294967295)::oid
        LIMIT 1;
        RAISE EXCEPTION USING ERRCODE = '55P03',
            MESSAGE = format('Run %s is still executing in another session (PID %s); wait for it to end, or resume '
                             'with Wait (dbtools resume --wait), which waits for that session first.',
                             run_id, coalesce(v_holder_pid::text, 'unknown')),
            HINT = 'A CALL that failed keeps the run''s lock until its session ends: end that session, '
                   'or run SELECT pg_advisory_unlock_all() in it.';
    END IF;

    IF v_resume IS NOT NULL THEN
        SELECT r.* INTO v_run FROM {{ job('BlobDeltaRun') }} AS r WHERE r."RunId" = v_resume;
        IF v_run."Status" NOT IN ('Running', 'Failed') THEN
            -- Waited for the session that worked it, and it finished the run: report that, change nothing.
            PERFORM pg_catalog.pg_advisory_unlock(lock_key);
            state := v_run."Status";
            RETURN;
        END IF;
        UPDATE {{ job('BlobDeltaRun') }} AS r
        SET "Status" = 'Running', "RunCompletedAt" = NULL, "ErrorMessage" = NULL
        WHERE r."RunId" = run_id;
    ELSE
        v_run_started := (now() AT TIME ZONE 'UTC');
        -- session_user: the login that asked, not this function's owner.
        INSERT INTO {{ job('BlobDeltaRun') }}
            ("RunId", "RunType", "Mode", "TableName", "BusinessUnitId", "BatchSize", "MaxDOP", "RequestedBy",
             "RunStartedAt", "Status")
        VALUES (run_id, v_sync_type, v_mode, v_table_name, v_business_unit, v_batch_size, v_max_dop, session_user,
                v_run_started, 'Running');
    END IF;
    state := 'Running';
    IF v_debug >= 1 THEN
        RAISE NOTICE 'Run % (%): % table(s), sync %, batch size %.', run_id,
            CASE WHEN v_resume IS NULL THEN 'new' ELSE 'resumed' END, cardinality(tables), v_sync_type, v_batch_size;
    END IF;
END;
$function$
