"""``dlt_speedups``: dlt's hint checks, cached, answer exactly as dlt's own functions do."""

from __future__ import annotations

import sys
from typing import Annotated, Optional

from dlt.common.configuration.specs import RuntimeConfiguration, base_configuration
from dlt.common.configuration.specs.base_configuration import SecretSentinel
from dlt.common.storages.configuration import FilesystemConfiguration, SchemaStorageConfiguration
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
