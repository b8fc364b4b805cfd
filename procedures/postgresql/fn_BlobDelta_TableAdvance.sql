{%- from "postgresql/engine.sql" import require_running_run, resolved_declarations, resolve -%}
{%- from "common/header.sql" import header -%}
{%- from "postgresql/quoting.sql" import quotename -%}
CREATE OR REPLACE FUNCTION {{ job('fn_BlobDelta_TableAdvance') }}(
    IN "RunId" uuid,
    IN "TableName" text,
    IN "ExcludedStreamId" uuid DEFAULT NULL,
    IN "Debug" smallint DEFAULT 0,
    OUT status text,
    OUT step_number integer,
    OUT step_name text,
    OUT batch_number integer,
    OUT rows_processed bigint,
    OUT total_rows bigint,
    OUT error text
)
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET "TimeZone" = 'UTC'
AS $function$
#variable_conflict use_column
{{ header('fn_BlobDelta_TableAdvance',
          'Internal to usp_BlobDelta_Run (PostgreSQL): runs the next batch of one table whose lease
    the run holds, and records it. Everything it needs is read from the run tables: the window
    (step 0), the next unfinished step (a step is finished when a completed batch found nothing
    more to do; queue population runs once), and the keyset position (the last ModifiedOn of
    the completed batches of the step). status is Batch (a batch ran and was recorded), Done (no
    step is left) or Failed (a Failed step row holds the error, the lease is released and the
    run header collects the message). The caller commits after each call.') }}
DECLARE
    v_run_id uuid := "RunId";
    v_table text := "TableName";
    v_excluded uuid := "ExcludedStreamId";
    v_debug smallint := coalesce("Debug", 0);
    v_run record;
    v_cfg record;
    v_step record;
    v_now timestamp(3);
    v_window_start timestamp(3);
    v_window_end timestamp(3);
    v_position timestamp(3);
    v_last timestamp(3);
    v_rows bigint;
{{ resolved_declarations() }}
    v_q_queue text := '{{ job("BlobDeltaMissingParentsQueue") }}';
    v_q_source text;
    v_q_target text;
    v_q_metadata text;
    v_q_business_unit text;
    v_q_id text;
    v_q_modified text;
    v_q_bu_column text;
    v_q_bu_id text;
    v_q_columns text;
    v_q_source_columns text;
    v_q_update text;
    v_q_source_row text;
    v_sql_step text;
    v_first_load boolean;
    v_reran boolean := false;
BEGIN
{{ require_running_run() }}
    SELECT s."WindowStart", s."WindowEnd", coalesce(s."TargetWasEmpty", false)
    INTO v_window_start, v_window_end, v_first_load
    FROM {{ job('BlobDeltaRunStep') }} AS s
    WHERE s."RunId" = v_run_id AND s."TableName" = v_table AND s."StepNumber" = 0 AND s."Status" = 'Completed'
    ORDER BY s."BatchNumber" DESC
    LIMIT 1;
    IF NOT FOUND THEN
        RAISE EXCEPTION USING ERRCODE = '22023',
            MESSAGE = format('Run %s has no window for table %s: fn_BlobDelta_TableBegin starts a table.',
                             v_run_id, quote_literal(v_table));
    END IF;
    SELECT c.* INTO v_cfg FROM {{ job('BlobDeltaTableConfig') }} AS c WHERE c."TableName" = v_table;

    SELECT n.status, n.step_number, n.step_name, n.script_text INTO v_step
    FROM {{ job('fn_BlobDelta_NextStep') }}(v_run_id, v_table) AS n;
    IF v_step.status = 'Done' THEN
        status := 'Done';
        RETURN;
    END IF;
    step_number := v_step.step_number;
    step_name := v_step.step_name;

    v_now := (now() AT TIME ZONE 'UTC');
    -- Batch numbers run per step number (queue population and its batches share step 2);
    -- a failed batch keeps its number and the retry gets the next one. The keyset position is
    -- the last ModifiedOn of the step's completed batches in this run (also after a resume), so
    -- no batch re-reads the window.
    SELECT coalesce(max(s."BatchNumber"), 0) + 1,
           coalesce(sum(s."RowsProcessed") FILTER (WHERE s."Status" = 'Completed' AND s."StepName" = v_step.step_name), 0),
           max(s."LastModifiedOn") FILTER (WHERE s."Status" = 'Completed' AND s."StepName" = v_step.step_name)
    INTO batch_number, total_rows, v_position
    FROM {{ job('BlobDeltaRunStep') }} AS s
    WHERE s."RunId" = v_run_id AND s."TableName" = v_table AND s."StepNumber" = v_step.step_number;

    BEGIN
        -- Names are resolved and checked again for every batch, so no batch runs against an
        -- object that has gone. A configuration change takes effect at the next batch: change
        -- the configuration only while no run holds the table's lease.
        {{ resolve('v_table') }}

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

        -- {SourceRow}: the source row s for the metadata row m, looked up by key, or the metadata
        -- row itself when the metadata table is the source table.
        v_q_source_row := CASE
            WHEN pg_catalog.to_regclass(v_metadata_object) = pg_catalog.to_regclass(v_source_object)
            THEN 'CROSS JOIN LATERAL (SELECT m.*) AS s'
            ELSE 'CROSS JOIN LATERAL (SELECT * FROM ' || v_q_source || ' AS s WHERE s.' || v_q_id || ' = m.' || v_q_id
                 || ' OFFSET 0) AS s' END;

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
        v_sql_step := replace(v_sql_step, '{SourceRow}', v_q_source_row);
        IF v_debug >= 2 THEN
            RAISE NOTICE '%', v_sql_step;
        END IF;

        IF v_run."MaxDOP" > 0 THEN
            PERFORM pg_catalog.set_config('max_parallel_workers_per_gather', v_run."MaxDOP"::text, true);
        END IF;
        -- A script's second result column (its last ModifiedOn) is optional: without it
        -- v_last stays NULL and the next batch starts where this one started. Positions
        -- are kept to the millisecond; a finer ModifiedOn may have been rounded up, so the
        -- batch starts 1 ms early (rows already copied are skipped by the scripts).
        LOOP
            v_last := NULL;
            BEGIN
                EXECUTE v_sql_step INTO v_rows, v_last
                    USING v_run."BatchSize", v_excluded, v_window_start, v_window_end, v_run."BusinessUnitId", v_run_id,
                          v_table, v_position - interval '1 millisecond', v_first_load;
                EXIT;
            EXCEPTION WHEN unique_violation THEN
                -- A first load's batch inserted a row the target already held: a row this run copied
                -- whose ModifiedOn moved past the position since (a late write). Run the batch again
                -- with every target lookup (a script that ignores $9 fails the same way again).
                IF NOT v_first_load THEN
                    RAISE;
                END IF;
                IF v_debug >= 1 THEN
                    RAISE NOTICE '% step % % batch %: a copied row came back; the batch runs again with target lookups.',
                        v_table, v_step.step_number, v_step.step_name, batch_number;
                END IF;
                v_first_load := false;
                v_reran := true;
            END;
        END LOOP;
        v_rows := coalesce(v_rows, 0);
        INSERT INTO {{ job('BlobDeltaRunStep') }}
            ("RunId", "TableName", "StepNumber", "StepName", "BatchNumber", "RowsProcessed", "TotalRowsProcessed",
             "WindowStart", "WindowEnd", "LastModifiedOn", "BatchStartedAt", "BatchCompletedAt", "Status")
        VALUES (v_run_id, v_table, v_step.step_number, v_step.step_name, batch_number, v_rows, total_rows + v_rows,
                v_window_start, v_window_end, coalesce(v_last, v_position), v_now,
                (clock_timestamp() AT TIME ZONE 'UTC'), 'Completed');
        UPDATE {{ job('BlobDeltaHighWatermark') }} AS w
        SET "RunLeaseExpiresAt" = (now() AT TIME ZONE 'UTC') + make_interval(mins => v_cfg."LeaseMinutes")
        WHERE w."TableName" = v_table AND w."LeaseRunId" = v_run_id;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'The lease on this table was taken over by another run; the batch was rolled back.';
        END IF;
        IF v_reran THEN
            -- Where one copied row came back others may follow: the rest of this load (and a
            -- resume) looks every row up. Kept only if the batch commits; the lease row is locked
            -- first, as everywhere else.
            UPDATE {{ job('BlobDeltaRunStep') }} AS s
            SET "TargetWasEmpty" = false
            WHERE s."RunId" = v_run_id AND s."TableName" = v_table AND s."StepNumber" = 0
              AND s."Status" = 'Completed' AND s."TargetWasEmpty";
        END IF;
        status := 'Batch';
        rows_processed := v_rows;
        total_rows := total_rows + v_rows;
        IF v_debug >= 1 THEN
            RAISE NOTICE '% step % % batch %: % row(s), % in all.', v_table, v_step.step_number, v_step.step_name,
                batch_number, v_rows, total_rows;
        END IF;
        RETURN;
    EXCEPTION WHEN OTHERS THEN
        error := SQLERRM;
    END;

    -- Failed: log the batch, release the lease, and tell the run header.
    status := 'Failed';
    rows_processed := 0;
    INSERT INTO {{ job('BlobDeltaRunStep') }}
        ("RunId", "TableName", "StepNumber", "StepName", "BatchNumber", "RowsProcessed", "TotalRowsProcessed",
         "WindowStart", "WindowEnd", "BatchStartedAt", "BatchCompletedAt", "Status", "ErrorMessage")
    VALUES (v_run_id, v_table, v_step.step_number, v_step.step_name, batch_number, 0, total_rows,
            v_window_start, v_window_end, v_now, (clock_timestamp() AT TIME ZONE 'UTC'), 'Failed', error);
    UPDATE {{ job('BlobDeltaHighWatermark') }} AS w
    SET "IsRunning" = false, "RunLeaseExpiresAt" = NULL, "LeaseRunId" = NULL
    WHERE w."TableName" = v_table AND w."LeaseRunId" = v_run_id;
    UPDATE {{ job('BlobDeltaRun') }} AS r
    SET "ErrorMessage" = concat_ws(E'\n', r."ErrorMessage", format('Table ''%s'', step %s %s, batch %s: %s',
                                   v_table, v_step.step_number, v_step.step_name, batch_number, error))
    WHERE r."RunId" = v_run_id;
END;
$function$
