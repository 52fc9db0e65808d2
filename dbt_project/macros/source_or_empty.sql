{#-
    The loader's tables appear with the first scan. Before that (a fresh database, CI), staging
    still builds: this returns the source relation if it exists, else an empty typed relation
    with the columns the loader creates.
-#}
{% macro source_or_empty(source_name, table_name, columns) -%}
    {%- set relation = source(source_name, table_name) -%}
    {%- if relation.is_cte -%}
        {#- In a unit test, source() names the test's fixture CTE: use it as is. -#}
        {%- set existing = relation -%}
    {%- elif execute -%}
        {#- The catalog, not dbt's relation cache (see relation_exists). -#}
        {%- set existing = relation_exists(relation.schema, relation.identifier) -%}
    {%- else -%}
        {%- set existing = relation -%}
    {%- endif -%}
    {%- if existing is not none -%}
        {{ relation }}
    {%- else -%}
        (
            select
                {%- for name, data_type in columns.items() %}
                    cast(null as {{ data_type }}) as {{ name }}{{ "," if not loop.last }}
                {%- endfor %}
            where false
        ) as {{ table_name }}_empty {#- PostgreSQL 15 requires an alias on a subquery in FROM -#}
    {%- endif -%}
{%- endmacro %}
