{%- set raw_columns = loader_scan_job_columns() -%}

with

source as (

    select * from {{ source_or_empty('loader', 'scan_jobs', raw_columns) }}

),

renamed as (

    select
        id,
        scan_id,
        status,
        scan_type,
        config,
        organization_id,
        error_message,
        (started_at at time zone 'UTC') as started_at,
        (completed_at at time zone 'UTC') as completed_at,
        total_items,
        processed_items,
        failed_items,
        success_rate,
        batch_size,
        (created_at at time zone 'UTC') as created_at,
        (updated_at at time zone 'UTC') as updated_at

    from source

)

select * from renamed
