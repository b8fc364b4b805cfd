{%- from "postgresql/engine.sql" import table_message, require_running_run, resolved_declarations, resolve -%}
{%- from "common/header.sql" import header -%}
CREATE OR REPLACE FUNCTION {{ job('fn_BlobDelta_TableEnd') }}(
    IN "RunId" uuid,
    IN "TableName" text,
    OUT error text
)
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET "TimeZone" = 'UTC'
AS $function$
#variable_conflict use_column
{{ header('fn_BlobDelta_TableEnd',
          'Internal to usp_BlobDelta_Run (PostgreSQL): finishes one table whose every step is done.
    The watermark moves to the window end (not for a run limited to one business unit: the
    watermark serves them all) and the lease is released, both only while the run still holds
    the lease; otherwise the run header collects the message and error says why.
    The caller commits.') }}
DECLARE
    v_run_id uuid := "RunId";
    v_table text := "TableName";
    v_run record;
    v_window_start timestamp(3);
    v_window_end timestamp(3);
    v_cfg record;
    v_unplaced bigint := 0;
    v_listed boolean;
    v_now timestamp(3);
{{ resolved_declarations() }}
BEGIN
{{ require_running_run() }}
    IF (SELECT a.status FROM {{ job('fn_BlobDelta_NextStep') }}(v_run_id, v_table) AS a) IS DISTINCT FROM 'Done' THEN
        RAISE EXCEPTION USING ERRCODE = '22023',
            MESSAGE = format('Run %s has not finished every step of table %s.', v_run_id, quote_literal(v_table));
    END IF;
    -- Any error from here on (the target database or table gone, a deadlock) fails this table
    -- alone: logged, lease released, header told; the run goes on with the next table.
    BEGIN
        SELECT s."WindowStart", s."WindowEnd" INTO v_window_start, v_window_end
        FROM {{ job('BlobDeltaRunStep') }} AS s
        WHERE s."RunId" = v_run_id AND s."TableName" = v_table AND s."StepNumber" = 0 AND s."Status" = 'Completed'
        ORDER BY s."BatchNumber" DESC
        LIMIT 1;

        -- Step 3 places a changed child only where its parent is; step 2a placed every parent the
        -- changed children needed when the run began. A folder moved since (while the run ran) leaves
        -- its changed children unplaced, and a window that moved on would lose them: the table fails
        -- instead, its watermark stays, and the next run (a new one: a resume keeps step 2a's view)
        -- places them.
        SELECT c.* INTO v_cfg FROM {{ job('BlobDeltaTableConfig') }} AS c WHERE c."TableName" = v_table;
        IF v_cfg."ScriptSet" = 'Hierarchical' THEN
            {{ resolve('v_table') }}
            -- The changed children are the run's candidates when step 2a recorded them (a row without
            -- a stream_id says so): only those are looked up, not every row of the window.
            v_listed := EXISTS (SELECT 1 FROM {{ job('BlobDeltaRunCandidate') }} AS k
                                WHERE k."TableName" = v_table AND k."RunId" = v_run_id AND k.stream_id IS NULL);
            EXECUTE format(
                'SELECT count(*) FROM %I.%I AS m '
                'CROSS JOIN LATERAL (SELECT s.stream_id, s.parent_path_locator FROM %I.%I AS s WHERE s.stream_id = m.%I LIMIT 1) AS s '
                'WHERE m.%I >= $1 AND m.%I < $2 AND ($3 IS NULL OR m.%I = $3) '
                'AND (NOT $5 OR EXISTS (SELECT 1 FROM "BlobDeltaJobs"."BlobDeltaRunCandidate" AS k '
                'WHERE k."TableName" = $4 AND k."RunId" = $6 AND k.stream_id = m.%I OFFSET 0)) '
                'AND EXISTS (SELECT 1 FROM %I.%I AS bu WHERE bu.%I = m.%I) '
                'AND s.parent_path_locator IS NOT NULL '
                'AND NOT EXISTS (SELECT 1 FROM %I.%I AS p WHERE p.path_locator = s.parent_path_locator OFFSET 0) '
                'AND (NOT EXISTS (SELECT 1 FROM %I.%I AS t WHERE t.stream_id = s.stream_id OFFSET 0) '
                'OR NOT EXISTS (SELECT 1 FROM "BlobDeltaJobs"."BlobDeltaTargetVersion" AS v WHERE v."TableName" = $4 '
                'AND v.stream_id = s.stream_id AND v."ModifiedOn" >= m.%I::timestamp OFFSET 0))',
                v_cfg."MetadataDatabase", v_cfg."MetadataTable", v_cfg."SourceDatabase", v_cfg."SourceTable", v_id_column,
                v_modified_column, v_modified_column, v_bu_column, v_id_column,
                v_cfg."BusinessUnitDatabase", v_cfg."BusinessUnitTable", v_bu_id_column, v_bu_column,
                v_cfg."TargetDatabase", v_cfg."TargetTable", v_cfg."TargetDatabase", v_cfg."TargetTable", v_modified_column)
            INTO v_unplaced USING v_window_start, v_window_end, v_run."BusinessUnitId", v_table, v_listed, v_run_id;
        END IF;

        IF v_unplaced = 0 THEN
            -- The table is done: its candidates served their run (a failed table keeps them for a resume).
            DELETE FROM {{ job('BlobDeltaRunCandidate') }} AS k WHERE k."TableName" = v_table AND k."RunId" = v_run_id;
            -- The watermark serves every business unit: a run limited to one leaves it (and
            -- IsInitialFullLoadDone) alone, or the next run would skip the other units' rows.
            UPDATE {{ job('BlobDeltaHighWatermark') }} AS w
            SET "LastHighWaterModifiedOn" = CASE WHEN v_run."BusinessUnitId" IS NULL
                                                 THEN greatest(w."LastHighWaterModifiedOn", v_window_end)
                                                 ELSE w."LastHighWaterModifiedOn" END,
                "LastRunId" = v_run_id,
                "LastRunCompletedAt" = (now() AT TIME ZONE 'UTC'),
                "IsInitialFullLoadDone" = w."IsInitialFullLoadDone" OR (v_run."RunType" = 'Full' AND v_run."BusinessUnitId" IS NULL),
                "IsRunning" = false,
                "RunLeaseExpiresAt" = NULL,
                "LeaseRunId" = NULL
            WHERE w."TableName" = v_table AND w."LeaseRunId" = v_run_id;
            IF NOT FOUND THEN
                error := format('Table ''%s'': the lease was taken over by another run before the watermark could move.', v_table);
                UPDATE {{ job('BlobDeltaRun') }} AS r
                SET "ErrorMessage" = concat_ws(E'\n', r."ErrorMessage", error)
                WHERE r."RunId" = v_run_id;
            END IF;
            RETURN;
        END IF;
    EXCEPTION WHEN OTHERS THEN
        error := SQLERRM;
    END;
    -- Failed (an error, or changed children left unplaced): log it, release the lease, tell the header.
    IF error IS NOT NULL OR v_unplaced > 0 THEN
        error := coalesce(error, format('%s changed blob(s) of the window could not be placed: their folder is not where the source '
                        'has it (it moved while this run ran, or the source has an orphan). The watermark stays; a new '
                        'run (not a resume) places them.', v_unplaced));
        BEGIN
            v_now := (now() AT TIME ZONE 'UTC');
            INSERT INTO {{ job('BlobDeltaRunStep') }}
                ("RunId", "TableName", "StepNumber", "StepName", "BatchNumber", "RowsProcessed", "TotalRowsProcessed",
                 "WindowStart", "WindowEnd", "BatchStartedAt", "BatchCompletedAt", "Status", "ErrorMessage")
            SELECT v_run_id, v_table, x.step_number, x.step_name, coalesce(max(s."BatchNumber"), 0) + 1, 0, 0,
                   v_window_start, v_window_end, v_now, v_now, 'Failed', error
            FROM (SELECT CASE WHEN v_unplaced > 0 THEN 3 ELSE 0 END AS step_number,
                         CASE WHEN v_unplaced > 0 THEN 'Children' ELSE 'Window' END AS step_name) AS x
            LEFT JOIN {{ job('BlobDeltaRunStep') }} AS s
              ON s."RunId" = v_run_id AND s."TableName" = v_table AND s."StepNumber" = x.step_number
            GROUP BY x.step_number, x.step_name;
            UPDATE {{ job('BlobDeltaHighWatermark') }} AS w
            SET "IsRunning" = false, "RunLeaseExpiresAt" = NULL, "LeaseRunId" = NULL
            WHERE w."TableName" = v_table AND w."LeaseRunId" = v_run_id;
            UPDATE {{ job('BlobDeltaRun') }} AS r
            SET "ErrorMessage" = concat_ws(E'\n', r."ErrorMessage", {{ table_message('error') }})
            WHERE r."RunId" = v_run_id;
        EXCEPTION WHEN OTHERS THEN
            -- Not even the failure could be recorded: the caller (usp_BlobDelta_Run) fails the table
            -- through fn_BlobDelta_TableFail, with both messages.
            RAISE EXCEPTION USING ERRCODE = SQLSTATE, MESSAGE = format('%s (recording this failure failed: %s)', error, SQLERRM);
        END;
    END IF;
END;
$function$
