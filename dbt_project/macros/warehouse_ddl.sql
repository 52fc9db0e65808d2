{#-
    Post-hook DDL that gives the marts the seed's physical design under stable names, whatever
    way dbt built them. dbt builds a table (and an incremental model on --full-refresh) as
    `<name>__dbt_tmp`, renames the old relation to `<name>__dbt_backup`, renames the new one into
    place, runs the post-hooks and only drops the backup after COMMIT. Two consequences:
    - index names are unique per schema, and the backup still holds the old indexes while the
      post-hooks run: "create index if not exists" would see the backup's index and skip, and
      the index would vanish with the backup. ensure_index moves such a name off the backup first;
    - constraints declared in the contract are created on `<name>__dbt_tmp`, so PostgreSQL names
      them after it (`deals__dbt_tmp_pkey`): ensure_constraint_name renames them to the seed's.
-#}

{#- The relation named `identifier` in this model's schema, as schema.identifier. -#}
{% macro sibling_relation(identifier) -%}
    {{ adapter.quote(this.schema) }}.{{ adapter.quote(identifier) }}
{%- endmacro %}

{#-
    Frees the schema-wide name `name` of an object of kind `object_kind` (index, statistics) for
    this model: when dbt's `__dbt_backup` or `__dbt_tmp` relation holds it, it is dropped there;
    when any other table holds it, an error. `holder_from` is the FROM ... WHERE clause that finds
    the holding table as `table_class`.
-#}
{% macro free_name_on_sibling(object_kind, name, holder_from) -%}
    do $free_name$
    declare
        holder_name name;
    begin
        select table_class.relname into holder_name
        {{ holder_from }};
        if holder_name is null or holder_name = '{{ this.identifier }}' then
            return;
        end if;
        if holder_name not in ('{{ this.identifier }}__dbt_backup', '{{ this.identifier }}__dbt_tmp')
        then
            raise exception '{{ object_kind }} name % is taken by table %.%', '{{ name }}',
                '{{ this.schema }}', holder_name;
        end if;
        execute format('drop {{ object_kind }} %I.%I', '{{ this.schema }}', '{{ name }}');
    end
    $free_name$
{%- endmacro %}

{% macro ensure_index(name, columns, method='btree', include=none, where=none) -%}
    {%- set relation = this.include(database=false) -%}
    {{ free_name_on_sibling('index', name, "
        from pg_catalog.pg_index as index_info
        inner join pg_catalog.pg_class as index_class on index_info.indexrelid = index_class.oid
        inner join pg_catalog.pg_class as table_class on index_info.indrelid = table_class.oid
        inner join pg_catalog.pg_namespace as schema_info
            on index_class.relnamespace = schema_info.oid
        where schema_info.nspname = '" ~ this.schema ~ "' and index_class.relname = '" ~ name ~ "'") }};
    create index if not exists {{ name }} on {{ relation }}
    using {{ method }} ({{ columns }})
    {%- if include %} include ({{ include }}){% endif %}
    {%- if where %} where {{ where }}{% endif %}
{%- endmacro %}

{#-
    Extended statistics (CREATE STATISTICS) under a stable name, moved off dbt's backup or tmp
    relation first, as ensure_index does: statistics object names are per schema too. ANALYZE
    fills them (the loader vacuums and analyzes the marts after each build).
-#}
{% macro ensure_statistics(name, kinds, columns) -%}
    {%- set relation = this.include(database=false) -%}
    {{ free_name_on_sibling('statistics', name, "
        from pg_catalog.pg_statistic_ext as statistics_info
        inner join pg_catalog.pg_class as table_class
            on statistics_info.stxrelid = table_class.oid
        inner join pg_catalog.pg_namespace as schema_info
            on statistics_info.stxnamespace = schema_info.oid
        where schema_info.nspname = '" ~ this.schema ~ "' and statistics_info.stxname = '" ~ name ~ "'") }};
    create statistics if not exists {{ adapter.quote(this.schema) }}.{{ name }} ({{ kinds }})
    on {{ columns }} from {{ relation }}
{%- endmacro %}

{% macro ensure_constraint_name(constraint_type, name) -%}
    {%- set relation = this.include(database=false) -%}
    do $ensure_constraint_name$
    declare
        current_name name;
        holder_name name;
    begin
        select conname into current_name
        from pg_catalog.pg_constraint
        where conrelid = '{{ relation }}'::regclass and contype = '{{ constraint_type }}';
        if current_name is null or current_name = '{{ name }}' then
            return;
        end if;
        -- A primary key or unique constraint owns an index of the same name, unique per schema.
        select table_class.relname into holder_name
        from pg_catalog.pg_constraint as constraint_info
        inner join pg_catalog.pg_class as table_class on constraint_info.conrelid = table_class.oid
        where table_class.relnamespace = '{{ this.schema }}'::regnamespace
            and constraint_info.conname = '{{ name }}';
        if holder_name is not null then
            if holder_name not in (
                '{{ this.identifier }}__dbt_backup', '{{ this.identifier }}__dbt_tmp'
            ) then
                raise exception 'constraint name % is taken by table %.%', '{{ name }}',
                    '{{ this.schema }}', holder_name;
            end if;
            execute format(
                'alter table %I.%I rename constraint %I to %I', '{{ this.schema }}',
                holder_name, '{{ name }}', holder_name || '_{{ constraint_type }}key'
            );
        end if;
        execute format(
            'alter table {{ relation }} rename constraint %I to %I', current_name, '{{ name }}'
        );
    end
    $ensure_constraint_name$
{%- endmacro %}

{#-
    deals.scan_job_id references scan_jobs(id) on delete cascade, as the seed says. dbt contracts
    cannot say "on delete cascade", and a --full-refresh of scan_jobs drops the constraint with
    the old table (drop ... cascade, after commit). Both models run this: it (re)creates the
    constraint unless it exists and already points at the scan_jobs table in place now.
-#}
{% macro ensure_scan_job_foreign_key() -%}
    do $ensure_scan_job_foreign_key$
    declare
        deals_table regclass := to_regclass('{{ sibling_relation("deals") }}');
        jobs_table regclass := to_regclass('{{ sibling_relation("scan_jobs") }}');
        referenced regclass;
    begin
        if deals_table is null or jobs_table is null then
            return;
        end if;
        select confrelid::regclass into referenced
        from pg_catalog.pg_constraint
        where conrelid = deals_table and conname = 'deals_scan_job_id_fkey';
        if referenced = jobs_table then
            return;
        end if;
        if referenced is not null then
            execute format('alter table %s drop constraint deals_scan_job_id_fkey', deals_table);
        end if;
        execute format(
            'alter table %s add constraint deals_scan_job_id_fkey foreign key (scan_job_id) '
            'references %s (id) on delete cascade',
            deals_table, jobs_table
        );
    end
    $ensure_scan_job_foreign_key$
{%- endmacro %}

{#- Column defaults of the seed (dbt contracts declare types and constraints, not defaults). -#}
{% macro set_column_defaults(defaults) -%}
    alter table {{ this.include(database=false) }}
    {%- for column, expression in defaults.items() %}
        alter column {{ column }} set default {{ expression }}{{ "," if not loop.last }}
    {%- endfor %}
{%- endmacro %}

{#-
    PostgreSQL 18 records NOT NULL as named constraints, named when the table is created, after
    the name it has then (`deals__dbt_tmp_id_not_null`) and unique in the schema (a `1` appended
    while the old table still holds the name): rename them to `<model>_<column>_not_null` so that
    every build leaves the same names. No-op before PostgreSQL 18.
-#}
{% macro ensure_not_null_constraint_names() -%}
    {%- set relation = this.include(database=false) -%}
    do $ensure_not_null_constraint_names$
    declare
        current_name name;
        wanted_name name;
    begin
        for current_name, wanted_name in
            select
                constraint_info.conname,
                left('{{ this.identifier }}_' || column_info.attname || '_not_null', 63)
            from pg_catalog.pg_constraint as constraint_info
            inner join pg_catalog.pg_attribute as column_info
                on
                    constraint_info.conrelid = column_info.attrelid
                    and column_info.attnum = constraint_info.conkey[1]
            where
                constraint_info.conrelid = '{{ relation }}'::regclass
                and constraint_info.contype = 'n'
        loop
            if current_name <> wanted_name then
                execute format(
                    'alter table {{ relation }} rename constraint %I to %I',
                    current_name, wanted_name
                );
            end if;
        end loop;
    end
    $ensure_not_null_constraint_names$
{%- endmacro %}
