{%- set raw_columns = {
    "deal_id": "text",
    "reason": "text",
    "payload": "jsonb",
    "_tenant_id": "text",
    "_scan_id": "text",
    "_scan_job_id": "text",
    "_extracted_at": "timestamptz",
    "_dlt_id": "text",
} -%}

with

source as (

    select * from {{ source_or_empty('raw_hubspot', 'deals_rejected', raw_columns) }}

),

renamed as (

    select
        _dlt_id,
        deal_id,
        reason,
        payload,
        _scan_job_id as scan_job_id,
        _scan_id,
        _tenant_id,
        (_extracted_at at time zone 'UTC') as _extracted_at

    from source

)

select * from renamed
