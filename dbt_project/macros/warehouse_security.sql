{#-
    Tenant isolation for everything analysts read in the analytics schema.

    - The analyst role (var analyst_role, default hubspot_analyst) is NOLOGIN: people and services
      log in as their own roles and are granted membership. It gets USAGE on the analytics schema
      and SELECT on the marts (the `grants` config in dbt_project.yml), nothing on raw_hubspot,
      staging, intermediate or loader.
    - Tables: row-level security with one policy, tenant_isolation_policy, comparing the table's
      tenant column with the session setting app.current_tenant_id. nullif(..., '') makes "not set"
      and "set to empty" (what a SET LOCAL leaves behind after its transaction) match no row.
    - RLS is enabled but not forced: the owner (the role dbt and the loader run as) bypasses it, as
      dbt's incremental merges must read and update every tenant's rows. Nobody but that service
      role may own these tables or be granted BYPASSRLS.
    - Views: security_invoker, so a view reads the tables with the querying role's privileges and
      policies, never its owner's.
-#}

{#-
    on-run-start: create the analyst role if it is missing (roles are cluster-wide), and the
    analytics schema with USAGE granted to it.
-#}
{% macro ensure_analyst_role(schema='analytics') -%}
    {%- set role = var('analyst_role') -%}
    do $ensure_analyst_role$
    begin
        if not exists (select from pg_catalog.pg_roles where rolname = '{{ role }}') then
            begin
                create role {{ adapter.quote(role) }} nologin;
            exception
                -- Another session (another database's dbt run) created it first.
                when duplicate_object or unique_violation then null;
                when insufficient_privilege then
                    raise exception using
                        message = format(
                            'role %s is missing and %s may not create it', '{{ role }}',
                            current_user
                        ),
                        hint = 'ask an administrator to run: create role {{ role }} nologin';
            end;
        end if;
    end
    $ensure_analyst_role$;
    {#- Once per run, not per model: concurrent grants on one schema fail ("tuple concurrently
        updated"). #}
    create schema if not exists {{ adapter.quote(schema) }};
    grant usage on schema {{ adapter.quote(schema) }} to {{ adapter.quote(role) }}
{%- endmacro %}

{#- The policy expression: the tenant of this session, null when not set or empty. -#}
{% macro current_tenant_expression() -%}
    nullif(current_setting('app.current_tenant_id', true), '')
{%- endmacro %}

{#-
    Post-hook of every mart. Tables get RLS and the tenant policy on meta.tenant_column (default
    _tenant_id); views get security_invoker. Both grant the analyst role USAGE on the schema.
-#}
{% macro secure_relation() -%}
    {%- set relation = this.include(database=false) -%}
    {%- set tenant_column = (config.get('meta') or {}).get('tenant_column', '_tenant_id') -%}
    {%- if config.get('materialized') == 'view' %}
        alter view {{ relation }} set (security_invoker = true);
    {%- else %}
        alter table {{ relation }} enable row level security;
        drop policy if exists tenant_isolation_policy on {{ relation }};
        create policy tenant_isolation_policy on {{ relation }}
        as permissive for select to public
        using ({{ tenant_column }} = {{ current_tenant_expression() }});
    {%- endif %}
{%- endmacro %}
