{#-
    Every scan job the loader knows: the live records (loader.scan_jobs) and those retention moved
    to loader.scan_jobs_archive. The raw rows of archived scans stay part of the deal history.
-#}

with

stg_loader__scan_jobs as (

    select * from {{ ref('stg_loader__scan_jobs') }}

),

stg_loader__scan_jobs_archive as (

    select * from {{ ref('stg_loader__scan_jobs_archive') }}

),

live_jobs as (

    select
        id,
        scan_id,
        status,
        organization_id,
        started_at,
        completed_at,
        created_at,
        updated_at,
        false as is_archived
    from stg_loader__scan_jobs

),

archived_jobs as (

    select
        stg_loader__scan_jobs_archive.id,
        stg_loader__scan_jobs_archive.scan_id,
        stg_loader__scan_jobs_archive.status,
        stg_loader__scan_jobs_archive.organization_id,
        stg_loader__scan_jobs_archive.started_at,
        stg_loader__scan_jobs_archive.completed_at,
        stg_loader__scan_jobs_archive.created_at,
        stg_loader__scan_jobs_archive.updated_at,
        true as is_archived
    from stg_loader__scan_jobs_archive
    left join live_jobs
        on stg_loader__scan_jobs_archive.id = live_jobs.id
    where live_jobs.id is null

),

unioned as (

    select * from live_jobs
    union all
    select * from archived_jobs

),

final as (

    select
        *,
        status in ('completed', 'failed', 'cancelled') as is_finished
    from unioned

)

select * from final
