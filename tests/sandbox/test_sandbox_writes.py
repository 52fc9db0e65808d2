"""Writes through the API and the Python helpers, custom properties, tenant separation."""

from __future__ import annotations

import time

import requests

from tests.sandbox.sandbox_helpers import walk

DEALS = "/crm/v3/objects/deals"


def _get(session: requests.Session, base: str, deal_id: str, **params: str) -> dict:
    r = session.get(f"{base}{DEALS}/{deal_id}", params=params)
    assert r.status_code == 200, r.text
    return r.json()


def test_create_update_bump_lastmodified_archive_does_not(server, acme):
    base = server.base_url
    before_ms = int(time.time() * 1000)
    r = acme.post(base + DEALS, json={"properties": {
        "dealname": "Überweisung GmbH – Q3 🚀", "amount": "12500",
        "dealstage": "93475813", "pipeline": "31457290"}})
    assert r.status_code == 201, r.text
    created = r.json()
    new_id = created["id"]
    assert int(new_id) > 10000000250
    assert created["properties"]["dealname"] == "Überweisung GmbH – Q3 🚀"
    assert created["createdAt"] == created["updatedAt"]
    full = _get(acme, base, new_id, properties="hs_is_closed,hs_deal_stage_probability")
    assert full["properties"] == {"hs_is_closed": "false", "hs_deal_stage_probability": "0.5"}

    r = acme.patch(f"{base}{DEALS}/{new_id}", json={"properties": {"dealstage": "93475815"}})
    assert r.status_code == 200
    updated = r.json()
    assert updated["updatedAt"] > created["updatedAt"]
    assert updated["properties"]["hs_lastmodifieddate"] == updated["updatedAt"]
    assert int(time.time() * 1000) >= before_ms
    won = _get(acme, base, new_id, properties="hs_is_closed_won",
               propertiesWithHistory="dealstage")
    assert won["properties"]["hs_is_closed_won"] == "true"
    assert [e["value"] for e in won["propertiesWithHistory"]["dealstage"]] == [
        "93475815", "93475813"]

    assert acme.delete(f"{base}{DEALS}/{new_id}").status_code == 204
    archived = _get(acme, base, new_id, archived="true")
    assert archived["archived"] is True
    assert archived["updatedAt"] == updated["updatedAt"]
    assert archived["archivedAt"] >= updated["updatedAt"]
    assert new_id not in [d["id"] for d in walk(acme, base, limit=100)]
    assert new_id in [d["id"] for d in walk(acme, base, limit=100, archived="true")]
    assert acme.patch(f"{base}{DEALS}/{new_id}",
                      json={"properties": {"amount": "1"}}).status_code == 404


def test_generated_deal_update_and_batch_archive(server, acme):
    base = server.base_url
    portal = server.portal("acme")
    a, b = portal.deal_ids()[:2]
    old = _get(acme, base, a)
    r = acme.patch(f"{base}{DEALS}/{a}", json={"properties": {"description": None,
                                                              "hs_priority": "high"}})
    assert r.status_code == 200
    now = _get(acme, base, a, properties="description,hs_priority,dealname")
    assert now["properties"]["description"] is None
    assert now["properties"]["hs_priority"] == "high"
    assert now["properties"]["dealname"] == old["properties"]["dealname"]
    assert now["updatedAt"] > old["updatedAt"]
    r = acme.post(f"{base}{DEALS}/batch/archive",
                  json={"inputs": [{"id": a}, {"id": b}, {"id": "19999999999"}]})
    assert r.status_code == 204
    assert {a, b} <= set(portal.deal_ids(archived=True))


def test_history_of_an_updated_generated_deal(server, acme):
    base = server.base_url
    deal_id = server.portal("acme").deal_ids()[0]
    before = _get(acme, base, deal_id, propertiesWithHistory="dealstage,amount")
    old_stages = before["propertiesWithHistory"]["dealstage"]
    new_stage = "closedlost" if before["properties"]["dealstage"] != "closedlost" else "closedwon"
    acme.patch(f"{base}{DEALS}/{deal_id}", json={"properties": {
        "dealstage": new_stage, "pipeline": "default"}})
    after = _get(acme, base, deal_id, propertiesWithHistory="dealstage")
    stages = after["propertiesWithHistory"]["dealstage"]
    assert stages[0]["value"] == new_stage and stages[0]["sourceType"] == "API"
    assert stages[0]["timestamp"] == after["updatedAt"]
    assert stages[1:] == old_stages


def test_write_validation(server, acme):
    base = server.base_url
    bad = [
        {"properties": {"no_such_property": "x"}},
        {"properties": {"dealstage": "not-a-stage"}},
        {"properties": {"hs_object_id": "5"}},
        {"properties": {"dealstage": "93475812"}},  # custom-pipeline stage in default pipeline
        {"nope": 1},
    ]
    for body in bad:
        r = acme.post(base + DEALS, json=body)
        assert r.status_code == 400, body
        assert r.json()["category"] == "VALIDATION_ERROR"
    assert acme.patch(f"{base}{DEALS}/19999999999",
                      json={"properties": {"amount": "1"}}).status_code == 404


def test_python_helpers(server, acme):
    base = server.base_url
    portal = server.portal("acme")
    new_id = portal.create_deal({"dealname": "Helper deal"}, at_ms=1_700_000_000_000)
    d = _get(acme, base, new_id)
    assert d["createdAt"] == "2023-11-14T22:13:20.000Z"
    portal.update_deal(new_id, {"amount": "5"}, at_ms=1_700_000_001_000)
    assert _get(acme, base, new_id)["updatedAt"] == "2023-11-14T22:13:21.000Z"
    assert portal.set_all_lastmodified(1_600_000_000_000) == portal.count
    stamps = {d["updatedAt"] for d in walk(acme, base, limit=100)}
    assert stamps == {"2020-09-13T12:26:40.000Z"}
    portal.update_deal(new_id, {"amount": "6"}, at_ms=1_700_000_002_000)
    assert _get(acme, base, new_id)["updatedAt"] == "2023-11-14T22:13:22.000Z"
    ids = portal.deal_ids()[:3]
    assert portal.set_all_lastmodified(1_650_000_000_000, ids=ids) == 3
    assert {_get(acme, base, i)["updatedAt"] for i in ids} == {"2022-04-15T05:20:00.000Z"}
    portal.archive_deal(ids[0], at_ms=1_700_000_000_000)
    assert portal.deal(ids[0])["archivedAt"] == "2023-11-14T22:13:20.000Z"


def test_thousand_custom_properties(make_server):
    server = make_server({"wide": "tok-wide"}, deals=30, custom_properties=1000)
    base = server.base_url
    s = requests.Session()
    s.headers["Authorization"] = "Bearer tok-wide"
    props = s.get(f"{base}/crm/v3/properties/deals").json()["results"]
    custom = [p for p in props if p["name"].startswith("custom_field_")]
    assert len(custom) == 1000
    assert all("hubspotDefined" not in p for p in custom)
    names = [p["name"] for p in custom]
    body = s.post(f"{base}{DEALS}/batch/read", json={
        "inputs": [{"id": "10000000001"}, {"id": "10000000002"}], "properties": names,
        "propertiesWithHistory": []}).json()
    for d in body["results"]:
        assert set(d["properties"]) == set(names)
        values = list(d["properties"].values())
        assert any(v is None for v in values) and any(v is not None for v in values)
    search = s.post(f"{base}{DEALS}/search", json={"filterGroups": [{"filters": [
        {"propertyName": "custom_field_0001", "operator": "HAS_PROPERTY"}]}],
        "properties": ["custom_field_0001"]}).json()
    assert search["total"] > 0
    assert all(d["properties"]["custom_field_0001"] for d in search["results"])
    added = server.portal("wide").add_custom_properties(2)
    assert added == ["custom_field_1001", "custom_field_1002"]
    assert len(s.get(f"{base}/crm/v3/properties/deals").json()["results"]) == len(props) + 2


def test_tenants_share_ids_but_not_data(server, acme, globex):
    base = server.base_url
    a = {d["id"]: d for d in walk(acme, base, limit=100, archived="false")}
    g = {d["id"]: d for d in walk(globex, base, limit=100)}
    shared = set(a) & set(g)
    assert len(shared) > 200
    assert sum(a[i]["properties"] != g[i]["properties"] for i in shared) == len(shared)
    target = sorted(shared)[0]
    acme.patch(f"{base}{DEALS}/{target}", json={"properties": {"dealname": "acme only"}})
    assert _get(acme, base, target)["properties"]["dealname"] == "acme only"
    assert _get(globex, base, target)["properties"]["dealname"] == g[target]["properties"][
        "dealname"]
    acme.delete(f"{base}{DEALS}/{target}")
    assert _get(globex, base, target)["archived"] is False
