"""Client-side pacing that spends a HubSpot portal's request budget without tripping it.

HubSpot limits each portal per rolling window (``X-HubSpot-RateLimit-Max`` requests per
``X-HubSpot-RateLimit-Interval-Milliseconds``, e.g. 100 or 190 per 10 s) and the search API per
second (5/s, no headers). The pacer keeps a log of its own requests per policy and lets a request
go only while fewer than the limit are in the last window (plus a small safety margin), so in
steady state it runs at the limit and never gets a 429. A request reaches the server somewhere
between the moment it was sent and the moment its answer came back, so once answered it is logged
at the answer's time: the server's window can never hold more of ours than the pacer's (logging
send times alone let two 429s through in a thread-contended test). It learns the real
limit from the response headers, and if the server says fewer remain than it thinks (another client
uses the same portal), it waits for its oldest request to leave the window.
"""

from __future__ import annotations

import bisect
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

GENERAL = "general"
SEARCH = "search"


@dataclass
class _Window:
    limit: int | None
    interval: float
    sent: list[float] = field(default_factory=list)  # sorted times, in flight or answered


class RequestPacer:
    """Per-portal sliding-window pacer; thread-safe."""

    def __init__(
        self,
        *,
        general_limit: int | None = None,
        general_interval: float = 10.0,
        search_limit: int = 5,
        search_interval: float = 1.0,
        margin: float = 0.02,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._windows = {
            GENERAL: _Window(general_limit, general_interval),
            SEARCH: _Window(search_limit, search_interval),
        }
        self._margin = margin
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self.requests_sent = 0
        self.throttled_responses = 0
        self.waited_seconds = 0.0

    def acquire(self, policy: str) -> float:
        """Block until a request under ``policy`` may be sent, then log it as sent; returns the
        logged time, to hand to :meth:`answered` when the response is in."""
        window = self._windows[policy]
        while True:
            with self._lock:
                now = self._clock()
                horizon = window.interval * (1 + self._margin) + 0.005
                expired = bisect.bisect_right(window.sent, now - horizon)
                if expired:
                    del window.sent[:expired]
                if window.limit is None or len(window.sent) < window.limit:
                    window.sent.append(now)
                    self.requests_sent += 1
                    return now
                delay = window.sent[0] + horizon - now
            self.waited_seconds += max(delay, 0.0)
            self._sleep(max(delay, 0.001))

    def answered(self, policy: str, sent_at: float) -> None:
        """The request logged at ``sent_at`` was answered: log it at the answer's time."""
        window = self._windows[policy]
        with self._lock:
            index = bisect.bisect_left(window.sent, sent_at)
            if index < len(window.sent) and window.sent[index] == sent_at:
                del window.sent[index]
            bisect.insort(window.sent, self._clock())

    def observe(self, policy: str, status: int, headers: Mapping[str, str]) -> None:
        """Learn the portal's limits from an answer's HubSpot rate-limit headers (``headers``
        looked up case-insensitively, as HTTP header maps do); count 429s."""
        window = self._windows[policy]
        if status == 429:
            self.throttled_responses += 1
        maximum = headers.get("X-HubSpot-RateLimit-Max")
        interval = headers.get("X-HubSpot-RateLimit-Interval-Milliseconds")
        remaining = headers.get("X-HubSpot-RateLimit-Remaining")
        with self._lock:
            if maximum and maximum.isdigit() and int(maximum) > 0:
                window.limit = int(maximum)
            if interval and interval.isdigit() and int(interval) > 0:
                window.interval = int(interval) / 1000.0
            if remaining and remaining.lstrip("-").isdigit() and window.limit:
                # The server counts requests we did not send (other clients of this portal):
                # pretend those filled our log, so we wait for the window to make room.
                ours_left = window.limit - len(window.sent)
                extra = ours_left - max(int(remaining), 0)
                now = self._clock()
                for _ in range(max(extra, 0)):
                    bisect.insort(window.sent, now)

    def limit(self, policy: str) -> tuple[int | None, float]:
        """The (limit, interval seconds) currently in force for ``policy``."""
        window = self._windows[policy]
        return window.limit, window.interval


def policy_for(url: str) -> str:
    """Which rate-limit policy a request URL falls under."""
    return SEARCH if url.split("?", 1)[0].rstrip("/").endswith("/search") else GENERAL
