{#-
    One row per scan job, the typed copy of the loader's live records (loader.scan_jobs).
    Incremental merge on id (the table stays in place, so the deals' foreign key holds). Jobs
    retention moved to loader.scan_jobs_archive are deleted here by the retention operation (a
    full refresh, reading loader.scan_jobs only, agrees).
-#}
{{
    config(
        materialized='incremental',
        incremental_strategy='merge',
        unique_key='id',
        on_schema_change='append_new_columns',
        meta={'tenant_column': 'organization_id'},
        post_hook=[
            "{{ ensure_constraint_name('p', 'scan_jobs_pkey') }}",
            "{{ ensure_constraint_name('u', 'scan_jobs_scan_id_key') }}",
            "{{ ensure_not_null_constraint_names() }}",
            "{{ ensure_scan_job_foreign_key() }}",
            "{{ set_column_defaults({
                'total_items': '0',
                'processed_items': '0',
                'failed_items': '0',
                'batch_size': '50',
                'created_at': 'current_timestamp',
                'updated_at': 'current_timestamp',
            }) }}",
            "{{ ensure_index('idx_scan_status_created', 'status, created_at') }}",
            "{{ ensure_index('idx_scan_id_status', 'scan_id, status') }}",
            "{{ ensure_index('idx_scan_type_status', 'scan_type, status') }}",
            "{{ ensure_index('idx_scan_org_status', 'organization_id, status') }}",
        ],
    )
}}

with

stg_loader__scan_jobs as (

    select * from {{ ref('stg_loader__scan_jobs') }}

),

changed as (

    {#-
        Every job, every build: a filter on updated_at would miss a job whose update committed
        after the previous build read the newest updated_at but carries an earlier timestamp
        (now() is the transaction's start), and a finished job is never updated again. The
        table is small (one row per scan); the merge only rewrites what it matches.
    #}
    select * from stg_loader__scan_jobs

),

final as (

    select
        id::varchar(50) as id,
        scan_id::varchar(255) as scan_id,
        status::varchar(20) as status,
        scan_type::varchar(50) as scan_type,
        config::jsonb as config,
        organization_id::varchar(255) as organization_id,
        error_message::text as error_message,
        started_at::timestamp as started_at,
        completed_at::timestamp as completed_at,
        total_items::integer as total_items,
        processed_items::integer as processed_items,
        failed_items::integer as failed_items,
        success_rate::varchar(20) as success_rate,
        batch_size::integer as batch_size,
        created_at::timestamp as created_at,
        updated_at::timestamp as updated_at

    from changed

)

select * from final
