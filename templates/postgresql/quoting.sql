{#- QUOTENAME's twin: always quotes (quote_ident and %I leave simple lower-case names bare),
    so names the procedures return or report are spelt the same way on both engines. -#}
{%- macro quotename(expression) -%}
('"' || replace({{ expression }}, '"', '""') || '"')
{%- endmacro -%}
