{#-
    on-run-start: indexes on the loader's raw tables for the incremental models' reads, created
    once, when the tables exist (a fresh database has none yet; the first build after the first
    scan creates them):
    - raw_hubspot.deals and deals_rejected: btree on (tenant, extraction time as the staging views
      expose it, UTC): the high-water-mark filters are one range of it per tenant. And on the
      scan job of raw deals: the integrity test reads the deals of the scans since the last
      build.
    - raw_hubspot.deals_stage_history (and the old child table deals__stage_history): btree on
      the parent row id, so the history of the new versions is looked up, not the whole table
      scanned. The loader's row ids grow with time, so new entries go to the index's right edge.
    Each is checked in the catalog first (no lock when it exists, none on a table a scan is
    loading). A role that may not create them (not the tables' owner) builds without them.
-#}
{% macro ensure_raw_read_indexes() -%}
    {%- set raw = var('raw_schema') -%}
    {%- set indexes = [
        ('deals', 'deals_tenant_extracted_at_idx',
         "(_tenant_id, (_extracted_at at time zone 'UTC'))"),
        ('deals', 'deals_scan_job_id_idx', '(_scan_job_id)'),
        ('deals_rejected', 'deals_rejected_tenant_extracted_at_idx',
         "(_tenant_id, (_extracted_at at time zone 'UTC'))"),
        ('deals_stage_history', 'deals_stage_history_parent_idx', '(_dlt_parent_id)'),
        ('deals__stage_history', 'deals__stage_history_parent_idx', '(_dlt_parent_id)'),
    ] -%}
    do $ensure_raw_read_indexes$
    begin
    {%- for table, name, definition in indexes %}
        if to_regclass('{{ raw }}.{{ table }}') is not null
            and to_regclass('{{ raw }}.{{ name }}') is null then
            begin
                create index if not exists {{ name }}
                    on {{ adapter.quote(raw) }}.{{ table }} {{ definition }};
                -- Statistics of the new index's expression, for the planner's first estimates.
                analyze {{ adapter.quote(raw) }}.{{ table }};
            exception
                when insufficient_privilege then
                    raise notice 'index {{ name }} not created: % may not', current_user;
                when duplicate_table or unique_violation then null;  -- created meanwhile
            end;
        end if;
    {%- endfor %}
    end
    $ensure_raw_read_indexes$
{%- endmacro %}
