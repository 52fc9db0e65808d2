"""dbt's runner, imported with mashumaro's lazy compilation on for every class, and the code that
dataclasses and mashumaro generate for dbt's classes compiled through :mod:`loader.code_cache`.

mashumaro (dbt's serialisation library) generates and compiles ``from_dict`` / ``to_dict`` for
every dataclass it serialises when the class is created, unless the class's config says
``lazy_compilation``: then a small stub compiles the real method on its first call. dbt-common's
own config (``dbtMashConfig``) already says so for dbt's classes; the classes of
``mashumaro.jsonschema`` and a few others keep the default and were compiled at import, about
0.2 s of the 1.4 s dbt's CLI takes to import here, though a build uses few of them. The same
code is generated either way, only later and only for what is called. Set before anything
imports mashumaro's JSON schema module (that is, before dbt), in each process that runs dbt.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def dbt_runner(code_folder: Path | None = None) -> Any:
    """``dbt.cli.main.dbtRunner``, dbt imported with lazy compilation as the default; with
    ``code_folder``, the generated code of its classes compiled through the cache kept there
    (given before dbt is first imported: the classes are created then)."""
    from mashumaro.config import BaseConfig

    BaseConfig.lazy_compilation = True
    if code_folder is not None:
        from . import code_cache

        code_cache.install(code_folder)
    from dbt.cli.main import dbtRunner

    return dbtRunner
