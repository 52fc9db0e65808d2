{#-
    The seed's "scan progress": each scan job with its progress percentage, as of the last dbt
    build (the live record is loader.scan_jobs, `python -m loader status`). The tenant column is
    named _tenant_id here like in every other analyst relation.
-#}

with

scan_jobs as (

    select * from {{ ref('scan_jobs') }}

),

final as (

    select
        organization_id as _tenant_id,
        scan_id,
        id as scan_job_id,
        status,
        scan_type,
        started_at,
        completed_at,
        total_items,
        processed_items,
        failed_items,
        case
            when total_items > 0 then round(processed_items * 100.0 / total_items, 2)
            else 0
        end as progress_percentage,
        success_rate,
        error_message,
        created_at,
        updated_at
    from scan_jobs

)

select * from final
