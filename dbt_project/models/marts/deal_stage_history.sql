{#-
    One row per stage a deal was in: valid_from is when HubSpot recorded the change, valid_to the
    next change (null for the current stage). Every scan re-sends the history it reads, so the
    entries are deduplicated on (tenant, deal, changed_at), keeping the latest extraction's.
    Only the history of versions that reached analytics.deals (finished scans, not quarantined).
-#}
{{
    config(
        post_hook=[
            "{{ ensure_constraint_name('p', 'deal_stage_history_pkey') }}",
            "{{ ensure_not_null_constraint_names() }}",
            "{{ ensure_index('idx_deal_stage_history_tenant_stage', '_tenant_id, dealstage') }}",
        ],
    )
}}

with

stg_hubspot__deal_stage_history as (

    select * from {{ ref('stg_hubspot__deal_stage_history') }}

),

int_deal_versions_validated as (

    select * from {{ ref('int_deal_versions_validated') }}

),

int_scan_jobs_unioned as (

    select * from {{ ref('int_scan_jobs_unioned') }}

),

entries as (

    select distinct on (
        int_deal_versions_validated._tenant_id,
        int_deal_versions_validated.id,
        stg_hubspot__deal_stage_history.changed_at
    )
        int_deal_versions_validated._tenant_id,
        int_deal_versions_validated.id as deal_id,
        stg_hubspot__deal_stage_history.dealstage,
        stg_hubspot__deal_stage_history.source_type,
        stg_hubspot__deal_stage_history.changed_at
    from stg_hubspot__deal_stage_history
    inner join int_deal_versions_validated
        on stg_hubspot__deal_stage_history.deal_row_id = int_deal_versions_validated._dlt_id
    inner join int_scan_jobs_unioned
        on int_deal_versions_validated.scan_job_id = int_scan_jobs_unioned.id
    where
        int_scan_jobs_unioned.is_finished
        and int_deal_versions_validated.record_issue is null
        and stg_hubspot__deal_stage_history.changed_at is not null
    order by
        int_deal_versions_validated._tenant_id asc,
        int_deal_versions_validated.id asc,
        stg_hubspot__deal_stage_history.changed_at asc,
        int_deal_versions_validated._extracted_at desc,
        stg_hubspot__deal_stage_history.position_in_history asc

),

final as (

    select
        _tenant_id::varchar(255) as _tenant_id,
        deal_id::varchar(50) as deal_id,
        dealstage::varchar(100) as dealstage,
        source_type::varchar(100) as source_type,
        changed_at::timestamp as valid_from,
        (lead(changed_at) over by_deal)::timestamp as valid_to,
        (lead(changed_at) over by_deal is null)::boolean as is_current
    from entries
    window by_deal as (partition by _tenant_id, deal_id order by changed_at asc)

)

select * from final
