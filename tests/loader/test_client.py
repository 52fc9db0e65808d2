"""The HubSpot client's transport against the sandbox on loopback: what is retried, how long it
waits, what it gives up on, and that its errors never carry the token."""

from __future__ import annotations

import gc
import socket
import threading
import time

import pytest

from loader.hubspot.helpers import (
    HubSpotClient,
    HubSpotError,
    InOrderCalls,
    WalkAhead,
    prefetched,
)
from loader.sandbox import SandboxServer

TOKEN = "tok-client-0123456789"
PIPELINES = "/crm/v3/pipelines/deals"
DEALS = "/crm/v3/objects/deals"

pytestmark = pytest.mark.embedded_only  # HTTP behaviour: no database involved


@pytest.fixture(scope="module")
def sandbox():
    with SandboxServer(portals={"p": TOKEN}, deals=120, seed=4) as sb:
        yield sb


@pytest.fixture
def portal(sandbox):
    portal = sandbox.portal("p")
    portal.clear_faults()
    portal.reset_stats()
    yield portal
    portal.clear_faults()


def _client(sandbox, **kw) -> HubSpotClient:
    return HubSpotClient(sandbox.base_url, TOKEN, "p", backoff_factor=0.01, **kw)


def test_5xx_and_429_are_retried_until_an_answer(sandbox, portal) -> None:
    portal.fail_next(2, status=503)
    portal.add_fault("status", status=429, count=1)
    client = _client(sandbox)
    assert client.get(PIPELINES)["results"]
    assert portal.stats()["requests_total"] == 4
    assert client.pacer.requests_sent == 4  # every attempt went through the pacer
    assert client.pacer.throttled_responses == 1


def test_retry_after_is_waited_for(sandbox, portal) -> None:
    # The sandbox's 429 storm puts Retry-After: 1 on every other 429 (the first included).
    portal.add_fault("status", status=429, count=1)
    started = time.monotonic()
    assert _client(sandbox).get(PIPELINES)["results"]
    assert time.monotonic() - started >= 1.0


def test_retry_after_never_waits_longer_than_the_maximum(sandbox, portal) -> None:
    portal.add_fault("status", status=429, count=1)
    started = time.monotonic()
    assert _client(sandbox, max_retry_delay=0.05).get(PIPELINES)["results"]
    assert time.monotonic() - started < 1.0


def test_gives_up_after_max_attempts_naming_status_and_tenant(sandbox, portal) -> None:
    portal.add_fault("status", status=502, body="html")
    with pytest.raises(HubSpotError) as failed:
        _client(sandbox, max_attempts=3).get(PIPELINES)
    assert str(failed.value) == (
        f"tenant p: GET {PIPELINES} still failing with 502 after 3 attempts")
    assert portal.stats()["requests_total"] == 3


@pytest.mark.parametrize("kind", ["truncate", "truncate_json"])
def test_a_body_cut_short_is_fetched_again(sandbox, portal, kind: str) -> None:
    portal.add_fault(kind, count=1, path=DEALS)
    page = _client(sandbox).get(DEALS, [("limit", "20")])
    assert len(page["results"]) == 20
    assert portal.stats()["requests_total"] == 2


def test_a_bad_token_fails_at_once_without_the_token(sandbox, portal) -> None:
    client = HubSpotClient(sandbox.base_url, "tok-wrong-9876543210", "p")
    with pytest.raises(HubSpotError) as failed:
        client.get(PIPELINES)
    message = str(failed.value)
    assert message.startswith("tenant p: HubSpot refused the access token (401")
    assert "tok-wrong" not in message and TOKEN not in message
    assert client.pacer.requests_sent == 1


def test_a_4xx_answer_is_reported_with_hubspots_message(sandbox, portal) -> None:
    with pytest.raises(HubSpotError) as failed:
        _client(sandbox).get(DEALS, [("limit", "0")])
    assert str(failed.value).startswith(f"tenant p: GET {DEALS} answered 400: ")
    assert "limit" in str(failed.value)
    assert portal.stats()["requests_total"] == 1


def test_an_unreachable_server_fails_after_retries_with_the_error_type() -> None:
    with socket.socket() as probe:  # a loopback port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    client = HubSpotClient(f"http://127.0.0.1:{port}", TOKEN, "p", max_attempts=2,
                           backoff_factor=0.01)
    with pytest.raises(HubSpotError) as failed:
        client.get(PIPELINES)
    assert str(failed.value) == (
        f"tenant p: GET {PIPELINES} failed after retries: NewConnectionError")
    assert client.pacer.requests_sent == 2


def test_threads_share_one_client(sandbox, portal) -> None:
    from concurrent.futures import ThreadPoolExecutor

    client = _client(sandbox)
    with ThreadPoolExecutor(max_workers=4) as pool:
        sizes = list(pool.map(
            lambda n: len(client.get(DEALS, [("limit", str(n))])["results"]), range(5, 13)))
    assert sizes == list(range(5, 13))
    assert portal.stats()["requests_total"] == 8


class _RecordingClient(HubSpotClient):
    """The client as it is, noting the ``properties`` each GET asked for."""

    def __init__(self, *args, **kw) -> None:
        super().__init__(*args, **kw)
        self.asked: list[str] = []

    def get(self, path, params=()):
        self.asked += [value for key, value in params if key == "properties"]
        return super().get(path, params)


def test_an_archived_walk_since_a_time_reads_ids_and_only_the_kept_deals_whole() -> None:
    """An incremental scan lands only the deals archived since its last pass: the walk asks for
    the ids alone and batch-reads the kept deals, which come out as a whole walk gives them."""
    with SandboxServer(portals={"a": TOKEN}, deals=400, seed=6) as sb:
        portal = sb.portal("a")
        live = sorted(portal.deal_ids(), key=int)
        now_ms = int(time.time() * 1000)
        for deal_id in live[:150]:
            portal.archive_deal(deal_id, at_ms=now_ms - 86_400_000)  # a day ago
        recent = live[150:160]
        for deal_id in recent:
            portal.archive_deal(deal_id, at_ms=now_ms)
        client = _RecordingClient(sb.base_url, TOKEN, "a")
        names = client.deal_property_names()
        whole = {d["id"]: d for page in client.list_deals(names, archived=True) for d in page}
        client.asked.clear()
        portal.reset_stats()
        kept_pages = list(client.list_deals(
            names, archived=True, archived_since_ms=now_ms - 3_600_000))
        kept = {d["id"]: d for page in kept_pages for d in page}
        by_path = portal.stats()["requests_by_path"]
    assert len(whole) >= 160 and set(kept) == set(recent)
    assert kept_pages and all(kept_pages)  # a page that keeps none is not handed out
    assert kept == {i: whole[i] for i in recent}  # every property, as the whole walk has them
    assert set(client.asked) == {"hs_object_id"}  # each page of the walk: the ids alone
    assert by_path["GET /crm/v3/objects/deals"] == -(-len(whole) // 100)  # pages of 100
    assert 1 <= by_path["POST /crm/v3/objects/deals/batch/read"] <= 2  # the pages kept ones are on


def test_a_batch_read_of_many_chunks_keeps_their_order_and_fails_whole(sandbox, portal) -> None:
    """Chunks of a batch read go out side by side (BATCH_READ_CONCURRENCY): the deals come back
    in the order of the chunks, as one after another would give them, and a chunk HubSpot
    refuses fails the whole read."""
    client = _client(sandbox)
    ids = sorted(portal.deal_ids(), key=int)[:110]  # three chunks of 50 with history
    one_by_one = [d for start in range(0, 110, 50)
                  for d in client.read_deals(ids[start:start + 50], ["dealname"],
                                             history_of=("dealstage",))]
    portal.reset_stats()
    together = client.read_deals(ids, ["dealname"], history_of=("dealstage",))
    assert portal.stats()["requests_total"] == 3
    assert together == one_by_one and [d["id"] for d in together] == ids
    assert all(d["propertiesWithHistory"]["dealstage"] for d in together)
    portal.add_fault("status", status=503, path="/crm/v3/objects/deals/batch/read", count=1)
    with pytest.raises(HubSpotError, match="still failing with 503"):
        _client(sandbox, max_attempts=1).read_deals(ids, ["dealname"], history_of=("dealstage",))


def _walk_failing_at(fail_at: int, taken: list[int]):
    """Items 0, 1, ... (each noted in ``taken`` when fetched) until ``fail_at`` fails."""
    for n in range(fail_at + 1):
        taken.append(n)
        if n == fail_at:
            raise HubSpotError(f"page {n} failed")
        yield n


def test_prefetched_items_come_in_order_one_ahead_with_errors_where_they_happened() -> None:
    taken: list[int] = []
    items = prefetched(_walk_failing_at(3, taken))
    assert next(items) == 0
    assert next(items) == 1
    deadline = time.monotonic() + 10
    while len(taken) < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.05)
    assert taken == [0, 1, 2]  # one ahead of the caller, not more
    assert next(items) == 2
    with pytest.raises(HubSpotError, match="page 3 failed"):
        next(items)

    closed: list[bool] = []

    def endless():
        try:
            n = 0
            while True:
                yield n
                n += 1
        finally:
            closed.append(True)

    items = prefetched(endless())
    assert [next(items) for _ in range(3)] == [0, 1, 2]
    items.close()
    assert closed == [True]  # closing stops the walk
    assert list(prefetched(iter([]))) == []


def test_in_order_calls_run_in_one_thread_and_answer_in_order_with_what_they_raised() -> None:
    calls = InOrderCalls("calls-test")
    ran_in: list[str] = []

    def call(n: int) -> int:
        ran_in.append(threading.current_thread().name)
        if n == 2:
            raise ValueError("call 2 failed")
        time.sleep(0.01 * (3 - n))  # the earlier, the slower: answers still come in order
        return n * 10

    for n in range(4):
        calls.submit(call, n)
    assert calls.pending == 4
    assert [calls.answer(), calls.answer()] == [0, 10]
    with pytest.raises(ValueError, match="call 2 failed"):
        calls.answer()
    assert calls.answer() == 30 and calls.pending == 0
    assert calls.close() == []
    assert set(ran_in) == {"calls-test"}
    assert "calls-test" not in {t.name for t in threading.enumerate()}  # closed: gone
    # Closed with answers not taken: the calls are made, their answers taken, what they raised
    # returned.
    calls = InOrderCalls("calls-test-2")
    for n in (1, 2, 3):
        calls.submit(call, n)
    (raised,) = calls.close()
    assert isinstance(raised, ValueError) and calls.pending == 0
    assert "calls-test-2" not in {t.name for t in threading.enumerate()}


def _wait_until(check, seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not check() and time.monotonic() < deadline:
        time.sleep(0.01)


def test_a_walk_ahead_starts_at_once_holds_depth_items_and_raises_where_it_failed() -> None:
    taken: list[int] = []
    ahead = WalkAhead(_walk_failing_at(6, taken), depth=3)
    # Nobody asked yet: three items wait and the walk is at the fourth, waiting for room.
    _wait_until(lambda: len(taken) >= 4)
    time.sleep(0.3)
    assert taken == [0, 1, 2, 3]
    items = ahead.items()
    assert [next(items) for _ in range(6)] == [0, 1, 2, 3, 4, 5]
    with pytest.raises(HubSpotError, match="page 6 failed"):
        next(items)
    assert list(WalkAhead(iter([]), depth=2).items()) == []


def _endless(closed: list[bool], taken: list[int]):
    try:
        n = 0
        while True:
            taken.append(n)
            yield n
            n += 1
    finally:
        closed.append(True)


def test_a_walk_ahead_stops_when_stopped_closed_or_abandoned() -> None:
    def threads() -> int:
        return sum(t.name == "walk-test" for t in threading.enumerate())

    # stop(): the walk ends at its next item and closes its source.
    closed: list[bool] = []
    ahead = WalkAhead(_endless(closed, []), depth=2, name="walk-test")
    ahead.stop()
    _wait_until(lambda: closed == [True])
    assert closed == [True]

    # Closing the items early stops it too.
    closed = []
    items = WalkAhead(_endless(closed, []), depth=2, name="walk-test").items()
    assert [next(items) for _ in range(4)] == [0, 1, 2, 3]
    items.close()
    _wait_until(lambda: closed == [True])
    assert closed == [True]

    # A walk nobody takes from (the scan failed before it asked) ends once it is dropped.
    closed, taken = [], []
    ahead = WalkAhead(_endless(closed, taken), depth=2, name="walk-test")
    _wait_until(lambda: len(taken) >= 3)
    del ahead
    gc.collect()
    _wait_until(lambda: closed == [True])
    assert closed == [True]
    _wait_until(lambda: threads() == 0)
    assert threads() == 0
