{{
    config(
        materialized='incremental',
        incremental_strategy='merge',
        unique_key='id',
        on_schema_change='append_new_columns',
    )
}}

with

stg_loader__scan_jobs as (

    select * from {{ ref('stg_loader__scan_jobs') }}

),

changed as (

    select stg_loader__scan_jobs.*
    from stg_loader__scan_jobs
    {% if is_incremental() %}
        where
            stg_loader__scan_jobs.updated_at
            >= (
                select coalesce(max(current_jobs.updated_at), '-infinity')
                from {{ this }} as current_jobs
            )
    {% endif %}

),

final as (

    select
        id::varchar(50) as id,
        scan_id::varchar(255) as scan_id,
        status::varchar(20) as status,
        scan_type::varchar(50) as scan_type,
        config::jsonb as config,
        organization_id::varchar(255) as organization_id,
        error_message::text as error_message,
        started_at::timestamp as started_at,
        completed_at::timestamp as completed_at,
        total_items::integer as total_items,
        processed_items::integer as processed_items,
        failed_items::integer as failed_items,
        success_rate::varchar(20) as success_rate,
        batch_size::integer as batch_size,
        created_at::timestamp as created_at,
        updated_at::timestamp as updated_at

    from changed

)

select * from final
