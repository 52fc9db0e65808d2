{#-
    Every deal record of a finished scan that broke a rule of analytics.deals, one row per record
    and problem, with the reason and the value as HubSpot sent it. Nothing here fails the build:
    - record problems (invalid_id, unknown_stage): the version is not stored; analytics.deals
      keeps the deal's previous accepted version, if any (version_stored = false);
    - field problems (amount:negative, amount:unparseable, amount:out_of_range,
      createdate:unparseable, closedate:unparseable, <column>:too_long): the version is stored
      with that column null, the raw value stays in `properties` (version_stored = true);
    - loader:<reason>: records the loader could not store at all (raw_hubspot.deals_rejected),
      already counted in failed_items by the scan itself (counted_by_loader = true).
    After each build the loader adds each scan's not-yet-counted records (distinct raw_row_id,
    counted_by_loader = false) to loader.scan_jobs.failed_items (loader/transform.py).

    Incremental merge on (raw_row_id, reason): a finished scan's records and their problems never
    change, so each build checks only the records extracted since the tenant's high-water mark:
    how far the builds before have checked it (loader.deals_quarantine_marks, kept by this
    model's pre- and post-hook: macros/quarantine_marks.sql; a tenant not checked yet is checked
    from the start). The same checks over every record give the same rows (--full-refresh).
-#}
{{
    config(
        materialized='incremental',
        incremental_strategy='merge',
        unique_key=['raw_row_id', 'reason'],
        on_schema_change='append_new_columns',
        pre_hook=["{{ quarantine_marks_pending() }}"],
        post_hook=[
            "{{ quarantine_marks_checked() }}",
            "{{ ensure_constraint_name('p', 'deals_quarantine_pkey') }}",
            "{{ ensure_not_null_constraint_names() }}",
            "{{ ensure_index('idx_deals_quarantine_tenant_scan', '_tenant_id, scan_job_id') }}",
        ],
    )
}}

with

int_deal_versions_validated as (

    select * from {{ ref('int_deal_versions_validated') }}

),

stg_hubspot__deals_rejected as (

    select * from {{ ref('stg_hubspot__deals_rejected') }}

),

int_scan_jobs_unioned as (

    select * from {{ ref('int_scan_jobs_unioned') }}

),

finished_scans as (

    select id as scan_job_id
    from int_scan_jobs_unioned
    where is_finished

),

versions as (

    select int_deal_versions_validated.*
    from int_deal_versions_validated
    where
        int_deal_versions_validated.is_scan_finished
        and (
            int_deal_versions_validated.record_issue is not null
            or cardinality(int_deal_versions_validated.field_issues) > 0
        )
    {% if is_incremental() %}
        and {{ extracted_after_high_water_marks(
            'int_deal_versions_validated._tenant_id',
            'int_deal_versions_validated._extracted_at',
            checked_marks=quarantine_marks_relation(),
        ) }}
    {% endif %}

),

record_issues as (

    select
        _tenant_id,
        id as deal_id,
        scan_job_id,
        _scan_id,
        _extracted_at,
        _dlt_id as raw_row_id,
        record_issue as reason,
        record_issue_detail as detail,
        case
            when record_issue = 'unknown_stage' then properties ->> 'dealstage'
            else id
        end as raw_value,
        false as version_stored,
        false as counted_by_loader
    from versions
    where record_issue is not null

),

field_issues as (

    select
        versions._tenant_id,
        versions.id as deal_id,
        versions.scan_job_id,
        versions._scan_id,
        versions._extracted_at,
        versions._dlt_id as raw_row_id,
        issues.reason,
        format(
            'property %s could not be stored (%s); the column is null',
            split_part(issues.reason, ':', 1),
            replace(split_part(issues.reason, ':', 2), '_', ' ')
        ) as detail,
        versions.properties ->> split_part(issues.reason, ':', 1) as raw_value,
        true as version_stored,
        false as counted_by_loader
    from versions
    cross join lateral unnest(versions.field_issues) as issues (reason)
    where versions.record_issue is null

),

rejected_by_loader as (

    select
        stg_hubspot__deals_rejected._tenant_id,
        stg_hubspot__deals_rejected.deal_id,
        stg_hubspot__deals_rejected.scan_job_id,
        stg_hubspot__deals_rejected._scan_id,
        stg_hubspot__deals_rejected._extracted_at,
        stg_hubspot__deals_rejected._dlt_id as raw_row_id,
        'loader:' || coalesce(stg_hubspot__deals_rejected.reason, 'unknown') as reason,
        'the loader could not store this record' as detail,
        stg_hubspot__deals_rejected.payload::text as raw_value,
        false as version_stored,
        true as counted_by_loader
    from stg_hubspot__deals_rejected
    inner join finished_scans
        on stg_hubspot__deals_rejected.scan_job_id = finished_scans.scan_job_id
    {% if is_incremental() %}
        where {{ extracted_after_high_water_marks(
            'stg_hubspot__deals_rejected._tenant_id',
            'stg_hubspot__deals_rejected._extracted_at',
            checked_marks=quarantine_marks_relation(),
        ) }}
    {% endif %}

),

unioned as (

    select * from record_issues
    union all
    select * from field_issues
    union all
    select * from rejected_by_loader

),

final as (

    select
        _tenant_id::varchar(255) as _tenant_id,
        deal_id::text as deal_id,
        scan_job_id::varchar(50) as scan_job_id,
        _scan_id::varchar(255) as _scan_id,
        _extracted_at::timestamp as _extracted_at,
        raw_row_id::varchar(64) as raw_row_id,
        reason::varchar(100) as reason,
        detail::text as detail,
        raw_value::text as raw_value,
        version_stored::boolean as version_stored,
        counted_by_loader::boolean as counted_by_loader
    from unioned

)

select * from final
