{#-
    The loader's tables appear with the first scan. Before that (a fresh database, CI), staging
    still builds: this returns the source relation if it exists, else an empty typed relation
    with the columns the loader creates.
-#}
{% macro source_or_empty(source_name, table_name, columns) -%}
    {%- set relation = source(source_name, table_name) -%}
    {%- if source_exists(source_name, table_name) -%}
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

{#-
    Whether the source table exists (true while parsing, and in a unit test, where source()
    names the test's fixture CTE). For source_or_empty and the staging models that union only
    the tables that exist.
-#}
{% macro source_exists(source_name, table_name) -%}
    {%- set relation = source(source_name, table_name) -%}
    {%- if relation.is_cte or not execute -%}
        {{ return(true) }}
    {%- endif -%}
    {#- The catalog, not dbt's relation cache (see relation_exists). -#}
    {{ return(relation_exists(relation.schema, relation.identifier) is not none) }}
{%- endmacro %}
