"""``loader.jinja_cache``: dbt's templates compiled once per text and environment, read back by
later compiles and later processes, and rendering exactly as compiled by dbt itself."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from dbt_common.clients import jinja
from dbt_common.clients.jinja import MacroFuzzEnvironment, get_environment

from loader import jinja_cache
from tests.conftest import python_json

TEMPLATE = "{% set x = 21 %}{% for i in [1] %}{{ x * 2 }}{% endfor %} {{ 'ok' | upper }}"


@pytest.fixture()
def parses(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """The cache installed in ``tmp_path/jinja``; the template texts Jinja parsed (compiled)."""
    seen: list[str] = []
    original = MacroFuzzEnvironment._parse

    def counting(self, source, name, filename):  # type: ignore[no-untyped-def]
        seen.append(source)
        return original(self, source, name, filename)

    monkeypatch.setattr(MacroFuzzEnvironment, "_parse", counting)
    monkeypatch.setattr(jinja, "MACRO_DEBUGGING", False)
    jinja_cache.uninstall()
    jinja_cache.install(tmp_path / "jinja")
    yield seen
    jinja_cache.uninstall()


def _files(tmp_path: Path) -> list[Path]:
    folder = tmp_path / "jinja"
    return sorted(p for p in folder.iterdir() if not p.name.startswith(".")) if folder.exists() \
        else []


def test_a_template_is_compiled_once_and_renders_the_same(parses: list[str],
                                                           tmp_path: Path) -> None:
    first = get_environment().from_string(TEMPLATE).render({})
    assert first == "42 OK" and parses == [TEMPLATE] and len(_files(tmp_path)) == 1
    # A new environment, as in a new process: read back, not compiled.
    assert get_environment().from_string(TEMPLATE).render({}) == first
    assert parses == [TEMPLATE]
    # Another text is another entry.
    other = TEMPLATE.replace("21", "5")
    assert get_environment().from_string(other).render({}) == "10 OK"
    assert parses == [TEMPLATE, other] and len(_files(tmp_path)) == 2


def test_another_environment_gets_its_own_entry(parses: list[str], tmp_path: Path) -> None:
    get_environment().from_string(TEMPLATE).render({})
    # dbt's native environment generates other code from the same text.
    native = get_environment(native=True).from_string("{{ [20 + 22] }}").render({})
    text = get_environment().from_string("{{ [20 + 22] }}").render({})
    assert len(parses) == 3 and len(_files(tmp_path)) == 3
    jinja_cache.uninstall()  # what dbt renders without the cache
    assert native == get_environment(native=True).from_string("{{ [20 + 22] }}").render({})
    assert text == get_environment().from_string("{{ [20 + 22] }}").render({}) == "[42]"


def test_an_unreadable_entry_is_compiled_again(parses: list[str], tmp_path: Path) -> None:
    get_environment().from_string(TEMPLATE).render({})
    (entry,) = _files(tmp_path)
    entry.write_bytes(b"not marshal data")
    assert get_environment().from_string(TEMPLATE).render({}) == "42 OK"
    assert len(parses) == 2
    assert get_environment().from_string(TEMPLATE).render({}) == "42 OK"  # rewritten: read back
    assert len(parses) == 2


def test_a_template_that_does_not_compile_raises_and_leaves_nothing(
        parses: list[str], tmp_path: Path) -> None:
    with pytest.raises(Exception, match="[Ee]xpected"):
        get_environment().from_string("{% if %}")
    assert _files(tmp_path) == []


def test_macro_debugging_leaves_the_cache_alone(parses: list[str], tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    get_environment().from_string(TEMPLATE).render({})
    monkeypatch.setattr(jinja, "MACRO_DEBUGGING", True)  # what dbt sets from its flag
    assert get_environment().from_string(TEMPLATE).render({}) == "42 OK"
    assert len(parses) == 2 and len(_files(tmp_path)) == 1


PROCESS = """
import json, sys
from pathlib import Path
from dbt_common.clients.jinja import MacroFuzzEnvironment, get_environment
from loader import jinja_cache
parsed = []
original = MacroFuzzEnvironment._parse
def counting(self, source, name, filename):
    parsed.append(source)
    return original(self, source, name, filename)
MacroFuzzEnvironment._parse = counting
jinja_cache.install(Path(sys.argv[1]))
out = get_environment().from_string(sys.argv[2]).render({})
print(json.dumps({"out": out, "parsed": len(parsed)}))
"""


def test_a_later_process_reads_what_an_earlier_one_compiled(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "DBT_MACRO_DEBUGGING"}
    runs = []
    for _ in range(2):
        runs.append(python_json(PROCESS, str(tmp_path), TEMPLATE, env=env, timeout=120))
    assert runs == [{"out": "42 OK", "parsed": 1}, {"out": "42 OK", "parsed": 0}]
