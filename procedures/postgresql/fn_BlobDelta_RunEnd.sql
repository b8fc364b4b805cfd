{%- from "postgresql/engine.sql" import in_run_scope -%}
{%- from "common/header.sql" import header -%}
CREATE OR REPLACE FUNCTION {{ job('fn_BlobDelta_RunEnd') }}(
    IN "RunId" uuid,
    OUT status text
)
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET "TimeZone" = 'UTC'
AS $function$
#variable_conflict use_column
{{ header('fn_BlobDelta_RunEnd',
          'Internal to usp_BlobDelta_Run (PostgreSQL): closes a running run once every table in its
    scope has been worked (it has step rows in the run) and no lease is held. Succeeded when
    every one of them was finished by this run and no table reported an error into the header,
    else Failed. The caller commits.') }}
DECLARE
    v_run_id uuid := "RunId";
    v_run record;
    v_unworked text;
    v_unfinished boolean;
BEGIN
    SELECT r.* INTO v_run FROM {{ job('BlobDeltaRun') }} AS r WHERE r."RunId" = v_run_id FOR UPDATE;
    IF NOT FOUND OR v_run."Status" <> 'Running' THEN
        RAISE EXCEPTION USING ERRCODE = '22023',
            MESSAGE = format('Run %s is not a Running run in "BlobDeltaJobs"."BlobDeltaRun".', coalesce(v_run_id::text, 'NULL'));
    END IF;
    IF EXISTS (SELECT 1 FROM {{ job('BlobDeltaHighWatermark') }} AS w WHERE w."LeaseRunId" = v_run_id) THEN
        RAISE EXCEPTION USING ERRCODE = '22023',
            MESSAGE = format('Run %s still holds a table lease; it is not finished.', v_run_id);
    END IF;
    -- The run's scope, as fn_BlobDelta_RunBegin chose it.
    SELECT string_agg(c."TableName", ', ' ORDER BY c."TableName" COLLATE "C")
               FILTER (WHERE NOT EXISTS (SELECT 1 FROM {{ job('BlobDeltaRunStep') }} AS s
                                         WHERE s."RunId" = v_run_id AND s."TableName" = c."TableName")
                         AND w."LastRunId" IS DISTINCT FROM v_run_id),
           bool_or(w."LastRunId" IS DISTINCT FROM v_run_id)
    INTO v_unworked, v_unfinished
    FROM {{ job('BlobDeltaTableConfig') }} AS c
    LEFT JOIN {{ job('BlobDeltaHighWatermark') }} AS w ON w."TableName" = c."TableName"
    WHERE {{ in_run_scope('v_run."Mode"', 'v_run."TableName"') }};
    IF v_unworked IS NOT NULL THEN
        RAISE EXCEPTION USING ERRCODE = '22023',
            MESSAGE = left(format('Run %s has not started table(s) %s; it is not finished.', v_run_id, v_unworked), 2000);
    END IF;
    UPDATE {{ job('BlobDeltaRun') }} AS r
    SET "Status" = CASE WHEN r."ErrorMessage" IS NULL AND NOT coalesce(v_unfinished, false) THEN 'Succeeded' ELSE 'Failed' END,
        "ErrorMessage" = CASE WHEN r."ErrorMessage" IS NULL AND coalesce(v_unfinished, false)
                              THEN 'A table in scope was not finished by this run.' ELSE r."ErrorMessage" END,
        "RunCompletedAt" = (now() AT TIME ZONE 'UTC')
    WHERE r."RunId" = v_run_id
    RETURNING r."Status" INTO status;
END;
$function$
