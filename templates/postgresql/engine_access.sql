{#- The engine's rights on PostgreSQL: one DO block, run after every procedure deployment
    (dbtools.deploy.privileges.apply_engine_access), in the migration's transaction.

    Variables: definer_functions (the SECURITY DEFINER steps of usp_BlobDelta_Run),
    helper_routines (what those steps call), engine_role, job_schema.

    The definer functions belong to the NOLOGIN role BlobDeltaEngine, not to the deploying user
    (often a superuser): a trigger, default or view function that fires under the engine's
    dynamic SQL runs with the engine's rights only. BlobDeltaEngine gets exactly what the engine
    needs: the job tables it reads and writes, and per configured table USAGE on its schema,
    SELECT on source, metadata and business-unit tables, SELECT/INSERT/UPDATE/DELETE on the
    target. Objects that do not exist yet are skipped with a NOTICE (the engine reports them
    when a run reaches them); run dbtools migrate again after changing the configuration. -#}
DO $dbtools$
DECLARE
    v_object record;
    v_relation regclass;
BEGIN
    -- The owner of the definer functions needs CREATE on their schema.
    EXECUTE format('GRANT USAGE, CREATE ON SCHEMA %I TO %I', '{{ job_schema }}', '{{ engine_role }}');
{%- for table in read_tables %}
    EXECUTE format('GRANT SELECT ON %I.%I TO %I', '{{ job_schema }}', '{{ table }}', '{{ engine_role }}');
{%- endfor %}
{%- for table in write_tables %}
    EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON %I.%I TO %I', '{{ job_schema }}', '{{ table }}', '{{ engine_role }}');
{%- endfor %}
{%- for routine in helper_routines %}
    EXECUTE format('GRANT EXECUTE ON ROUTINE %I.%I TO %I', '{{ job_schema }}', '{{ routine }}', '{{ engine_role }}');
{%- endfor %}

    FOR v_object IN
        SELECT DISTINCT x.schema_name, x.table_name, x.is_target
        FROM {{ job('BlobDeltaTableConfig') }} AS c
        CROSS JOIN LATERAL (VALUES
            (c."SourceDatabase", c."SourceTable", false),
            (c."MetadataDatabase", c."MetadataTable", false),
            (c."BusinessUnitDatabase", c."BusinessUnitTable", false),
            (c."TargetDatabase", c."TargetTable", true)
        ) AS x (schema_name, table_name, is_target)
        WHERE x.schema_name IS NOT NULL AND x.table_name IS NOT NULL
        ORDER BY 1, 2, 3
    LOOP
        v_relation := pg_catalog.to_regclass(format('%I.%I', v_object.schema_name, v_object.table_name));
        IF v_relation IS NULL THEN
            RAISE NOTICE 'engine access: skipped %.%: it does not exist (the engine reports it when a run reaches it)',
                v_object.schema_name, v_object.table_name;
            CONTINUE;
        END IF;
        EXECUTE format('GRANT USAGE ON SCHEMA %I TO %I', v_object.schema_name, '{{ engine_role }}');
        IF v_object.is_target THEN
            EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON %I.%I TO %I',
                           v_object.schema_name, v_object.table_name, '{{ engine_role }}');
        ELSE
            EXECUTE format('GRANT SELECT ON %I.%I TO %I', v_object.schema_name, v_object.table_name, '{{ engine_role }}');
        END IF;
    END LOOP;
{%- for routine in definer_functions %}
    EXECUTE format('ALTER ROUTINE %I.%I OWNER TO %I', '{{ job_schema }}', '{{ routine }}', '{{ engine_role }}');
{%- endfor %}
END
$dbtools$
