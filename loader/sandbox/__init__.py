"""HubSpot-compatible sandbox server (a stand-in for api.hubapi.com in tests and benchmarks).

See ``README.md`` in this package for endpoints, control API and the HubSpot behaviour it
reproduces.
"""

from loader.sandbox.cli import main
from loader.sandbox.portal import Portal
from loader.sandbox.server import SandboxServer

__all__ = ["Portal", "SandboxServer", "main"]
