{%- from "common/header.sql" import header -%}
{%- from "postgresql/errors.sql" import raise_collected -%}
{%- from "postgresql/quoting.sql" import quotename -%}
{%- from "postgresql/uuid7.sql" import new_uuid7 -%}
CREATE OR REPLACE PROCEDURE {{ job('usp_BlobDelta_Run') }}(
    IN "Mode" text DEFAULT 'AllTables',
    IN "TableName" text DEFAULT NULL,
    IN "BatchSize" integer DEFAULT 500,
    IN "MaxDOP" integer DEFAULT 0,
    IN "BusinessUnitId" uuid DEFAULT NULL,
    IN "SyncType" text DEFAULT 'Incremental',
    IN "Execute" boolean DEFAULT true,
    IN "ResumeRunId" uuid DEFAULT NULL,
    IN "ExcludedStreamId" uuid DEFAULT NULL,
    IN "Debug" smallint DEFAULT 0,
    INOUT "RunId" uuid DEFAULT NULL,
    INOUT "Status" text DEFAULT NULL,
    INOUT "Plan" text DEFAULT NULL
)
LANGUAGE plpgsql
AS $procedure$
#variable_conflict use_column
{{ header('usp_BlobDelta_Run',
          'The delta engine. For each table in scope: window on the metadata ModifiedOn column
    [WindowStart, WindowEnd), a lease, the stored step scripts run in batches (each batch one
    transaction with its BlobDeltaRunStep row), then the watermark moves to WindowEnd. A failed
    table is logged, its lease released, and the next table runs. Execute = false returns the
    plan (JSON in "Plan") and changes nothing. A RunId passed in names the new run (idempotent
    retries); ResumeRunId continues an interrupted one. Call it outside a transaction block (autocommit):
    it commits after every batch, which is what makes runs visible and resumable. It cannot
    have a SET clause for that reason, so it pins search_path (and TimeZone to UTC, so that a
    timestamptz ModifiedOn compares as UTC, as on SQL Server) with set_config after each commit.') }}
DECLARE
    v_mode text := "Mode";
    v_table_name text := "TableName";
    v_batch_size integer := "BatchSize";
    v_max_dop integer := "MaxDOP";
    v_business_unit uuid := "BusinessUnitId";
    v_sync_type text := "SyncType";
    v_execute boolean := "Execute";
    v_resume uuid := "ResumeRunId";
    v_excluded uuid := "ExcludedStreamId";
    v_given_run uuid := "RunId";
    v_debug smallint := coalesce("Debug", 0);
    v_errors text[] := ARRAY[]::text[];
    v_error_text text;
    v_configured text;
    v_run record;
    v_run_id uuid;
    v_run_started timestamp(3);
    v_uuid7_bytes bytea;
    v_tables text[];
    v_table text;
    v_plan jsonb := '[]'::jsonb;
    v_failures text[] := ARRAY[]::text[];
    v_error text;
    v_cfg record;
    v_wm record;
    v_now timestamp(3);
    v_window_start timestamp(3);
    v_window_end timestamp(3);
    v_has_window boolean;
    v_rows bigint;
    v_position timestamp(3);
    v_last timestamp(3);
    v_total bigint;
    v_batch_number integer;
    v_step record;
    v_step_failed boolean;
    v_holder record;
    v_q_source text;
    v_q_target text;
    v_q_metadata text;
    v_q_business_unit text;
    v_q_queue text := '{{ job("BlobDeltaMissingParentsQueue") }}';
    v_q_id text;
    v_q_modified text;
    v_q_bu_column text;
    v_q_bu_id text;
    v_q_columns text;
    v_q_source_columns text;
    v_q_update text;
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
    v_key_column text;
    v_sql_count text;
    v_sql_clear text;
    v_sql_step text;
    v_status text;
BEGIN
    PERFORM pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', true);
    PERFORM pg_catalog.set_config('TimeZone', 'UTC', true);

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

    SELECT array_agg(c."TableName" ORDER BY c."TableName" COLLATE "C") INTO v_tables
    FROM {{ job('BlobDeltaTableConfig') }} AS c
    WHERE (v_mode = 'SingleTable' AND c."TableName" = v_table_name)
       OR (v_mode = 'AllTables' AND c."IsActive");
    v_tables := coalesce(v_tables, ARRAY[]::text[]);

    ------------------------------------------------------------------- run header
    IF v_execute THEN
        IF v_resume IS NOT NULL THEN
            v_run_id := v_resume;
            v_run_started := v_run."RunStartedAt";
            UPDATE {{ job('BlobDeltaRun') }} AS r
            SET "Status" = 'Running', "RunCompletedAt" = NULL, "ErrorMessage" = NULL
            WHERE r."RunId" = v_run_id;
        ELSE
            -- A caller-supplied RunId makes the call idempotent: a retry after a dropped
            -- connection resumes this run instead of starting a second one.
            v_run_id := v_given_run;
            IF v_run_id IS NULL THEN
                {{ new_uuid7('v_run_id') }}
            END IF;
            v_run_started := (now() AT TIME ZONE 'UTC');
            INSERT INTO {{ job('BlobDeltaRun') }}
                ("RunId", "RunType", "Mode", "TableName", "BusinessUnitId", "BatchSize", "MaxDOP", "RunStartedAt", "Status")
            VALUES (v_run_id, v_sync_type, v_mode, v_table_name, v_business_unit, v_batch_size, v_max_dop, v_run_started, 'Running');
        END IF;
        "RunId" := v_run_id;
        COMMIT;
        PERFORM pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', true);
        PERFORM pg_catalog.set_config('TimeZone', 'UTC', true);
        IF v_debug >= 1 THEN
            RAISE NOTICE 'Run % (%): % table(s), sync %, batch size %.', v_run_id,
                CASE WHEN v_resume IS NULL THEN 'new' ELSE 'resumed' END, cardinality(v_tables), v_sync_type, v_batch_size;
        END IF;
    ELSE
        v_run_started := (now() AT TIME ZONE 'UTC');
    END IF;

    ------------------------------------------------------------------- tables
    FOREACH v_table IN ARRAY v_tables LOOP
        v_error := NULL;
        v_has_window := false;
        v_window_start := NULL;  -- nothing of the previous table may leak into this one
        v_window_end := NULL;
        SELECT w.* INTO v_wm FROM {{ job('BlobDeltaHighWatermark') }} AS w WHERE w."TableName" = v_table;

        -- Resolve names, check the catalog and compute the window. Nothing is written here.
        BEGIN
            CALL {{ job('usp_BlobDelta_ResolveTableConfig') }}(
                v_table, v_source_object, v_target_object, v_metadata_object, v_id_column, v_modified_column,
                v_bu_column, v_buffer, v_script_set, v_active, v_bu_object, v_bu_id_column);
            SELECT c.* INTO v_cfg FROM {{ job('BlobDeltaTableConfig') }} AS c WHERE c."TableName" = v_table;
            v_key_column := CASE v_script_set WHEN 'Hierarchical' THEN 'stream_id' ELSE v_id_column END;

            IF v_execute AND v_resume IS NOT NULL THEN
                SELECT s."WindowStart", s."WindowEnd" INTO v_window_start, v_window_end
                FROM {{ job('BlobDeltaRunStep') }} AS s
                WHERE s."RunId" = v_run_id AND s."TableName" = v_table AND s."StepNumber" = 0 AND s."Status" = 'Completed'
                ORDER BY s."BatchNumber" DESC
                LIMIT 1;
                v_has_window := FOUND;
            END IF;
            IF NOT v_has_window THEN
                v_window_end := v_run_started - make_interval(mins => v_buffer);
                IF v_sync_type = 'Full' THEN
                    v_window_start := v_run_started - make_interval(months => v_cfg."FullSyncBaselineMonths",
                                                                    days => v_cfg."FullSyncBaselineDays");
                ELSIF v_wm."LastHighWaterModifiedOn" IS NOT NULL THEN
                    v_window_start := v_wm."LastHighWaterModifiedOn" - make_interval(mins => v_buffer);
                ELSIF v_cfg."InitialBaseline" IS NOT NULL THEN
                    v_window_start := v_cfg."InitialBaseline";
                ELSE
                    v_window_start := v_run_started - make_interval(months => v_cfg."FullSyncBaselineMonths",
                                                                    days => v_cfg."FullSyncBaselineDays");
                END IF;
            END IF;
        EXCEPTION WHEN OTHERS THEN
            v_error := SQLERRM;
        END;

        ----------------------------------------------------------------- plan only
        IF NOT v_execute THEN
            v_rows := NULL;
            IF v_error IS NULL THEN
                BEGIN
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
            END IF;
            v_plan := v_plan || jsonb_build_array(jsonb_build_object(
                'table', v_table,
                'window_start', to_char(v_window_start, 'YYYY-MM-DD HH24:MI:SS.MS'),
                'window_end', to_char(v_window_end, 'YYYY-MM-DD HH24:MI:SS.MS'),
                'rows', v_rows,
                'error', v_error));
            CONTINUE;
        END IF;

        ----------------------------------------------------------------- execute
        IF v_resume IS NOT NULL AND v_wm."LastRunId" = v_run_id THEN
            CONTINUE; -- finished by this run before it was interrupted
        END IF;

        IF v_error IS NULL THEN
            BEGIN
                v_now := (now() AT TIME ZONE 'UTC');
                INSERT INTO {{ job('BlobDeltaHighWatermark') }} ("TableName") VALUES (v_table)
                ON CONFLICT ("TableName") DO NOTHING;
                UPDATE {{ job('BlobDeltaHighWatermark') }} AS w
                SET "IsRunning" = true,
                    "RunLeaseExpiresAt" = v_now + make_interval(mins => v_cfg."LeaseMinutes"),
                    "LeaseRunId" = v_run_id
                WHERE w."TableName" = v_table
                  AND (NOT w."IsRunning" OR w."RunLeaseExpiresAt" < v_now OR w."LeaseRunId" = v_run_id);
                IF NOT FOUND THEN
                    SELECT w."LeaseRunId", w."RunLeaseExpiresAt" INTO v_holder
                    FROM {{ job('BlobDeltaHighWatermark') }} AS w WHERE w."TableName" = v_table;
                    RAISE EXCEPTION 'Table ''%'' is being processed by run % (lease expires % UTC); skipped.',
                        v_table, v_holder."LeaseRunId", to_char(v_holder."RunLeaseExpiresAt", 'YYYY-MM-DD HH24:MI:SS.MS');
                END IF;

                IF NOT v_has_window THEN
                    IF v_sync_type = 'Full' THEN
                        -- Full sync starts from a clean slate for the scope: this table's queue and target rows.
                        DELETE FROM {{ job('BlobDeltaMissingParentsQueue') }} AS q
                        WHERE q."TableName" = v_table
                          AND (v_business_unit IS NULL OR q."BusinessUnit" = v_business_unit);
                        v_sql_clear := format(
                            'DELETE FROM %I.%I AS t WHERE $1 IS NULL OR EXISTS '
                            '(SELECT 1 FROM %I.%I AS m WHERE m.%I = t.%I AND m.%I = $1)',
                            v_cfg."TargetDatabase", v_cfg."TargetTable", v_cfg."MetadataDatabase", v_cfg."MetadataTable",
                            v_id_column, v_key_column, v_bu_column);
                        EXECUTE v_sql_clear USING v_business_unit;
                    END IF;
                    INSERT INTO {{ job('BlobDeltaRunStep') }}
                        ("RunId", "TableName", "StepNumber", "StepName", "BatchNumber", "RowsProcessed", "TotalRowsProcessed",
                         "WindowStart", "WindowEnd", "BatchStartedAt", "BatchCompletedAt", "Status")
                    SELECT v_run_id, v_table, 0, 'Window', coalesce(max(s."BatchNumber"), 0) + 1, 0, 0,
                           v_window_start, v_window_end, v_now, v_now, 'Completed'
                    FROM {{ job('BlobDeltaRunStep') }} AS s
                    WHERE s."RunId" = v_run_id AND s."TableName" = v_table AND s."StepNumber" = 0;
                END IF;
            EXCEPTION WHEN OTHERS THEN
                v_error := SQLERRM;
            END;
        END IF;

        IF v_error IS NOT NULL THEN
            v_now := (now() AT TIME ZONE 'UTC');
            INSERT INTO {{ job('BlobDeltaRunStep') }}
                ("RunId", "TableName", "StepNumber", "StepName", "BatchNumber", "WindowStart", "WindowEnd",
                 "BatchStartedAt", "BatchCompletedAt", "Status", "ErrorMessage")
            SELECT v_run_id, v_table, 0, 'Window', coalesce(max(s."BatchNumber"), 0) + 1, v_window_start, v_window_end,
                   v_now, v_now, 'Failed', v_error
            FROM {{ job('BlobDeltaRunStep') }} AS s
            WHERE s."RunId" = v_run_id AND s."TableName" = v_table AND s."StepNumber" = 0;
            UPDATE {{ job('BlobDeltaHighWatermark') }} AS w
            SET "IsRunning" = false, "RunLeaseExpiresAt" = NULL, "LeaseRunId" = NULL
            WHERE w."TableName" = v_table AND w."LeaseRunId" = v_run_id;
            COMMIT;
            PERFORM pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', true);
            PERFORM pg_catalog.set_config('TimeZone', 'UTC', true);
            v_failures := v_failures || format('Table ''%s'': %s', v_table, v_error);
            CONTINUE;
        END IF;
        COMMIT; -- the lease and the window are visible from here on
        PERFORM pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', true);
        PERFORM pg_catalog.set_config('TimeZone', 'UTC', true);

        -- Identifiers for the placeholders, always quoted.
        v_q_source := v_source_object;
        v_q_target := v_target_object;
        v_q_metadata := v_metadata_object;
        v_q_business_unit := v_bu_object;
        v_q_id := {{ quotename('v_id_column') }};
        v_q_modified := {{ quotename('v_modified_column') }};
        v_q_bu_column := {{ quotename('v_bu_column') }};
        v_q_bu_id := {{ quotename('v_bu_id_column') }};
        SELECT string_agg({{ quotename('a.attname::text') }}, ', ' ORDER BY a.attnum),
               string_agg('s.' || {{ quotename('a.attname::text') }}, ', ' ORDER BY a.attnum),
               string_agg(CASE WHEN a.attname <> v_id_column
                               THEN {{ quotename('a.attname::text') }} || ' = EXCLUDED.' || {{ quotename('a.attname::text') }} END,
                          ', ' ORDER BY a.attnum)
        INTO v_q_columns, v_q_source_columns, v_q_update
        FROM pg_catalog.pg_attribute AS a
        WHERE a.attrelid = pg_catalog.to_regclass(v_target_object) AND a.attnum > 0 AND NOT a.attisdropped
          AND a.attgenerated = ''  -- generated columns cannot be written
          AND EXISTS (SELECT 1 FROM pg_catalog.pg_attribute AS sa
                      WHERE sa.attrelid = pg_catalog.to_regclass(v_source_object) AND sa.attname = a.attname
                        AND sa.attnum > 0 AND NOT sa.attisdropped);

        ----------------------------------------------------------------- steps
        v_step_failed := false;
        FOR v_step IN
            SELECT x.step_number, x.step_name, x.script_text
            FROM (
                SELECT 2 AS step_number, 'QueuePopulation' AS step_name, q."ScriptText" AS script_text, 1 AS sub
                FROM {{ job('BlobDeltaQueuePopulationScript') }} AS q
                WHERE q."ScriptName" = v_cfg."QueuePopulationScriptName" AND q."IsActive"
                  AND EXISTS (SELECT 1 FROM {{ job('BlobDeltaStepScript') }} AS s2
                              WHERE s2."ScriptSet" = v_script_set AND s2."StepNumber" = 2 AND s2."IsActive")
                UNION ALL
                SELECT s."StepNumber", s."StepName", s."ScriptText", 2
                FROM {{ job('BlobDeltaStepScript') }} AS s
                WHERE s."ScriptSet" = v_script_set AND s."IsActive"
            ) AS x
            ORDER BY x.step_number, x.sub
        LOOP
            -- A step is done when it has a completed batch that found nothing more to do;
            -- queue population runs once (it is idempotent anyway).
            CONTINUE WHEN EXISTS (
                SELECT 1 FROM {{ job('BlobDeltaRunStep') }} AS s
                WHERE s."RunId" = v_run_id AND s."TableName" = v_table AND s."StepNumber" = v_step.step_number
                  AND s."StepName" = v_step.step_name AND s."Status" = 'Completed'
                  AND (s."RowsProcessed" = 0 OR v_step.step_name = 'QueuePopulation'));

            v_sql_step := v_step.script_text;
            v_sql_step := replace(v_sql_step, '{SourceObject}', v_q_source);
            v_sql_step := replace(v_sql_step, '{TargetObject}', v_q_target);
            v_sql_step := replace(v_sql_step, '{MetadataObject}', v_q_metadata);
            v_sql_step := replace(v_sql_step, '{BusinessUnitObject}', v_q_business_unit);
            v_sql_step := replace(v_sql_step, '{QueueObject}', v_q_queue);
            v_sql_step := replace(v_sql_step, '{MetadataIdColumn}', v_q_id);
            v_sql_step := replace(v_sql_step, '{MetadataModifiedOnCol}', v_q_modified);
            v_sql_step := replace(v_sql_step, '{MetadataBusinessUnitCol}', v_q_bu_column);
            v_sql_step := replace(v_sql_step, '{BusinessUnitIdColumn}', v_q_bu_id);
            v_sql_step := replace(v_sql_step, '{SourceColumnList}', v_q_source_columns);
            v_sql_step := replace(v_sql_step, '{ColumnList}', v_q_columns);
            v_sql_step := replace(v_sql_step, '{UpdateList}', v_q_update);
            IF v_debug >= 2 THEN
                RAISE NOTICE '%', v_sql_step;
            END IF;

            -- Keyset position: a batch starts at the last ModifiedOn of the step's previous
            -- completed batch in this run (also after a resume), so no batch re-reads the window.
            SELECT max(s."LastModifiedOn") INTO v_position
            FROM {{ job('BlobDeltaRunStep') }} AS s
            WHERE s."RunId" = v_run_id AND s."TableName" = v_table AND s."StepNumber" = v_step.step_number
              AND s."StepName" = v_step.step_name AND s."Status" = 'Completed';

            LOOP
                v_now := (now() AT TIME ZONE 'UTC');
                -- Batch numbers run per step number (queue population and its batches share step 2);
                -- a failed batch keeps its number and the retry gets the next one.
                SELECT coalesce(max(s."BatchNumber"), 0) + 1,
                       coalesce(sum(s."RowsProcessed") FILTER (WHERE s."Status" = 'Completed' AND s."StepName" = v_step.step_name), 0)
                INTO v_batch_number, v_total
                FROM {{ job('BlobDeltaRunStep') }} AS s
                WHERE s."RunId" = v_run_id AND s."TableName" = v_table AND s."StepNumber" = v_step.step_number;
                v_error := NULL;
                BEGIN
                    IF v_max_dop > 0 THEN
                        PERFORM pg_catalog.set_config('max_parallel_workers_per_gather', v_max_dop::text, true);
                    END IF;
                    -- A script's second result column (its last ModifiedOn) is optional: without it
                    -- v_last stays NULL and the next batch starts where this one started. Positions
                    -- are kept to the millisecond; a finer ModifiedOn may have been rounded up, so the
                    -- batch starts 1 ms early (rows already copied are skipped by the scripts).
                    v_last := NULL;
                    EXECUTE v_sql_step INTO v_rows, v_last
                        USING v_batch_size, v_excluded, v_window_start, v_window_end, v_business_unit, v_run_id, v_table,
                              v_position - interval '1 millisecond';
                    v_rows := coalesce(v_rows, 0);
                    INSERT INTO {{ job('BlobDeltaRunStep') }}
                        ("RunId", "TableName", "StepNumber", "StepName", "BatchNumber", "RowsProcessed", "TotalRowsProcessed",
                         "WindowStart", "WindowEnd", "LastModifiedOn", "BatchStartedAt", "BatchCompletedAt", "Status")
                    VALUES (v_run_id, v_table, v_step.step_number, v_step.step_name, v_batch_number, v_rows, v_total + v_rows,
                            v_window_start, v_window_end, coalesce(v_last, v_position), v_now,
                            (clock_timestamp() AT TIME ZONE 'UTC'), 'Completed');
                    UPDATE {{ job('BlobDeltaHighWatermark') }} AS w
                    SET "RunLeaseExpiresAt" = (now() AT TIME ZONE 'UTC') + make_interval(mins => v_cfg."LeaseMinutes")
                    WHERE w."TableName" = v_table AND w."LeaseRunId" = v_run_id;
                    IF NOT FOUND THEN
                        RAISE EXCEPTION 'The lease on this table was taken over by another run; the batch was rolled back.';
                    END IF;
                EXCEPTION WHEN OTHERS THEN
                    v_error := SQLERRM;
                END;
                IF v_error IS NOT NULL THEN
                    INSERT INTO {{ job('BlobDeltaRunStep') }}
                        ("RunId", "TableName", "StepNumber", "StepName", "BatchNumber", "RowsProcessed", "TotalRowsProcessed",
                         "WindowStart", "WindowEnd", "BatchStartedAt", "BatchCompletedAt", "Status", "ErrorMessage")
                    VALUES (v_run_id, v_table, v_step.step_number, v_step.step_name, v_batch_number, 0, v_total,
                            v_window_start, v_window_end, v_now, (clock_timestamp() AT TIME ZONE 'UTC'), 'Failed', v_error);
                    UPDATE {{ job('BlobDeltaHighWatermark') }} AS w
                    SET "IsRunning" = false, "RunLeaseExpiresAt" = NULL, "LeaseRunId" = NULL
                    WHERE w."TableName" = v_table AND w."LeaseRunId" = v_run_id;
                    COMMIT;
                    PERFORM pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', true);
                    PERFORM pg_catalog.set_config('TimeZone', 'UTC', true);
                    v_failures := v_failures || format('Table ''%s'', step %s %s, batch %s: %s',
                        v_table, v_step.step_number, v_step.step_name, v_batch_number, v_error);
                    v_step_failed := true;
                    EXIT;
                END IF;
                COMMIT;
                PERFORM pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', true);
                PERFORM pg_catalog.set_config('TimeZone', 'UTC', true);
                v_position := coalesce(v_last, v_position);
                IF v_debug >= 1 THEN
                    RAISE NOTICE '% step % % batch %: % row(s), % in all.', v_table, v_step.step_number, v_step.step_name,
                        v_batch_number, v_rows, v_total + v_rows;
                END IF;
                EXIT WHEN v_rows = 0 OR v_step.step_name = 'QueuePopulation';
            END LOOP;
            EXIT WHEN v_step_failed;
        END LOOP;
        CONTINUE WHEN v_step_failed;

        ----------------------------------------------------------------- table done
        UPDATE {{ job('BlobDeltaHighWatermark') }} AS w
        SET "LastHighWaterModifiedOn" = greatest(w."LastHighWaterModifiedOn", v_window_end),
            "LastRunId" = v_run_id,
            "LastRunCompletedAt" = (now() AT TIME ZONE 'UTC'),
            "IsInitialFullLoadDone" = w."IsInitialFullLoadDone" OR v_sync_type = 'Full',
            "IsRunning" = false,
            "RunLeaseExpiresAt" = NULL,
            "LeaseRunId" = NULL
        WHERE w."TableName" = v_table AND w."LeaseRunId" = v_run_id;
        IF NOT FOUND THEN
            v_failures := v_failures || format('Table ''%s'': the lease was taken over by another run before the watermark could move.', v_table);
        END IF;
        COMMIT;
        PERFORM pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', true);
        PERFORM pg_catalog.set_config('TimeZone', 'UTC', true);
    END LOOP;

    ------------------------------------------------------------------- finish
    IF NOT v_execute THEN
        "Plan" := v_plan::text;
        "Status" := 'Planned';
        RETURN;
    END IF;
    v_status := CASE WHEN cardinality(v_failures) = 0 THEN 'Succeeded' ELSE 'Failed' END;
    "Status" := v_status;
    UPDATE {{ job('BlobDeltaRun') }} AS r
    SET "Status" = v_status,
        "RunCompletedAt" = (now() AT TIME ZONE 'UTC'),
        "ErrorMessage" = nullif(array_to_string(v_failures, E'\n'), '')
    WHERE r."RunId" = v_run_id;
    COMMIT;
END;
$procedure$
