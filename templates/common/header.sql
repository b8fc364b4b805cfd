{#- Header comment shared by every rendered object. Kept free of versions and dates so that
    the rendered text (and its checksum) changes only when the object really changes. -#}
{%- macro header(name, summary, origin=None) -%}
/*
    {{ name }}
    {{ summary }}

    Rendered by dbtools from {{ origin or 'procedures/' ~ engine ~ '/' ~ name ~ '.sql' }}; deployed by
    `dbtools migrate`. Do not edit in the database: the next deploy replaces it.
*/
{%- endmacro -%}
