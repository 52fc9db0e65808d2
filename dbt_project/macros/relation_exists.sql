{#-
    The relation `schema`.`identifier` as it is in the catalog now, or none: for the loader's
    tables (raw_hubspot, loader), which dbt does not build. Not `adapter.get_relation`: for a
    schema outside dbt's relation cache, the first thread that lists it adds its relations to
    the cache one at a time, and a thread compiling meanwhile finds the schema "cached" with
    only some of them, so a model read a table that exists as missing (seen under load: a
    staging view compiled with its empty placeholder, and deal_stages built empty).
-#}
{% macro relation_exists(schema, identifier) -%}
    {%- if not execute -%}
        {{ return(none) }}
    {%- endif -%}
    {%- set lookup_sql -%}
        select c.relkind
        from pg_catalog.pg_class as c
        inner join pg_catalog.pg_namespace as n on c.relnamespace = n.oid
        where n.nspname = {{ sql_literal(schema) }} and c.relname = {{ sql_literal(identifier) }}
    {%- endset -%}
    {%- set found = run_query(lookup_sql).columns[0].values() -%}
    {%- if not found -%}
        {{ return(none) }}
    {%- endif -%}
    {{ return(api.Relation.create(
        database=target.database, schema=schema, identifier=identifier,
        type=('view' if found[0] == 'v' else 'table'))) }}
{%- endmacro %}
