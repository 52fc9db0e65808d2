"""The tenant-scoped data-access layer (loader/dal.py) and ``python -m loader deals``.

Two tenants are scanned from the sandbox and built by dbt; the DAL then reads as a LOGIN role
that is only a member of the NOLOGIN ``hubspot_analyst`` role (not owner, not superuser), so
row-level security is what scopes every answer. Each answer is compared with the same query run
by the owner with an explicit tenant filter.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import date, datetime
from pathlib import Path
from typing import Any

import psycopg2
import pytest

from loader import dal, db
from loader.sandbox import SandboxServer
from tests.conftest import query, unique_tenant, write_tenants_file


@pytest.fixture(scope="module")
def scanned(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Two tenants scanned and built; returns their ids and scan ids."""
    import sys

    tmp = tmp_path_factory.mktemp("dal")
    tenants = {unique_tenant("dala"): "tok-dal-a-0123456789", unique_tenant("dalb"):
               "tok-dal-b-0123456789"}
    env = {**os.environ, **write_tenants_file(tmp / "tenants.toml", tenants)}
    scans = {}
    with SandboxServer(portals=tenants, deals=160, seed=41) as sandbox:
        env["HUBSPOT_API_BASE_URL"] = sandbox.base_url
        out = subprocess.run([sys.executable, "-m", "loader", "run", "--all", "--no-transform",
                              "--json"], env=env, cwd=tmp, capture_output=True, text=True,
                             timeout=300)
        assert out.returncode == 0, out.stderr
        for result in json.loads(out.stdout[: out.stdout.rindex("]") + 1]):
            scans[result["tenant_id"]] = result["scan_id"]
    views = ["+deals_by_stage", "+pipeline_stage_summary", "+closed_deals_by_month"]
    built = subprocess.run([sys.executable, "-m", "loader", "dbt", "run", "--select", *views],
                           env=env, cwd=tmp,
                           capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stdout[-3000:]
    a, b = list(tenants)
    return {"a": a, "b": b, "scan_a": scans[a], "scan_b": scans[b]}


@pytest.fixture(scope="module")
def reader_role(scanned: dict[str, Any]) -> str:
    return f"dal_reader_{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def reader_url(database_url: str, reader_role: str) -> Iterator[str]:
    """A LOGIN role that is a member of hubspot_analyst, and a URL connecting as it."""
    role = reader_role
    admin = psycopg2.connect(database_url)
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(f"create role {role} login nosuperuser nobypassrls in role hubspot_analyst")
    params = db.connection_params(database_url)
    if params.host.startswith("/"):
        url = f"postgresql://{role}@/{params.dbname}?host={params.host}&port={params.port}"
    else:
        url = f"postgresql://{role}@{params.host}:{params.port}/{params.dbname}"
    try:
        yield url
    finally:
        with admin.cursor() as cur:
            cur.execute(f"drop role if exists {role}")
        admin.close()


def _owner(db_conn, sql: str, *params: Any) -> list[tuple]:
    return query(db_conn, sql, params)


def _all_pages(reader: dal.DealReader, filters: dal.DealFilter, limit: int) -> list[dict]:
    rows, cursor, pages = [], None, 0
    while True:
        page = reader.deals(filters, limit=limit, after=cursor)
        rows += page.rows
        pages += 1
        assert len(page.rows) <= limit
        if page.next_cursor is None:
            return rows
        assert len(page.rows) == limit
        cursor = page.next_cursor
        assert pages < 1000


def test_rls_scopes_the_analyst_role_to_the_transaction_tenant(
    scanned: dict[str, Any], reader_url: str, db_conn
) -> None:
    a, b = scanned["a"], scanned["b"]
    total_a = _owner(db_conn, "select count(*) from analytics.deals where _tenant_id = %s", a)[0][0]
    assert total_a > 100
    conn = psycopg2.connect(reader_url)
    try:
        with conn, conn.cursor() as cur:
            cur.execute("select rolsuper, rolbypassrls from pg_roles where rolname = current_user")
            assert cur.fetchone() == (False, False)
            cur.execute("select count(*) from analytics.deals")
            assert cur.fetchone() == (0,)  # no tenant set: nothing
        with conn, conn.cursor() as cur:
            cur.execute("select set_config('app.current_tenant_id', %s, true)", (a,))
            cur.execute("select count(*), count(distinct _tenant_id) from analytics.deals")
            assert cur.fetchone() == (total_a, 1)
            cur.execute("select count(*) from analytics.deals where _tenant_id = %s", (b,))
            assert cur.fetchone() == (0,)  # asking for another tenant by name does not help
        with conn, conn.cursor() as cur:  # the setting ended with its transaction
            cur.execute("select count(*) from analytics.deals")
            assert cur.fetchone() == (0,)
        with conn, conn.cursor() as cur:
            with pytest.raises(psycopg2.errors.InsufficientPrivilege):
                cur.execute("select count(*) from raw_hubspot.deals")
    finally:
        conn.close()


def test_dal_answers_the_seed_queries_for_its_tenant_only(
    scanned: dict[str, Any], reader_url: str, db_conn
) -> None:
    a = scanned["a"]
    with dal.DealReader(a, url=reader_url) as reader:
        # Paginated deals (keyset): every live deal once, newest created first.
        rows = _all_pages(reader, dal.DealFilter(), limit=37)
        expected = _owner(
            db_conn, "select id from analytics.deals where _tenant_id = %s and not archived "
                     "order by coalesce(createdate, '-infinity') desc, id desc", a)
        assert [r["id"] for r in rows] == [e[0] for e in expected]

        # Deals of a scan (archived included); another tenant's scan shows nothing.
        of_scan = _all_pages(reader, dal.DealFilter(scan_id=scanned["scan_a"],
                                                    include_archived=True), limit=50)
        assert len(of_scan) == _owner(
            db_conn, "select count(*) from analytics.deals where _tenant_id = %s and "
                     "_scan_id = %s", a, scanned["scan_a"])[0][0] > 0
        assert reader.deals_of_scan(scanned["scan_b"]).rows == []

        # Counts by stage.
        by_stage = {r["dealstage"]: r["deal_count"] for r in reader.count_by_stage()}
        assert by_stage == dict(_owner(
            db_conn, "select dealstage, count(*) from analytics.deals where _tenant_id = %s "
                     "and not archived group by dealstage", a))

        # Name search: a word of one deal's name, case-insensitive.
        name = next(r["dealname"] for r in rows if r["dealname"] and len(r["dealname"]) > 4)
        word = name.split()[0].upper()
        found = reader.search_by_name(word, limit=1000).rows
        assert {r["id"] for r in found} == {i for (i,) in _owner(
            db_conn, "select id from analytics.deals where _tenant_id = %s and not archived "
                     "and dealname ilike %s", a, f"%{word}%")}
        assert found
        literal = reader.search_by_name("%", limit=1000).rows  # '%' is a character, not all
        assert len(literal) == _owner(
            db_conn, "select count(*) from analytics.deals where _tenant_id = %s and not "
                     "archived and strpos(dealname, '%%') > 0", a)[0][0] < len(rows)

        # Close-date range, half-open.
        start, end = date(2024, 1, 1), date(2025, 7, 1)
        ranged = _all_pages(reader, dal.DealFilter(date_from=start, date_to=end), limit=100)
        assert sorted(r["id"] for r in ranged) == sorted(i for (i,) in _owner(
            db_conn, "select id from analytics.deals where _tenant_id = %s and not archived "
                     "and closedate >= %s and closedate < %s", a, start, end))

        # Pipeline x stage.
        summary = {(r["pipeline"], r["dealstage"]): r["deal_count"]
                   for r in reader.pipeline_stage_summary()}
        assert summary == {(p, s): n for p, s, n in _owner(
            db_conn, "select pipeline, dealstage, count(*) from analytics.deals where "
                     "_tenant_id = %s and not archived group by 1, 2", a)}
        one = reader.pipeline_stage_summary("default")
        assert one and {r["pipeline"] for r in one} == {"default"}

        # Closed deals by month.
        months = {r["month"]: r["closed_deals"] for r in reader.closed_by_month()}
        assert months == dict(_owner(
            db_conn, "select date_trunc('month', closedate), count(*) from analytics.deals "
                     "where _tenant_id = %s and closedate is not null and not archived "
                     "group by 1", a))
        recent = reader.closed_by_month(since=date(2025, 3, 15))
        assert recent and {r["month"] for r in recent} == {
            m for m in months if m >= datetime(2025, 3, 1)}

        # Custom property lookup.
        (region,) = _owner(db_conn, "select properties ->> 'custom_region' from analytics.deals "
                                    "where _tenant_id = %s and properties ->> 'custom_region' "
                                    "is not null limit 1", a)[0]
        with_region = _all_pages(
            reader, dal.DealFilter(properties={"custom_region": region}, include_archived=True),
            limit=100)
        assert sorted(r["id"] for r in with_region) == sorted(i for (i,) in _owner(
            db_conn, "select id from analytics.deals where _tenant_id = %s and "
                     "properties ->> 'custom_region' = %s", a, region))


def test_one_backend_serving_two_tenants_in_turn_keeps_them_apart(
    scanned: dict[str, Any], reader_url: str, db_conn
) -> None:
    """What a transaction-pooling pooler does: hand the same server session to another client
    between transactions. Nothing of one tenant's transaction may be left for the next."""
    a, b = scanned["a"], scanned["b"]
    counts = {t: _owner(db_conn, "select count(*) from analytics.deals where _tenant_id = %s "
                                 "and not archived", t)[0][0] for t in (a, b)}
    reader_a = dal.DealReader(a, url=reader_url)
    reader_b = dal.DealReader(b, url=reader_url)
    try:
        reader_a.deals(limit=1)
        reader_b._conn = reader_a._conn  # noqa: SLF001 - the shared backend
        for reader, tenant in ((reader_a, a), (reader_b, b), (reader_a, a), (reader_b, b)):
            seen = _all_pages(reader, dal.DealFilter(), limit=1000)
            assert len(seen) == counts[tenant]
        with reader_a._conn, reader_a._conn.cursor() as cur:  # noqa: SLF001
            cur.execute("select current_setting('app.current_tenant_id', true), current_user, "
                        "(select count(*) from pg_prepared_statements), "
                        "(select count(*) from analytics.deals)")
            setting, user, prepared, visible = cur.fetchone()
        assert setting in (None, "") and prepared == 0 and visible == 0
        assert user.startswith("dal_reader_")  # set local role ended with its transaction
    finally:
        reader_a.close()


def test_dal_as_the_owner_still_reads_through_rls(scanned: dict[str, Any], database_url: str,
                                                  db_conn) -> None:
    a = scanned["a"]
    with dal.DealReader(a, url=database_url) as reader:
        rows = _all_pages(reader, dal.DealFilter(include_archived=True), limit=500)
    assert {r["id"] for r in rows} == {i for (i,) in _owner(
        db_conn, "select id from analytics.deals where _tenant_id = %s", a)}


def test_bad_cursor_and_limit_are_one_line_errors(scanned: dict[str, Any], reader_url: str,
                                                  run_loader) -> None:
    with dal.DealReader(scanned["a"], url=reader_url) as reader:
        with pytest.raises(dal.UsageError, match="invalid page cursor"):
            reader.deals(after="not-a-cursor")
        with pytest.raises(dal.UsageError, match="limit"):
            reader.deals(limit=0)
    result = run_loader("deals", "--tenant", scanned["a"], "--after", "garbage!")
    assert result.returncode != 0
    assert len(result.stderr.strip().splitlines()) == 1 and "cursor" in result.stderr


def test_deals_command_prints_tenant_scoped_tables_and_json(
    scanned: dict[str, Any], run_loader, db_conn, tmp_path: Path
) -> None:
    a = scanned["a"]
    first = run_loader("deals", "--tenant", a, "--limit", "30", "--json")
    assert first.returncode == 0, first.stderr
    page = json.loads(first.stdout)
    assert page["tenant_id"] == a and len(page["deals"]) == 30 and page["next_cursor"]
    second = json.loads(run_loader("deals", "--tenant", a, "--limit", "30", "--after",
                                   page["next_cursor"], "--json").stdout)
    ids = [d["id"] for d in page["deals"] + second["deals"]]
    assert len(set(ids)) == 60
    assert set(ids) <= {i for (i,) in _owner(
        db_conn, "select id from analytics.deals where _tenant_id = %s", a)}

    by_stage = json.loads(run_loader("deals", "--tenant", a, "--by-stage", "--json").stdout)
    assert Counter({r["dealstage"]: r["deal_count"] for r in by_stage}) == Counter(dict(_owner(
        db_conn, "select dealstage, count(*) from analytics.deals where _tenant_id = %s "
                 "and not archived group by 1", a)))

    table = run_loader("deals", "--tenant", a, "--scan", scanned["scan_b"])
    assert table.returncode == 0 and "(0)" in table.stdout  # another tenant's scan: nothing
    human = run_loader("deals", "--tenant", a, "--closed-by-month")
    assert human.returncode == 0 and "closed deals by month" in human.stdout
    prop = run_loader("deals", "--tenant", a, "--property", "custom_region=nowhere-land",
                      "--json")
    assert json.loads(prop.stdout)["deals"] == []


@pytest.fixture(scope="module")
def pgbouncer_url(database_url: str, reader_url: str, reader_role: str) -> Iterator[str]:
    """A real PgBouncer in transaction pooling mode with ONE server connection, in front of the
    test database, for the reader role."""
    binary = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"
    if not os.path.exists(binary):
        pytest.skip("pgbouncer is not installed (apt-get install pgbouncer)")
    params = db.connection_params(database_url)
    folder = Path(tempfile.mkdtemp(prefix="pgbouncer-"))
    folder.chmod(0o755)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    (folder / "users.txt").write_text(f'"{reader_role}" ""\n')
    (folder / "pgbouncer.ini").write_text(
        f"[databases]\ndal = host={params.host} port={params.port} dbname={params.dbname}\n"
        f"[pgbouncer]\nlisten_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir =\n"
        f"auth_type = trust\nauth_file = {folder}/users.txt\npool_mode = transaction\n"
        "default_pool_size = 1\nmin_pool_size = 0\nmax_client_conn = 20\n"
        "server_reset_query =\n"
    )
    for name in ("users.txt", "pgbouncer.ini"):
        (folder / name).chmod(0o644)
    command = [binary, str(folder / "pgbouncer.ini")]
    if os.geteuid() == 0:  # pgbouncer refuses to run as root: run it as the server's user
        user = "pgserver" if params.host.startswith("/") else "postgres"
        try:
            pwd.getpwnam(user)
        except KeyError:
            pytest.skip(f"no user {user!r} to run pgbouncer as (it refuses to run as root)")
        command[1:1] = ["-u", user]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    out = proc.stdout.read().decode() if proc.stdout else ""
                    pytest.fail(f"pgbouncer did not start: {out[-1000:]}")
                time.sleep(0.05)
        yield f"postgresql://{reader_role}@127.0.0.1:{port}/dal"
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        shutil.rmtree(folder, ignore_errors=True)


def test_dal_behind_a_transaction_pooling_pgbouncer(
    scanned: dict[str, Any], pgbouncer_url: str, db_conn
) -> None:
    """Two tenants' readers and a bare client share PgBouncer's single server connection
    (pool_mode = transaction): each reader sees only its tenant, the bare client nothing."""
    a, b = scanned["a"], scanned["b"]
    counts = {t: _owner(db_conn, "select count(*) from analytics.deals where _tenant_id = %s "
                                 "and not archived", t)[0][0] for t in (a, b)}
    readers = {t: dal.DealReader(t, url=pgbouncer_url) for t in (a, b)}
    bare = psycopg2.connect(pgbouncer_url)
    try:
        pids = set()
        for _ in range(2):
            for tenant, reader in readers.items():
                assert len(_all_pages(reader, dal.DealFilter(), limit=40)) == counts[tenant]
                assert {r["deal_count"] for r in reader.count_by_stage()}
                with reader.transaction() as cur:
                    cur.execute("select pg_backend_pid() as pid")
                    pids.add(cur.fetchone()["pid"])
            with bare, bare.cursor() as cur:
                cur.execute("select count(*), current_setting('app.current_tenant_id', true), "
                            "pg_backend_pid() from analytics.deals")
                visible, setting, pid = cur.fetchone()
            assert visible == 0 and setting in (None, "")
            pids.add(pid)
        assert len(pids) == 1  # one server session served every transaction
    finally:
        bare.close()
        for reader in readers.values():
            reader.close()


def test_property_lookup_can_use_the_gin_index(scanned: dict[str, Any], db_conn) -> None:
    """The DAL's custom-property filter is ``properties @> ...``, which the GIN index serves
    (``properties ->> key = value`` could not). On these small tables the planner prefers the
    tenant index; with the tenant condition alone left out, the same predicate uses the GIN."""
    if not _owner(db_conn, "select 1 from pg_indexes where schemaname = 'analytics' and "
                           "indexname = 'idx_deals_properties_gin'"):
        pytest.skip("analytics.deals has no idx_deals_properties_gin")
    sql, params = dal.deals_query(dal.DealFilter(properties={"custom_region": "emea"}), 10)
    assert "properties @> %s::jsonb" in sql and '{"custom_region": "emea"}' in params
    with db_conn.cursor() as cur:
        cur.execute("begin")
        cur.execute("set local enable_seqscan = off")
        cur.execute("explain select id from analytics.deals where properties @> %s::jsonb",
                    ('{"custom_region": "emea"}',))
        plan = "\n".join(r[0] for r in cur.fetchall())
        cur.execute("rollback")
    assert "idx_deals_properties_gin" in plan, plan
