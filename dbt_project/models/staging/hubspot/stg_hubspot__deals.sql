{%- set raw_columns = {
    "id": "text",
    "properties": "jsonb",
    "created_at": "timestamptz",
    "updated_at": "timestamptz",
    "archived": "boolean",
    "archived_at": "timestamptz",
    "_tenant_id": "text",
    "_scan_id": "text",
    "_scan_job_id": "text",
    "_extracted_at": "timestamptz",
    "_dlt_id": "text",
} -%}

with

source as (

    select * from {{ source_or_empty('raw_hubspot', 'deals', raw_columns) }}

),

renamed as (

    select
        _dlt_id,
        id,
        _scan_job_id as scan_job_id,
        _scan_id,
        _tenant_id,
        (_extracted_at at time zone 'UTC') as _extracted_at,
        nullif(properties ->> 'dealname', '') as dealname,
        properties ->> 'amount' as amount_raw,
        {{ parse_numeric("properties ->> 'amount'") }} as amount,
        nullif(properties ->> 'dealstage', '') as dealstage,
        nullif(properties ->> 'pipeline', '') as pipeline,
        properties ->> 'createdate' as createdate_raw,
        {{ parse_timestamp("properties ->> 'createdate'") }} as createdate,
        properties ->> 'closedate' as closedate_raw,
        {{ parse_timestamp("properties ->> 'closedate'") }} as closedate,
        nullif(properties ->> 'dealtype', '') as dealtype,
        nullif(properties ->> 'hubspot_owner_id', '') as hubspot_owner_id,
        nullif(properties ->> 'description', '') as description,
        nullif(properties ->> 'deal_currency_code', '') as deal_currency_code,
        nullif(properties ->> 'hs_next_step', '') as hs_next_step,
        nullif(properties ->> 'hs_priority', '') as hs_priority,
        coalesce(archived, false) as archived,
        properties,
        (created_at at time zone 'UTC') as hubspot_created_at,
        (updated_at at time zone 'UTC') as hubspot_updated_at,
        (archived_at at time zone 'UTC') as hubspot_archived_at

    from source

)

select * from renamed
