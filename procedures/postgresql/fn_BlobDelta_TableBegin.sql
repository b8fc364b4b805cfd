{%- from "postgresql/engine.sql" import table_message, require_supported_target, require_running_run, resolved_declarations, resolve -%}
{%- from "common/header.sql" import header -%}
CREATE OR REPLACE FUNCTION {{ job('fn_BlobDelta_TableBegin') }}(
    IN "RunId" uuid,
    IN "TableName" text,
    OUT status text,
    OUT error text
)
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET "TimeZone" = 'UTC'
AS $function$
#variable_conflict use_column
{{ header('fn_BlobDelta_TableBegin',
          'Internal to usp_BlobDelta_Run (PostgreSQL): starts one table of a running run. Resolves
    and checks its configuration, computes (or, resumed, reuses) its window, takes its lease,
    clears the scope on a Full sync and records the window (step 0), with whether the
    target held no row (a first load). status is Ready, Done (a
    resumed run had already finished the table) or Failed: then a Failed step 0 row holds the
    error, the lease is released and the run header collects the message. The caller commits.') }}
DECLARE
    v_run_id uuid := "RunId";
    v_table text := "TableName";
    v_run record;
    v_cfg record;
    v_wm record;
    v_holder record;
    v_now timestamp(3);
    v_window_start timestamp(3);
    v_window_end timestamp(3);
    v_has_window boolean := false;
{{ resolved_declarations() }}
    v_key_column text;
    v_sql_clear text;
    v_target_empty boolean;
    v_cleared bigint := 0;
BEGIN
{{ require_running_run() }}
    SELECT w.* INTO v_wm FROM {{ job('BlobDeltaHighWatermark') }} AS w WHERE w."TableName" = v_table;
    IF v_wm."LastRunId" = v_run_id THEN
        status := 'Done'; -- finished by this run before it was interrupted
        RETURN;
    END IF;

    BEGIN
        -- Resolve names, check the catalog and compute the window.
        {{ resolve('v_table') }}
        SELECT c.* INTO v_cfg FROM {{ job('BlobDeltaTableConfig') }} AS c WHERE c."TableName" = v_table;
        v_key_column := CASE v_script_set WHEN 'Hierarchical' THEN 'stream_id' ELSE v_id_column END;
{{ require_supported_target() }}
        SELECT w.window_start, w.window_end, w.from_run INTO v_window_start, v_window_end, v_has_window
        FROM {{ job('fn_BlobDelta_Window') }}(v_table, v_run_id, v_run."RunStartedAt", v_run."RunType") AS w;

        -- The lease, taken atomically: free, expired, or already ours (a resumed run).
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
        -- Candidates other runs recorded for this table (step 2a; a run that ended well removed its
        -- own) are stale now: this run works the table. A run that resumes later finds its list
        -- gone, and its steps test every window row as they do without one.
        DELETE FROM {{ job('BlobDeltaRunCandidate') }} AS k
        WHERE k."TableName" = v_table AND k."RunId" <> v_run_id;

        IF NOT v_has_window THEN
            IF v_run."RunType" = 'Full' THEN
                -- Full sync starts from a clean slate for the scope: this table's queue and target rows.
                DELETE FROM {{ job('BlobDeltaMissingParentsQueue') }} AS q
                WHERE q."TableName" = v_table
                  AND (v_run."BusinessUnitId" IS NULL OR q."BusinessUnit" = v_run."BusinessUnitId");
                IF v_script_set = 'Hierarchical' THEN
                    -- One unit's clean slate keeps every row that has a descendant of another unit (or
                    -- of none), so no row of another unit loses its parent; the rest of that unit's
                    -- rows go, with their recorded versions, in one statement.
                    v_sql_clear := format(
                        'WITH doomed AS ('
                        'DELETE FROM %1$I.%2$I AS t WHERE $1 IS NULL OR ('
                        'EXISTS (SELECT 1 FROM %3$I.%4$I AS m WHERE m.%5$I = t.stream_id AND m.%6$I = $1) '
                        'AND NOT EXISTS (SELECT 1 FROM %1$I.%2$I AS d '
                        'WHERE d.path_locator COLLATE "C" > t.path_locator COLLATE "C" '
                        'AND d.path_locator COLLATE "C" < (left(t.path_locator, -1) || ''0'') COLLATE "C" '
                        'AND NOT EXISTS (SELECT 1 FROM %3$I.%4$I AS md WHERE md.%5$I = d.stream_id AND md.%6$I = $1))) '
                        'RETURNING t.stream_id), '
                        'unversioned AS (DELETE FROM {{ job("BlobDeltaTargetVersion") }} AS v WHERE v."TableName" = $2 '
                        'AND ($1 IS NULL OR v.stream_id IN (SELECT x.stream_id FROM doomed AS x))) '
                        'SELECT count(*) FROM doomed',
                        v_cfg."TargetDatabase", v_cfg."TargetTable", v_cfg."MetadataDatabase", v_cfg."MetadataTable",
                        v_id_column, v_bu_column);
                ELSE
                    v_sql_clear := format(
                        'WITH doomed AS (DELETE FROM %I.%I AS t WHERE $1 IS NULL OR EXISTS '
                        '(SELECT 1 FROM %I.%I AS m WHERE m.%I = t.%I AND m.%I = $1) RETURNING 1) '
                        'SELECT count(*) FROM doomed',
                        v_cfg."TargetDatabase", v_cfg."TargetTable", v_cfg."MetadataDatabase", v_cfg."MetadataTable",
                        v_id_column, v_key_column, v_bu_column);
                END IF;
                EXECUTE v_sql_clear INTO v_cleared USING v_run."BusinessUnitId", v_table;
            END IF;
            -- A first load: the target holds no row (after a Full sync's clean slate), so every row
            -- it will hold was written by this run's batches (the lease keeps other runs out).
            IF v_run."RunType" = 'Full' AND v_run."BusinessUnitId" IS NULL THEN
                v_target_empty := true; -- just emptied by the clean slate above
            ELSE
                EXECUTE format('SELECT NOT EXISTS (SELECT 1 FROM %I.%I)', v_cfg."TargetDatabase", v_cfg."TargetTable")
                INTO v_target_empty;
            END IF;
            INSERT INTO {{ job('BlobDeltaRunStep') }}
                ("RunId", "TableName", "StepNumber", "StepName", "BatchNumber", "RowsProcessed", "TotalRowsProcessed",
                 "RowsInserted", "RowsUpdated", "RowsDeleted",
                 "WindowStart", "WindowEnd", "TargetWasEmpty", "BatchStartedAt", "BatchCompletedAt", "Status")
            SELECT v_run_id, v_table, 0, 'Window', coalesce(max(s."BatchNumber"), 0) + 1, 0, 0,
                   0, 0, v_cleared,
                   v_window_start, v_window_end, v_target_empty, v_now, v_now, 'Completed'
            FROM {{ job('BlobDeltaRunStep') }} AS s
            WHERE s."RunId" = v_run_id AND s."TableName" = v_table AND s."StepNumber" = 0;
        ELSE
            -- A resumed first load stays one only if no other run has worked the table since (opened
            -- it, or resumed and ran a batch): it may have written rows past this run's positions.
            UPDATE {{ job('BlobDeltaRunStep') }} AS s
            SET "TargetWasEmpty" = false
            WHERE s."RunId" = v_run_id AND s."TableName" = v_table AND s."StepNumber" = 0 AND s."Status" = 'Completed'
              AND s."TargetWasEmpty"
              AND EXISTS (SELECT 1 FROM {{ job('BlobDeltaRunStep') }} AS o
                          WHERE o."TableName" = v_table AND o."RunStepId" > s."RunStepId"
                            AND o."RunId" <> v_run_id AND o."Status" = 'Completed');
        END IF;
        status := 'Ready';
        RETURN;
    EXCEPTION WHEN OTHERS THEN
        error := SQLERRM;
    END;

    -- Failed: log it, release the lease if it is ours, and tell the run header.
    status := 'Failed';
    v_now := (now() AT TIME ZONE 'UTC');
    BEGIN
        INSERT INTO {{ job('BlobDeltaRunStep') }}
            ("RunId", "TableName", "StepNumber", "StepName", "BatchNumber", "WindowStart", "WindowEnd",
             "BatchStartedAt", "BatchCompletedAt", "Status", "ErrorMessage")
        SELECT v_run_id, v_table, 0, 'Window', coalesce(max(s."BatchNumber"), 0) + 1, v_window_start, v_window_end,
               v_now, v_now, 'Failed', error
        FROM {{ job('BlobDeltaRunStep') }} AS s
        WHERE s."RunId" = v_run_id AND s."TableName" = v_table AND s."StepNumber" = 0;
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
END;
$function$
