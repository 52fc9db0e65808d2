"""The unauthenticated /_sandbox control API and the command line."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import requests

REPO = Path(__file__).resolve().parents[2]
DEALS = "/crm/v3/objects/deals"


def test_control_endpoints(server, acme):
    base = server.base_url
    ctl = f"{base}/_sandbox/portals/acme"
    assert requests.get(f"{base}/_sandbox/health").json() == {"status": "ok"}
    assert requests.get(f"{base}/_sandbox/portals").json() == {
        "acme": {"deals_total": 250}, "globex": {"deals_total": 250}}

    r = requests.post(f"{ctl}/deals", json={"properties": {"dealname": "From control"},
                                            "at_ms": 1_700_000_000_000})
    assert r.status_code == 201
    new_id = r.json()["id"]
    seen = acme.get(f"{base}{DEALS}/{new_id}", params={"properties": "dealname"}).json()
    assert seen["properties"] == {"dealname": "From control"}
    assert seen["createdAt"] == "2023-11-14T22:13:20.000Z"

    assert requests.patch(f"{ctl}/deals/{new_id}",
                          json={"properties": {"amount": "99"}}).status_code == 200
    assert requests.get(f"{ctl}/deals/{new_id}").json()["properties"]["amount"] == "99"
    assert requests.delete(f"{ctl}/deals/{new_id}").status_code == 204
    assert requests.get(f"{ctl}/deals/{new_id}").json()["archived"] is True

    r = requests.post(f"{ctl}/lastmodified", json={"ms": 1_600_000_000_000})
    assert r.json() == {"updated": 251}
    page = acme.get(base + DEALS, params={"limit": 5}).json()["results"]
    assert {d["updatedAt"] for d in page} == {"2020-09-13T12:26:40.000Z"}

    r = requests.post(f"{ctl}/custom-properties", json={"count": 2})
    assert r.json() == {"names": ["custom_field_0001", "custom_field_0002"]}

    stats = requests.get(f"{base}/_sandbox/stats").json()
    assert stats["portals"]["acme"]["requests_total"] == 2
    assert stats["portals"]["acme"]["custom_properties"] == 2
    assert requests.post(f"{ctl}/reset-stats").status_code == 204
    assert requests.get(f"{ctl}/stats").json()["requests_total"] == 0

    assert requests.get(f"{base}/_sandbox/portals/nobody/stats").status_code == 404
    assert requests.get(f"{ctl}/deals/123").status_code == 404
    assert requests.post(f"{ctl}/lastmodified", json={}).status_code == 400
    assert requests.patch(f"{ctl}/deals/10000000002",
                          json={"properties": {"nope": "1"}}).status_code == 400


def test_clear_cache_makes_the_next_request_render_its_page_again(server, acme):
    def cache() -> dict:
        return requests.get(f"{server.base_url}/_sandbox/stats").json()["response_cache"]

    params = {"limit": 20, "properties": "dealname,amount"}
    first = acme.get(server.base_url + DEALS, params=params)
    again = acme.get(server.base_url + DEALS, params=params)
    assert first.content == again.content
    assert (cache()["hits"], cache()["misses"]) == (1, 1) and cache()["bytes"] > 0
    assert requests.post(f"{server.base_url}/_sandbox/clear-cache").status_code == 204
    assert cache()["bytes"] == 0
    rendered = acme.get(server.base_url + DEALS, params=params)
    assert rendered.content == first.content  # the same page, rendered again
    assert (cache()["hits"], cache()["misses"]) == (1, 2)


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def test_cli_serves_until_sigterm():
    proc = subprocess.Popen(
        [sys.executable, "-m", "loader.sandbox", "--port", "0", "--portal", "acme=tok-a",
         "--portal", "globex=tok-g", "--deals", "20", "--seed", "5", "--custom-properties",
         "3", "--rate-limit-tier", "pro", "--time-scale", "0.5", "--portal-deals", "globex=7"],
        cwd=REPO, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        assert line.startswith("sandbox listening on http://127.0.0.1:")
        base = line.rsplit(" ", 1)[1]
        r = requests.get(base + DEALS, params={"limit": 100},
                         headers={"Authorization": "Bearer tok-g"})
        assert r.status_code == 200
        assert len(r.json()["results"]) <= 7
        assert r.headers["X-HubSpot-RateLimit-Max"] == "190"
        assert r.headers["X-HubSpot-RateLimit-Interval-Milliseconds"] == "5000"
        stats = requests.get(base + "/_sandbox/stats").json()
        assert stats["portals"]["acme"]["deals_total"] == 20
        assert stats["portals"]["acme"]["custom_properties"] == 3
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=15)
    assert proc.returncode == 0, err


def test_cli_bad_arguments_exit_2():
    cases = [
        ["--portal", "no-equals-sign"],
        [],
        ["--portal", "a=b", "--rate-limit-tier", "gold"],
        ["--portal", "a=b", "--deals", "many"],
        ["--portal", "a=b", "--time-scale", "0"],
        ["--portal", "a=x", "--portal", "b=x"],
    ]
    for args in cases:
        proc = subprocess.run([sys.executable, "-m", "loader.sandbox", *args], cwd=REPO,
                              env=_env(), capture_output=True, text=True, timeout=30)
        assert proc.returncode == 2, (args, proc.stderr)
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and "error" in lines[0], (args, proc.stderr)
        assert proc.stdout == ""


def test_main_returns_2_in_process(capsys):
    from loader.sandbox import main

    assert main(["--portal", "broken"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
