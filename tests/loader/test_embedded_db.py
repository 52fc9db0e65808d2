"""The embedded PostgreSQL's own settings (``loader/db.py``): appended to its ``postgresql.conf``
once per data directory, in force from the first start, and left alone once there (a user's edit
of them stands)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import psycopg2
import pytest

from loader import db

pytestmark = pytest.mark.embedded_only  # about the embedded server itself


@pytest.fixture
def own_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A ``LOADER_HOME`` of its own (a second embedded server beside the session's)."""
    home = tmp_path / "home"
    home.mkdir()
    home.chmod(0o755)  # run as root, the server runs as another user
    monkeypatch.setenv("LOADER_HOME", str(home))
    monkeypatch.delenv("DATABASE_URL", raising=False)
    try:
        yield home
    finally:
        db.stop_embedded()


def _shared_buffers_mb(url: str) -> int:
    conn = psycopg2.connect(url)
    try:
        with conn.cursor() as cur:
            cur.execute("select setting::bigint * 8192 / 1048576 from pg_settings "
                        "where name = 'shared_buffers'")
            return int(cur.fetchone()[0])
    finally:
        conn.close()


def test_shared_buffers_are_a_quarter_of_memory_within_bounds() -> None:
    assert 128 <= db.embedded_shared_buffers_mb() <= 1024


def test_settings_are_in_force_from_the_first_start_and_appended_once(own_home: Path) -> None:
    url = db.embedded_url()
    assert _shared_buffers_mb(url) == db.embedded_shared_buffers_mb()

    assert db.stop_embedded()
    url = db.embedded_url()
    conf = (own_home / "pgdata" / "postgresql.conf").read_text(encoding="utf-8")
    assert conf.count(db.SETTINGS_MARKER) == 1
    assert _shared_buffers_mb(url) == db.embedded_shared_buffers_mb()


def test_a_users_edit_of_the_settings_stands(own_home: Path) -> None:
    db.embedded_url()
    assert db.stop_embedded()
    conf_path = own_home / "pgdata" / "postgresql.conf"
    conf = conf_path.read_text(encoding="utf-8")
    ours = f"shared_buffers = '{db.embedded_shared_buffers_mb()}MB'"
    assert ours in conf
    conf_path.write_text(conf.replace(ours, "shared_buffers = '136MB'"), encoding="utf-8")

    url = db.embedded_url()
    assert _shared_buffers_mb(url) == 136
    assert conf_path.read_text(encoding="utf-8").count(db.SETTINGS_MARKER) == 1
