{%- from "common/header.sql" import header -%}
CREATE OR REPLACE FUNCTION {{ job('fn_BlobDelta_Window') }}(
    IN "TableName" text,
    IN "RunId" uuid,
    IN "RunStartedAt" timestamp(3),
    IN "SyncType" text,
    OUT window_start timestamp(3),
    OUT window_end timestamp(3),
    OUT from_run boolean
)
LANGUAGE plpgsql
STABLE
SET search_path = pg_catalog, pg_temp
AS $function$
#variable_conflict use_column
{{ header('fn_BlobDelta_Window',
          'Internal to usp_BlobDelta_Run (PostgreSQL): the window of one table. A run that already
    recorded a window for the table (its completed step 0 row) keeps it, so a resumed run uses
    the windows it started with. Otherwise WindowEnd = RunStartedAt - SafetyBufferMinutes and
    WindowStart = the full-sync baseline (Full, or no watermark and no InitialBaseline), the
    watermark - SafetyBufferMinutes, or InitialBaseline. from_run tells which.') }}
DECLARE
    v_table text := "TableName";
    v_run_id uuid := "RunId";
    v_run_started timestamp(3) := "RunStartedAt";
    v_sync_type text := "SyncType";
    v_cfg record;
    v_wm record;
BEGIN
    SELECT s."WindowStart", s."WindowEnd" INTO window_start, window_end
    FROM {{ job('BlobDeltaRunStep') }} AS s
    WHERE s."RunId" = v_run_id AND s."TableName" = v_table AND s."StepNumber" = 0 AND s."Status" = 'Completed'
    ORDER BY s."BatchNumber" DESC
    LIMIT 1;
    from_run := FOUND;
    IF from_run THEN
        RETURN;
    END IF;
    SELECT c.* INTO STRICT v_cfg FROM {{ job('BlobDeltaTableConfig') }} AS c WHERE c."TableName" = v_table;
    SELECT w.* INTO v_wm FROM {{ job('BlobDeltaHighWatermark') }} AS w WHERE w."TableName" = v_table;
    window_end := v_run_started - make_interval(mins => v_cfg."SafetyBufferMinutes");
    IF v_sync_type = 'Full' THEN
        window_start := v_run_started - make_interval(months => v_cfg."FullSyncBaselineMonths",
                                                       days => v_cfg."FullSyncBaselineDays");
    ELSIF v_wm."LastHighWaterModifiedOn" IS NOT NULL THEN
        window_start := v_wm."LastHighWaterModifiedOn" - make_interval(mins => v_cfg."SafetyBufferMinutes");
    ELSIF v_cfg."InitialBaseline" IS NOT NULL THEN
        window_start := v_cfg."InitialBaseline";
    ELSE
        window_start := v_run_started - make_interval(months => v_cfg."FullSyncBaselineMonths",
                                                       days => v_cfg."FullSyncBaselineDays");
    END IF;
END;
$function$
