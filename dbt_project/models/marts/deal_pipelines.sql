{#-
    One row per tenant and deal pipeline, as the tenant's latest finished scan read them. Every
    build replaces all rows in place (delete_rows_to_replace, then append), so the reporting
    views on it are not dropped and re-created with it.
-#}
{{
    config(
        materialized='incremental',
        incremental_strategy='append',
        on_schema_change='append_new_columns',
        pre_hook="{{ delete_rows_to_replace() }}",
        post_hook=[
            "{{ ensure_constraint_name('p', 'deal_pipelines_pkey') }}",
            "{{ ensure_not_null_constraint_names() }}",
        ],
    )
}}

with

int_pipeline_stages_current as (

    select * from {{ ref('int_pipeline_stages_current') }}

),

final as (

    select distinct
        _tenant_id::varchar(255) as _tenant_id,
        pipeline_id::varchar(100) as pipeline_id,
        pipeline_label::varchar(500) as label,  -- noqa: RF04
        pipeline_display_order::integer as display_order,
        pipeline_archived::boolean as archived,
        scan_job_id::varchar(50) as scan_job_id,
        _scan_id::varchar(255) as _scan_id
    from int_pipeline_stages_current

)

select * from final
