"""The request pacer's arithmetic, on a simulated clock (its real use is in the sandbox tests)."""

from __future__ import annotations

from urllib3 import HTTPHeaderDict

from loader.hubspot.pacer import GENERAL, SEARCH, RequestPacer, policy_for


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def _headers(headers: dict[str, str]) -> HTTPHeaderDict:
    """Response headers as the client hands them over (urllib3's case-insensitive map)."""
    return HTTPHeaderDict(headers)


def test_never_more_than_the_limit_in_any_window_and_close_to_it() -> None:
    clock = FakeClock()
    pacer = RequestPacer(general_limit=100, general_interval=10.0, clock=clock, sleep=clock.sleep)
    sent = []
    for _ in range(1000):
        pacer.acquire(GENERAL)
        sent.append(clock.now)
    # no 10-second window holds more than 100 sends
    j = 0
    for i in range(len(sent)):
        while sent[i] - sent[j] >= 10.0:
            j += 1
        assert i - j + 1 <= 100
    # and the budget is used: 1000 requests take just under 10 windows
    assert sent[-1] < 9 * 10.0 * 1.05


def test_learns_the_limit_from_headers_and_respects_remaining() -> None:
    clock = FakeClock()
    pacer = RequestPacer(clock=clock, sleep=clock.sleep)
    pacer.acquire(GENERAL)
    pacer.observe(GENERAL, 200, _headers({
        "x-hubspot-ratelimit-max": "190",
        "X-HubSpot-RateLimit-Interval-Milliseconds": "10000",
        "X-HubSpot-RateLimit-Remaining": "9",  # someone else used 180 already
    }))
    assert pacer.limit(GENERAL) == (190, 10.0)
    for _ in range(9):
        pacer.acquire(GENERAL)
    assert clock.now == 0.0
    pacer.acquire(GENERAL)  # the 11th must wait for the window to roll
    assert clock.now >= 10.0


def test_search_has_its_own_per_second_policy() -> None:
    assert policy_for("http://x/crm/v3/objects/deals/search") == SEARCH
    assert policy_for("http://x/crm/v3/objects/deals?limit=100") == GENERAL
    clock = FakeClock()
    pacer = RequestPacer(search_limit=5, clock=clock, sleep=clock.sleep)
    for _ in range(10):
        pacer.acquire(SEARCH)
    assert 1.0 <= clock.now < 1.2
    pacer.observe(SEARCH, 429, _headers({}))
    assert pacer.throttled_responses == 1
