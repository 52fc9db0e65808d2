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

    select {{ raw_columns.keys() | join(', ') }}
    from {{ source_or_empty('raw_hubspot', 'deals_stage_history', raw_columns) }}

),

legacy_source as (

    {#- Loaders before the Arrow batches let dlt unnest the history into its child table
        deals__stage_history (same columns): its rows stay part of the history. #}
    select {{ raw_columns.keys() | join(', ') }}
    from {{ source_or_empty('raw_hubspot', 'deals__stage_history', raw_columns) }}

),

unioned as (

    select * from source
    union all
    select * from legacy_source

),

renamed as (

    select
        _dlt_id,
        _dlt_root_id as deal_row_id,
        _dlt_list_idx as position_in_history,
        nullif(value, '') as dealstage,
        (changed_at at time zone 'UTC') as changed_at,
        source_type

    from unioned

)

select * from renamed
