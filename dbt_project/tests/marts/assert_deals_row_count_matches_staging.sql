{#-
    Integrity (after Fivetran's dbt_hubspot): every deal staging holds from a finished scan is in
    `deals` or, if none of its versions could be stored, only in `deals_quarantine`; and `deals`
    holds nothing else. Catches fan-out and lost rows in the incremental merge.

    A merge can only have changed the deals of scans that finished since the last full build
    began (loader.dbt_builds, via last_full_build_started_at): an incremental build checks those
    deals, both ways, and what earlier builds checked stays as it was. A --full-refresh build, or
    one with no build on record, checks every deal.

    The scans are inlined as literals (scans_finished_since), so that PostgreSQL reads their raw
    versions and their deals through the scan-job indexes rather than every raw version; the
    comparisons are an anti join and a full join, which stay hash or index joins whatever the
    row estimates (the scans are new, their statistics unknown: a nested loop over the two sets
    took 1.7 s for 4,000 deals).
-#}
-- depends_on: {{ ref('int_scan_jobs_unioned') }}
{%- set since = last_full_build_started_at() -%}
{%- set scan_ids = none if since is none else scans_finished_since(since) -%}

{#- What `scan_job_id in (...)` compares with: the scans since, or none; every finished scan is
    `is_scan_finished` instead (a semi join with the scan jobs was a nested loop: the planner
    cannot estimate the rows of the views, see int_deal_versions_validated). -#}
{%- if scan_ids is none -%}
    {%- set scan_list = none -%}
{%- elif scan_ids -%}
    {%- set literals = [] -%}
    {%- for id in scan_ids -%}
        {%- do literals.append(sql_literal(id) | trim) -%}
    {%- endfor -%}
    {%- set scan_list = literals | join(", ") -%}
{%- else -%}
    {%- set scan_list = "select null::varchar where false" -%}
{%- endif %}
{%- if scan_list is none -%}
    {%- set staged_scans = "versions.is_scan_finished" -%}
{%- else -%}
    {%- set staged_scans = "versions.scan_job_id in (" ~ scan_list ~ ")" -%}
{%- endif %}

with

staged as (

    select distinct
        versions._tenant_id,
        versions.id
    from {{ ref('int_deal_versions_validated') }} as versions
    where
        {{ staged_scans }}
        and versions.record_issue is null

),

stored as (

    select
        _tenant_id,
        id
    from {{ ref('deals') }}
    {%- if scan_ids is not none %}
        where scan_job_id in ({{ scan_list }})
    {%- endif %}

),

counts as (

    select
        (select count(*) from staged) as staged_deals,
        (select count(*) from stored) as stored_deals,
        (
            select count(*)
            from staged
            where not exists (
                select 1
                from {{ ref('deals') }} as deals
                where staged._tenant_id = deals._tenant_id and staged.id = deals.id
            )
        ) as staged_not_stored,
        (
            select count(*)
            from stored
            full outer join staged
                on stored._tenant_id = staged._tenant_id and stored.id = staged.id
            where staged.id is null
        ) as stored_not_staged

)

select * from counts
where
    staged_not_stored > 0
    or stored_not_staged > 0
    {% if scan_ids is none -%}
        or staged_deals != stored_deals
    {%- endif %}
