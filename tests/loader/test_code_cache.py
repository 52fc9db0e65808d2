"""``loader.code_cache``: generated code (dataclasses', mashumaro's) compiled once per text and
``__future__`` flags, read back by later processes, and running exactly as the built-in
``exec`` runs it. (That dbt works through it, parse and build, is what every warehouse test
checks: their builds run in-process through the same import.)"""

from __future__ import annotations

import dataclasses
import marshal
from collections.abc import Iterator
from pathlib import Path

import pytest

from loader import code_cache
from tests.conftest import python_json


@pytest.fixture()
def cache(tmp_path: Path) -> Iterator[Path]:
    code_cache.uninstall()
    code_cache.install(tmp_path)
    yield code_cache.cache_file(tmp_path)
    code_cache.uninstall()


def test_a_dataclass_is_built_from_cached_code_and_behaves_the_same(cache: Path) -> None:
    assert dataclasses.exec is code_cache.cached_exec  # type: ignore[attr-defined]

    @dataclasses.dataclass(frozen=True, order=True)
    class Point:
        x: int
        y: int = 2
        tags: tuple[str, ...] = dataclasses.field(default_factory=tuple)

    new = code_cache._state["new"]
    assert new >= 4  # __init__, __repr__, __eq__, the order methods, __hash__, ...
    p = Point(1)
    assert (p.x, p.y, p.tags) == (1, 2, ())
    assert repr(p).endswith(".<locals>.Point(x=1, y=2, tags=())")
    assert p == Point(1, 2, ()) and p < Point(2) and hash(p) == hash(Point(1, 2, ()))
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.x = 3  # type: ignore[misc]

    @dataclasses.dataclass(frozen=True, order=True)
    class Point2:  # the same field list: the same texts, read from the cache
        x: int
        y: int = 2
        tags: tuple[str, ...] = dataclasses.field(default_factory=tuple)

    assert code_cache._state["new"] == new
    assert Point2(5).y == 2
    code_cache.save()
    saved = marshal.loads(cache.read_bytes())
    assert len(saved) == new and code_cache._state["new"] == 0


FUTURE_CALLER = "from __future__ import annotations\ndef run(src, ns):\n    exec(src, ns)\n"
PLAIN_CALLER = "def run(src, ns):\n    exec(src, ns)\n"
ANNOTATED = "def f(x: NoSuchName) -> int:\n    return 1\n"


@pytest.mark.parametrize("caller", [FUTURE_CALLER, PLAIN_CALLER])
def test_a_text_is_compiled_with_its_callers_future_flags(cache: Path, caller: str) -> None:
    """As the built-in does: from a module with postponed annotations, the annotation is not
    evaluated; from one without, the definition raises NameError."""
    results = []
    for exec_fn in (exec, code_cache.cached_exec):
        namespace: dict = {"exec": exec_fn}
        exec(compile(caller, "<caller>", "exec", dont_inherit=True), namespace)
        try:
            target: dict = {}
            namespace["run"](ANNOTATED, target)
            results.append(("defined", target["f"].__annotations__))
        except NameError as exc:
            results.append(("NameError", str(exc)))
    assert results[0] == results[1]
    assert results[0][0] == ("defined" if caller is FUTURE_CALLER else "NameError")


def test_both_flag_sets_are_kept_apart(cache: Path) -> None:
    for caller in (FUTURE_CALLER, PLAIN_CALLER):
        namespace: dict = {"exec": code_cache.cached_exec}
        exec(compile(caller, "<caller>", "exec", dont_inherit=True), namespace)
        try:
            namespace["run"](ANNOTATED, {})
        except NameError:
            pass
    assert code_cache._state["new"] == 2


def test_a_name_unique_to_the_process_is_not_kept(cache: Path) -> None:
    namespace: dict = {}
    code_cache.cached_exec("def __helper__0123456789abcdef0123456789abcdef(): return 7", namespace)
    assert namespace["__helper__0123456789abcdef0123456789abcdef"]() == 7
    assert code_cache._state["new"] == 0


def test_namespaces_by_name_and_the_callers_by_default(cache: Path) -> None:
    namespace: dict = {"base": 40}
    code_cache.cached_exec("z = base + 2", globals=namespace)
    assert namespace["z"] == 42

    def caller() -> dict:
        local = {"seen": None}
        code_cache.cached_exec("seen = __name__", None, local)
        return local

    assert caller()["seen"] == __name__


def test_an_unreadable_file_counts_as_empty_and_is_replaced(tmp_path: Path) -> None:
    code_cache.uninstall()
    path = code_cache.cache_file(tmp_path)
    path.write_bytes(b"not marshal data")
    code_cache.install(tmp_path)
    try:
        namespace: dict = {}
        code_cache.cached_exec("x = 40 + 2", namespace)
        assert namespace["x"] == 42
        code_cache.save()
        assert len(marshal.loads(path.read_bytes())) == 1
    finally:
        code_cache.uninstall()


PROCESS = """
import json, sys
from pathlib import Path
from loader import code_cache
code_cache.install(Path(sys.argv[1]))
import dataclasses
@dataclasses.dataclass(order=True)
class Deal:
    id: str
    amount: float = 0.0
d = Deal("7", 1.5)
print(json.dumps({"new": code_cache._state["new"], "repr": repr(d), "lt": d < Deal("8")}))
"""


def test_a_later_process_reads_what_an_earlier_one_compiled(tmp_path: Path) -> None:
    runs = []
    for _ in range(2):
        runs.append(python_json(PROCESS, str(tmp_path), timeout=120))
    assert runs[0]["new"] >= 3 and runs[1]["new"] == 0
    assert runs[0]["repr"] == runs[1]["repr"] == "Deal(id='7', amount=1.5)"
    assert runs[0]["lt"] is runs[1]["lt"] is True
