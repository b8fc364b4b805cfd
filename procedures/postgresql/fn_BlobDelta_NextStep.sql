{%- from "common/header.sql" import header -%}
CREATE OR REPLACE FUNCTION {{ job('fn_BlobDelta_NextStep') }}(
    IN "RunId" uuid,
    IN "TableName" text,
    OUT status text,
    OUT step_number integer,
    OUT step_name text,
    OUT script_text text
)
LANGUAGE plpgsql
STABLE
SET search_path = pg_catalog, pg_temp
AS $function$
#variable_conflict use_column
{{ header('fn_BlobDelta_NextStep',
          'Internal to usp_BlobDelta_Run (PostgreSQL): the next step of one table in a run, read
    from the run tables: the first active step that has no completed batch which found nothing
    more to do (queue population runs once). Queue population (step 2a) comes first, before step
    1: what it queues follows from the target as the run found it (revision 0010), which is what
    a plan computes too. status is Next, or Done when no step is left.') }}
DECLARE
    v_run_id uuid := "RunId";
    v_table text := "TableName";
    v_script_set text;
    v_queue_script text;
BEGIN
    SELECT c."ScriptSet", c."QueuePopulationScriptName" INTO v_script_set, v_queue_script
    FROM {{ job('BlobDeltaTableConfig') }} AS c WHERE c."TableName" = v_table;
    SELECT x.step_number, x.step_name, x.script_text INTO step_number, step_name, script_text
    FROM (
        SELECT 2 AS step_number, 'QueuePopulation'::text AS step_name, q."ScriptText" AS script_text, 1 AS sub
        FROM {{ job('BlobDeltaQueuePopulationScript') }} AS q
        WHERE q."ScriptName" = v_queue_script AND q."IsActive"
          AND EXISTS (SELECT 1 FROM {{ job('BlobDeltaStepScript') }} AS s2
                      WHERE s2."ScriptSet" = v_script_set AND s2."StepNumber" = 2 AND s2."IsActive")
        UNION ALL
        SELECT s."StepNumber", s."StepName", s."ScriptText", 2
        FROM {{ job('BlobDeltaStepScript') }} AS s
        WHERE s."ScriptSet" = v_script_set AND s."IsActive"
    ) AS x
    WHERE NOT EXISTS (
        SELECT 1 FROM {{ job('BlobDeltaRunStep') }} AS s
        WHERE s."RunId" = v_run_id AND s."TableName" = v_table AND s."StepNumber" = x.step_number
          AND s."StepName" = x.step_name AND s."Status" = 'Completed'
          AND (s."RowsProcessed" = 0 OR x.step_name = 'QueuePopulation'))
    ORDER BY CASE WHEN x.step_name = 'QueuePopulation' THEN 0 ELSE x.step_number END, x.sub
    LIMIT 1;
    status := CASE WHEN FOUND THEN 'Next' ELSE 'Done' END;
END;
$function$
