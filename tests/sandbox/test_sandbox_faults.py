"""Fault injection: 5xx, delays, truncated bodies, wrong shapes; Python and HTTP control."""

from __future__ import annotations

import json
import time

import pytest
import requests

DEALS = "/crm/v3/objects/deals"


def _get(session: requests.Session, base: str) -> requests.Response:
    return session.get(base + DEALS, params={"limit": 20})


def test_fail_next_k(server, acme):
    portal = server.portal("acme")
    portal.fail_next(2, status=503)
    r1, r2, r3 = (_get(acme, server.base_url) for _ in range(3))
    assert (r1.status_code, r2.status_code, r3.status_code) == (503, 503, 200)
    assert r1.json()["status"] == "error"
    assert portal.faults_served == {"status:503": 2}
    assert portal.fault_rules() == []


def test_fail_every_nth_and_on_numbers(server, acme, globex):
    portal = server.portal("acme")
    portal.fail_every(3, status=500)
    statuses = [_get(acme, server.base_url).status_code for _ in range(7)]
    assert statuses == [200, 200, 500, 200, 200, 500, 200]
    # Faults are per portal.
    assert [_get(globex, server.base_url).status_code for _ in range(3)] == [200] * 3
    portal.clear_faults()
    portal.fail_on([9, 10], status=502)
    statuses = [_get(acme, server.base_url) for _ in range(4)]  # requests 8..11
    assert [r.status_code for r in statuses] == [200, 502, 502, 200]
    assert statuses[1].headers["Content-Type"].startswith("text/html")  # gateway page
    assert portal.faults_served == {"status:500": 2, "status:502": 2}


def test_status_fault_with_path_filter_and_504(server, acme):
    portal = server.portal("acme")
    portal.fail_next(1, status=504, path="/crm/v3/objects/deals/search")
    assert _get(acme, server.base_url).status_code == 200
    r = acme.post(server.base_url + DEALS + "/search", json={})
    assert r.status_code == 504
    assert acme.post(server.base_url + DEALS + "/search", json={}).status_code == 200


def test_slow_response(server, acme):
    server.portal("acme").slow_next(1, 0.4)
    start = time.monotonic()
    assert _get(acme, server.base_url).status_code == 200
    assert time.monotonic() - start >= 0.4
    start = time.monotonic()
    assert _get(acme, server.base_url).status_code == 200
    assert time.monotonic() - start < 0.4


def test_truncated_connection(server, acme):
    portal = server.portal("acme")
    portal.truncate_next(1, mode="connection")
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        _get(acme, server.base_url)
    assert _get(acme, server.base_url).status_code == 200  # the session recovers
    assert portal.faults_served == {"truncate": 1}


def test_truncated_json(server, acme):
    server.portal("acme").truncate_next(1, mode="json")
    r = _get(acme, server.base_url)
    assert r.status_code == 200
    assert r.headers["Content-Type"].startswith("application/json")
    assert int(r.headers["Content-Length"]) == len(r.content)
    with pytest.raises(json.JSONDecodeError):
        json.loads(r.content)


def test_wrong_shapes(server, acme):
    portal = server.portal("acme")
    portal.bad_shape_next(1, mode="json")
    portal.bad_shape_next(1, mode="html")
    r1 = _get(acme, server.base_url)
    assert r1.status_code == 200 and r1.json() == {"data": []}
    r2 = _get(acme, server.base_url)
    assert r2.status_code == 200 and r2.headers["Content-Type"].startswith("text/html")
    assert "results" in _get(acme, server.base_url).json()


def test_faults_over_http(server, acme):
    base = server.base_url
    ctl = f"{base}/_sandbox/portals/acme/faults"
    r = requests.post(ctl, json={"kind": "status", "next": 1, "status": 500})
    assert r.status_code == 201 and isinstance(r.json()["id"], int)
    requests.post(ctl, json={"kind": "bad_json", "on": [3]})
    assert len(requests.get(ctl).json()) == 2
    assert [_get(acme, base).status_code for _ in range(2)] == [500, 200]
    assert _get(acme, base).json() == {"data": []}
    requests.post(ctl, json={"kind": "status", "every": 1, "status": 503})
    assert _get(acme, base).status_code == 503
    assert requests.delete(ctl).status_code == 204
    assert _get(acme, base).status_code == 200
    assert requests.post(ctl, json={"kind": "explode"}).status_code == 400
    assert requests.post(ctl, json={"kind": "status", "status": 418}).status_code == 400
    stats = requests.get(f"{base}/_sandbox/portals/acme/stats").json()
    assert stats["faults_served"] == {"status:500": 1, "bad_json": 1, "status:503": 1}
    assert stats["requests_total"] == 5
    assert stats["requests_by_path"] == {"GET /crm/v3/objects/deals": 5}
    assert stats["status_counts"] == {"200": 3, "500": 1, "503": 1}
