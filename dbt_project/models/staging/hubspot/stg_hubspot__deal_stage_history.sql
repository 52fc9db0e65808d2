{%- set raw_columns = {
    "value": "text",
    "changed_at": "timestamptz",
    "source_type": "text",
    "_dlt_parent_id": "text",
    "_dlt_list_idx": "bigint",
    "_dlt_id": "text",
} -%}
{#-
    The history is read from the tables that exist: the loader's deals_stage_history and the
    child table deals__stage_history that loaders before the Arrow batches let dlt unnest it
    into (same columns; its rows stay part of the history); with neither (a fresh database), an
    empty placeholder.

    Written as one select over a subquery, not the staging models' CTEs, and with only the
    tables that exist in the union: so PostgreSQL merges this view into the query that reads it,
    and deal_stage_history's join from its new versions (deal_row_id) reaches each table's
    index on _dlt_parent_id (ensure_raw_read_indexes) instead of reading every entry.
    PostgreSQL never merges a subquery that has a WITH clause into the query around it, nor
    passes a join's values into a union with the placeholder's subquery: until 2026-12-07 every
    incremental build read the whole history (1.3 million entries, 0.5-0.7 s at 200,000 deals).
    _dlt_parent_id is the column the index is on (the same value as _dlt_root_id in these
    direct children of deals).
-#}
{%- set histories = [] -%}
{%- for table_name in ['deals_stage_history', 'deals__stage_history'] -%}
    {%- if source_exists('raw_hubspot', table_name) -%}
        {%- do histories.append(source('raw_hubspot', table_name)) -%}
    {%- endif -%}
{%- endfor -%}

select
    _dlt_id,
    _dlt_parent_id as deal_row_id,
    _dlt_list_idx as position_in_history,
    nullif(value, '') as dealstage,
    (changed_at at time zone 'UTC') as changed_at,
    source_type

from (
    {%- for relation in histories %}

        select {{ raw_columns.keys() | join(', ') }}
        from {{ relation }}
        {%- if not loop.last %}

            union all
        {%- endif %}
    {%- else %}

        select {{ raw_columns.keys() | join(', ') }}
        from {{ source_or_empty('raw_hubspot', 'deals_stage_history', raw_columns) }}
    {%- endfor %}

) as unioned
