{#-
    dbt run-operation archive_scan_jobs --args '{days: 90, dry_run: false}'
    (what `python -m loader retention --days 90 [--dry-run]` runs).

    Moves completed scan jobs that finished more than `days` days ago from loader.scan_jobs to
    loader.scan_jobs_archive (created here on first use, the same columns plus archived_at) and
    deletes them from analytics.scan_jobs, in one transaction.

    The seed's "delete from scan_jobs" would cascade (deals.scan_job_id ... on delete cascade) to
    deals that are still current but whose latest version an old scan read (incremental scans
    only re-read changed deals). So a job is archived only if:
    - no row of analytics.deals references it (nothing cascades; deals keep a valid scan_job_id
      and still name the scan that read their current version), and
    - it is in analytics.scan_jobs as completed: the dbt build that merged its deals has run, so
      no later merge can bring a deal that references it.
    A job that current deals still reference stays until a newer scan re-reads those deals.
    Raw rows are kept: int_scan_jobs_unioned reads the archive, so a --full-refresh rebuilds the
    same deals. Logs one line `RETENTION_RESULT {json}` that the loader's CLI reads.
-#}
{% macro archive_scan_jobs(days=90, dry_run=false) %}
    {%- set days = days | int -%}
    {%- if days < 1 -%}
        {{ exceptions.raise_compiler_error('archive_scan_jobs: days must be at least 1') }}
    {%- endif -%}
    {%- set ops = adapter.quote(var('ops_schema')) -%}
    {%- set candidates -%}
        select live_jobs.id
        from {{ ops }}.scan_jobs as live_jobs
        inner join {{ ref('scan_jobs') }} as mart_jobs
            on live_jobs.id = mart_jobs.id and mart_jobs.status = 'completed'
        where
            live_jobs.status = 'completed'
            and live_jobs.completed_at < now() - make_interval(days => {{ days }})
            and not exists (
                select from {{ ref('deals') }} as current_deals
                where current_deals.scan_job_id = live_jobs.id
            )
    {%- endset -%}
    {%- if dry_run -%}
        {%- set moved_sql -%}
            select id, scan_id, organization_id, completed_at::text as completed_at
            from {{ ops }}.scan_jobs
            where id in ({{ candidates }})
            order by completed_at, id
        {%- endset -%}
        {%- set moved = run_query(moved_sql) -%}
    {%- else -%}
        {%- do run_query('begin') -%}
        {%- do run_query(ensure_scan_jobs_archive()) -%}
        {%- set move_sql -%}
            with
            candidates as (
                select id from {{ ops }}.scan_jobs
                where id in ({{ candidates }})
                for update
            ),
            archived as (
                insert into {{ ops }}.scan_jobs_archive
                select live_jobs.*, now()
                from {{ ops }}.scan_jobs as live_jobs
                inner join candidates on live_jobs.id = candidates.id
                on conflict (id) do nothing
                returning id
            ),
            removed_from_mart as (
                delete from {{ ref('scan_jobs') }} as mart_jobs
                using candidates
                where mart_jobs.id = candidates.id
                returning mart_jobs.id
            ),
            removed as (
                delete from {{ ops }}.scan_jobs as live_jobs
                using candidates
                where live_jobs.id = candidates.id
                returning
                    live_jobs.id,
                    live_jobs.scan_id,
                    live_jobs.organization_id,
                    live_jobs.completed_at::text as completed_at
            )
            select * from removed
            order by completed_at, id
        {%- endset -%}
        {%- set moved = run_query(move_sql) -%}
        {%- do run_query('commit') -%}
    {%- endif -%}
    {%- set jobs = [] -%}
    {%- for row in moved.rows -%}
        {%- do jobs.append({
            'id': row[0], 'scan_id': row[1], 'tenant': row[2], 'completed_at': row[3],
        }) -%}
    {%- endfor -%}
    {{ log('RETENTION_RESULT ' ~ tojson({
        'days': days, 'dry_run': dry_run, 'jobs': jobs,
    }), info=True) }}
{% endmacro %}

{#-
    loader.scan_jobs_archive: the live table's columns plus archived_at. Created by on-run-start
    as soon as loader.scan_jobs exists (not only by the first retention run), so that
    stg_loader__scan_jobs_archive always reads the real table: a staging view compiled while it
    was missing would select nothing until rebuilt, hiding archived scans from a --full-refresh
    of deals that does not rebuild staging.
-#}
{% macro ensure_scan_jobs_archive() -%}
    {%- set ops = var('ops_schema') -%}
    do $ensure_scan_jobs_archive$
    begin
        if to_regclass('{{ adapter.quote(ops) }}.scan_jobs') is not null then
            create table if not exists {{ adapter.quote(ops) }}.scan_jobs_archive (
                like {{ adapter.quote(ops) }}.scan_jobs,
                archived_at timestamptz not null default now(),
                constraint scan_jobs_archive_pkey primary key (id)
            );
            create index if not exists idx_scan_jobs_archive_org_completed
            on {{ adapter.quote(ops) }}.scan_jobs_archive (organization_id, completed_at);
        end if;
    end
    $ensure_scan_jobs_archive$
{%- endmacro %}
