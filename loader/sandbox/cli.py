"""Command line: ``python -m loader sandbox --port P --portal TENANT=TOKEN ...``."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from typing import Any, NoReturn

from loader.sandbox.ratelimit import RETRY_AFTER_MODES, TIER_CHOICES


class _UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise _UsageError(message)


def _pair(text: str, what: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key.strip() or not value.strip():
        raise _UsageError(f"{what} must look like KEY=VALUE, got {text!r}")
    return key.strip(), value.strip()


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the sandbox command."""
    p = _Parser(prog="loader sandbox", description="Run the HubSpot-compatible sandbox server.")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=0, help="port to bind; 0 picks a free one")
    p.add_argument("--portal", action="append", default=[], metavar="TENANT=TOKEN",
                   help="a portal and its bearer token (repeatable, at least one)")
    p.add_argument("--deals", type=int, default=100, help="generated deals per portal")
    p.add_argument("--portal-deals", action="append", default=[], metavar="TENANT=N",
                   help="deal count of one portal, overriding --deals (repeatable)")
    p.add_argument("--seed", type=int, default=0, help="data seed (default 0)")
    p.add_argument("--custom-properties", type=int, default=0, metavar="K",
                   help="extra custom deal properties per portal")
    p.add_argument("--rate-limit-tier", choices=TIER_CHOICES, default="off",
                   help="HubSpot rate limits to enforce (default off)")
    p.add_argument("--time-scale", type=float, default=1.0, metavar="F",
                   help="multiply rate-limit windows by F (0.1: 10 s window becomes 1 s)")
    p.add_argument("--retry-after", choices=RETRY_AFTER_MODES, default="alternate",
                   help="when 429s carry Retry-After (default: every other one)")
    return p


def main(argv: list[str] | None = None) -> int:
    """Run the sandbox until SIGINT/SIGTERM. Returns the exit code (2 on bad arguments)."""
    from loader.sandbox.server import SandboxServer

    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        portals = dict(_pair(s, "--portal") for s in args.portal)
        if not portals:
            raise _UsageError("at least one --portal TENANT=TOKEN is required")
        per_portal = {}
        for s in args.portal_deals:
            tenant, n = _pair(s, "--portal-deals")
            if not n.isdigit():
                raise _UsageError(f"--portal-deals count must be a number, got {n!r}")
            per_portal[tenant] = int(n)
        if args.deals < 0:
            raise _UsageError("--deals must be >= 0")
        if args.custom_properties < 0:
            raise _UsageError("--custom-properties must be >= 0")
        if not args.time_scale > 0:
            raise _UsageError("--time-scale must be > 0")
        if not 0 <= args.port <= 65535:
            raise _UsageError("--port must be between 0 and 65535")
        server = SandboxServer(
            portals, deals=args.deals, seed=args.seed, port=args.port, host=args.host,
            custom_properties=args.custom_properties, rate_limit_tier=args.rate_limit_tier,
            time_scale=args.time_scale, retry_after=args.retry_after,
            deals_per_portal=per_portal or None,
        )
    except (_UsageError, ValueError, TypeError) as exc:
        print(f"loader sandbox: error: {exc}", file=sys.stderr, flush=True)
        return 2
    except SystemExit as exc:  # --help
        return int(exc.code or 0)

    done = threading.Event()
    previous: dict[int, Any] = {}
    if threading.current_thread() is threading.main_thread():
        # Installed before the "listening" line, so a signal right after it is handled.
        def _stop(signum: int, frame: object) -> None:
            done.set()
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, _stop)
    try:
        try:
            server.start()
        except RuntimeError as exc:
            print(f"loader sandbox: error: {exc}", file=sys.stderr, flush=True)
            return 1
        print(f"sandbox listening on {server.base_url}", flush=True)
        try:
            while not done.wait(0.5):
                pass
        except KeyboardInterrupt:
            pass
        finally:
            server.stop()
        return 0
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
