{#-
    The seed's "deals by pipeline and stage": live deals per tenant, pipeline and stage with
    count, total, average and probability-weighted amount, in HubSpot's display order.
-#}

with

deals as (

    select * from {{ ref('deals') }}

),

deal_pipelines as (

    select * from {{ ref('deal_pipelines') }}

),

deal_stages as (

    select * from {{ ref('deal_stages') }}

),

per_stage as (

    select
        _tenant_id,
        pipeline,
        dealstage,
        count(*) as deal_count,
        sum(amount) as total_amount,
        avg(amount) as average_amount
    from deals
    where not archived
    group by _tenant_id, pipeline, dealstage

),

final as (

    select
        per_stage._tenant_id,
        per_stage.pipeline,
        deal_pipelines.label as pipeline_label,
        deal_pipelines.display_order as pipeline_display_order,
        per_stage.dealstage,
        deal_stages.label as stage_label,
        deal_stages.display_order as stage_display_order,
        deal_stages.probability,
        deal_stages.is_closed,
        per_stage.deal_count,
        per_stage.total_amount,
        round(per_stage.average_amount, 2) as average_amount,
        round(per_stage.total_amount * deal_stages.probability, 2) as weighted_amount
    from per_stage
    left join deal_pipelines
        on
            per_stage._tenant_id = deal_pipelines._tenant_id
            and per_stage.pipeline = deal_pipelines.pipeline_id
    left join deal_stages
        on
            per_stage._tenant_id = deal_stages._tenant_id
            and per_stage.pipeline = deal_stages.pipeline_id
            and per_stage.dealstage = deal_stages.stage_id

)

select * from final
