"""dbt's Jinja templates compiled once per template text, and kept on disk for the next process.

dbt compiles every macro it calls (its materializations, adapters' macros, the project's own)
from the macro's text when a process first calls it: Jinja parses the text, generates Python
source from it and compiles that. A process keeps what it compiled (a worker's second build
compiled 96 small templates in 0.11 s), but each new ``transform`` or ``run`` process compiled
200-230 templates again: 1.1-1.4 s of a 1.9-2.3 s incremental build (README "Performance").

:func:`install` gives dbt's Jinja environments a ``compile`` that keeps each compiled code
object in ``$LOADER_HOME/dbt/jinja`` (``marshal``, the format of Python's own ``.pyc`` files),
named by a digest of everything the code depends on: the template's text, name and file name,
the environment's class, code generator, extensions and syntax options, and the versions of
Python, Jinja, dbt-core and dbt-common. A template whose text or environment changed gets a
new name, so nothing is ever invalidated: an unchanged one is read back (a new process's
incremental build then compiles nothing it compiled before). A file that cannot be read is
compiled again and rewritten; files are written to a temporary name and renamed, so
concurrent processes never read half of one. Templates that fail to compile raise as before
and leave nothing behind. While dbt's macro debugging is on (``--macro-debugging`` or
``DBT_MACRO_DEBUGGING``, which dbt reads into ``dbt_common.clients.jinja.MACRO_DEBUGGING`` for
each command) the cache stays out of the way: dbt then puts each template's Python source in
``linecache`` while compiling it.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import marshal
import os
import sys
import tempfile
from pathlib import Path
from types import CodeType
from typing import Any

#: The environment options that change the code Jinja generates from the same text.
_SYNTAX_OPTIONS = (
    "block_start_string", "block_end_string", "variable_start_string", "variable_end_string",
    "comment_start_string", "comment_end_string", "line_statement_prefix",
    "line_comment_prefix", "trim_blocks", "lstrip_blocks", "newline_sequence",
    "keep_trailing_newline", "optimized", "is_async",
)

_installed: dict[str, Any] = {}


def package_versions(packages: tuple[str, ...]) -> str:
    """Python's version and bytecode magic number and each package's version, as one string
    (part of a cache entry's name: a new version of any of them names every entry anew)."""
    parts = [sys.version, importlib.util.MAGIC_NUMBER.hex()]
    for package in packages:
        try:
            parts.append(f"{package}={importlib.metadata.version(package)}")
        except importlib.metadata.PackageNotFoundError:
            parts.append(f"{package}=?")
    return "\0".join(parts)


def _environment_key(env: Any) -> str:
    generator = env.code_generator_class
    parts = [
        f"{type(env).__module__}.{type(env).__qualname__}",
        f"{generator.__module__}.{generator.__qualname__}",
        *sorted(env.extensions),
        *(repr(getattr(env, option, None)) for option in _SYNTAX_OPTIONS),
        f"finalize={env.finalize is not None}",
        f"autoescape={env.autoescape if isinstance(env.autoescape, bool) else 'callable'}",
    ]
    return "\0".join(parts)


def cache_key(env: Any, source: str, name: str | None, filename: str | None,
              defer_init: bool) -> str:
    """The file name of ``source`` compiled in ``env`` (see the module's docstring)."""
    digest = hashlib.sha256()
    for part in (_installed["versions"], _environment_key(env), repr(name), repr(filename),
                 repr(defer_init), source):
        digest.update(part.encode("utf-8", "surrogatepass") + b"\0\1")
    return digest.hexdigest()


def install(cache_dir: Path) -> None:
    """Compile dbt's templates through the cache in ``cache_dir`` (again: moves the cache)."""
    from dbt_common.clients import jinja
    from dbt_common.clients.jinja import MacroFuzzEnvironment

    _installed["dir"] = Path(cache_dir)
    if "original" in _installed:
        return
    _installed["versions"] = package_versions(("jinja2", "dbt-core", "dbt-common"))
    original = MacroFuzzEnvironment.compile
    _installed["original"] = original

    def compile(self: Any, source: Any, name: str | None = None,  # noqa: A001 - jinja's name
                filename: str | None = None, raw: bool = False,
                defer_init: bool = False) -> Any:
        if raw or not isinstance(source, str) or jinja.MACRO_DEBUGGING:
            return original(self, source, name, filename, raw, defer_init)
        path = _installed["dir"] / cache_key(self, source, name, filename, defer_init)
        try:
            code = marshal.loads(path.read_bytes())
            if isinstance(code, CodeType):
                return code
        except (OSError, ValueError, EOFError, TypeError):
            pass
        code = original(self, source, name, filename, raw, defer_init)
        write_atomic(path, marshal.dumps(code))
        return code

    MacroFuzzEnvironment.compile = compile  # type: ignore[method-assign]


def uninstall() -> None:
    """dbt's own ``compile`` again (tests)."""
    from dbt_common.clients.jinja import MacroFuzzEnvironment

    original = _installed.pop("original", None)
    if original is not None:
        MacroFuzzEnvironment.compile = original  # type: ignore[method-assign]


def write_atomic(path: Path, data: bytes) -> None:
    """``data`` to ``path`` through a temporary file renamed over it; a cache that cannot be
    written (a full or read-only disk) only means compiling again next time."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(data)
            os.replace(tmp, path)
        except BaseException:
            os.unlink(tmp)
            raise
    except OSError:
        pass
