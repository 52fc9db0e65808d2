{#-
    pre-hook of the small dimension tables (deal_stages, deal_pipelines): on an incremental
    build, delete every row inside the model's transaction, so that the append that follows
    replaces the table's content in place. A table materialization would build a new table and
    drop the old one with `cascade`, taking the reporting views on it along, to be re-created by
    every build; in place, they stay, and readers see the old rows until the commit.
-#}
{% macro delete_rows_to_replace() -%}
    {%- if is_incremental() -%}
        delete from {{ this }}
    {%- else -%}
        select 1  {#- first build or --full-refresh: the table is created anew #}
    {%- endif -%}
{%- endmacro %}
