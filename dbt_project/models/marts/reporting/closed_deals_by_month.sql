{#-
    The seed's "closed deals by month": per tenant and month of closedate, the live deals with a
    close date and their amount, and of those the deals won (a closed stage with probability 1).
-#}

with

deals as (

    select * from {{ ref('deals') }}

),

deal_stages as (

    select * from {{ ref('deal_stages') }}

),

final as (

    select
        deals._tenant_id,
        date_trunc('month', deals.closedate) as month,  -- noqa: RF04
        count(*) as closed_deals,
        sum(deals.amount) as total_revenue,
        count(*) filter (where deal_stages.is_won) as won_deals,
        coalesce(sum(deals.amount) filter (where deal_stages.is_won), 0) as won_revenue
    from deals
    left join deal_stages
        on
            deals._tenant_id = deal_stages._tenant_id
            and deals.pipeline = deal_stages.pipeline_id
            and deals.dealstage = deal_stages.stage_id
    where deals.closedate is not null and not deals.archived
    group by deals._tenant_id, date_trunc('month', deals.closedate)

)

select * from final
