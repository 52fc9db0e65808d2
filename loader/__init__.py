"""HubSpot deals ELT: dlt extraction, scan jobs, dbt transformation."""
