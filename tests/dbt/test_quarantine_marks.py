"""deals_quarantine checks each deal version once: its per-tenant marks
(``loader.deals_quarantine_marks``) say how far the builds have checked, whether or not the
versions had problems, so a clean tenant's history is not read again by every build. A scan
still running at build time is checked once it has finished; ``--full-refresh`` starts over."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from tests.dbt import raw_data
from tests.dbt.conftest import build_in_process, connect, fetch

T0 = datetime(2025, 6, 2, 9, tzinfo=UTC)
NAIVE = T0.replace(tzinfo=None)  # the marts keep UTC as timestamp without time zone

QUARANTINED = ("select _tenant_id, deal_id, scan_job_id, reason from analytics.deals_quarantine "
               "order by 1, 2, 3, 4")
MARKS = "select _tenant_id, checked_through from loader.deals_quarantine_marks order by 1"


def test_each_version_is_checked_once_and_a_running_scan_after_it_finishes(
    scratch_databases,  # type: ignore[no-untyped-def]
) -> None:
    url = scratch_databases("quarantine_marks")
    conn = raw_data.scanned(connect(url, autocommit=False),
                            {"job-a1": "acme", "job-b1": "beta"}, T0)
    raw_data.add_deal(conn, "job-a1", "acme", "1", T0, T0, amount="-5")
    raw_data.add_deal(conn, "job-a1", "acme", "2", T0 + timedelta(minutes=1), T0)
    raw_data.add_deal(conn, "job-b1", "beta", "1", T0, T0)  # beta: clean
    raw_data.add_deal(conn, "job-b1", "beta", "2", T0 + timedelta(minutes=2), T0)
    conn.close()

    build_in_process(url)
    assert fetch(url, QUARANTINED) == [("acme", "1", "job-a1", "amount:negative")]
    # Checked up to each tenant's latest extraction, the clean tenant's included.
    assert fetch(url, MARKS) == [("acme", NAIVE + timedelta(minutes=1)),
                                 ("beta", NAIVE + timedelta(minutes=2))]

    # A version already checked is not read again: changed in place behind the loader's back,
    # it stays as checked (before the marks, beta had no mark and all its versions were read by
    # every build: this one would have been quarantined now).
    with connect(url).cursor() as cur:
        cur.execute("update raw_hubspot.deals set properties = properties || "
                    "'{\"amount\": \"-1\"}' where _tenant_id = 'beta' and id = '1'")
    # A scan still running when the build starts: not checked yet, and the mark stays.
    conn = connect(url, autocommit=False)
    raw_data.add_scan_job(conn, "job-a2", "acme", status="running")
    raw_data.add_deal(conn, "job-a2", "acme", "3", T0 + timedelta(hours=1),
                      T0 + timedelta(hours=1), amount="N/A")
    conn.close()
    build_in_process(url)
    assert fetch(url, QUARANTINED) == [("acme", "1", "job-a1", "amount:negative")]
    assert fetch(url, MARKS)[0] == ("acme", NAIVE + timedelta(minutes=1))

    # Finished: the next build checks it.
    conn = connect(url, autocommit=False)
    raw_data.finish_scan_job(conn, "job-a2")
    conn.close()
    build_in_process(url)
    assert fetch(url, QUARANTINED) == [("acme", "1", "job-a1", "amount:negative"),
                                       ("acme", "3", "job-a2", "amount:unparseable")]
    assert fetch(url, MARKS)[0] == ("acme", NAIVE + timedelta(hours=1))

    # --full-refresh checks everything again (the version changed in place included) and sets
    # the marks again.
    build_in_process(url, "--full-refresh")
    assert fetch(url, QUARANTINED) == [("acme", "1", "job-a1", "amount:negative"),
                                       ("acme", "3", "job-a2", "amount:unparseable"),
                                       ("beta", "1", "job-b1", "amount:negative")]
    assert fetch(url, MARKS) == [("acme", NAIVE + timedelta(hours=1)),
                                 ("beta", NAIVE + timedelta(minutes=2))]
