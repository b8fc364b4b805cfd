{%- from "postgresql/engine.sql" import resolved_declarations, resolve -%}
{%- from "common/header.sql" import header -%}
{%- from "postgresql/quoting.sql" import quotename -%}
CREATE OR REPLACE FUNCTION {{ job('fn_BlobDelta_FillScript') }}(
    IN "TableName" text,
    IN "ScriptText" text
)
RETURNS text
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $function$
#variable_conflict use_column
{{ header('fn_BlobDelta_FillScript',
          'Internal to the PostgreSQL engine (step and plan scripts): resolves one configured table
    (usp_BlobDelta_ResolveTableConfig: every object must exist) and fills a stored script''s
    placeholders with quoted identifiers, in one pass, so that a name that itself looks like a
    placeholder is never filled again. Returns NULL when a placeholder the script uses has no
    value (as EXECUTE of a NULL string would report it).') }}
DECLARE
    v_table text := "TableName";
    v_script text := "ScriptText";
{{ resolved_declarations() }}
    v_key_column text;
    v_columns text;
    v_source_columns text;
    v_update text;
    v_source_update text;
    v_map jsonb;
    v_filled text;
    v_missing boolean;
BEGIN
    {{ resolve('v_table') }}
    v_key_column := CASE v_script_set WHEN 'Hierarchical' THEN 'stream_id' ELSE v_id_column END;

    -- {ColumnList}, {SourceColumnList}, {UpdateList}, {SourceUpdateList}: the target's columns that can
    -- be written (not generated, not identity) and that the source also has; the key is never updated,
    -- nor a Hierarchical row's is_directory (a FileTable sets it once: a blob never changes kind).
    SELECT string_agg({{ quotename('a.attname::text') }}, ', ' ORDER BY a.attnum),
           string_agg('s.' || {{ quotename('a.attname::text') }}, ', ' ORDER BY a.attnum),
           string_agg(CASE WHEN a.attname <> v_key_column AND NOT (v_script_set = 'Hierarchical' AND a.attname = 'is_directory')
                           THEN {{ quotename('a.attname::text') }} || ' = EXCLUDED.' || {{ quotename('a.attname::text') }} END,
                      ', ' ORDER BY a.attnum),
           string_agg(CASE WHEN a.attname <> v_key_column AND NOT (v_script_set = 'Hierarchical' AND a.attname = 'is_directory')
                           THEN {{ quotename('a.attname::text') }} || ' = s.' || {{ quotename('a.attname::text') }} END,
                      ', ' ORDER BY a.attnum)
    INTO v_columns, v_source_columns, v_update, v_source_update
    FROM pg_catalog.pg_attribute AS a
    WHERE a.attrelid = pg_catalog.to_regclass(v_target_object) AND a.attnum > 0 AND NOT a.attisdropped
      AND a.attgenerated = '' AND a.attidentity = ''
      AND EXISTS (SELECT 1 FROM pg_catalog.pg_attribute AS sa
                  WHERE sa.attrelid = pg_catalog.to_regclass(v_source_object) AND sa.attname = a.attname
                    AND sa.attnum > 0 AND NOT sa.attisdropped);

    v_map := jsonb_build_object(
        '{SourceObject}', v_source_object,
        '{TargetObject}', v_target_object,
        '{MetadataObject}', v_metadata_object,
        '{BusinessUnitObject}', v_bu_object,
        '{QueueObject}', '{{ job("BlobDeltaMissingParentsQueue") }}',
        '{VersionObject}', '{{ job("BlobDeltaTargetVersion") }}',
        '{CandidateObject}', '{{ job("BlobDeltaRunCandidate") }}',
        '{DeletionLogObject}', '{{ job("BlobDeltaDeletionLog") }}',
        '{MetadataIdColumn}', {{ quotename('v_id_column') }},
        '{MetadataModifiedOnCol}', {{ quotename('v_modified_column') }},
        '{MetadataBusinessUnitCol}', {{ quotename('v_bu_column') }},
        '{BusinessUnitIdColumn}', {{ quotename('v_bu_id_column') }},
        '{SourceColumnList}', v_source_columns,
        '{ColumnList}', v_columns,
        '{UpdateList}', v_update,
        '{SourceUpdateList}', v_source_update,
        -- {SourceRow}: the source row s for the metadata row m, looked up by key, or the metadata
        -- row itself when the metadata table is the source table.
        '{SourceRow}', CASE
            WHEN pg_catalog.to_regclass(v_metadata_object) = pg_catalog.to_regclass(v_source_object)
            THEN 'CROSS JOIN LATERAL (SELECT m.*) AS s'
            ELSE 'CROSS JOIN LATERAL (SELECT * FROM ' || v_source_object || ' AS s WHERE s.'
                 || {{ quotename('v_id_column') }} || ' = m.' || {{ quotename('v_id_column') }} || ' OFFSET 0) AS s' END);

    -- One pass over the text: placeholders and the runs between them, in order.
    SELECT string_agg(CASE WHEN v_map ? r.token THEN v_map ->> r.token ELSE r.token END, '' ORDER BY r.position),
           bool_or(v_map ? r.token AND jsonb_typeof(v_map -> r.token) = 'null')
    INTO v_filled, v_missing
    FROM regexp_matches(v_script, '\{[A-Za-z]+\}|[^{]+|\{', 'g') WITH ORDINALITY AS x (m, position)
    CROSS JOIN LATERAL (SELECT x.m[1] AS token, x.position) AS r;
    IF v_missing THEN
        RETURN NULL;
    END IF;
    RETURN coalesce(v_filled, '');
END;
$function$
