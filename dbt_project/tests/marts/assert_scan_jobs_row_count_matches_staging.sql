{#- Integrity: analytics.scan_jobs holds exactly the loader's live scan jobs (no fan-out). -#}

with

counts as (

    select
        (select count(*) from {{ ref('stg_loader__scan_jobs') }}) as staged_jobs,
        (select count(*) from {{ ref('scan_jobs') }}) as stored_jobs

)

select * from counts
where staged_jobs != stored_jobs
