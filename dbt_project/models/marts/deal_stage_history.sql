{#-
    One row per stage a deal was in: valid_from is when HubSpot recorded the change, valid_to the
    next change (null for the current stage). Every scan re-sends the history it reads, so the
    entries are deduplicated on (tenant, deal, changed_at), keeping the latest extraction's
    (_extracted_at). Only the history of versions that reached analytics.deals (finished scans,
    not quarantined).

    Incremental merge on (_tenant_id, deal_id, valid_from). Each build reads the versions
    extracted since the tenant's high-water mark (max _extracted_at here) by finished scans, and
    recomputes the whole history of every deal they touch: its entries here (an entry is never
    dropped: an older version's entries stay part of the history) plus the new versions' entries,
    the newer extraction winning on the same changed_at, then valid_to / is_current. The same
    computation over every version gives the same rows (--full-refresh).
-#}
{{
    config(
        materialized='incremental',
        incremental_strategy='merge',
        unique_key=['_tenant_id', 'deal_id', 'valid_from'],
        on_schema_change='append_new_columns',
        post_hook=[
            "{{ ensure_constraint_name('p', 'deal_stage_history_pkey') }}",
            "{{ ensure_not_null_constraint_names() }}",
            "{{ ensure_index('idx_deal_stage_history_tenant_stage', '_tenant_id, dealstage') }}",
            "{{ ensure_index('idx_deal_stage_history_tenant_extracted_at',
                '_tenant_id, _extracted_at') }}",
        ],
    )
}}
{#-
    Incremental only once the table has _extracted_at: a table built before that column existed
    is rebuilt from every version (merged in place, the column appended).
-#}
{%- set incremental = is_incremental() and execute and (
    adapter.get_columns_in_relation(this) | selectattr('name', 'equalto', '_extracted_at')
    | list | length > 0
) -%}

with

stg_hubspot__deal_stage_history as (

    select * from {{ ref('stg_hubspot__deal_stage_history') }}

),

int_deal_versions_validated as (

    select * from {{ ref('int_deal_versions_validated') }}

),

new_versions as (

    select
        int_deal_versions_validated._dlt_id,
        int_deal_versions_validated._tenant_id,
        int_deal_versions_validated.id,
        int_deal_versions_validated._extracted_at
    from int_deal_versions_validated
    where
        int_deal_versions_validated.is_scan_finished
        and int_deal_versions_validated.record_issue is null
    {% if incremental %}
        and {{ extracted_after_high_water_marks(
            'int_deal_versions_validated._tenant_id',
            'int_deal_versions_validated._extracted_at',
        ) }}
    {% endif %}

),

new_entries as (

    select
        new_versions._tenant_id,
        new_versions.id as deal_id,
        stg_hubspot__deal_stage_history.dealstage,
        stg_hubspot__deal_stage_history.source_type,
        stg_hubspot__deal_stage_history.changed_at,
        new_versions._extracted_at,
        stg_hubspot__deal_stage_history.position_in_history
    from stg_hubspot__deal_stage_history
    inner join new_versions
        on stg_hubspot__deal_stage_history.deal_row_id = new_versions._dlt_id
    where stg_hubspot__deal_stage_history.changed_at is not null

),

all_entries as (

    select * from new_entries

    {% if incremental %}

        union all

        select
            current_entries._tenant_id,
            current_entries.deal_id,
            current_entries.dealstage,
            current_entries.source_type,
            current_entries.valid_from as changed_at,
            current_entries._extracted_at,
            0 as position_in_history
        from {{ this }} as current_entries
        where exists (
            select from new_entries
            where
                new_entries._tenant_id = current_entries._tenant_id
                and new_entries.deal_id = current_entries.deal_id
        )

    {% endif %}

),

entries as (

    select distinct on (_tenant_id, deal_id, changed_at)
        _tenant_id,
        deal_id,
        dealstage,
        source_type,
        changed_at,
        _extracted_at
    from all_entries
    order by
        _tenant_id asc,
        deal_id asc,
        changed_at asc,
        _extracted_at desc,
        position_in_history asc

),

final as (

    select
        _tenant_id::varchar(255) as _tenant_id,
        deal_id::varchar(50) as deal_id,
        dealstage::varchar(100) as dealstage,
        source_type::varchar(100) as source_type,
        changed_at::timestamp as valid_from,
        (lead(changed_at) over by_deal)::timestamp as valid_to,
        (lead(changed_at) over by_deal is null)::boolean as is_current,
        _extracted_at::timestamp as _extracted_at
    from entries
    window by_deal as (partition by _tenant_id, deal_id order by changed_at asc)

)

select * from final
