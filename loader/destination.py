"""dlt's PostgreSQL destination, with its capabilities resolved once per process.

dlt asks a destination for its capabilities dozens of times per pipeline run (extract,
normalize and load each check them), and every ask without a configuration resolves a partial
destination configuration from the environment and the config files again: a third of a
1%-incremental scan's CPU (py-spy and cProfile of ``python -m loader worker``'s scans). The answer
depends only on the factory's arguments, the configuration sources and the naming convention,
none of which change within a scan process, so it is kept per naming convention and handed out
as a copy (callers adjust it).
"""

from __future__ import annotations

import copy
from typing import Any

from dlt.common.destination.reference import DestinationReference
from dlt.destinations import postgres

#: dlt's own name for the destination type (a subclass would otherwise be a new type to dlt:
#: another destination in the pipeline's state and traces).
_POSTGRES_TYPE = DestinationReference.normalize_type(
    f"{postgres.__module__}.{postgres.__qualname__}")


class CachedPostgres(postgres):
    """``dlt.destinations.postgres`` whose configuration-free capabilities are resolved once."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._capabilities: dict[tuple[Any, ...], Any] = {}

    @property
    def destination_type(self) -> str:
        return _POSTGRES_TYPE

    def capabilities(self, config: Any = None, naming: Any = None) -> Any:
        if config is not None:
            return super().capabilities(config, naming)
        key = (None,) if naming is None else (
            type(naming), getattr(naming, "max_length", None), naming.is_case_sensitive)
        if key not in self._capabilities:
            self._capabilities[key] = super().capabilities(None, naming)
        return copy.deepcopy(self._capabilities[key])
