"""Helpers shared by the sandbox tests."""

from __future__ import annotations

from typing import Any

import requests

TOKENS = {"acme": "tok-acme", "globex": "tok-globex"}


def session_for(token: str) -> requests.Session:
    """A requests session sending ``Authorization: Bearer token``."""
    s = requests.Session()
    s.headers["Authorization"] = f"Bearer {token}"
    return s


def walk(session: requests.Session, base_url: str, **params: Any) -> list[dict[str, Any]]:
    """Every deal of a portal through the list endpoint, following paging.next.after."""
    out: list[dict[str, Any]] = []
    after = None
    while True:
        p = dict(params)
        if after:
            p["after"] = after
        r = session.get(f"{base_url}/crm/v3/objects/deals", params=p)
        assert r.status_code == 200, r.text
        body = r.json()
        out.extend(body["results"])
        nxt = body.get("paging", {}).get("next")
        if not nxt:
            return out
        after = nxt["after"]
