{%- set raw_columns = {
    "value": "text",
    "changed_at": "timestamptz",
    "source_type": "text",
    "_dlt_root_id": "text",
    "_dlt_list_idx": "bigint",
    "_dlt_id": "text",
} -%}

with

source as (

    select * from {{ source_or_empty('raw_hubspot', 'deals_stage_history', raw_columns) }}

),

renamed as (

    select
        _dlt_id,
        _dlt_root_id as deal_row_id,
        _dlt_list_idx as position_in_history,
        nullif(value, '') as dealstage,
        (changed_at at time zone 'UTC') as changed_at,
        source_type

    from source

)

select * from renamed
