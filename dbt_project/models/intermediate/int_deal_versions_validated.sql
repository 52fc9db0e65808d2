{#-
    Every raw deal version (one per deal per scan), checked against the marts' constraints.

    Record-level problems set record_issue: the version is not stored in analytics.deals (which
    keeps the deal's previous accepted version, if any) and goes to deals_quarantine:
    - invalid_id: the deal id is missing, blank or longer than varchar(50);
    - unknown_stage: a live (not archived) deal whose (pipeline, dealstage) is not a stage of that
      pipeline in the tenant's pipelines as read by the same scan (or, if that scan read none, by
      the tenant's latest earlier scan). Portals have custom pipelines with numeric stage ids, so
      the check is against the portal's real pipelines, never a fixed list.

    Field-level problems null the typed column (the raw value stays in `properties`) and are
    listed in field_issues as 'column:problem'; the version is stored and the issue logged:
    amount unparseable, out of numeric(15,2) range or negative; createdate/closedate unparseable;
    a text longer than its varchar.

    is_scan_finished: the version's scan job has ended (completed, failed or cancelled); the
    marts take only those. It comes from the scan-job join made here anyway: when each mart
    joined the finished scans again, the planner (which cannot estimate the rows of these views)
    chose a nested loop over versions x scan jobs, 396 million comparisons and 35 of a full
    build's 38 seconds at 200,000 deals and 2,000 scan jobs (tests/dbt/test_explain.py's data).
-#}

{%- set text_limits = {
    "dealname": 500,
    "dealstage": 100,
    "pipeline": 100,
    "dealtype": 50,
    "hubspot_owner_id": 50,
    "deal_currency_code": 10,
    "hs_next_step": 500,
    "hs_priority": 50,
} -%}

with

stg_hubspot__deals as (

    select * from {{ ref('stg_hubspot__deals') }}

),

int_pipeline_stages_joined as (

    select * from {{ ref('int_pipeline_stages_joined') }}

),

int_scan_jobs_unioned as (

    select * from {{ ref('int_scan_jobs_unioned') }}

),

pipeline_snapshots as (

    select
        _tenant_id,
        scan_job_id,
        min(_extracted_at) as snapshot_at
    from int_pipeline_stages_joined
    group by _tenant_id, scan_job_id

),

scan_snapshots as (

    select
        int_scan_jobs_unioned.id as scan_job_id,
        int_scan_jobs_unioned.is_finished,
        coalesce(own_snapshot.scan_job_id, earlier_snapshot.scan_job_id) as snapshot_scan_job_id
    from int_scan_jobs_unioned
    left join pipeline_snapshots as own_snapshot
        on
            int_scan_jobs_unioned.id = own_snapshot.scan_job_id
            and int_scan_jobs_unioned.organization_id = own_snapshot._tenant_id
    left join lateral (
        select candidates.scan_job_id
        from pipeline_snapshots as candidates
        where
            own_snapshot.scan_job_id is null
            and candidates._tenant_id = int_scan_jobs_unioned.organization_id
            and candidates.snapshot_at <= coalesce(
                int_scan_jobs_unioned.completed_at, int_scan_jobs_unioned.updated_at
            )
        order by candidates.snapshot_at desc
        limit 1
    ) as earlier_snapshot on true

),

checked as (

    select
        stg_hubspot__deals.*,
        scan_snapshots.snapshot_scan_job_id,
        coalesce(scan_snapshots.is_finished, false) as is_scan_finished,
        int_pipeline_stages_joined.stage_id is not null as stage_found
    from stg_hubspot__deals
    left join scan_snapshots
        on stg_hubspot__deals.scan_job_id = scan_snapshots.scan_job_id
    left join int_pipeline_stages_joined
        on
            scan_snapshots.snapshot_scan_job_id = int_pipeline_stages_joined.scan_job_id
            and stg_hubspot__deals._tenant_id = int_pipeline_stages_joined._tenant_id
            and stg_hubspot__deals.pipeline = int_pipeline_stages_joined.pipeline_id
            and stg_hubspot__deals.dealstage = int_pipeline_stages_joined.stage_id

),

final as (

    select
        _dlt_id,
        id,
        scan_job_id,
        _scan_id,
        _tenant_id,
        _extracted_at,
        {%- for column, limit in text_limits.items() %}
            case when length({{ column }}) <= {{ limit }} then {{ column }} end as {{ column }},
        {%- endfor %}
        case when amount >= 0 then amount end as amount,
        createdate,
        closedate,
        description,
        archived,
        properties,
        hubspot_created_at,
        hubspot_updated_at,
        hubspot_archived_at,
        snapshot_scan_job_id,
        is_scan_finished,
        case
            when id is null or btrim(id) = '' or length(id) > 50 then 'invalid_id'
            when not archived and dealstage is not null and not stage_found then 'unknown_stage'
        end as record_issue,
        case
            when id is null or btrim(id) = '' or length(id) > 50
                then 'the deal id is missing, blank or longer than 50 characters'
            when
                not archived and dealstage is not null and not stage_found
                and snapshot_scan_job_id is null
                then 'no deal pipelines were read for this tenant, so no stage can be checked'
            when not archived and dealstage is not null and not stage_found
                then format(
                    'stage %s is not a stage of pipeline %s in the tenant''s pipelines',
                    dealstage,
                    coalesce(pipeline, '(none)')
                )
        end as record_issue_detail,
        array_remove(
            array[
                case
                    when amount is null and trim(amount_raw) ~ {{ numeric_text_pattern() }}
                        then 'amount:out_of_range'
                    when amount is null and nullif(trim(amount_raw), '') is not null
                        then 'amount:unparseable'
                    when amount < 0 then 'amount:negative'
                end,
                case
                    when createdate is null and nullif(trim(createdate_raw), '') is not null
                        then 'createdate:unparseable'
                end,
                case
                    when closedate is null and nullif(trim(closedate_raw), '') is not null
                        then 'closedate:unparseable'
                end,
                {%- for column, limit in text_limits.items() %}
                    case
                        when length({{ column }}) > {{ limit }} then '{{ column }}:too_long'
                    end{{ "," if not loop.last }}
                {%- endfor %}
            ],
            null
        ) as field_issues
    from checked

)

select * from final
