{#-
    Integrity (after Fivetran's dbt_hubspot): every deal staging holds from a finished scan is in
    `deals` or, if none of its versions could be stored, only in `deals_quarantine`; and `deals`
    holds nothing else. Catches fan-out and lost rows in the incremental merge.
-#}

with

staged as (

    select distinct
        versions._tenant_id,
        versions.id
    from {{ ref('int_deal_versions_validated') }} as versions
    inner join {{ ref('int_scan_jobs_unioned') }} as jobs
        on versions.scan_job_id = jobs.id
    where jobs.is_finished and versions.record_issue is null

),

stored as (

    select
        _tenant_id,
        id
    from {{ ref('deals') }}

),

counts as (

    select
        (select count(*) from staged) as staged_deals,
        (select count(*) from stored) as stored_deals,
        (
            select count(*)
            from staged
            inner join stored
                on staged._tenant_id = stored._tenant_id and staged.id = stored.id
        ) as matched_deals

)

select * from counts
where staged_deals != stored_deals or matched_deals != stored_deals
