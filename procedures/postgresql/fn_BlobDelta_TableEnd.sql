{%- from "postgresql/engine.sql" import require_running_run, resolved_declarations, resolve -%}
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
    v_window_end timestamp(3);
BEGIN
{{ require_running_run() }}
    IF (SELECT a.status FROM {{ job('fn_BlobDelta_NextStep') }}(v_run_id, v_table) AS a) IS DISTINCT FROM 'Done' THEN
        RAISE EXCEPTION USING ERRCODE = '22023',
            MESSAGE = format('Run %s has not finished every step of table %s.', v_run_id, quote_literal(v_table));
    END IF;
    SELECT s."WindowEnd" INTO v_window_end
    FROM {{ job('BlobDeltaRunStep') }} AS s
    WHERE s."RunId" = v_run_id AND s."TableName" = v_table AND s."StepNumber" = 0 AND s."Status" = 'Completed'
    ORDER BY s."BatchNumber" DESC
    LIMIT 1;

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
END;
$function$
