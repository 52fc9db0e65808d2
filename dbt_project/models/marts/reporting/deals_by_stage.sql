{#-
    The seed's "count deals by stage": live (not archived) deals per tenant and stage, with the
    stage's label. A security_invoker view: analysts see their tenant's rows only (RLS of deals).
-#}

with

deals as (

    select * from {{ ref('deals') }}

),

deal_stages as (

    select * from {{ ref('deal_stages') }}

),

per_stage as (

    select
        _tenant_id,
        dealstage,
        count(*) as deal_count,
        sum(amount) as total_amount
    from deals
    where not archived
    group by _tenant_id, dealstage

),

final as (

    select
        per_stage._tenant_id,
        per_stage.dealstage,
        stage_labels.label as stage_label,
        per_stage.deal_count,
        per_stage.total_amount
    from per_stage
    left join lateral (
        select deal_stages.label
        from deal_stages
        where
            per_stage._tenant_id = deal_stages._tenant_id
            and per_stage.dealstage = deal_stages.stage_id
        order by deal_stages.pipeline_id
        limit 1
    ) as stage_labels on true

)

select * from final
