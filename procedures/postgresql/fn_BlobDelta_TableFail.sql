{%- from "postgresql/engine.sql" import table_message, require_running_run, require_run_lock -%}
{%- from "common/header.sql" import header -%}
CREATE OR REPLACE FUNCTION {{ job('fn_BlobDelta_TableFail') }}(
    IN "RunId" uuid,
    IN "TableName" text,
    IN "ErrorMessage" text
)
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET "TimeZone" = 'UTC'
AS $function$
#variable_conflict use_column
{{ header('fn_BlobDelta_TableFail',
          'Internal to usp_BlobDelta_Run (PostgreSQL): an error that escaped the step function of one table
    (its own bookkeeping, a deadlock while it recorded a failure). The table fails alone, as it
    would from a failed batch: a Failed row in BlobDeltaRunStep, its lease released when this run
    holds it, the message in the run header; the run goes on with the next table. Only the session
    that works the run (it holds the session lock of the run) may fail its tables. The caller commits.') }}
DECLARE
    v_run_id uuid := "RunId";
    v_table text := "TableName";
    v_error text := "ErrorMessage";
    v_run record;
    v_now timestamp(3) := (now() AT TIME ZONE 'UTC');
BEGIN
{{ require_running_run() }}
{{ require_run_lock() }}
    INSERT INTO {{ job('BlobDeltaRunStep') }}
        ("RunId", "TableName", "StepNumber", "StepName", "BatchNumber", "WindowStart", "WindowEnd",
         "BatchStartedAt", "BatchCompletedAt", "Status", "ErrorMessage")
    SELECT v_run_id, v_table, 0, 'Window', coalesce(max(s."BatchNumber"), 0) + 1,
           max(s."WindowStart") FILTER (WHERE s."Status" = 'Completed'),
           max(s."WindowEnd") FILTER (WHERE s."Status" = 'Completed'),
           v_now, v_now, 'Failed', v_error
    FROM {{ job('BlobDeltaRunStep') }} AS s
    WHERE s."RunId" = v_run_id AND s."TableName" = v_table AND s."StepNumber" = 0;
    UPDATE {{ job('BlobDeltaHighWatermark') }} AS w
    SET "IsRunning" = false, "RunLeaseExpiresAt" = NULL, "LeaseRunId" = NULL
    WHERE w."TableName" = v_table AND w."LeaseRunId" = v_run_id;
    UPDATE {{ job('BlobDeltaRun') }} AS r
    SET "ErrorMessage" = concat_ws(E'\n', r."ErrorMessage", {{ table_message('v_error') }})
    WHERE r."RunId" = v_run_id;
END;
$function$
