{#-
    One row per tenant, scan, pipeline and stage: each scan's snapshot of the portal's deal
    pipelines, the stage (dlt child row) joined to its pipeline (parent row).
-#}

with

stg_hubspot__pipelines as (

    select * from {{ ref('stg_hubspot__pipelines') }}

),

stg_hubspot__pipeline_stages as (

    select * from {{ ref('stg_hubspot__pipeline_stages') }}

),

joined as (

    select
        stg_hubspot__pipelines._tenant_id,
        stg_hubspot__pipelines.scan_job_id,
        stg_hubspot__pipelines._scan_id,
        stg_hubspot__pipelines._extracted_at,
        stg_hubspot__pipelines.pipeline_id,
        stg_hubspot__pipelines.label as pipeline_label,
        stg_hubspot__pipelines.display_order as pipeline_display_order,
        stg_hubspot__pipelines.archived as pipeline_archived,
        stg_hubspot__pipeline_stages.stage_id,
        stg_hubspot__pipeline_stages.label as stage_label,
        stg_hubspot__pipeline_stages.display_order as stage_display_order,
        stg_hubspot__pipeline_stages.archived as stage_archived,
        stg_hubspot__pipeline_stages.probability,
        stg_hubspot__pipeline_stages.is_closed,
        row_number() over (
            partition by
                stg_hubspot__pipelines._tenant_id,
                stg_hubspot__pipelines.scan_job_id,
                stg_hubspot__pipelines.pipeline_id,
                stg_hubspot__pipeline_stages.stage_id
            order by stg_hubspot__pipelines._extracted_at desc
        ) as occurrence
    from stg_hubspot__pipelines
    inner join stg_hubspot__pipeline_stages
        on stg_hubspot__pipelines._dlt_id = stg_hubspot__pipeline_stages.pipeline_row_id

),

final as (

    select
        _tenant_id,
        scan_job_id,
        _scan_id,
        _extracted_at,
        pipeline_id,
        pipeline_label,
        pipeline_display_order,
        pipeline_archived,
        stage_id,
        stage_label,
        stage_display_order,
        stage_archived,
        probability,
        is_closed
    from joined
    where occurrence = 1

)

select * from final
