"""``dlt_speedups``: dlt's hint checks, cached, answer exactly as dlt's own functions do; a
pipeline's live schema is read from its file again exactly when the file changed."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import pytest
from dlt.common.configuration.specs import RuntimeConfiguration, base_configuration
from dlt.common.configuration.specs.base_configuration import SecretSentinel
from dlt.common.schema import Schema
from dlt.common.schema.utils import new_table
from dlt.common.storages.configuration import FilesystemConfiguration, SchemaStorageConfiguration
from dlt.common.storages.live_schema_storage import LiveSchemaStorage
from dlt.destinations.impl.postgres.configuration import (
    PostgresClientConfiguration,
    PostgresCredentials,
)
from dlt.load.configuration import LoaderConfiguration
from dlt.normalize.configuration import NormalizeConfiguration

import loader.scan  # noqa: F401 - installs the speedups, as every scan process does
from loader import dlt_speedups

SPECS = (PostgresCredentials, PostgresClientConfiguration, SchemaStorageConfiguration,
         FilesystemConfiguration, NormalizeConfiguration, LoaderConfiguration,
         RuntimeConfiguration)


def _original(name: str):
    return getattr(base_configuration, name).__wrapped_original__


def test_every_dlt_binding_is_the_cached_function() -> None:
    for name in dlt_speedups.MEMOIZED:
        wrapped = vars(base_configuration)[name]
        assert hasattr(wrapped, "__wrapped_original__"), name
        stale = [module.__name__ for module in list(sys.modules.values())
                 if getattr(module, "__name__", "").startswith("dlt")
                 and vars(module).get(name) is wrapped.__wrapped_original__]
        assert stale == [], (name, stale)
    dlt_speedups.install()  # again: nothing changes, nothing is wrapped twice
    assert not hasattr(_original("is_secret_hint"), "__wrapped_original__")


def test_cached_answers_are_dlt_answers_for_every_field_of_the_configurations_used() -> None:
    hints = [hint for spec in SPECS for hint in spec.get_resolvable_fields().values()]
    hints += [Optional[str], Annotated[str, SecretSentinel],  # noqa: UP045 - as dlt writes it
              Annotated[str, {"unhashable": 1}]]
    is_secret, inner = base_configuration.is_secret_hint, base_configuration.extract_inner_hint
    for hint in hints:
        for _ in range(2):  # computed, then from the cache
            assert is_secret(hint) == _original("is_secret_hint")(hint), hint
            for flags in ({}, {"preserve_annotated": True, "preserve_new_types": True},
                          {"preserve_literal": True}):
                assert inner(hint, **flags) == _original("extract_inner_hint")(hint, **flags)
    # The point of the check: the password is a secret, the host is not.
    fields = PostgresCredentials.get_resolvable_fields()
    assert is_secret(fields["password"]) and not is_secret(fields["host"])
    assert is_secret.cache_info().hits > 0


def _storage(path: Path) -> LiveSchemaStorage:
    return LiveSchemaStorage(SchemaStorageConfiguration(schema_volume_path=str(path)),
                             makedirs=True)


def _with_table(schema: Schema, table: str) -> Schema:
    schema.update_table(new_table(table, columns=[{"name": "id", "data_type": "text"}]))
    return schema


def test_a_live_schema_is_read_again_only_when_its_file_changed(tmp_path: Path,
                                                                monkeypatch) -> None:
    storage = _storage(tmp_path)
    storage.save_schema(_with_table(Schema("hubspot"), "deals"))
    reads: list[str] = []
    read_json = storage._load_schema_json  # noqa: SLF001
    monkeypatch.setattr(storage, "_load_schema_json",
                        lambda name: reads.append(name) or read_json(name))

    first = storage["hubspot"]
    assert reads == ["hubspot"]  # the save replaced the file: read once
    assert storage["hubspot"] is first and storage["hubspot"] is first
    assert reads == ["hubspot"]  # unchanged file, nothing unsaved: not read again

    # Another process saves a newer version: the next lookup reads it.
    other = _storage(tmp_path)
    other.save_schema(_with_table(other["hubspot"], "pipelines"))
    assert "pipelines" in storage["hubspot"].tables
    assert reads == ["hubspot", "hubspot"]

    # Unsaved changes: the live schema, as dlt gives it (no read).
    _with_table(storage["hubspot"], "in_memory")
    assert "in_memory" in storage["hubspot"].tables
    assert reads == ["hubspot", "hubspot"]
    storage.commit_live_schema("hubspot")  # saved: the file changed, read again once
    assert "in_memory" in storage["hubspot"].tables and storage["hubspot"] is first
    assert reads == ["hubspot"] * 3

    # A live schema set from elsewhere with no unsaved changes, older than the file: dlt reads
    # the file again, and so does the cache.
    stale = _storage(tmp_path)["hubspot"]
    storage.save_schema(_with_table(storage["hubspot"], "newer"))
    assert "newer" in storage["hubspot"].tables
    assert reads == ["hubspot"] * 4
    storage.set_live_schema(stale)
    assert "newer" in storage["hubspot"].tables and storage["hubspot"] is first
    assert reads == ["hubspot"] * 5


def _typeddicts(*modules) -> list[type]:
    from dlt.common.typing import is_typeddict

    return [value for module in modules for value in vars(module).values()
            if isinstance(value, type) and is_typeddict(value)]


def test_spec_type_hints_are_dlts_for_every_spec_of_the_schema_and_normalizers() -> None:
    from dlt.common import validation
    from dlt.common.normalizers import typing as normalizers_typing
    from dlt.common.schema import typing as schema_typing

    cached = validation.get_type_hints
    original = cached.__wrapped_original__
    specs = _typeddicts(schema_typing, normalizers_typing)
    assert len(specs) > 10 and schema_typing.TTableSchema in specs
    for spec in specs:
        namespace = vars(sys.modules[spec.__module__])
        for _ in range(2):  # computed, then kept
            hints = cached(spec, globalns=namespace)
            assert hints == original(spec, globalns=namespace), spec
        hints.clear()  # a caller's copy: the next caller still gets every field
        assert cached(spec, globalns=namespace) == original(spec, globalns=namespace)
    # A namespace other than the spec's own module is not kept.
    assert cached(schema_typing.TColumnSchema, globalns={}) == original(
        schema_typing.TColumnSchema, globalns={})
    dlt_speedups.install()  # again: not wrapped twice
    assert validation.get_type_hints is cached


def test_schema_validation_still_rejects_what_dlt_rejects() -> None:
    from dlt.common.exceptions import DictValidationException
    from dlt.common.schema.typing import TTableSchema
    from dlt.common.validation import validate_dict

    good = {"name": "deals", "columns": {"id": {"name": "id", "data_type": "text"}}}
    for _ in range(2):
        validate_dict(TTableSchema, good, ".")
        with pytest.raises(DictValidationException, match="unexpected fields"):
            validate_dict(TTableSchema, {**good, "no_such_hint": 1}, ".")
        with pytest.raises(DictValidationException, match="name"):
            validate_dict(TTableSchema, {**good, "name": 7}, ".")
        with pytest.raises(DictValidationException, match="data_type"):
            validate_dict(TTableSchema, {"name": "deals", "columns": {
                "id": {"name": "id", "data_type": "no_such_type"}}}, ".")
