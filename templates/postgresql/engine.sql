{#- Fragments shared by the PostgreSQL engine's step functions (fn_BlobDelta_*). -#}

{#- Load the run header into v_run, refusing any RunId that is not a Running run. -#}
{%- macro require_running_run() -%}
    SELECT r.* INTO v_run FROM {{ job('BlobDeltaRun') }} AS r WHERE r."RunId" = v_run_id;
    IF NOT FOUND OR v_run."Status" <> 'Running' THEN
        RAISE EXCEPTION USING ERRCODE = '22023',
            MESSAGE = format('Run %s is not a Running run in dbo.BlobDeltaRun.', coalesce(v_run_id::text, 'NULL'));
    END IF;
{%- endmacro -%}

{#- The variables usp_BlobDelta_ResolveTableConfig fills, and the call that fills them. -#}
{%- macro resolved_declarations() -%}
    v_source_object text;
    v_target_object text;
    v_metadata_object text;
    v_id_column text;
    v_modified_column text;
    v_bu_column text;
    v_buffer integer;
    v_script_set text;
    v_active boolean;
    v_bu_object text;
    v_bu_id_column text;
{%- endmacro -%}

{%- macro resolve(table_variable) -%}
CALL {{ job('usp_BlobDelta_ResolveTableConfig') }}(
            {{ table_variable }}, v_source_object, v_target_object, v_metadata_object, v_id_column, v_modified_column,
            v_bu_column, v_buffer, v_script_set, v_active, v_bu_object, v_bu_id_column);
{%- endmacro -%}

{#- The tables in a run's scope, as a predicate on BlobDeltaTableConfig AS c: the one table of
    a SingleTable run, or every active table of an AllTables run. -#}
{%- macro in_run_scope(mode, table_name) -%}
(({{ mode }} = 'SingleTable' AND c."TableName" = {{ table_name }})
       OR ({{ mode }} = 'AllTables' AND c."IsActive"))
{%- endmacro -%}
