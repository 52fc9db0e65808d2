{%- set raw_columns = {
    "id": "varchar(50)",
    "scan_id": "varchar(255)",
    "status": "varchar(20)",
    "scan_type": "varchar(50)",
    "config": "jsonb",
    "organization_id": "varchar(255)",
    "error_message": "text",
    "started_at": "timestamptz",
    "completed_at": "timestamptz",
    "total_items": "integer",
    "processed_items": "integer",
    "failed_items": "integer",
    "success_rate": "varchar(20)",
    "batch_size": "integer",
    "created_at": "timestamptz",
    "updated_at": "timestamptz",
    "archived_at": "timestamptz",
} -%}

with

source as (

    select * from {{ source_or_empty('loader', 'scan_jobs_archive', raw_columns) }}

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
        (updated_at at time zone 'UTC') as updated_at,
        (archived_at at time zone 'UTC') as archived_at

    from source

)

select * from renamed
