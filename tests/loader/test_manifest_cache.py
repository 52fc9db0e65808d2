"""``loader.manifest_cache``: a new process's :class:`loader.transform.Builder` reads the project
an earlier one parsed, as long as what a parse reads is the same (the project's files and the
profile, the versions, the profile's variables, the variables dbt recorded while parsing); it
parses again otherwise, and when the kept file cannot be read. Parsing needs no database."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from loader import manifest_cache, transform

#: Parsing does not connect: a URL nothing listens on is enough.
URL = "postgresql://postgres@127.0.0.1:9/hubspot"


@pytest.fixture()
def home(tmp_path: Path) -> Iterator[Path]:
    """A LOADER_HOME of its own; the environment as it was afterwards (builders set DBT_*)."""
    saved = dict(os.environ)
    os.environ["LOADER_HOME"] = str(tmp_path)
    os.environ["LOADER_INDEXED_PROPERTIES"] = "custom_region"
    yield tmp_path
    os.environ.clear()
    os.environ.update(saved)


def _prepared() -> transform.Builder:
    builder = transform.Builder(URL)
    builder.prepare()
    return builder


def _mark_kept_entry(home: Path) -> None:
    """Rewrite the kept manifest with a recognisable invocation id (a parse makes a new one)."""
    path = home / "dbt" / transform.MANIFEST_CACHE
    key = manifest_cache.key(transform.project_fingerprint(),
                             transform.settings.PROJECT_ROOT / transform.PROFILE_EXAMPLE)
    manifest = manifest_cache.read(path, key)
    assert manifest is not None
    manifest.metadata.invocation_id = "kept"
    manifest_cache.write(path, key, manifest)


def test_a_new_builder_reads_what_an_earlier_one_parsed(home: Path) -> None:
    first = _prepared()
    assert (home / "dbt" / transform.MANIFEST_CACHE).is_file()
    assert first._manifest.metadata.invocation_id != "kept"
    _mark_kept_entry(home)

    again = _prepared()
    assert again._manifest.metadata.invocation_id == "kept"
    assert set(again._manifest.nodes) == set(first._manifest.nodes)

    # The password only opens the connection: not part of the key.
    os.environ["DBT_PG_PASSWORD"] = "something else"
    assert _prepared()._manifest.metadata.invocation_id == "kept"


@pytest.mark.parametrize(("variable", "value"), [
    ("LOADER_INDEXED_PROPERTIES", "custom_other"),  # recorded by dbt while parsing
    ("DBT_PG_SCHEMA", "analytics_other"),  # read by the profile: the nodes' schemas
])
def test_what_a_parse_reads_changing_means_parsing_again(home: Path, variable: str,
                                                         value: str) -> None:
    _prepared()
    _mark_kept_entry(home)
    os.environ[variable] = value
    parsed = _prepared()
    assert parsed._manifest.metadata.invocation_id != "kept"
    # ... and kept in place of the old entry: the next builder reads it.
    assert _prepared()._manifest.metadata.invocation_id == \
        parsed._manifest.metadata.invocation_id


def test_an_unreadable_entry_means_parsing_again(home: Path) -> None:
    _prepared()
    path = home / "dbt" / transform.MANIFEST_CACHE
    path.write_bytes(path.read_bytes()[:1000])  # cut short, as by a full disk
    parsed = _prepared()
    assert parsed._manifest.nodes
    assert manifest_cache.read(path, manifest_cache.key(
        transform.project_fingerprint(),
        transform.settings.PROJECT_ROOT / transform.PROFILE_EXAMPLE)) is not None
