"""dbt imported through ``loader.dbt_import``: mashumaro compiles a class's ``from_dict`` /
``to_dict`` on first call, not at import. (That dbt then works, parse and build, is what every
warehouse test checks: their builds run in-process through the same import.)"""

from __future__ import annotations

import subprocess
import sys

#: Counts the mashumaro classes whose from_dict is already compiled (not mashumaro's lazy stub,
#: which builds the method through its CodeBuilder on the first call).
COUNT_COMPILED = """
import sys
if sys.argv[1] == "loader":
    from loader.dbt_import import dbt_runner
    dbt_runner()
else:
    import dbt.cli.main
from mashumaro.mixins.dict import DataClassDictMixin

def subclasses(cls):
    for sub in cls.__subclasses__():
        yield sub
        yield from subclasses(sub)

compiled = 0
for cls in set(subclasses(DataClassDictMixin)):
    method = getattr(cls, "from_dict", None)
    code = getattr(getattr(method, "__func__", method), "__code__", None)
    if code is not None and "CodeBuilder" not in code.co_names:
        compiled += 1
print(compiled)
"""


def _compiled_after(how: str) -> int:
    out = subprocess.run([sys.executable, "-c", COUNT_COMPILED, how], check=True,
                         capture_output=True, text=True, timeout=120)
    return int(out.stdout.strip())


def test_dbt_is_imported_without_compiling_every_class() -> None:
    plain = _compiled_after("plain")
    lazy = _compiled_after("loader")
    # A plain import compiles some 45 classes' methods (mashumaro's JSON schema models and
    # others whose config keeps the default); through loader.dbt_import only what dbt's import
    # itself calls (dbt-common's version specifier).
    assert plain >= 10
    assert lazy <= 3 < plain
