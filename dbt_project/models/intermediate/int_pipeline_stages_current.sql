{#-
    Each tenant's deal pipelines and stages as they are now: the snapshot read by the tenant's
    latest finished scan that read any pipelines.
-#}

with

int_pipeline_stages_joined as (

    select * from {{ ref('int_pipeline_stages_joined') }}

),

int_scan_jobs_unioned as (

    select * from {{ ref('int_scan_jobs_unioned') }}

),

finished_snapshots as (

    select
        int_pipeline_stages_joined._tenant_id,
        int_pipeline_stages_joined.scan_job_id,
        max(int_pipeline_stages_joined._extracted_at) as snapshot_at
    from int_pipeline_stages_joined
    inner join int_scan_jobs_unioned
        on int_pipeline_stages_joined.scan_job_id = int_scan_jobs_unioned.id
    where int_scan_jobs_unioned.is_finished
    group by int_pipeline_stages_joined._tenant_id, int_pipeline_stages_joined.scan_job_id

),

latest_snapshots as (

    select distinct on (_tenant_id)
        _tenant_id,
        scan_job_id
    from finished_snapshots
    order by _tenant_id asc, snapshot_at desc, scan_job_id desc

),

final as (

    select
        int_pipeline_stages_joined._tenant_id,
        int_pipeline_stages_joined.scan_job_id,
        int_pipeline_stages_joined._scan_id,
        int_pipeline_stages_joined._extracted_at,
        int_pipeline_stages_joined.pipeline_id,
        int_pipeline_stages_joined.pipeline_label,
        int_pipeline_stages_joined.pipeline_display_order,
        int_pipeline_stages_joined.pipeline_archived,
        int_pipeline_stages_joined.stage_id,
        int_pipeline_stages_joined.stage_label,
        int_pipeline_stages_joined.stage_display_order,
        int_pipeline_stages_joined.stage_archived,
        int_pipeline_stages_joined.probability,
        int_pipeline_stages_joined.is_closed
    from int_pipeline_stages_joined
    inner join latest_snapshots
        on
            int_pipeline_stages_joined._tenant_id = latest_snapshots._tenant_id
            and int_pipeline_stages_joined.scan_job_id = latest_snapshots.scan_job_id

)

select * from final
