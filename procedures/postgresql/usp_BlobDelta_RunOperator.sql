{%- from "common/header.sql" import header -%}
CREATE OR REPLACE PROCEDURE {{ job('usp_BlobDelta_RunOperator') }}(
    IN "Mode" text DEFAULT NULL,
    IN "TableName" text DEFAULT NULL,
    IN "BatchSize" integer DEFAULT 500,
    IN "MaxDOP" integer DEFAULT 0,
    IN "BusinessUnitId" uuid DEFAULT NULL,
    IN "SyncType" text DEFAULT 'Incremental',
    IN "Execute" boolean DEFAULT true,
    IN "ResumeRunId" uuid DEFAULT NULL,
    IN "Help" boolean DEFAULT false,
    IN "Debug" smallint DEFAULT 0,
    IN "Wait" boolean DEFAULT false,
    INOUT "RunId" uuid DEFAULT NULL,
    INOUT "Status" text DEFAULT NULL,
    INOUT "Plan" text DEFAULT NULL,
    INOUT "Version" text DEFAULT NULL,
    INOUT "VersionDate" date DEFAULT NULL
)
LANGUAGE plpgsql
AS $procedure$
#variable_conflict use_column
{{ header('usp_BlobDelta_RunOperator',
          'Operator entry point for delta loads: Mode AllTables or SingleTable (with TableName),
    an optional BusinessUnitId, SyncType Incremental (default) or Full, Execute = false for a
    plan, ResumeRunId to continue an interrupted run, RunId (in) to name the new run, Wait = true to
    wait for another session that still executes that run. CALL returns one row: RunId, Status, Plan,
    Version, VersionDate. Call it outside a transaction block: the engine commits every batch.') }}
DECLARE
    v_run_id uuid;
    v_status text;
    v_plan text;
BEGIN
    PERFORM pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', true);
    PERFORM pg_catalog.set_config('TimeZone', 'UTC', true);
    "Version" := '{{ package_version }}';
    "VersionDate" := DATE '{{ version_date }}';
    IF "Help" THEN
        RAISE NOTICE '%', E'usp_BlobDelta_RunOperator: run delta loads.\n'
            || E'  "Mode"           AllTables | SingleTable (required)\n'
            || E'  "TableName"      configured table for SingleTable, e.g. Gwent_LA_FileTable.dbo.ReferralAttachment\n'
            || E'  "BatchSize"      rows per batch, 1 or more (default 500)\n'
            || E'  "MaxDOP"         0 = server default, else max parallel workers per gather\n'
            || E'  "BusinessUnitId" limit to one business unit (default: all)\n'
            || E'  "SyncType"       Incremental (default) | Full\n'
            || E'  "Execute"        true (default) | false = plan only, changes nothing\n'
            || E'  "ResumeRunId"    continue an interrupted run with its own parameters and windows\n'
            || E'  "Wait"           false (default) = fail when another session still executes the run | true = wait for it\n'
            || E'Returns RunId, Status (Succeeded | Failed | Planned), Plan (JSON when planning: per table its window,\n'
            || E'whether a held lease would skip it, and per step the rows a run would insert, update and delete).';
        RETURN;
    END IF;
    v_run_id := "RunId"; -- in: an optional caller-chosen RunId for the new run
    CALL {{ job('usp_BlobDelta_Run') }}(
        "Mode" => "Mode", "TableName" => "TableName", "BatchSize" => "BatchSize", "MaxDOP" => "MaxDOP",
        "BusinessUnitId" => "BusinessUnitId", "SyncType" => "SyncType", "Execute" => "Execute",
        "ResumeRunId" => "ResumeRunId", "Debug" => "Debug", "Wait" => "Wait",
        "RunId" => v_run_id, "Status" => v_status, "Plan" => v_plan);
    "RunId" := v_run_id;
    "Status" := v_status;
    "Plan" := v_plan;
END;
$procedure$
