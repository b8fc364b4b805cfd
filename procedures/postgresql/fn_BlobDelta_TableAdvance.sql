{%- from "postgresql/engine.sql" import require_running_run -%}
{%- from "common/header.sql" import header -%}
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
    v_sql_step text;
    v_first_load boolean;
    v_reran boolean := false;
    v_deadlocks integer := 0;
    v_script_done boolean;
    v_inserted integer;
    v_updated integer;
    v_deleted integer;
    v_moved integer;
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
        -- Names are resolved and checked again for every batch (fn_BlobDelta_FillScript), so no
        -- batch runs against an object that has gone. A configuration change takes effect at the
        -- next batch: change the configuration only while no run holds the table's lease.
        v_sql_step := {{ job('fn_BlobDelta_FillScript') }}(v_table, v_step.script_text);
        IF v_debug >= 2 THEN
            RAISE NOTICE '%', v_sql_step;
        END IF;

        IF v_run."MaxDOP" > 0 THEN
            PERFORM pg_catalog.set_config('max_parallel_workers_per_gather', v_run."MaxDOP"::text, true);
        END IF;
        -- The step scripts are written to probe indexes and row addresses per row, never to read a
        -- whole table. The statistics of a target being filled or emptied mislead the planner both
        -- ways (an emptied and reloaded target looks empty, a cleared one looks full), and it would
        -- then scan it, once per batch or once per row: with sequential scans priced out, the
        -- probes stay probes. For this batch's transaction only (set_config ..., true).
        PERFORM pg_catalog.set_config('enable_seqscan', 'off', true);
        -- A script's second result column (its last ModifiedOn) is optional: without it
        -- v_last stays NULL and the next batch starts where this one started. Positions
        -- are kept to the millisecond; a finer ModifiedOn may have been rounded up, so the
        -- batch starts 1 ms early (rows already copied are skipped by the scripts).
        LOOP
            v_last := NULL;
            v_inserted := NULL;
            v_updated := NULL;
            v_deleted := NULL;
            v_moved := NULL;
            v_script_done := false;
            -- One attempt: the script, its RunStep row and the lease renewal, as on SQL Server
            -- (a deadlock in any of them runs the whole attempt again).
            BEGIN
                -- Revision 0010's scripts also return rows inserted, updated, deleted and moved
                -- along with a folder; an older script's missing columns leave them NULL.
                EXECUTE v_sql_step INTO v_rows, v_last, v_inserted, v_updated, v_deleted, v_moved
                    USING v_run."BatchSize", v_excluded, v_window_start, v_window_end, v_run."BusinessUnitId", v_run_id,
                          v_table, v_position - interval '1 millisecond', v_first_load;
                v_script_done := true;
                v_rows := coalesce(v_rows, 0);
                INSERT INTO {{ job('BlobDeltaRunStep') }}
                    ("RunId", "TableName", "StepNumber", "StepName", "BatchNumber", "RowsProcessed", "TotalRowsProcessed",
                     "RowsInserted", "RowsUpdated", "RowsDeleted", "RowsMoved",
                     "WindowStart", "WindowEnd", "LastModifiedOn", "BatchStartedAt", "BatchCompletedAt", "Status")
                VALUES (v_run_id, v_table, v_step.step_number, v_step.step_name, batch_number, v_rows, total_rows + v_rows,
                        v_inserted, v_updated, v_deleted, v_moved,
                        v_window_start, v_window_end, coalesce(v_last, v_position), v_now,
                        (clock_timestamp() AT TIME ZONE 'UTC'), 'Completed');
                -- Lock order, as in a batch's transaction: BlobDeltaRunStep, then the lease row. (A table's opening
                -- transaction takes the lease row first and then, for a full sync, the target's rows; taking over an
                -- expired lease while the old run's batch still works, the two can deadlock (40P01): a batch chosen
                -- runs again and finds its lease gone, or the new run's table fails. Nothing is lost.)
                UPDATE {{ job('BlobDeltaHighWatermark') }} AS w
                SET "RunLeaseExpiresAt" = (clock_timestamp() AT TIME ZONE 'UTC') + make_interval(mins => v_cfg."LeaseMinutes")
                WHERE w."TableName" = v_table AND w."LeaseRunId" = v_run_id;
                IF NOT FOUND THEN
                    RAISE EXCEPTION 'The lease on this table was taken over by another run; the batch was rolled back.';
                END IF;
                IF v_reran THEN
                    -- Where one copied row came back others may follow: the rest of this load (and a
                    -- resume) looks every row up. Kept only if the batch commits.
                    UPDATE {{ job('BlobDeltaRunStep') }} AS s
                    SET "TargetWasEmpty" = false
                    WHERE s."RunId" = v_run_id AND s."TableName" = v_table AND s."StepNumber" = 0
                      AND s."Status" = 'Completed' AND s."TargetWasEmpty";
                END IF;
                EXIT;
            EXCEPTION WHEN unique_violation THEN
                -- A first load's batch inserted a row the target already held: a row this run copied
                -- whose ModifiedOn moved past the position since (a late write). Run the batch again
                -- with every target lookup (a script that ignores $9 fails the same way again).
                -- A key violation after the script is the engine's own: the batch fails.
                IF NOT v_first_load OR v_script_done THEN
                    RAISE;
                END IF;
                IF v_debug >= 1 THEN
                    RAISE NOTICE '% step % % batch %: a copied row came back; the batch runs again with target lookups.',
                        v_table, v_step.step_number, v_step.step_name, batch_number;
                END IF;
                v_first_load := false;
                v_reran := true;
            WHEN deadlock_detected OR serialization_failure THEN
                -- A deadlock victim (40P01, or a serialization failure 40001): the attempt was
                -- rolled back with its subtransaction, and a batch can always run again. A few times
                -- (as SQL Server does for 1205), then the batch fails as any other would and the table
                -- with it; a resume runs it again.
                v_deadlocks := v_deadlocks + 1;
                IF v_deadlocks > {{ batch_retries }} THEN
                    RAISE;
                END IF;
                IF v_debug >= 1 THEN
                    RAISE NOTICE '% step % % batch %: % (%); the batch runs again (% of {{ batch_retries }}).',
                        v_table, v_step.step_number, v_step.step_name, batch_number, SQLERRM, SQLSTATE, v_deadlocks;
                END IF;
                PERFORM pg_catalog.pg_sleep(0.1 * v_deadlocks);
            END;
        END LOOP;
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
    -- Lock order as in a batch: BlobDeltaRunStep, the lease row, then the run header.
    BEGIN
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
    EXCEPTION WHEN OTHERS THEN
        -- Not even the failure could be recorded: the caller (usp_BlobDelta_Run) fails the table
        -- through fn_BlobDelta_TableFail, with both messages.
        RAISE EXCEPTION USING ERRCODE = SQLSTATE, MESSAGE = format('step %s %s, batch %s: %s (recording this failure failed: %s)',
            v_step.step_number, v_step.step_name, batch_number, error, SQLERRM);
    END;
END;
$function$
