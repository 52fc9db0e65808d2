{#-
    Indexes for the custom properties analysts filter on (the seed's "custom properties" query:
    `properties->>'name' is not null`, or `= 'value'`, for one tenant). Each property named in
    var `indexed_properties` (a list, or a comma-separated string; by default the environment
    variable LOADER_INDEXED_PROPERTIES, empty: none) gets a partial btree index on
    `analytics.deals` named `idx_deals_prop_<name>`:
        (_tenant_id) where (properties ->> 'name') is not null
    It holds only the deals that have the property, so the query reads those rows alone and
    does not evaluate the JSON filter on each row of the tenant; a filter on the value uses it
    too (and checks the value on those rows). The value is not a second key column: with it the
    index is larger than idx_deals_tenant_id, and at 1,000,000 deals, where 85% of a tenant's
    deals have the property, the planner took idx_deals_tenant_id and the filter instead (14 ms
    in PostgreSQL against 7 ms). An index of ours for a property no longer listed is dropped.
    Names are HubSpot's internal property names: lowercase letters, digits and underscores,
    starting with a letter; anything else is an error naming it (and nothing is built).
-#}
{% macro indexed_properties() -%}
    {%- set configured = var('indexed_properties', env_var('LOADER_INDEXED_PROPERTIES', '')) -%}
    {%- if configured is string -%}
        {%- set names = configured.split(',') -%}
    {%- else -%}
        {%- set names = configured -%}
    {%- endif -%}
    {%- set result = [] -%}
    {%- for raw_name in names -%}
        {%- set name = (raw_name | string).strip() -%}
        {%- if name -%}
            {%- if not modules.re.fullmatch('[a-z][a-z0-9_]*', name) -%}
                {{ exceptions.raise_compiler_error(
                    "indexed_properties: \"" ~ name ~ "\""
                    ~ " is not a HubSpot property name (lowercase letters, digits and _,"
                    ~ " starting with a letter)") }}
            {%- endif -%}
            {%- if name not in result -%}{%- do result.append(name) -%}{%- endif -%}
        {%- endif -%}
    {%- endfor -%}
    {{ return(result) }}
{%- endmacro %}

{#- The index name of property `name`: idx_deals_prop_<name>, within PostgreSQL's 63 bytes. -#}
{% macro property_index_name(name) -%}
    {%- set full = 'idx_deals_prop_' ~ name -%}
    {%- if full | length <= 63 -%}
        {{- full -}}
    {%- else -%}
        {{- full[:54] ~ '_' ~ local_md5(name)[:8] -}}
    {%- endif -%}
{%- endmacro %}

{% macro ensure_property_indexes() -%}
    {%- set relation = this.include(database=false) -%}
    {%- set wanted = [] -%}
    {%- for name in indexed_properties() -%}
        {%- set index_name = property_index_name(name) -%}
        {%- do wanted.append(index_name) -%}
        {%- set value = "(properties ->> '" ~ name ~ "')" %}
    {{ ensure_index(index_name, '_tenant_id', where=value ~ ' is not null') }};
    {%- endfor %}
    do $drop_property_indexes$
    declare
        index_name name;
    begin
        for index_name in
            select index_class.relname
            from pg_catalog.pg_index as index_info
            inner join pg_catalog.pg_class as index_class
                on index_info.indexrelid = index_class.oid
            where index_info.indrelid = '{{ relation }}'::regclass
                and index_class.relname like 'idx\_deals\_prop\_%'
                and index_class.relname <> all ('{{ "{" ~ (wanted | join(",")) ~ "}" }}'::name[])
        loop
            execute format('drop index %I.%I', '{{ this.schema }}', index_name);
        end loop;
    end
    $drop_property_indexes$
{%- endmacro %}
