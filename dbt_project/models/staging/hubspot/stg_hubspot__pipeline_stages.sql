{%- set raw_columns = {
    "id": "text",
    "label": "text",
    "display_order": "bigint",
    "archived": "boolean",
    "probability": "text",
    "is_closed": "text",
    "_dlt_parent_id": "text",
    "_dlt_id": "text",
} -%}

with

source as (

    select * from {{ source_or_empty('raw_hubspot', 'pipelines__stages', raw_columns) }}

),

renamed as (

    select
        _dlt_id,
        _dlt_parent_id as pipeline_row_id,
        id as stage_id,
        label,
        display_order::integer as display_order,
        coalesce(archived, false) as archived,
        probability as probability_raw,
        {{ parse_numeric('probability', 5, 4) }} as probability,
        is_closed as is_closed_raw,
        {{ parse_boolean('is_closed') }} as is_closed

    from source

)

select * from renamed
