{#-
    One row per (tenant, deal): the latest version HubSpot sent, typed as the seed's design.

    Incremental merge on (_tenant_id, id). Each build takes the validated raw versions extracted
    since the tenant's high-water mark by scans that have finished (never rows of a scan still
    loading; versions with a record-level problem go to deals_quarantine instead), plus the
    current row of every deal they touch, and works out for each deal:
    - the latest version (latest hs_lastmodifieddate wins, then latest extraction);
    - created_at: the first time we stored the deal;
    - updated_at: when its content (properties, archived) last changed.
    The same computation over the whole raw history gives the same rows (--full-refresh).

    Indexes: the seed's, under its names, plus three covering indexes of ours
    (idx_deals_tenant_*_amount, idx_deals_tenant_date_listing) that answer the seed's per-tenant
    aggregates and listings by index-only scans; the loader vacuums the table after each build
    (loader/transform.py) so that those scans need no heap fetches. And idx_deals_scan_job_created
    (scan_job_id, createdate): the seed's page of a scan's deals (newest first, 100 at a time)
    reads its 100 rows in order instead of sorting every deal of the scan (a full scan's job
    holds every deal of the tenant). stx_deals_scan_job_tenant tells the planner that a scan job
    belongs to one tenant: without it the planner multiplies the two filters' selectivities and
    expects a twentieth of a scan's rows (a sort of a few hundred rows looks cheaper than the
    index). idx_deals_archived_null holds the deals whose archived is null, none while the data
    is right: the not_null test of archived reads it instead of the whole table after every
    build. And one partial index per custom property listed in var indexed_properties
    (macros/property_indexes.sql; none by default).

    deals depends on scan_jobs (the depends_on comment below) so that the scan jobs a new version
    references are in analytics.scan_jobs before the merge checks the foreign key.
-#}
{{
    config(
        materialized='incremental',
        incremental_strategy='merge',
        unique_key=['_tenant_id', 'id'],
        on_schema_change='append_new_columns',
        post_hook=[
            "{{ ensure_constraint_name('p', 'deals_pkey') }}",
            "{{ ensure_not_null_constraint_names() }}",
            "{{ ensure_scan_job_foreign_key() }}",
            "{{ set_column_defaults({
                'archived': 'false',
                'created_at': 'current_timestamp',
                'updated_at': 'current_timestamp',
            }) }}",
            "{{ ensure_index('idx_deals_scan_job_id', 'scan_job_id') }}",
            "{{ ensure_index('idx_deals_scan_id', '_scan_id') }}",
            "{{ ensure_index('idx_deals_tenant_id', '_tenant_id') }}",
            "{{ ensure_index('idx_deals_extracted_at', '_extracted_at') }}",
            "{{ ensure_index('idx_deals_tenant_extracted_at', '_tenant_id, _extracted_at') }}",
            "{{ ensure_index('idx_deals_tenant_scan', '_tenant_id, _scan_id') }}",
            "{{ ensure_index('idx_deals_stage', 'dealstage', where='dealstage is not null') }}",
            "{{ ensure_index('idx_deals_pipeline', 'pipeline', where='pipeline is not null') }}",
            "{{ ensure_index('idx_deals_create_date', 'createdate',
                where='createdate is not null') }}",
            "{{ ensure_index('idx_deals_close_date', 'closedate',
                where='closedate is not null') }}",
            "{{ ensure_index('idx_deals_archived', 'archived', where='archived = false') }}",
            "{{ ensure_index('idx_deals_tenant_date', '_tenant_id, createdate') }}",
            "{{ ensure_index('idx_deals_tenant_stage', '_tenant_id, dealstage',
                where='dealstage is not null') }}",
            "{{ ensure_index('idx_deals_tenant_pipeline', '_tenant_id, pipeline',
                where='pipeline is not null') }}",
            "{{ ensure_index('idx_deals_stage_date', 'dealstage, closedate',
                where='closedate is not null') }}",
            "{{ ensure_index('idx_deals_properties_gin', 'properties', method='gin') }}",
            "{{ ensure_index('idx_deals_tenant_pipeline_stage_amount',
                '_tenant_id, pipeline, dealstage', include='amount',
                where='archived = false') }}",
            "{{ ensure_index('idx_deals_tenant_close_date_amount', '_tenant_id, closedate',
                include='amount', where='closedate is not null') }}",
            "{{ ensure_index('idx_deals_scan_job_created', 'scan_job_id, createdate') }}",
            "{{ ensure_statistics('stx_deals_scan_job_tenant', 'dependencies',
                'scan_job_id, _tenant_id') }}",
            "{{ ensure_index('idx_deals_tenant_date_listing', '_tenant_id, createdate',
                include='archived, id, dealname, amount, dealstage, closedate') }}",
            "{{ ensure_index('idx_deals_archived_null', 'archived', where='archived is null') }}",
            "{{ ensure_property_indexes() }}",
        ],
    )
}}
-- depends_on: {{ ref('scan_jobs') }}

with

int_deal_versions_validated as (

    select * from {{ ref('int_deal_versions_validated') }}

),

new_rows as (

    select
        versions_validated.id,
        versions_validated.scan_job_id,
        versions_validated._scan_id,
        versions_validated._tenant_id,
        versions_validated._extracted_at,
        versions_validated.dealname,
        versions_validated.amount,
        versions_validated.dealstage,
        versions_validated.pipeline,
        versions_validated.createdate,
        versions_validated.closedate,
        versions_validated.dealtype,
        versions_validated.hubspot_owner_id,
        versions_validated.description,
        versions_validated.deal_currency_code,
        versions_validated.hs_next_step,
        versions_validated.hs_priority,
        versions_validated.archived,
        versions_validated.properties,
        versions_validated.hubspot_created_at,
        versions_validated.hubspot_updated_at
    from int_deal_versions_validated as versions_validated
    where
        versions_validated.is_scan_finished
        and versions_validated.record_issue is null
    {% if is_incremental() %}
        and {{ extracted_after_high_water_marks(
            'versions_validated._tenant_id', 'versions_validated._extracted_at',
        ) }}
    {% endif %}

),

{% if is_incremental() %}

    touched_deals as (

        select distinct
            _tenant_id,
            id
        from new_rows

    ),

{% endif %}

versions as (

    select
        *,
        md5(properties::text || archived::text) as content_hash,
        _extracted_at as first_seen_at,
        _extracted_at as content_since
    from new_rows

    {% if is_incremental() %}

        union all

        select
            current_rows.id,
            current_rows.scan_job_id,
            current_rows._scan_id,
            current_rows._tenant_id,
            current_rows._extracted_at,
            current_rows.dealname,
            current_rows.amount,
            current_rows.dealstage,
            current_rows.pipeline,
            current_rows.createdate,
            current_rows.closedate,
            current_rows.dealtype,
            current_rows.hubspot_owner_id,
            current_rows.description,
            current_rows.deal_currency_code,
            current_rows.hs_next_step,
            current_rows.hs_priority,
            current_rows.archived,
            current_rows.properties,
            current_rows.hubspot_created_at,
            current_rows.hubspot_updated_at,
            md5(current_rows.properties::text || current_rows.archived::text) as content_hash,
            current_rows.created_at as first_seen_at,
            current_rows.updated_at as content_since
        from {{ this }} as current_rows
        inner join touched_deals
            on
                current_rows._tenant_id = touched_deals._tenant_id
                and current_rows.id = touched_deals.id

    {% endif %}

),

ordered as (

    select
        *,
        row_number() over newest_first as recency,
        lag(content_hash) over oldest_first as previous_content_hash
    from versions
    window
        newest_first as (
            partition by _tenant_id, id
            order by hubspot_updated_at desc nulls last, _extracted_at desc, content_hash desc
        ),
        oldest_first as (
            partition by _tenant_id, id
            order by hubspot_updated_at asc nulls first, _extracted_at asc, content_hash asc
        )

),

islands as (

    select
        *,
        sum(
            case when content_hash is distinct from previous_content_hash then 1 else 0 end
        ) over (
            partition by _tenant_id, id
            order by hubspot_updated_at asc nulls first, _extracted_at asc, content_hash asc
            rows between unbounded preceding and current row
        ) as content_version
    from ordered

),

dated as (

    {#-
        Window functions only, no self-joins: the latest version (recency = 1) is the last one
        in oldest-first order, so it lies in the deal's last content island, and updated_at is
        when that island began.
    #}
    select
        *,
        min(first_seen_at) over (partition by _tenant_id, id) as first_stored_at,
        min(content_since) over (
            partition by _tenant_id, id, content_version
        ) as content_changed_at
    from islands

),

final as (

    select
        latest.id::varchar(50) as id,
        latest.scan_job_id::varchar(50) as scan_job_id,
        latest._scan_id::varchar(255) as _scan_id,
        latest._tenant_id::varchar(255) as _tenant_id,
        latest._extracted_at::timestamp as _extracted_at,
        latest.dealname::varchar(500) as dealname,
        latest.amount::numeric(15, 2) as amount,
        latest.dealstage::varchar(100) as dealstage,
        latest.pipeline::varchar(100) as pipeline,
        latest.createdate::timestamp as createdate,
        latest.closedate::timestamp as closedate,
        latest.dealtype::varchar(50) as dealtype,
        latest.hubspot_owner_id::varchar(50) as hubspot_owner_id,
        latest.description::text as description,
        latest.deal_currency_code::varchar(10) as deal_currency_code,
        latest.hs_next_step::varchar(500) as hs_next_step,
        latest.hs_priority::varchar(50) as hs_priority,
        latest.archived::boolean as archived,
        latest.properties::jsonb as properties,
        latest.hubspot_created_at::timestamp as hubspot_created_at,
        latest.hubspot_updated_at::timestamp as hubspot_updated_at,
        latest.first_stored_at::timestamp as created_at,
        latest.content_changed_at::timestamp as updated_at

    from dated as latest
    where latest.recency = 1

)

select * from final
