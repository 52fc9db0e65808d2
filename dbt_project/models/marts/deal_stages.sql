{#-
    One row per tenant, pipeline and stage, as the tenant's latest finished scan read them: the
    labels and display order HubSpot shows, the win probability and whether the stage closes the
    deal. Stage ids are the portal's own (custom pipelines have numeric ids).

    Every build replaces all rows in place (delete_rows_to_replace, then append), so the
    reporting views on it are not dropped and re-created with it.
-#}
{{
    config(
        materialized='incremental',
        incremental_strategy='append',
        on_schema_change='append_new_columns',
        pre_hook="{{ delete_rows_to_replace() }}",
        post_hook=[
            "{{ ensure_constraint_name('p', 'deal_stages_pkey') }}",
            "{{ ensure_not_null_constraint_names() }}",
        ],
    )
}}

with

int_pipeline_stages_current as (

    select * from {{ ref('int_pipeline_stages_current') }}

),

final as (

    select
        _tenant_id::varchar(255) as _tenant_id,
        pipeline_id::varchar(100) as pipeline_id,
        stage_id::varchar(100) as stage_id,
        stage_label::varchar(500) as label,  -- noqa: RF04
        stage_display_order::integer as display_order,
        probability::numeric(5, 4) as probability,
        is_closed::boolean as is_closed,
        (is_closed and probability = 1)::boolean as is_won,
        stage_archived::boolean as archived
    from int_pipeline_stages_current
    where stage_id is not null

)

select * from final
