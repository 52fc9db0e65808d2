"""The parsed project kept between processes (``loader/manifest_cache.py``): a later process
builds from it without parsing, and anything a parse reads that changed means a parse."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from loader import manifest_cache, transform
from tests.conftest import python_json
from tests.dbt import raw_data
from tests.dbt.conftest import connect, fetch, with_user

T0 = datetime(2025, 5, 1, 9, tzinfo=UTC)

#: A process of its own that prepares a builder (as ``transform`` does), builds twice (as a
#: worker does: dbt's lookups are built and used again), and says whether the parsed project
#: came from the cache.
PROCESS = """
import json, sys
from loader import transform
builder = transform.Builder(sys.argv[1], freeze_heap=True)
results = [builder.build(full_refresh=sys.argv[2] == "full", quiet=True) for _ in range(2)]
print(json.dumps({"ok": all(r.ok for r in results), "error": [r.error for r in results],
                  "nodes": min(r.nodes for r in results),
                  "from_cache": builder.manifest_from_cache}))
"""


def _build_in_a_new_process(url: str, mode: str) -> dict[str, object]:
    return python_json(PROCESS, url, mode, env=dict(os.environ))


def _entries() -> set[Path]:
    return set((transform.dbt_home() / "manifest").glob("*.pickle"))


def test_a_later_process_builds_from_the_kept_project(scratch_databases) -> None:  # type: ignore[no-untyped-def]
    url = scratch_databases("manifest_kept")
    raw_data.one_scanned_deal(connect(url, autocommit=False), T0)
    before = _entries()
    first = _build_in_a_new_process(url, "full")
    assert first["ok"], first["error"]
    assert first["from_cache"] is False  # a database of its own: a new entry
    kept = _entries() - before
    assert len(kept) == 1
    second = _build_in_a_new_process(url, "incremental")
    assert second["ok"], second["error"]
    assert second["from_cache"] is True
    assert second["nodes"] > 0
    assert fetch(url, "select _tenant_id, id from analytics.deals") == [("acme", "1")]


def test_a_kept_manifest_is_the_parsed_one_field_by_field(scratch_databases) -> None:  # type: ignore[no-untyped-def]
    builder = transform.Builder(scratch_databases("manifest_fields"))
    builder.prepare()
    manifest = builder._manifest
    # dbt's lookups built, as after a full parse or a build.
    model = manifest.ref_lookup.find("deals", None, None, manifest)
    assert model is not None
    assert manifest.doc_lookup is not None and manifest.source_lookup is not None
    folder = transform.dbt_home() / "manifest"
    manifest_cache.save(folder, "fields-test.pickle", manifest)
    copy = manifest_cache.load(folder, "fields-test.pickle", dict(os.environ))
    (folder / "fields-test.pickle").unlink()
    assert copy is not None
    assert copy.writable_manifest().to_dict() == manifest.writable_manifest().to_dict()
    assert copy.fixtures == manifest.fixtures  # dbt's own __reduce_ex__ put a lookup here
    # What the parse set besides the fields (dbt's __reduce_ex__ drops them).
    assert copy.child_map == manifest.child_map and copy.parent_map == manifest.parent_map
    assert copy.ref_lookup.find("deals", None, None, copy).unique_id == model.unique_id


def test_a_project_read_env_var_that_changed_means_a_parse(scratch_databases,  # type: ignore[no-untyped-def]
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    url = scratch_databases("manifest_env")
    builder = transform.Builder(url)
    builder.prepare()
    manifest = builder._manifest
    env = dict(os.environ)
    assert manifest_cache.env_vars_unchanged(manifest, env)
    # What dbt records of a variable read with env_var() while parsing, as it compares it.
    manifest.env_vars["LOADER_TEST_SETTING"] = "a"
    assert not manifest_cache.env_vars_unchanged(manifest, env)
    assert manifest_cache.env_vars_unchanged(manifest, {**env, "LOADER_TEST_SETTING": "a"})
    assert not manifest_cache.env_vars_unchanged(manifest, {**env, "LOADER_TEST_SETTING": "b"})
    manifest.env_vars["LOADER_TEST_SETTING"] = manifest_cache.DEFAULT_ENV_PLACEHOLDER
    assert manifest_cache.env_vars_unchanged(manifest, env)  # still its default
    assert not manifest_cache.env_vars_unchanged(manifest, {**env, "LOADER_TEST_SETTING": "x"})
    folder = transform.dbt_home() / "manifest"
    key = manifest_cache.cache_key("project", ["--project-dir", "p"], env)
    manifest_cache.save(folder, key, manifest)
    assert manifest_cache.load(folder, key, env) is not None
    monkeypatch.setenv("LOADER_TEST_SETTING", "y")
    assert manifest_cache.load(folder, key, dict(os.environ)) is None
    (folder / key).unlink()


def test_the_key_follows_what_a_parse_reads_and_never_the_password() -> None:
    env = {"DBT_PG_HOST": "h", "DBT_PG_DBNAME": "hubspot", "DBT_PG_PASSWORD": "s3cret",
           "HOME": "/root"}
    key = manifest_cache.cache_key("project-a", ["--project-dir", "p"], env)
    assert manifest_cache.cache_key("project-a", ["--project-dir", "p"],
                                    {**env, "DBT_PG_PASSWORD": "other", "HOME": "/x"}) == key
    assert "s3cret" not in key
    for changed in (("project-b", ["--project-dir", "p"], env),
                    ("project-a", ["--project-dir", "q"], env),
                    ("project-a", ["--project-dir", "p"], {**env, "DBT_PG_DBNAME": "other"}),
                    ("project-a", ["--project-dir", "p"], {**env, "DBT_TARGET": "ci"})):
        assert manifest_cache.cache_key(*changed) != key


def test_an_entry_holds_no_password(scratch_databases) -> None:  # type: ignore[no-untyped-def]
    url = scratch_databases("manifest_secret")
    user = urlsplit(url).username or "postgres"
    secret = "pw-manifest-9f3c1a"
    with_password = with_user(url, f"{user}:{secret}")  # parsing never logs in
    builder = transform.Builder(with_password)
    builder.prepare()
    assert builder.manifest_from_cache is False
    key = manifest_cache.cache_key(transform.project_fingerprint(), builder._args(),
                                   dict(os.environ))
    entry = transform.dbt_home() / "manifest" / key
    assert os.environ["DBT_PG_PASSWORD"] == secret  # what the profile was rendered with
    assert secret.encode() not in entry.read_bytes()
    assert secret not in key


def test_an_unreadable_entry_is_parsed_again_and_rewritten(scratch_databases) -> None:  # type: ignore[no-untyped-def]
    url = scratch_databases("manifest_bad")
    first = transform.Builder(url)
    first.prepare()
    assert first.manifest_from_cache is False
    env = dict(os.environ)
    key = manifest_cache.cache_key(transform.project_fingerprint(), first._args(), env)
    entry = transform.dbt_home() / "manifest" / key
    assert entry.exists()
    entry.write_bytes(b"not a pickle")
    again = transform.Builder(url)
    again.prepare()
    assert again.manifest_from_cache is False
    assert manifest_cache.load(entry.parent, key, env) is not None  # written anew
    third = transform.Builder(url)
    third.prepare()
    assert third.manifest_from_cache is True
    assert sorted(third._manifest.nodes) == sorted(first._manifest.nodes)


def test_only_the_newest_entries_are_kept(tmp_path: Path) -> None:
    for n in range(manifest_cache.KEEP + 3):
        manifest_cache.save(tmp_path, f"{n:02d}.pickle", {"n": n})
        os.utime(tmp_path / f"{n:02d}.pickle", ns=(n * 10**9, n * 10**9))
    manifest_cache.save(tmp_path, "last.pickle", {"n": "last"})
    kept = sorted(p.name for p in tmp_path.glob("*.pickle"))
    assert len(kept) == manifest_cache.KEEP
    assert "last.pickle" in kept and "00.pickle" not in kept
    assert manifest_cache.load(tmp_path, "last.pickle", {}) is None  # not a dbt manifest
