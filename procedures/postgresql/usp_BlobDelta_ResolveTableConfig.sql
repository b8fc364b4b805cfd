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
    IN "Debug" smallint DEFAULT 0
)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $procedure$
#variable_conflict use_column
{{ header('usp_BlobDelta_ResolveTableConfig',
          'Resolves one configured table: quoted two-part names (database mapped to schema) of
    its source, target and metadata tables, the metadata column names and the safety buffer,
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
    v_metadata_oid oid;
BEGIN
    ------------------------------------------------------------------- check parameters
    IF v_table_name IS NULL OR btrim(v_table_name) = '' THEN
        v_errors := v_errors || '@TableName is required: give the TableName of a row in dbo.BlobDeltaTableConfig.'::text;
    ELSE
        SELECT c.* INTO v_config
        FROM {{ job('BlobDeltaTableConfig') }} AS c
        WHERE c."TableName" = v_table_name;
        IF NOT FOUND THEN
            SELECT string_agg(c."TableName", ', ' ORDER BY c."TableName" COLLATE "C") INTO v_configured
            FROM {{ job('BlobDeltaTableConfig') }} AS c;
            v_errors := v_errors || left('@TableName ''' || v_table_name
                || ''' is not configured in dbo.BlobDeltaTableConfig; allowed values: '
                || coalesce(v_configured, '(no tables configured)'), 2000);
        END IF;
    END IF;

    {{ raise_collected('22023') }}

    "MetadataIdColumn" := v_config."MetadataIdColumn";
    "MetadataModifiedOnCol" := v_config."MetadataModifiedOnCol";
    "MetadataBusinessUnitCol" := v_config."MetadataBusinessUnitCol";
    "SafetyBufferMinutes" := v_config."SafetyBufferMinutes";
    "ScriptSet" := v_config."ScriptSet";
    "IsActive" := v_config."IsActive";

    ------------------------------------------------------------------- check the catalog
    FOR v_object IN
        SELECT v.position, v.role, v.config_prefix, v.database_name, v.object_name, v.allow_view
        FROM (VALUES
            (1, 'source', 'Source', v_config."SourceDatabase", v_config."SourceTable", true),
            (2, 'target', 'Target', v_config."TargetDatabase", v_config."TargetTable", false),
            (3, 'metadata', 'Metadata', v_config."MetadataDatabase", v_config."MetadataTable", true)
        ) AS v (position, role, config_prefix, database_name, object_name, allow_view)
        ORDER BY v.position
    LOOP
        v_qualified := {{ quotename('v_object.database_name') }} || '.' || {{ quotename('v_object.object_name') }};
        v_oid := NULL;
        v_namespace := pg_catalog.to_regnamespace({{ quotename('v_object.database_name') }});
        IF v_namespace IS NULL THEN
            v_errors := v_errors || left(format('Table ''%s'': %s database %s does not exist or is not visible to the caller (BlobDeltaTableConfig.%sDatabase).',
                v_table_name, v_object.role, {{ quotename('v_object.database_name') }}, v_object.config_prefix), 2000);
        ELSIF NOT pg_catalog.has_schema_privilege(v_namespace, 'USAGE') THEN
            v_errors := v_errors || left(format('Table ''%s'': %s database %s is not accessible to the caller (BlobDeltaTableConfig.%sDatabase).',
                v_table_name, v_object.role, {{ quotename('v_object.database_name') }}, v_object.config_prefix), 2000);
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
        CASE v_object.role
            WHEN 'source' THEN "SourceObject" := v_qualified;
            WHEN 'target' THEN "TargetObject" := v_qualified;
            ELSE
                "MetadataObject" := v_qualified;
                v_metadata_oid := v_oid;
        END CASE;
    END LOOP;

    IF v_metadata_oid IS NOT NULL THEN
        FOR v_column IN
            SELECT v.config_column, v.column_name
            FROM (VALUES
                (1, 'MetadataIdColumn', v_config."MetadataIdColumn"),
                (2, 'MetadataModifiedOnCol', v_config."MetadataModifiedOnCol"),
                (3, 'MetadataBusinessUnitCol', v_config."MetadataBusinessUnitCol")
            ) AS v (position, config_column, column_name)
            WHERE v.column_name IS NOT NULL
            ORDER BY v.position
        LOOP
            IF NOT EXISTS (
                SELECT 1 FROM pg_catalog.pg_attribute AS a
                WHERE a.attrelid = v_metadata_oid AND a.attname = v_column.column_name
                  AND a.attnum > 0 AND NOT a.attisdropped
            ) THEN
                v_errors := v_errors || left(format('Table ''%s'': column %s (BlobDeltaTableConfig.%s) does not exist in metadata table %s.',
                    v_table_name, {{ quotename('v_column.column_name') }}, v_column.config_column, "MetadataObject"), 2000);
            END IF;
        END LOOP;
    END IF;

    {{ raise_collected('22023') }}

    IF "Debug" >= 1 THEN
        RAISE NOTICE 'Resolved %: source %, target %, metadata %.',
            v_table_name, "SourceObject", "TargetObject", "MetadataObject";
    END IF;
END;
$procedure$
