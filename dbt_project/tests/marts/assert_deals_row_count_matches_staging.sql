{#-
    Integrity (after Fivetran's dbt_hubspot): every deal staging holds from a finished scan is in
    `deals` or, if none of its versions could be stored, only in `deals_quarantine`; and `deals`
    holds nothing else. Catches fan-out and lost rows in the incremental merge.

    A merge can only have changed the deals of scans that finished since the last full build
    began (loader.dbt_builds, via last_full_build_started_at): an incremental build checks those
    deals, both ways, and what earlier builds checked stays as it was. A --full-refresh build, or
    one with no build on record, checks every deal.
-#}
{%- set since = last_full_build_started_at() -%}

with

scans as (

    select id
    from {{ ref('int_scan_jobs_unioned') }}
    where is_finished {% if since is not none -%}
        and completed_at > '{{ since }}'::timestamp
    {%- endif %}

),

staged as (

    select distinct
        versions._tenant_id,
        versions.id
    from {{ ref('int_deal_versions_validated') }} as versions
    inner join scans
        on versions.scan_job_id = scans.id
    where versions.record_issue is null

),

stored as (

    select
        _tenant_id,
        id
    from {{ ref('deals') }}
    {%- if since is not none %}
        where scan_job_id in (select scans.id from scans)
    {%- endif %}

),

counts as (

    select
        (select count(*) from staged) as staged_deals,
        (select count(*) from stored) as stored_deals,
        (
            select count(*)
            from staged
            inner join {{ ref('deals') }} as deals
                on staged._tenant_id = deals._tenant_id and staged.id = deals.id
        ) as matched_staged_deals,
        (
            select count(*)
            from stored
            inner join staged
                on stored._tenant_id = staged._tenant_id and stored.id = staged.id
        ) as matched_stored_deals

)

select * from counts
where
    matched_staged_deals != staged_deals
    or matched_stored_deals != stored_deals
    {% if since is none -%}
        or staged_deals != stored_deals
    {%- endif %}
