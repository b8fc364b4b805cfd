{%- from "postgresql/engine.sql" import require_run_lock -%}
{%- from "common/header.sql" import header -%}
CREATE OR REPLACE FUNCTION {{ job('fn_BlobDelta_RunAbort') }}(
    IN "RunId" uuid,
    IN "ErrorMessage" text
)
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET "TimeZone" = 'UTC'
AS $function$
#variable_conflict use_column
{{ header('fn_BlobDelta_RunAbort',
          'Internal to usp_BlobDelta_Run (PostgreSQL), its last resort: an error that neither a table
    nor fn_BlobDelta_TableFail could record. Every lease the run holds is released and a run still
    Running is marked Failed with the error appended, so that nothing waits for a lease to expire
    and a resume finds the run. Only the session that works the run (it holds the session
    lock) may abort it. The caller commits, then raises the error.') }}
DECLARE
    v_run_id uuid := "RunId";
    v_error text := "ErrorMessage";
BEGIN
{{ require_run_lock() }}
    UPDATE {{ job('BlobDeltaHighWatermark') }} AS w
    SET "IsRunning" = false, "RunLeaseExpiresAt" = NULL, "LeaseRunId" = NULL
    WHERE w."LeaseRunId" = v_run_id;
    UPDATE {{ job('BlobDeltaRun') }} AS r
    SET "Status" = 'Failed',
        "RunCompletedAt" = (now() AT TIME ZONE 'UTC'),
        "ErrorMessage" = concat_ws(E'\n', r."ErrorMessage", v_error)
    WHERE r."RunId" = v_run_id AND r."Status" = 'Running';
END;
$function$
