{#- Raise every collected validation error at once. Expects a text[] variable v_errors.
    Truncated like the SQL Server twin, so both engines report the same text. -#}
{%- macro raise_collected(sqlstate) -%}
    IF cardinality(v_errors) > 0 THEN
        v_error_text := array_to_string(v_errors, E'\n');
        IF length(v_error_text) > 1000 THEN
            v_error_text := left(v_error_text, 984) || ' ... (truncated)';
        END IF;
        RAISE EXCEPTION USING ERRCODE = '{{ sqlstate }}', MESSAGE = v_error_text;
    END IF;
{%- endmacro -%}
