{#- The loader's scan-job table (loader/scan_jobs.py), column -> type: the live table and its
    archive (which adds archived_at) share it. -#}
{% macro loader_scan_job_columns() -%}
    {{- return({
        "id": "varchar(50)",
        "scan_id": "varchar(255)",
        "status": "varchar(20)",
        "scan_type": "varchar(50)",
        "config": "jsonb",
        "organization_id": "varchar(255)",
        "error_message": "text",
        "started_at": "timestamptz",
        "completed_at": "timestamptz",
        "total_items": "integer",
        "processed_items": "integer",
        "failed_items": "integer",
        "success_rate": "varchar(20)",
        "batch_size": "integer",
        "created_at": "timestamptz",
        "updated_at": "timestamptz",
    }) -}}
{%- endmacro %}
