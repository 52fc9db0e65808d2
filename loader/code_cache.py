"""Python code that libraries generate as text and ``exec``, compiled once and kept on disk.

``dataclasses`` writes the ``__init__``, ``__repr__``, ``__eq__``... of every dataclass as
Python source and runs it through ``exec``; mashumaro (dbt's serialisation library) does the
same for every ``from_dict`` / ``to_dict`` and their lazy stubs. dbt defines about a thousand
dataclasses, so a new process that imports dbt and reads its project compiles some 3,000 such
texts (1,360 different ones): ``compile`` took 0.36 s of dbt's import here, every
``transform`` and ``run`` (README "Performance"). Python keeps the compiled code of modules in
``.pyc`` files; nothing keeps these.

:func:`install` gives those modules an ``exec`` that looks the text up first: each text is
compiled once, with the ``__future__`` flags of the module that calls ``exec`` (what the
built-in ``exec`` does), and the code object is kept in memory and, at the process's exit, in
one file per Python version under the given folder (``marshal``, the format of ``.pyc``
files), named by Python's version and bytecode magic number. Entries are named by a digest of
the flags and the text, so a text that changes is a new entry and nothing is invalidated; a
later process reads the file once and compiles only texts it has not seen. A text with a name
made unique for the process (32 hex digits: mashumaro names some helpers with ``uuid4``, about
110 a ``transform``) is compiled and not kept, since no later process sends it again. The code
then runs as before (``exec`` of the code object with the same globals and locals), so what it
defines is what the text defines. An unreadable file counts as empty and is replaced. Files are
written to a temporary name and renamed; two processes exiting together each write the file
whole (the last one's wins, and what the other added is compiled again later). A file past
:data:`MAX_BYTES` is started over.
"""

from __future__ import annotations
import __future__

import atexit
import builtins
import hashlib
import importlib.util
import marshal
import re
import sys
import threading
from pathlib import Path
from types import CodeType
from typing import Any

from .jinja_cache import package_versions, write_atomic

#: The modules whose ``exec`` of generated text goes through the cache.
MODULES = (
    "dataclasses",
    "mashumaro.core.meta.code.builder",
    "mashumaro.core.meta.types.common",
    "mashumaro.core.meta.types.pack",
    "mashumaro.core.meta.types.unpack",
)
#: A file larger than this is started over (dbt's entries take about 1.4 MB).
MAX_BYTES = 64 * 1024 * 1024
#: A name made unique per process (mashumaro's ``uuid4().hex`` suffixes): such a text is never
#: seen again, so it is compiled and not kept.
_VOLATILE = re.compile(r"[0-9a-f]{32}")
_FUTURE_FLAGS = 0
for _name in __future__.all_feature_names:
    _FUTURE_FLAGS |= getattr(__future__, _name).compiler_flag

_state: dict[str, Any] = {}
_lock = threading.Lock()


def cache_file(folder: Path) -> Path:
    """The file for this Python in ``folder``."""
    tag = hashlib.sha256(package_versions(()).encode()).hexdigest()[:16]
    return Path(folder) / f"code-{tag}.marshal"


def _load(path: Path) -> dict[bytes, CodeType]:
    try:
        data = marshal.loads(path.read_bytes())
    except (OSError, ValueError, EOFError, TypeError):
        return {}
    if not isinstance(data, dict):
        return {}
    return {k: v for k, v in data.items() if isinstance(k, bytes) and isinstance(v, CodeType)}


def cached_exec(source: Any, globals: Any = None, locals: Any = None,  # noqa: A002
                **kwargs: Any) -> None:
    """``exec`` with ``source`` compiled through the cache when it is text (namespaces by
    position or by name, and any other keyword such as ``closure``, passed on)."""
    if isinstance(source, str) and "codes" in _state:
        flags = sys._getframe(1).f_code.co_flags & _FUTURE_FLAGS
        key = hashlib.blake2b(source.encode("utf-8", "surrogatepass"), digest_size=20,
                              person=flags.to_bytes(8, "little")).digest()
        code = _state["codes"].get(key)
        if code is None:
            code = compile(source, "<string>", "exec", flags, dont_inherit=True)
            if not _VOLATILE.search(source):
                with _lock:
                    _state["codes"][key] = code
                    _state["new"] += 1
        source = code
    if globals is None:  # the caller's namespaces, as the built-in takes them
        frame = sys._getframe(1)
        globals, locals = frame.f_globals, frame.f_locals if locals is None else locals
    builtins.exec(source, globals, locals, **kwargs)


def install(folder: Path) -> None:
    """Route :data:`MODULES`' ``exec`` (each imported now if it is not yet) through the cache
    kept in ``folder``. Installing again only moves the file."""
    with _lock:
        _state["file"] = cache_file(folder)
        if "codes" in _state:
            return
        _state["codes"] = _load(_state["file"])
        _state["new"] = 0
    for name in MODULES:
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        module.exec = cached_exec  # type: ignore[attr-defined]  # found before the built-in
    atexit.register(save)


def uninstall() -> None:
    """The built-in ``exec`` again in every patched module (tests); nothing is saved."""
    for name in MODULES:
        module = sys.modules.get(name)
        if module is not None and module.__dict__.get("exec") is cached_exec:
            del module.exec  # type: ignore[attr-defined]
    with _lock:
        _state.clear()
    atexit.unregister(save)


def save() -> None:
    """Write the entries compiled since the file was read (with the file's current ones)."""
    with _lock:
        if not _state.get("new"):
            return
        path: Path = _state["file"]
        codes = {**_load(path), **_state["codes"]}
        data = marshal.dumps(codes)
        if len(data) > MAX_BYTES:
            data = marshal.dumps(_state["codes"])
        _state["new"] = 0
    write_atomic(path, data)
