"""Every sandbox endpoint, request and response, validated against HubSpot's OpenAPI specs."""

from __future__ import annotations

import pytest
import requests

from loader.sandbox import SandboxServer


def _first_archived(server: SandboxServer) -> str:
    ids = server.portal("acme").deal_ids(archived=True)
    assert ids, "seed 7 should give acme at least one archived deal"
    return ids[0]


def test_list_and_read_endpoints_match_spec(server, acme, specs):
    base = server.base_url
    v = specs["deals"]
    exchanges = [
        acme.get(f"{base}/crm/v3/objects/deals"),
        acme.get(f"{base}/crm/v3/objects/deals", params={
            "limit": 100, "properties": "amount,dealname,description,closedate,hs_priority"}),
        acme.get(f"{base}/crm/v3/objects/deals", params=[
            ("limit", "50"), ("properties", "amount"), ("properties", "hubspot_owner_id"),
            ("propertiesWithHistory", "dealstage,amount")]),
        acme.get(f"{base}/crm/v3/objects/deals", params={"archived": "true", "limit": 5}),
        acme.get(f"{base}/crm/v3/objects/deals/10000000002",
                 params={"properties": "dealname,amount", "propertiesWithHistory": "dealstage"}),
        acme.get(f"{base}/crm/v3/objects/deals/{_first_archived(server)}",
                 params={"archived": "true"}),
        acme.post(f"{base}/crm/v3/objects/deals/batch/read", json={
            "inputs": [{"id": "10000000003"}, {"id": "10000000004"}],
            "properties": ["dealname", "amount"], "propertiesWithHistory": ["dealstage"]}),
        acme.post(f"{base}/crm/v3/objects/deals/batch/read", json={
            "inputs": [{"id": "10000000003"}, {"id": "19999999999"}],
            "properties": ["dealname"], "propertiesWithHistory": []}),
    ]
    statuses = [r.status_code for r in exchanges]
    assert statuses == [200] * 7 + [207]
    nulls = 0
    for r in exchanges:
        v(r, base)
        for obj in r.json().get("results", []):
            nulls += sum(1 for val in obj["properties"].values() if val is None)
    assert nulls > 0, "real HubSpot responses carry null property values"


def test_search_matches_spec(server, acme, specs):
    base = server.base_url
    r = acme.post(f"{base}/crm/v3/objects/deals/search", json={
        "filterGroups": [{"filters": [
            {"propertyName": "hs_lastmodifieddate", "operator": "GTE", "value": "1577836800000"},
        ]}],
        "sorts": ["hs_lastmodifieddate"],
        "properties": ["dealname", "amount", "hs_lastmodifieddate"],
        "limit": 20,
        "after": "20",
    })
    assert r.status_code == 200, r.text
    specs["deals"](r, base)
    assert r.json()["paging"]["next"]["after"] == "40"


def test_writes_match_spec(server, acme, specs):
    base = server.base_url
    v = specs["deals"]
    created = acme.post(f"{base}/crm/v3/objects/deals", json={
        "properties": {"dealname": "Spec deal", "amount": "10", "dealstage": "qualifiedtobuy"}})
    assert created.status_code == 201, created.text
    v(created, base)
    new_id = created.json()["id"]
    patched = acme.patch(f"{base}/crm/v3/objects/deals/{new_id}",
                         json={"properties": {"amount": "20"}})
    assert patched.status_code == 200
    v(patched, base)
    deleted = acme.delete(f"{base}/crm/v3/objects/deals/{new_id}")
    assert deleted.status_code == 204
    v(deleted, base)
    batch = acme.post(f"{base}/crm/v3/objects/deals/batch/archive",
                      json={"inputs": [{"id": "10000000010"}]})
    assert batch.status_code == 204
    v(batch, base)


def test_error_bodies_match_spec(server, acme, specs):
    base = server.base_url
    v = specs["deals"]
    missing = acme.get(f"{base}/crm/v3/objects/deals/19999999999")
    assert missing.status_code == 404
    bad = acme.post(f"{base}/crm/v3/objects/deals/search", json={"limit": 500})
    assert bad.status_code == 400
    unauth = requests.get(f"{base}/crm/v3/objects/deals",
                          headers={"Authorization": "Bearer wrong"})
    assert unauth.status_code == 401
    for r in (missing, bad, unauth):
        v(r, base)
        assert r.json()["status"] == "error"


@pytest.mark.parametrize("object_type", ["deals", "0-3"])
def test_properties_match_spec(server, acme, specs, object_type):
    base = server.base_url
    r = acme.get(f"{base}/crm/v3/properties/{object_type}")
    assert r.status_code == 200
    specs["properties"](r, base)
    props = {p["name"]: p for p in r.json()["results"]}
    assert props["dealname"]["hubspotDefined"] is True
    assert "hubspotDefined" not in props["custom_region"]
    one = acme.get(f"{base}/crm/v3/properties/{object_type}/dealstage")
    assert one.status_code == 200
    specs["properties"](one, base)


def test_pipelines_match_spec(server, acme, specs):
    base = server.base_url
    v = specs["pipelines"]
    r = acme.get(f"{base}/crm/v3/pipelines/deals")
    assert r.status_code == 200
    v(r, base)
    pipelines = {p["id"]: p for p in r.json()["results"]}
    default = pipelines["default"]
    assert [s["id"] for s in default["stages"]] == [
        "appointmentscheduled", "qualifiedtobuy", "presentationscheduled",
        "decisionmakerboughtin", "contractsent", "closedwon", "closedlost"]
    assert default["stages"][0]["metadata"] == {"isClosed": "false", "probability": "0.2"}
    assert default["stages"][5]["metadata"] == {"isClosed": "true", "probability": "1.0"}
    custom = [p for p in pipelines.values() if p["id"] != "default"]
    assert custom and all(s["id"].isdigit() for p in custom for s in p["stages"])
    for path in (f"/crm/v3/pipelines/deals/{custom[0]['id']}",
                 f"/crm/v3/pipelines/deals/{custom[0]['id']}/stages"):
        one = acme.get(base + path)
        assert one.status_code == 200
        v(one, base)
