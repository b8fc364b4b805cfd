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
    after checking that every one of them exists in the catalog. All problems are reported
    in one error (SQLSTATE 22023).') }}
DECLARE
    v_table_name text := "TableName";
    v_errors text[] := ARRAY[]::text[];
    v_configured text;
    v_config record;
    v_object record;
    v_column record;
    v_oid regclass;
    v_qualified text;
    v_metadata_oid regclass;
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

    ------------------------------------------------------------------- resolve configuration
    "MetadataIdColumn" := v_config."MetadataIdColumn";
    "MetadataModifiedOnCol" := v_config."MetadataModifiedOnCol";
    "MetadataBusinessUnitCol" := v_config."MetadataBusinessUnitCol";
    "SafetyBufferMinutes" := v_config."SafetyBufferMinutes";
    "ScriptSet" := v_config."ScriptSet";
    "IsActive" := v_config."IsActive";

    ------------------------------------------------------------------- check the catalog
    FOR v_object IN
        SELECT v.position, v.role, v.database_name, v.object_name
        FROM (VALUES
            (1, 'source', v_config."SourceDatabase", v_config."SourceTable"),
            (2, 'target', v_config."TargetDatabase", v_config."TargetTable"),
            (3, 'metadata', v_config."MetadataDatabase", v_config."MetadataTable")
        ) AS v (position, role, database_name, object_name)
        ORDER BY v.position
    LOOP
        v_qualified := {{ quotename('v_object.database_name') }} || '.' || {{ quotename('v_object.object_name') }};
        v_oid := NULL;
        IF pg_catalog.to_regnamespace({{ quotename('v_object.database_name') }}) IS NULL THEN
            v_errors := v_errors || left(format('Table ''%s'': %s database %s does not exist (BlobDeltaTableConfig.%sDatabase).',
                v_table_name, v_object.role, {{ quotename('v_object.database_name') }}, initcap(v_object.role)), 2000);
        ELSE
            v_oid := pg_catalog.to_regclass(v_qualified);
            IF v_oid IS NULL OR NOT EXISTS (
                SELECT 1 FROM pg_catalog.pg_class AS k WHERE k.oid = v_oid AND k.relkind IN ('r', 'p')
            ) THEN
                v_errors := v_errors || left(format('Table ''%s'': %s table %s does not exist.',
                    v_table_name, v_object.role, v_qualified), 2000);
            ELSIF v_object.role = 'metadata' THEN
                v_metadata_oid := v_oid;
            END IF;
        END IF;
        CASE v_object.role
            WHEN 'source' THEN "SourceObject" := v_qualified;
            WHEN 'target' THEN "TargetObject" := v_qualified;
            ELSE "MetadataObject" := v_qualified;
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
