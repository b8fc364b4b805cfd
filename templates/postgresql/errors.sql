{#- Raise every collected validation error at once. Expects a text[] variable v_errors. -#}
{%- macro raise_collected(sqlstate) -%}
    IF cardinality(v_errors) > 0 THEN
        RAISE EXCEPTION USING
            ERRCODE = '{{ sqlstate }}',
            MESSAGE = array_to_string(v_errors, E'\n');
    END IF;
{%- endmacro -%}
