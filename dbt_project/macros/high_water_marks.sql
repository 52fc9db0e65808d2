{#-
    The incremental filter of the models keyed on a per-tenant high-water mark: true for the rows
    whose `extracted_at_column` is later than the latest _extracted_at this model already holds
    for the row's tenant, and for every row of a tenant it holds nothing of.

    The marks are read when the model compiles and written into the SQL as literals (ISO 8601,
    microseconds: whatever the session's DateStyle), so that PostgreSQL applies the filter while
    scanning the raw rows (a join to the marks, or a correlated subquery, is only applied after
    every raw row has been parsed and checked). It is one range per tenant,
    `(tenant = 'a' and extracted_at > 'mark a') or ... or tenant in ('new', ...)`, which the raw
    tables' index on (tenant, extraction time) answers (ensure_raw_read_indexes): an incremental
    build reads the raw rows extracted since its tenants' marks, not the whole raw history. The
    tenants without a mark are those with a finished scan (live or archived): rows of a tenant
    without one cannot belong to a finished scan, which every caller requires.

    A model's own marks are read with one probe per tenant with a finished scan of the model's
    index on (_tenant_id, _extracted_at) (idx_deals_tenant_extracted_at,
    idx_deal_stage_history_tenant_extracted_at): until 2026-12-07 an aggregate over the whole
    table, which every incremental build paid in proportion to the table (0.07-0.16 s for
    deals, 0.09 s for the stage history at 200,000 deals and 1.3 million history rows).

    `checked_marks`: a table of marks kept apart (_tenant_id, checked_through), used instead of
    the model's own rows once it exists (deals_quarantine, whose rows exist only for records with
    a problem: macros/quarantine_marks.sql).
-#}
{% macro extracted_after_high_water_marks(tenant_column, extracted_at_column,
                                          checked_marks=none) -%}
    {%- if not execute -%}
        true
    {%- else -%}
        {%- set finished = tenants_with_finished_scans() -%}
        {%- set kept = none -%}
        {%- if checked_marks is not none -%}
            {%- set kept = relation_exists(checked_marks.schema, checked_marks.identifier) -%}
        {%- endif -%}
        {%- set marks_sql -%}
            {%- if kept is not none %}
                select _tenant_id, to_char(checked_through, 'YYYY-MM-DD"T"HH24:MI:SS.US')
                from {{ kept }}
                where checked_through is not null
                order by _tenant_id
            {%- else %}
                {#- One index probe per tenant (the model's index on (_tenant_id,
                    _extracted_at)), not an aggregate over the whole table. -#}
                select marks.tenant_id, to_char(marks.mark, 'YYYY-MM-DD"T"HH24:MI:SS.US')
                from (
                    select
                        tenants.tenant_id,
                        (
                            select max(model_rows._extracted_at)
                            from {{ this }} as model_rows
                            where model_rows._tenant_id = tenants.tenant_id
                        ) as mark
                    from unnest(array[
                        {%- for tenant in finished -%}
                            {{ sql_literal(tenant) }}{{ ", " if not loop.last }}
                        {%- endfor -%}
                    ]::text[]) as tenants (tenant_id)
                ) as marks
                where marks.mark is not null
                order by marks.tenant_id
            {%- endif %}
        {%- endset -%}
        {%- set marks = run_query(marks_sql).rows -%}
        {%- set marked = marks | map(attribute=0) | list -%}
        {%- set unmarked = finished | reject('in', marked) | list -%}
        (
        {%- for tenant, mark in marks %}
            ({{ tenant_column }} = {{ sql_literal(tenant) }}
                and {{ extracted_at_column }} > '{{ mark }}'::timestamp) or
        {%- endfor %}
            {{ tenant_column }} in (
                {%- for tenant in unmarked -%}
                    {{ sql_literal(tenant) }}{{ ", " if not loop.last }}
                {%- endfor -%}
                {%- if not unmarked %}null{% endif -%}
            )
        )
    {%- endif -%}
{%- endmacro %}

{#- A text value as a SQL string literal. -#}
{% macro sql_literal(value) -%}
    '{{ value | replace("'", "''") }}'
{%- endmacro %}

{#-
    The scan jobs that have finished, live (a terminal status) or archived by retention, as the
    text of a `select id, organization_id` (jobs without a tenant left out); none while
    loader.scan_jobs does not exist. For the tenants below and the quarantine's marks
    (macros/quarantine_marks.sql).
-#}
{% macro finished_scan_jobs_sql() -%}
    {%- set schema = var('ops_schema') -%}
    {%- set live = relation_exists(schema, 'scan_jobs') -%}
    {%- if live is none -%}
        {{ return(none) }}
    {%- endif -%}
    {%- set archive = relation_exists(schema, 'scan_jobs_archive') -%}
    {%- set jobs_sql -%}
        select id, organization_id from {{ live }}
        where status in ('completed', 'failed', 'cancelled') and organization_id is not null
        {%- if archive is not none %}
            union
            select id, organization_id from {{ archive }} where organization_id is not null
        {%- endif %}
    {%- endset -%}
    {{ return(jobs_sql) }}
{%- endmacro %}

{#-
    The tenants with a finished scan (live, or archived by retention): those whose raw rows an
    incremental model may have to read.
-#}
{% macro tenants_with_finished_scans() -%}
    {%- set jobs_sql = finished_scan_jobs_sql() -%}
    {%- if jobs_sql is none -%}
        {{ return([]) }}
    {%- endif -%}
    {%- set tenants_sql -%}
        select distinct organization_id from ({{ jobs_sql }}) as jobs
    {%- endset -%}
    {{ return(run_query(tenants_sql).columns[0].values() | list) }}
{%- endmacro %}

{#-
    When the last build that ran every model began (loader.dbt_builds, UTC, ISO 8601), for the
    checks that need only look at what changed since; none on a --full-refresh build, or when
    no such build is on record.
-#}
{% macro last_full_build_started_at() -%}
    {%- if not execute or flags.FULL_REFRESH -%}
        {{ return(none) }}
    {%- endif -%}
    {%- set builds = relation_exists(var('ops_schema'), 'dbt_builds') -%}
    {%- if builds is none -%}
        {{ return(none) }}
    {%- endif -%}
    {%- set since_sql -%}
        select to_char(max(started_at) at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US')
        from {{ builds }}
        where status = 'completed' and node_selection is null
    {%- endset -%}
    {{ return(run_query(since_sql).columns[0].values()[0]) }}
{%- endmacro %}

{#-
    The ids of the scans (live or archived) that finished after `since` (ISO 8601 UTC, from
    last_full_build_started_at), for checks that look at those scans' rows only.
-#}
{% macro scans_finished_since(since) -%}
    {%- if not execute -%}
        {{ return([]) }}
    {%- endif -%}
    {%- set scans_sql -%}
        select id from {{ ref('int_scan_jobs_unioned') }}
        where is_finished and completed_at > {{ sql_literal(since) }}::timestamp
        order by id
    {%- endset -%}
    {{ return(run_query(scans_sql).columns[0].values() | list) }}
{%- endmacro %}
