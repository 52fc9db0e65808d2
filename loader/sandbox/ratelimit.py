"""HubSpot's per-portal rate limits: the ten-secondly rolling window, the daily cap, and the
search API's own per-second limit.

Windows are multiplied by ``time_scale`` so tests can use short windows (0.1 turns the
10 s window into 1 s). Rejected (429) requests do not consume quota.
"""

from __future__ import annotations

import math
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from loader.sandbox.errors import correlation_id

TEN_SECONDLY_WINDOW_S = 10.0
SEARCH_WINDOW_S = 1.0
SEARCH_PER_SECOND = 5
"""HubSpot: "The search endpoints are rate limited to five requests per second per account"."""

RETRY_AFTER_MODES = ("alternate", "always", "never")


@dataclass(frozen=True)
class Tier:
    """Limits of one HubSpot subscription tier (private apps)."""

    name: str
    ten_secondly: int
    daily: int


TIERS: dict[str, Tier] = {
    "free": Tier("free", 100, 250_000),
    "starter": Tier("starter", 100, 250_000),
    "pro": Tier("pro", 190, 625_000),
    "enterprise": Tier("enterprise", 190, 1_000_000),
}
TIER_CHOICES = ("off", *TIERS)


@dataclass
class Decision:
    """Outcome of a rate-limit check: response headers, and a 429 body when rejected."""

    headers: dict[str, str]
    body: dict[str, Any] | None = None

    @property
    def allowed(self) -> bool:
        """True when the request may proceed."""
        return self.body is None


class RateLimiter:
    """Rolling-window limiter for one portal. Not thread-safe: callers hold the portal lock."""

    def __init__(
        self, portal_id: str, tier: str = "off", time_scale: float = 1.0,
        retry_after: str = "alternate", clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.portal_id = portal_id
        self.clock = clock
        self._window: deque[float] = deque()
        self._search_window: deque[float] = deque()
        self.daily_used = 0
        self.rejections = 0
        self.tier: Tier | None = None
        self.time_scale = 1.0
        self.retry_after = "alternate"
        self.configure(tier=tier, time_scale=time_scale, retry_after=retry_after)

    def configure(
        self, *, tier: str | None = None, time_scale: float | None = None,
        retry_after: str | None = None,
    ) -> None:
        """Change the tier ("off", "free", "starter", "pro", "enterprise"), scale or mode."""
        if tier is not None:
            if tier != "off" and tier not in TIERS:
                raise ValueError(f"unknown rate limit tier {tier!r}; choose from {TIER_CHOICES}")
            self.tier = TIERS.get(tier)
        if time_scale is not None:
            if not time_scale > 0:
                raise ValueError("time_scale must be > 0")
            self.time_scale = float(time_scale)
        if retry_after is not None:
            if retry_after not in RETRY_AFTER_MODES:
                raise ValueError(f"retry_after must be one of {RETRY_AFTER_MODES}")
            self.retry_after = retry_after

    def reset(self) -> None:
        """Forget all counted requests."""
        self._window.clear()
        self._search_window.clear()
        self.daily_used = 0
        self.rejections = 0

    @staticmethod
    def _purge(window: deque[float], now: float, span: float) -> None:
        limit = now - span
        while window and window[0] <= limit:
            window.popleft()

    def _headers(self, now: float) -> dict[str, str]:
        assert self.tier is not None
        span = TEN_SECONDLY_WINDOW_S * self.time_scale
        per_second = self.tier.ten_secondly // 10
        in_last_second = sum(1 for t in self._window if t > now - span / 10)
        return {
            "X-HubSpot-RateLimit-Daily": str(self.tier.daily),
            "X-HubSpot-RateLimit-Daily-Remaining": str(max(0, self.tier.daily - self.daily_used)),
            "X-HubSpot-RateLimit-Interval-Milliseconds": str(int(round(span * 1000))),
            "X-HubSpot-RateLimit-Max": str(self.tier.ten_secondly),
            "X-HubSpot-RateLimit-Remaining": str(max(0, self.tier.ten_secondly
                                                     - len(self._window))),
            "X-HubSpot-RateLimit-Secondly": str(per_second),
            "X-HubSpot-RateLimit-Secondly-Remaining": str(max(0, per_second - in_last_second)),
        }

    def _reject(self, headers: dict[str, str], message: str, policy: str,
                wait_s: float) -> Decision:
        self.rejections += 1
        if self.retry_after == "always" or (
            self.retry_after == "alternate" and self.rejections % 2 == 1
        ):
            headers["Retry-After"] = str(max(1, math.ceil(wait_s)))
        return Decision(headers, self.error_body(message, policy))

    def error_body(self, message: str, policy: str) -> dict[str, str]:
        """HubSpot's 429 body for ``policy`` (also served by injected 429 faults)."""
        return {
            "status": "error",
            "message": message,
            "errorType": "RATE_LIMIT",
            "correlationId": correlation_id(),
            "policyName": policy,
            "groupName": f"publicapi:private-app-{policy.lower()}:{self.portal_id}",
            "requestId": uuid.uuid4().hex,
        }

    def check(self, *, is_search: bool) -> Decision:
        """Count one request; return headers and, when over a limit, a 429 body.

        Search requests are exempt from the ten-secondly window (the spec marks them
        ``x-hubspot-rate-limit-exemptions: ten-secondly``) and get no rate-limit headers.
        """
        if self.tier is None:
            return Decision({})
        now = self.clock()
        if is_search:
            span = SEARCH_WINDOW_S * self.time_scale
            self._purge(self._search_window, now, span)
            if len(self._search_window) >= SEARCH_PER_SECOND:
                wait = self._search_window[0] + span - now
                return self._reject({}, "You have reached your secondly limit.", "SECONDLY",
                                    wait)
            self._search_window.append(now)
            self.daily_used += 1
            return Decision({})
        span = TEN_SECONDLY_WINDOW_S * self.time_scale
        self._purge(self._window, now, span)
        if self.daily_used >= self.tier.daily:
            headers = self._headers(now)
            return self._reject(headers, "You have reached your daily limit.", "DAILY",
                                86_400 * self.time_scale)
        if len(self._window) >= self.tier.ten_secondly:
            headers = self._headers(now)
            headers["X-HubSpot-RateLimit-Remaining"] = "0"
            wait = self._window[0] + span - now
            return self._reject(headers, "You have reached your ten_secondly_rolling limit.",
                                "TEN_SECONDLY_ROLLING", wait)
        self._window.append(now)
        self.daily_used += 1
        return Decision(self._headers(now))
