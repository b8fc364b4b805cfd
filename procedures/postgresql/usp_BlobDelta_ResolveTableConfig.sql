{%- from "common/header.sql" import header -%}
{%- from "postgresql/errors.sql" import raise_collected -%}
{%- from "postgresql/quoting.sql" import quotename -%}
CREATE OR REPLACE PROCEDURE {{ job('usp_BlobDelta_ResolveTableConfig') }}(
    IN "TableName" text,
    INOUT "SourceObject" text DEFAULT NULL,
    INOUT "TargetObject" text DEFAULT NULL,
    INOUT "MetadataObject" text DEFAULT NULL,
    INOUT "MetadataIdColumn" text DEFAULT NULL,
    INOUT "MetadataModifiedOnCol" text DEFAULT NULL,
    INOUT "MetadataBusinessUnitCol" text DEFAULT NULL,
    INOUT "SafetyBufferMinutes" integer DEFAULT NULL,
    INOUT "ScriptSet" text DEFAULT NULL,
    INOUT "IsActive" boolean DEFAULT NULL,
    INOUT "BusinessUnitObject" text DEFAULT NULL,
    INOUT "BusinessUnitIdColumn" text DEFAULT NULL,
    IN "Debug" smallint DEFAULT 0
)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $procedure$
#variable_conflict use_column
{{ header('usp_BlobDelta_ResolveTableConfig',
          'Resolves one configured table: quoted two-part names (database mapped to schema) of
    its source, target, metadata and business-unit tables, their column names and the safety buffer,
    after checking that every one of them exists and is visible to the caller. All problems
    are reported in one error (SQLSTATE 22023).') }}
DECLARE
    v_table_name text := "TableName";
    v_errors text[] := ARRAY[]::text[];
    v_error_text text;
    v_configured text;
    v_config record;
    v_object record;
    v_column record;
    v_namespace regnamespace;
    v_oid oid;
    v_qualified text;
    v_objects jsonb := '{}'::jsonb;
    v_column_oid oid;
BEGIN
    ------------------------------------------------------------------- check parameters
    IF v_table_name IS NULL OR btrim(v_table_name) = '' THEN
        v_errors := v_errors || '@TableName is required: give the TableName of a row in "BlobDeltaJobs"."BlobDeltaTableConfig".'::text;
    ELSE
        SELECT c.* INTO v_config
        FROM {{ job('BlobDeltaTableConfig') }} AS c
        WHERE c."TableName" = v_table_name;
        IF NOT FOUND THEN
            SELECT string_agg(c."TableName", ', ' ORDER BY c."TableName" COLLATE "C") INTO v_configured
            FROM {{ job('BlobDeltaTableConfig') }} AS c;
            v_errors := v_errors || left('@TableName ''' || v_table_name
                || ''' is not configured in "BlobDeltaJobs"."BlobDeltaTableConfig"; allowed values: '
                || coalesce(v_configured, '(no tables configured)'), 2000);
        ELSIF v_config."BusinessUnitDatabase" IS NULL OR v_config."BusinessUnitTable" IS NULL THEN
            v_errors := v_errors || left('Table ''' || v_table_name
                || ''': BlobDeltaTableConfig.BusinessUnitDatabase and BusinessUnitTable '
                || 'are required (the business-unit table that scopes a run, e.g. Gwent_LA_FileTable.dbo.LA_BU).', 2000);
        END IF;
    END IF;

    {{ raise_collected('22023') }}

    "MetadataIdColumn" := v_config."MetadataIdColumn";
    "MetadataModifiedOnCol" := v_config."MetadataModifiedOnCol";
    "MetadataBusinessUnitCol" := v_config."MetadataBusinessUnitCol";
    "SafetyBufferMinutes" := v_config."SafetyBufferMinutes";
    "ScriptSet" := v_config."ScriptSet";
    "IsActive" := v_config."IsActive";
    "BusinessUnitIdColumn" := v_config."BusinessUnitIdColumn";

    ------------------------------------------------------------------- check the catalog
    FOR v_object IN
        SELECT v.position, v.role, v.config_prefix, v.database_name, v.object_name, v.allow_view
        FROM (VALUES
            (1, 'source', 'Source', v_config."SourceDatabase", v_config."SourceTable", true),
            (2, 'target', 'Target', v_config."TargetDatabase", v_config."TargetTable", false),
            (3, 'metadata', 'Metadata', v_config."MetadataDatabase", v_config."MetadataTable", true),
            (4, 'business unit', 'BusinessUnit', v_config."BusinessUnitDatabase", v_config."BusinessUnitTable", true)
        ) AS v (position, role, config_prefix, database_name, object_name, allow_view)
        ORDER BY v.position
    LOOP
        v_qualified := {{ quotename('v_object.database_name') }} || '.' || {{ quotename('v_object.object_name') }};
        v_oid := NULL;
        v_namespace := pg_catalog.to_regnamespace({{ quotename('v_object.database_name') }});
        IF v_namespace IS NULL THEN
            v_errors := v_errors || left(format('Table ''%s'': %s database %s does not exist or is not visible to the caller (BlobDeltaTableConfig.%sDatabase).',
                v_table_name, v_object.role, {{ quotename('v_object.database_name') }}, v_object.config_prefix), 2000);
        -- The engine's SECURITY DEFINER functions call this as the engine role, whose USAGE on the
        -- configured schemas a deployment grants (dbtools migrate).
        ELSIF NOT pg_catalog.has_schema_privilege(v_namespace, 'USAGE') THEN
            v_errors := v_errors || left(format('Table ''%s'': %s database %s gives role %s no USAGE (BlobDeltaTableConfig.%sDatabase); '
                'run dbtools migrate, which grants it.',
                v_table_name, v_object.role, {{ quotename('v_object.database_name') }}, {{ quotename('current_user') }},
                v_object.config_prefix), 2000);
        ELSE
            SELECT k.oid INTO v_oid
            FROM pg_catalog.pg_class AS k
            WHERE k.relnamespace = v_namespace
              AND k.relname = v_object.object_name
              AND (k.relkind IN ('r', 'p') OR (v_object.allow_view AND k.relkind IN ('v', 'm')));
            IF v_oid IS NULL THEN
                v_errors := v_errors || left(format('Table ''%s'': %s %s %s does not exist or is not visible to the caller.',
                    v_table_name, v_object.role, CASE WHEN v_object.allow_view THEN 'table or view' ELSE 'table' END,
                    v_qualified), 2000);
            END IF;
        END IF;
        v_objects := v_objects || jsonb_build_object(v_object.role,
            jsonb_build_object('oid', v_oid, 'name', v_qualified));
        CASE v_object.role
            WHEN 'source' THEN "SourceObject" := v_qualified;
            WHEN 'target' THEN "TargetObject" := v_qualified;
            WHEN 'metadata' THEN "MetadataObject" := v_qualified;
            ELSE "BusinessUnitObject" := v_qualified;
        END CASE;
    END LOOP;

    FOR v_column IN
        SELECT v.role, v.config_column, v.column_name
        FROM (VALUES
            (1, 'metadata', 'MetadataIdColumn', v_config."MetadataIdColumn"),
            (2, 'metadata', 'MetadataModifiedOnCol', v_config."MetadataModifiedOnCol"),
            (3, 'metadata', 'MetadataBusinessUnitCol', v_config."MetadataBusinessUnitCol"),
            (4, 'business unit', 'BusinessUnitIdColumn', v_config."BusinessUnitIdColumn")
        ) AS v (position, role, config_column, column_name)
        WHERE v.column_name IS NOT NULL
        ORDER BY v.position
    LOOP
        v_column_oid := (v_objects -> v_column.role ->> 'oid')::oid;
        CONTINUE WHEN v_column_oid IS NULL; -- its table is missing: already reported
        IF NOT EXISTS (
            SELECT 1 FROM pg_catalog.pg_attribute AS a
            WHERE a.attrelid = v_column_oid AND a.attname = v_column.column_name
              AND a.attnum > 0 AND NOT a.attisdropped
        ) THEN
            v_errors := v_errors || left(format('Table ''%s'': column %s (BlobDeltaTableConfig.%s) does not exist in %s table %s.',
                v_table_name, {{ quotename('v_column.column_name') }}, v_column.config_column, v_column.role,
                v_objects -> v_column.role ->> 'name'), 2000);
        END IF;
    END LOOP;

    {{ raise_collected('22023') }}

    IF "Debug" >= 1 THEN
        RAISE NOTICE 'Resolved %: source %, target %, metadata %.',
            v_table_name, "SourceObject", "TargetObject", "MetadataObject";
    END IF;
END;
$procedure$
