{#-
    How far deals_quarantine has checked each tenant: loader.deals_quarantine_marks, one row per
    tenant, checked_through = every deal version and loader rejection of the tenant's finished
    scans extracted up to then has been checked (its problems, if any, are in deals_quarantine).
    The model's incremental filter starts there (extracted_after_high_water_marks).

    The quarantine's own rows cannot be the mark: they exist only for records with a problem, so
    a tenant whose recent versions are clean had everything since its last problem checked
    again by every build (a tenant with none ever: all its versions; 54,000 versions, 0.44 s, in
    a bench database after 35 rounds of 1% changes, and growing with the history).

    Race-free with scans finishing during the build: in the model's transaction, before its
    select, the pre-hook sets `pending` to the latest extraction of the tenant's finished scans
    (scans of a tenant run one at a time, so every row extracted up to then belongs to a scan
    that has finished, and the select, which comes later, sees that scan finished too); the
    post-hook moves checked_through to it, committed with the merge or not at all. Rows extracted
    after `pending` that the select also checked are checked again next time (the merge on
    (raw_row_id, reason) makes that harmless). A --full-refresh or first build starts the marks
    over. Without the table (a build before it existed), the marks are the quarantine's own
    rows, as before.
-#}
{% macro quarantine_marks_relation() -%}
    {{ return(api.Relation.create(
        database=target.database, schema=var('ops_schema'),
        identifier='deals_quarantine_marks', type='table')) }}
{%- endmacro %}

{#- pre-hook of deals_quarantine: the table, and each tenant's pending mark. -#}
{% macro quarantine_marks_pending() -%}
    {%- set marks = quarantine_marks_relation() -%}
    {%- set raw = var('raw_schema') -%}
    {%- set jobs_sql = finished_scan_jobs_sql() -%}
    {%- set latest = [] -%}
    {%- for table in ['deals', 'deals_rejected'] -%}
        {%- set relation = relation_exists(raw, table) -%}
        {%- if relation is not none -%}
            {%- do latest.append(
                "(select max(raw_rows._extracted_at at time zone 'UTC') from " ~ relation
                ~ " as raw_rows where raw_rows._tenant_id = finished.tenant_id"
                ~ " and raw_rows._scan_job_id = any(finished.job_ids))"
            ) -%}
        {%- endif -%}
    {%- endfor %}
    create table if not exists {{ marks }} (
        _tenant_id varchar(255) primary key,
        checked_through timestamp,
        pending timestamp,
        updated_at timestamptz not null default now()
    );
    {%- if not is_incremental() %}
        delete from {{ marks }};
    {%- endif %}
    {%- if jobs_sql is not none and latest %}
        insert into {{ marks }} (_tenant_id, pending)
        select
            finished.tenant_id,
            greatest({{ latest | join(', ') }}) as pending
        from (
            select organization_id as tenant_id, array_agg(id) as job_ids
            from ({{ jobs_sql }}) as jobs
            group by organization_id
        ) as finished
        on conflict (_tenant_id) do update
        set pending = excluded.pending, updated_at = now();
    {%- endif %}
{%- endmacro %}

{#- post-hook of deals_quarantine: what the pre-hook pinned is now checked. -#}
{% macro quarantine_marks_checked() -%}
    update {{ quarantine_marks_relation() }}
    set checked_through = pending, pending = null, updated_at = now()
    where pending is not null
{%- endmacro %}
