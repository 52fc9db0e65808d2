{#-
    The incremental filter of the models keyed on a per-tenant high-water mark: true for the rows
    whose `extracted_at_column` is later than the latest _extracted_at this model already holds
    for the row's tenant (every row of a tenant it holds nothing of).

    The marks are read when the model compiles and written into the SQL as literals (ISO 8601,
    microseconds: whatever the session's DateStyle), so that PostgreSQL applies the filter while
    scanning the raw rows (a join to the marks, or a correlated subquery, is only applied after
    every raw row has been parsed and checked).
-#}
{% macro extracted_after_high_water_marks(tenant_column, extracted_at_column) -%}
    {%- if not execute -%}
        true
    {%- else -%}
        {%- set marks_sql -%}
            select _tenant_id, to_char(max(_extracted_at), 'YYYY-MM-DD"T"HH24:MI:SS.US')
            from {{ this }}
            where _tenant_id is not null
            group by _tenant_id
            order by _tenant_id
        {%- endset -%}
        {%- set marks = run_query(marks_sql).rows -%}
        {{ extracted_at_column }} > {% if marks | length == 0 -%}
            '-infinity'::timestamp
        {%- else -%}
            case {{ tenant_column }}
            {%- for tenant, mark in marks %}
                when '{{ tenant | replace("'", "''") }}'
                    then {% if mark is none %}'-infinity'{% else %}'{{ mark }}'{% endif %}::timestamp
            {%- endfor %}
                else '-infinity'::timestamp
            end
        {%- endif -%}
    {%- endif -%}
{%- endmacro %}
