"""Authentication (401), URL length (414) and rate limits (429)."""

from __future__ import annotations

import time
import uuid

import requests

from loader.sandbox.server import HUBSPOT_ORIGIN, MAX_URL_LENGTH
from tests.sandbox.sandbox_helpers import session_for

DEALS = "/crm/v3/objects/deals"


def _assert_auth_error(r: requests.Response) -> None:
    assert r.status_code == 401
    body = r.json()
    assert body["status"] == "error"
    assert body["category"] == "INVALID_AUTHENTICATION"
    assert body["message"].startswith("Authentication credentials not found")
    uuid.UUID(body["correlationId"])


def test_missing_and_wrong_tokens_get_401(server):
    base = server.base_url
    _assert_auth_error(requests.get(base + DEALS))
    _assert_auth_error(requests.get(base + DEALS, headers={"Authorization": "Bearer nope"}))
    _assert_auth_error(requests.get(base + DEALS, headers={"Authorization": "Basic tok-acme"}))
    _assert_auth_error(requests.post(base + DEALS + "/search", json={}))
    assert server.stats()["count_401"] == 4
    assert server.portal("acme").requests_total == 0


def test_url_length_limit(server, acme):
    base = server.base_url
    prefix = DEALS + "?limit=1&properties=dealname,"
    room = MAX_URL_LENGTH - len(HUBSPOT_ORIGIN) - len(prefix)
    ok = acme.get(base + prefix + "x" * room)
    assert ok.status_code == 200
    assert set(ok.json()["results"][0]["properties"]) == {"dealname"}
    too_long = acme.get(base + prefix + "x" * (room + 1))
    assert too_long.status_code == 414
    assert "414" in too_long.text
    assert server.portal("acme").stats()["count_414"] == 1


def test_many_custom_properties_overflow_the_url(make_server):
    server = make_server({"wide": "tok-wide"}, deals=5, custom_properties=1000)
    with session_for("tok-wide") as s:
        names = [p["name"] for p in
                 s.get(server.base_url + "/crm/v3/properties/deals").json()["results"]]
        r = s.get(server.base_url + DEALS, params={"properties": ",".join(names)})
        assert r.status_code == 414
        # The same selection works through a POST body.
        r = s.post(server.base_url + DEALS + "/search", json={"properties": names, "limit": 5})
        assert r.status_code == 200
        assert len(r.json()["results"][0]["properties"]) == len(names)


def test_rate_limit_headers_when_enabled(make_server):
    server = make_server(deals=20, rate_limit_tier="pro")
    with session_for("tok-acme") as s:
        first = s.get(server.base_url + DEALS)
        second = s.get(server.base_url + DEALS)
    for r in (first, second):
        assert r.headers["X-HubSpot-RateLimit-Max"] == "190"
        assert r.headers["X-HubSpot-RateLimit-Interval-Milliseconds"] == "10000"
        assert r.headers["X-HubSpot-RateLimit-Daily"] == "625000"
    assert int(first.headers["X-HubSpot-RateLimit-Remaining"]) == 189
    assert int(second.headers["X-HubSpot-RateLimit-Remaining"]) == 188
    assert int(second.headers["X-HubSpot-RateLimit-Daily-Remaining"]) == 624998


def test_rate_limits_off_by_default(server, acme):
    r = acme.get(server.base_url + DEALS)
    assert not any(h.lower().startswith("x-hubspot-ratelimit") for h in r.headers)


def test_ten_secondly_window_429_and_recovery(make_server):
    server = make_server(deals=20, rate_limit_tier="free", time_scale=0.2)  # 2 s window
    base = server.base_url
    portal = server.portal("acme")
    with session_for("tok-acme") as s:
        start = time.monotonic()
        statuses = [s.get(base + DEALS, params={"limit": 1}).status_code for _ in range(100)]
        assert time.monotonic() - start < 2.0, "machine too slow for the scaled window"
        assert statuses == [200] * 100
        r1 = s.get(base + DEALS)
        r2 = s.get(base + DEALS)
        for r in (r1, r2):
            assert r.status_code == 429
            body = r.json()
            assert body["status"] == "error"
            assert body["errorType"] == "RATE_LIMIT"
            assert body["policyName"] == "TEN_SECONDLY_ROLLING"
            assert body["message"] == "You have reached your ten_secondly_rolling limit."
            uuid.UUID(body["correlationId"])
            assert r.headers["X-HubSpot-RateLimit-Max"] == "100"
            assert r.headers["X-HubSpot-RateLimit-Remaining"] == "0"
            assert r.headers["X-HubSpot-RateLimit-Interval-Milliseconds"] == "2000"
        # Retry-After alternates: present on the first 429, absent on the second.
        assert int(r1.headers["Retry-After"]) >= 1
        assert "Retry-After" not in r2.headers
        # Search has its own limit and is exempt from the ten-secondly window.
        assert s.post(base + DEALS + "/search", json={}).status_code == 200
        assert portal.count_429 == 2
        time.sleep(2.05)
        assert s.get(base + DEALS).status_code == 200


def test_search_secondly_limit(make_server):
    server = make_server(deals=20, rate_limit_tier="free")
    base = server.base_url
    with session_for("tok-acme") as s:
        responses = [s.post(base + DEALS + "/search", json={"limit": 1}) for _ in range(6)]
    assert [r.status_code for r in responses[:5]] == [200] * 5
    last = responses[5]
    assert last.status_code == 429
    body = last.json()
    assert body["policyName"] == "SECONDLY"
    assert body["errorType"] == "RATE_LIMIT"
    for r in responses:
        assert not any(h.lower().startswith("x-hubspot-ratelimit") for h in r.headers)
    assert server.portal("acme").count_429 == 1
    assert server.portal("globex").count_429 == 0


def test_retry_after_modes_and_http_control(make_server):
    server = make_server(deals=20)
    base = server.base_url
    r = requests.post(f"{base}/_sandbox/portals/acme/ratelimit",
                      json={"tier": "free", "time_scale": 0.5, "retry_after": "always"})
    assert r.status_code == 200 and r.json() == {"tier": "free", "time_scale": 0.5}
    with session_for("tok-acme") as s:
        for _ in range(100):
            assert s.get(base + DEALS, params={"limit": 1}).status_code == 200
        limited = [s.get(base + DEALS) for _ in range(3)]
        assert all(r.status_code == 429 and "Retry-After" in r.headers for r in limited)
        requests.post(f"{base}/_sandbox/portals/acme/ratelimit",
                      json={"retry_after": "never", "reset": False})
        assert "Retry-After" not in s.get(base + DEALS).headers
        requests.post(f"{base}/_sandbox/portals/acme/ratelimit", json={"tier": "off"})
        assert s.get(base + DEALS).status_code == 200
    stats = requests.get(f"{base}/_sandbox/stats").json()
    assert stats["portals"]["acme"]["count_429"] == 4
    assert requests.post(f"{base}/_sandbox/portals/acme/ratelimit",
                         json={"tier": "platinum"}).status_code == 400
    assert requests.post(f"{base}/_sandbox/portals/nobody/ratelimit",
                         json={"tier": "free"}).status_code == 404
