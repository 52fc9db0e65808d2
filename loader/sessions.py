"""PostgreSQL sessions a scan process keeps from one scan to the next.

A new session costs the server about 2.4 ms of CPU before its first statement (a process forked
and initialised, its catalog caches empty), against 0.15 ms to reset one that is open. A scan
opened eight or nine: its lock, its job, its stage lookups, and dlt's, one per load job and
step; a worker round of four small scans, 40. The processes that run scans (the worker's and
``run --all``'s, see :func:`keep`) keep theirs here from one scan to the next: measured in turn
on one bench-sized database, 12 rounds each way, twice, a worker round took 0.649 s against
0.705 and 0.767 against 0.839 (medians), PostgreSQL's CPU 0.165 s against 0.35 and 0.23
against 0.42 a round (README, Performance).

- :func:`session` and :func:`release` for the loader's own (the tenant's lock, the scan's job,
  the stage lookups), :func:`take` and :func:`give_back` for dlt's (``loader/dlt_speedups.py``);
- a session handed back is reset at once (``DISCARD ALL``: a transaction rolled back, the
  tenant's advisory lock released, settings, temporary tables and listens dropped), so a
  released lock is free the moment the scan ends, as when its session closed; one the reset
  fails on, or one still in a query, is closed instead;
- a session kept :data:`IDLE_SECONDS` unused is closed by a thread of the process (so an idle
  worker holds no sessions for long, and the server logs nothing about them); the server ends
  one after :data:`SERVER_IDLE_TIMEOUT` (``idle_session_timeout``) should the process stop
  without closing it; one taken again is checked with a round trip and replaced if the server
  ended it;
- at most :data:`PER_KEY` are kept per database and settings (the loader's, or dlt's per
  dataset), :data:`TOTAL` in all: a scan holds five or six at once at most;
- a forked child never uses its parent's.

``psycopg2.pool`` hands connections out without resetting them, with no check that one is
still alive and no limit on how long the server keeps them; these are the few lines that do.
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any

import psycopg2
import psycopg2.extensions

from . import db

#: Sessions kept per key (database URL or DSN, and session settings).
PER_KEY = 4
#: Sessions a process keeps in all: what it holds of the server's ``max_connections`` when idle.
TOTAL = 8
#: Seconds a process keeps a session unused before it closes it.
IDLE_SECONDS = 60.0
#: How long the server keeps a kept session unused (``idle_session_timeout``): for a process
#: that stopped without closing its sessions (suspended, say).
SERVER_IDLE_TIMEOUT = "10min"

_lock = threading.Lock()
#: Per key, the kept sessions with the time (``time.monotonic()``) each was handed back.
_kept: dict[Any, list[tuple[Any, float]]] = {}
#: The thread that closes sessions kept too long (started with the first one kept), and what
#: wakes it before its next round (every quarter of :data:`IDLE_SECONDS`, 15 s at most).
_reaper: threading.Thread | None = None
_reaper_wake = threading.Event()
#: Sessions inherited through ``fork``: the parent's, set aside in the child (see
#: :func:`_forget_in_child`).
_inherited: list[Any] = []
_enabled = False


def keep() -> None:
    """Keep sessions in this process from here on (a scan process; idempotent)."""
    global _enabled
    _enabled = True


def stop_keeping() -> None:
    """Keep no more sessions (those kept stay until :func:`close_all`)."""
    global _enabled
    _enabled = False


def close_all() -> None:
    """Close every kept session."""
    with _lock:
        kept = [conn for stack in _kept.values() for conn, _ in stack]
        _kept.clear()
    for conn in kept:
        _close(conn)


def reap(now: float | None = None) -> int:
    """Close the sessions kept :data:`IDLE_SECONDS` or longer unused; how many were."""
    now = time.monotonic() if now is None else now
    with _lock:
        old = [conn for stack in _kept.values() for conn, at in stack if now - at >= IDLE_SECONDS]
        for stack in _kept.values():
            stack[:] = [(conn, at) for conn, at in stack if now - at < IDLE_SECONDS]
    for conn in old:
        _close(conn)
    return len(old)


def _reap_forever() -> None:
    while True:
        _reaper_wake.wait(min(IDLE_SECONDS / 4, 15.0))
        _reaper_wake.clear()
        reap()


def take(key: Any) -> Any | None:
    """A kept session for ``key``, or None (always when sessions are not kept here). The
    caller's first round trip on it is the check that it is alive: one the server ended fails
    there, and the caller closes it (:func:`release_broken`) and opens another."""
    if not _enabled:
        return None
    with _lock:
        stack = _kept.get(key)
        return stack.pop()[0] if stack else None


def give_back(key: Any, conn: Any) -> bool:
    """Reset ``conn`` and keep it for ``key``; False (the caller closes it) when sessions are
    not kept here, it is closed or busy, the reset fails, or enough are kept."""
    if not _enabled or conn.closed:
        return False
    if conn.info.transaction_status not in (psycopg2.extensions.TRANSACTION_STATUS_IDLE,
                                            psycopg2.extensions.TRANSACTION_STATUS_INTRANS,
                                            psycopg2.extensions.TRANSACTION_STATUS_INERROR):
        return False  # a query still running (interrupted), or the connection is broken
    try:
        conn.reset()  # rollback, then DISCARD ALL
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("select set_config('idle_session_timeout', %s, false)",
                        (SERVER_IDLE_TIMEOUT,))
    except psycopg2.Error:
        return False
    global _reaper
    with _lock:
        stack = _kept.setdefault(key, [])
        if len(stack) < PER_KEY and sum(map(len, _kept.values())) < TOTAL:
            stack.append((conn, time.monotonic()))
            if _reaper is None:
                _reaper = threading.Thread(target=_reap_forever, name="loader-sessions-reaper",
                                           daemon=True)
                _reaper.start()
            return True
    return False


def session(url: str, *, autocommit: bool = False) -> psycopg2.extensions.connection:
    """``db.connect(url, autocommit=...)``, or a kept session of the loader's for ``url``."""
    while (conn := take(("loader", url))) is not None:
        try:
            conn.autocommit = True
            with conn.cursor() as cur:  # alive? and no idle timeout while in use
                cur.execute("set idle_session_timeout = 0")
        except psycopg2.Error:
            release_broken(conn)
            continue
        conn.autocommit = autocommit
        return conn
    return db.connect(url, autocommit=autocommit)


def release(conn: psycopg2.extensions.connection, url: str) -> None:
    """Hand back a session from :func:`session` (kept, or closed)."""
    if not give_back(("loader", url), conn):
        _close(conn)


def release_broken(conn: Any) -> None:
    """Close a session that failed in use (never kept)."""
    _close(conn)


def _close(conn: Any) -> None:
    try:
        conn.close()
    except psycopg2.Error:
        pass


def _forget_in_child() -> None:
    """In a forked child: nothing kept, nothing kept from here on. The parent's sessions are set
    aside, never used nor closed here (psycopg2 does not end a session from a process other than
    the one that opened it when the child lets go of its copy)."""
    global _lock, _enabled, _reaper, _reaper_wake
    _lock = threading.Lock()
    _enabled = False
    _reaper, _reaper_wake = None, threading.Event()  # the parent's thread is not in the child
    _inherited.extend(conn for stack in _kept.values() for conn, _ in stack)
    _kept.clear()


os.register_at_fork(after_in_child=_forget_in_child)
