"""Fault injection rules for one portal.

A rule has a *kind* (what goes wrong) and a *trigger* (which requests it hits):

kinds
    ``status``        answer with a 5xx (``status``: 500/502/503/504; JSON or HTML body) or a
                      429 in HubSpot's rate-limit shape (``policyName``; ``Retry-After`` on
                      every other one, as HubSpot sometimes leaves it out) — a 429 storm the
                      loader did not cause
    ``delay``         wait ``delay`` seconds, then answer normally (combines with other kinds)
    ``truncate``      declare the full Content-Length, send half the body, close the connection
    ``truncate_json`` a complete 200 response whose JSON body is cut in half
    ``bad_json``      a 200 with valid JSON that is not HubSpot's shape: ``{"data": []}``
    ``html``          a 200 with an HTML page instead of JSON

triggers (combinable)
    ``count``  fire at most this many times, then the rule is dropped ("the next K requests")
    ``every``  fire on every Nth request of the portal (request numbers are 1-based)
    ``on``     fire on these request numbers only
    ``path`` / ``method``  only requests whose path starts with ``path`` / with this method

A rule with no trigger fires on every matching request until cleared.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

FAULT_KINDS = ("status", "delay", "truncate", "truncate_json", "bad_json", "html")
FAULT_STATUSES = (429, 500, 502, 503, 504)


@dataclass
class FaultRule:
    """One fault rule; see the module docstring for the fields' meaning."""

    id: int
    kind: str
    status: int = 503
    delay: float = 0.0
    count: int | None = None
    every: int | None = None
    on: frozenset[int] = field(default_factory=frozenset)
    path: str | None = None
    method: str | None = None
    body: str | None = None
    served: int = 0

    def applies(self, number: int, method: str, path: str) -> bool:
        """Whether this rule fires for request ``number`` (does not consume it)."""
        if self.path is not None and not path.startswith(self.path):
            return False
        if self.method is not None and method.upper() != self.method.upper():
            return False
        if self.on and number not in self.on:
            return False
        if self.every and number % self.every != 0:
            return False
        return self.count is None or self.count > 0

    def to_json(self) -> dict[str, Any]:
        """JSON-friendly description of the rule."""
        return {
            "id": self.id, "kind": self.kind, "status": self.status, "delay": self.delay,
            "count": self.count, "every": self.every, "on": sorted(self.on), "path": self.path,
            "method": self.method, "body": self.body, "served": self.served,
        }


def make_rule(rule_id: int, kind: str, **kw: Any) -> FaultRule:
    """Validate arguments and build a rule. Raises ValueError on bad input."""
    if kind not in FAULT_KINDS:
        raise ValueError(f"unknown fault kind {kind!r}; choose from {FAULT_KINDS}")
    if "next" in kw:  # alias: "the next K requests"
        nxt = kw.pop("next")
        if kw.get("count") is None:
            kw["count"] = nxt
    allowed = {"status", "delay", "count", "every", "on", "path", "method", "body"}
    unknown = set(kw) - allowed
    if unknown:
        raise ValueError(f"unknown fault option(s): {', '.join(sorted(unknown))}")
    status = int(kw.get("status") or 503)
    if kind == "status" and status not in FAULT_STATUSES:
        raise ValueError(f"status must be one of {FAULT_STATUSES}")
    delay = float(kw.get("delay") or 0.0)
    if delay < 0:
        raise ValueError("delay must be >= 0")
    if kind == "delay" and delay <= 0:
        raise ValueError("a delay fault needs delay > 0")
    count = kw.get("count")
    if count is not None and int(count) < 1:
        raise ValueError("count must be >= 1")
    every = kw.get("every")
    if every is not None and int(every) < 1:
        raise ValueError("every must be >= 1")
    on = kw.get("on") or ()
    if isinstance(on, int):
        on = (on,)
    body = kw.get("body")
    if body not in (None, "json", "html"):
        raise ValueError("body must be 'json' or 'html'")
    return FaultRule(
        id=rule_id, kind=kind, status=status, delay=delay,
        count=None if count is None else int(count),
        every=None if every is None else int(every),
        on=frozenset(int(x) for x in on), path=kw.get("path"), method=kw.get("method"),
        body=body,
    )


class FaultInjector:
    """The ordered fault rules of one portal. Callers hold the portal lock."""

    def __init__(self) -> None:
        self.rules: list[FaultRule] = []
        self._next_id = 1
        self.served: dict[str, int] = {}

    def add(self, kind: str, **kw: Any) -> FaultRule:
        """Add a rule (see ``make_rule``) and return it."""
        rule = make_rule(self._next_id, kind, **kw)
        self._next_id += 1
        self.rules.append(rule)
        return rule

    def clear(self) -> None:
        """Remove every rule."""
        self.rules.clear()

    def pick(self, number: int, method: str, path: str) -> tuple[float, FaultRule | None]:
        """Consume the rules firing for this request.

        Returns the total delay of firing ``delay`` rules (and the delays of the chosen rule)
        and the first firing non-delay rule, if any.
        """
        delay = 0.0
        chosen: FaultRule | None = None
        for rule in self.rules:
            if rule.kind != "delay" and chosen is not None:
                continue
            if not rule.applies(number, method, path):
                continue
            rule.served += 1
            if rule.count is not None:
                rule.count -= 1
            key = f"{rule.kind}:{rule.status}" if rule.kind == "status" else rule.kind
            self.served[key] = self.served.get(key, 0) + 1
            delay += rule.delay
            if rule.kind != "delay":
                chosen = rule
        self.rules = [r for r in self.rules if r.count is None or r.count > 0]
        return delay, chosen
