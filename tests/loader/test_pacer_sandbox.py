"""The pacer against the sandbox's real rate limiter: steady state never trips a limit.

The sandbox runs HubSpot's limits on a scaled clock (``time_scale=0.1``: the ten-secondly window
is one second), so a few seconds cover many windows. Utilisation (how close to the limit we run)
is a speed figure and lives in ``make bench``; here only correctness: every request succeeds on
its first attempt — no 429 at all — while several threads share one portal's budget.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from loader.hubspot.helpers import HubSpotClient
from loader.hubspot.pacer import GENERAL, SEARCH
from loader.sandbox import SandboxServer

TOKEN = "tok-pace-0123456789"


@pytest.mark.embedded_only
@pytest.mark.parametrize("tier", ["free", "enterprise"])
def test_steady_state_requests_never_get_a_429(tier: str) -> None:
    with SandboxServer(portals={"p": TOKEN}, deals=300, seed=9) as sb:
        portal = sb.portal("p")
        portal.set_rate_limit(tier, time_scale=0.1)
        client = HubSpotClient(sb.base_url, TOKEN, "p")

        def one(_: int) -> int:
            return len(client.get("/crm/v3/pipelines/deals")["results"])

        with ThreadPoolExecutor(max_workers=4) as pool:
            answers = list(pool.map(one, range(450)))
        stats = portal.stats()
    assert all(n >= 1 for n in answers)
    assert stats["count_429"] == 0, stats["status_counts"]
    assert stats["requests_total"] == 450
    limit, interval = client.pacer.limit(GENERAL)
    assert (limit, interval) == ({"free": 100, "enterprise": 190}[tier], 1.0)


@pytest.mark.embedded_only
def test_search_stays_under_its_per_second_limit() -> None:
    with SandboxServer(portals={"p": TOKEN}, deals=300, seed=9) as sb:
        portal = sb.portal("p")
        portal.set_rate_limit("free", time_scale=0.1)
        client = HubSpotClient(sb.base_url, TOKEN, "p")
        # The pacer keeps HubSpot's 5 searches per second (no headers tell it otherwise); the
        # sandbox's scaled clock is stricter per wall second only if the pacer overshoots.
        portal.set_rate_limit("free", time_scale=1.0)
        body = {"filterGroups": [], "limit": 10}
        with ThreadPoolExecutor(max_workers=3) as pool:
            totals = list(pool.map(lambda _: client.post("/crm/v3/objects/deals/search",
                                                         body)["total"], range(20)))
        stats = portal.stats()
        live = len(portal.deal_ids())
    assert set(totals) == {live}
    assert stats["count_429"] == 0, stats["status_counts"]
    assert client.pacer.limit(SEARCH) == (5, 1.0)
