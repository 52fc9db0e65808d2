"""Fixtures for the sandbox tests: real servers on port 0 and OpenAPI validators built from
HubSpot's published specs in shared/hubspot-openapi/."""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from openapi_core import OpenAPI
from openapi_core.contrib.requests import RequestsOpenAPIRequest, RequestsOpenAPIResponse
from openapi_core.validation.response.validators import V30ResponseHeadersValidator

from loader.sandbox import SandboxServer
from tests.sandbox.sandbox_helpers import TOKENS, session_for

SPEC_DIR = Path(__file__).resolve().parents[2].parent / "shared" / "hubspot-openapi"
HUBSPOT_ORIGIN = "https://api.hubapi.com"


def _spec_dir() -> Path:
    for candidate in (SPEC_DIR, Path("/work/shared/hubspot-openapi")):
        if candidate.is_dir():
            return candidate
    pytest.skip("shared/hubspot-openapi specs not found")


class SpecValidator:
    """Validates a real ``requests`` exchange against one HubSpot spec file."""

    def __init__(self, api: OpenAPI) -> None:
        self.api = api

    def __call__(self, response: requests.Response, base_url: str) -> None:
        prepared = response.request.copy()
        assert prepared.url is not None
        # The specs' server is api.hubapi.com; validate the same path there.
        prepared.url = prepared.url.replace(base_url, HUBSPOT_ORIGIN, 1)
        oreq = RequestsOpenAPIRequest(prepared)
        with warnings.catch_warnings():
            # openapi-core does not implement the oauth2 scheme and warns about it.
            warnings.filterwarnings("ignore", message="Unsupported scheme type")
            self.api.validate_request(oreq)
            oresp = RequestsOpenAPIResponse(response)
            if response.status_code == 204:
                # The spec declares 204 with an empty ``content`` map, which openapi-core's full
                # validator cannot read; check that 204 is documented, its headers, and that
                # the body really is empty.
                V30ResponseHeadersValidator(self.api.spec).validate(oreq, oresp)
                assert response.content == b""
            else:
                self.api.validate_response(oreq, oresp)


def _json_error_content(spec: dict[str, Any]) -> None:
    """The specs give error responses as ``*/*``, which openapi-core cannot parse (it would
    compare raw bytes with the ``Error`` object schema). Declare the same schema for
    ``application/json`` too, so error bodies are really validated. Nothing is loosened."""
    for resp in spec.get("components", {}).get("responses", {}).values():
        content = resp.get("content", {})
        if "*/*" in content and "application/json" not in content:
            content["application/json"] = content["*/*"]


@pytest.fixture(scope="session")
def specs() -> dict[str, SpecValidator]:
    """Validators for the deals (``/crm/v3/objects/deals`` paths), properties and pipelines
    specs. The deals spec already makes property values nullable, so no schema is patched
    for nulls; only error media types are (see ``_json_error_content``)."""
    d = _spec_dir()
    out = {}
    for name, rel in (("deals", "deals-v3-objects-deals-path/deals.json"),
                      ("properties", "properties.json"), ("pipelines", "pipelines.json")):
        spec = json.loads((d / rel).read_text())
        _json_error_content(spec)
        out[name] = SpecValidator(OpenAPI.from_dict(spec))
    return out


@pytest.fixture
def make_server() -> Iterator[Callable[..., SandboxServer]]:
    """Factory starting SandboxServers that are stopped after the test."""
    started: list[SandboxServer] = []

    def factory(portals: dict[str, str] | None = None, **kw: Any) -> SandboxServer:
        server = SandboxServer(portals or dict(TOKENS), **kw)
        server.start()
        started.append(server)
        return server

    yield factory
    for s in started:
        s.stop()


@pytest.fixture
def server(make_server: Callable[..., SandboxServer]) -> SandboxServer:
    """Two portals (acme, globex), 250 deals each, seed 7."""
    return make_server(deals=250, seed=7)


@pytest.fixture
def acme() -> Iterator[requests.Session]:
    """Session authenticated as the acme portal."""
    with session_for(TOKENS["acme"]) as s:
        yield s


@pytest.fixture
def globex() -> Iterator[requests.Session]:
    """Session authenticated as the globex portal."""
    with session_for(TOKENS["globex"]) as s:
        yield s
