"""A build leaves dbt's ``run_results.json`` for the operator, with that build's nodes, and does
not rewrite ``manifest.json`` (the parse's business, and `make docs`')."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from loader import transform
from tests.dbt import raw_data
from tests.dbt.conftest import build_in_process, connect

T0 = datetime(2025, 5, 1, 9, tzinfo=UTC)


def test_a_build_writes_its_run_results_and_leaves_the_manifest_alone(
    scratch_databases,  # type: ignore[no-untyped-def]
) -> None:
    url = scratch_databases("artifacts")
    raw_data.one_scanned_deal(connect(url, autocommit=False), T0)
    target = transform.dbt_home() / "target"  # DBT_TARGET_PATH of the builds
    manifest, run_results = target / "manifest.json", target / "run_results.json"
    for args in (("--full-refresh",), ()):
        before = manifest.stat().st_mtime_ns if manifest.exists() else None
        build = build_in_process(url, *args)
        results = json.loads(run_results.read_text())
        assert results["args"]["which"] == "build"
        assert results["args"].get("full_refresh", False) is bool(args)
        assert len(results["results"]) == build.nodes > 0
        statuses = {r["unique_id"]: r["status"] for r in results["results"]}
        assert statuses["model.hubspot_deals.deals"] == "success"
        assert set(statuses.values()) <= {"success", "pass", "no-op"}  # no-op: empty hooks
        assert (manifest.stat().st_mtime_ns if manifest.exists() else None) == before
