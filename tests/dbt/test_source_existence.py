"""Whether a loader table exists is read from the catalog, never from dbt's relation cache.

dbt caches the schemas of its models only; the first thread that lists another schema (the
loader's raw_hubspot, loader) adds its relations to the cache one at a time, and a thread that
looks meanwhile finds the schema "cached" with only some of them. Under load that compiled a
staging view with its empty placeholder although the table existed, and deal_stages built empty
(the CI run of 2026-12-01). The test puts the cache in that state by hand (``cache_added`` of
one table of each schema) and compiles what the models use.
"""

from __future__ import annotations

from datetime import UTC, datetime

from tests.dbt import raw_data
from tests.dbt.conftest import connect, run_loader_cli

T0 = datetime(2025, 5, 1, 9, tzinfo=UTC)

#: One table of each loader schema in dbt's cache, the others not: the half-listed state.
INLINE = """
{%- do adapter.cache_added(api.Relation.create(database=target.database, schema='raw_hubspot',
    identifier='deals', type='table')) -%}
{%- do adapter.cache_added(api.Relation.create(database=target.database, schema='loader',
    identifier='scan_jobs_archive', type='table')) -%}
select * from {{ source_or_empty('raw_hubspot', 'pipelines__stages', {'id': 'text'}) }}
-- tenants: {{ tenants_with_finished_scans() | join(',') }}
"""


def test_a_half_cached_schema_does_not_hide_an_existing_table(
    scratch_databases,  # type: ignore[no-untyped-def]
) -> None:
    url = scratch_databases("exists")
    raw_data.scanned(connect(url, autocommit=False), {"job-1": "acme"}, T0).close()
    with connect(url).cursor() as cur:
        cur.execute("create table if not exists loader.scan_jobs_archive "
                    "(like loader.scan_jobs, archived_at timestamptz)")

    compiled = run_loader_cli(url, "dbt", "compile", "--quiet", "--inline", INLINE).stdout
    assert '"raw_hubspot"."pipelines__stages"' in compiled, compiled
    assert "pipelines__stages_empty" not in compiled, compiled
    assert "-- tenants: acme" in compiled, compiled
