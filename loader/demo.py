"""``python -m loader demo``: the whole product on the embedded defaults, in one command.

Starts the HubSpot sandbox on a free loopback port with two demo tenants (``acme`` and
``globex``, which share deal ids), scans both into ``raw_hubspot``, runs ``dbt build`` and prints
deals per tenant and stage with the scan ids. Run it again and the scans are incremental: before
scanning, the demo edits a few deals in the sandbox (updates, an archive, new deals) so the
incremental scan has something to land.
"""

from __future__ import annotations

import os

from rich.console import Console
from rich.table import Table

from . import db, runner, transform
from .report import print_scan_results

DEMO_TENANTS = {"acme": "demo-token-acme", "globex": "demo-token-globex"}


def _env_name(tenant: str) -> str:
    return f"HUBSPOT_TOKEN_{tenant.upper()}"


def run_demo(deals: int = 2000, seed: int = 42) -> int:
    """Run the demo; return the exit code."""
    from .sandbox import SandboxServer

    console = Console()
    url = db.database_url()
    portals = DEMO_TENANTS
    with SandboxServer(portals=portals, deals=deals, seed=seed) as sandbox:
        console.print(f"[bold]sandbox[/] {sandbox.base_url} - tenants {', '.join(portals)}")
        console.print(f"[bold]database[/] {url}")
        os.environ["HUBSPOT_API_BASE_URL"] = sandbox.base_url
        for tenant, token in portals.items():
            os.environ[_env_name(tenant)] = token
        tenants_file = db.settings.loader_home() / "demo-tenants.toml"
        tenants_file.write_text(
            "".join(f'[[tenants]]\nid = "{t}"\ntoken_env = "{_env_name(t)}"\n\n' for t in portals)
        )
        os.environ["LOADER_TENANTS_FILE"] = str(tenants_file)
        if _already_scanned(url):
            changed = _change_portals(sandbox, portals)
            console.print(f"[bold]second run[/]: changed {changed} deals in the sandbox; "
                          "the scans below are incremental")
        options = [runner.ScanOptions(tenant_id=t, show_progress=console.is_terminal)
                   for t in portals]
        results = runner.run_many(options)
    print_scan_results(results)
    if not all(r.status == "completed" for r in results):
        return 1
    console.print("[bold]dbt build[/] ...")
    transform.build(url, quiet=True)
    _print_summary(console, url, [r.scan_id for r in results])
    return 0


def _already_scanned(url: str) -> bool:
    conn = db.connect(url)
    try:
        with conn, conn.cursor() as cur:
            cur.execute("select to_regclass('loader.scan_jobs') is not null")
            if not cur.fetchone()[0]:
                return False
            cur.execute("select count(*) from loader.scan_jobs where status = 'completed'")
            return bool(cur.fetchone()[0])
    finally:
        conn.close()


def _change_portals(sandbox, portals: dict[str, str]) -> int:  # type: ignore[no-untyped-def]
    """Edit a few deals per portal: 5 updates, 1 archive, 2 new deals."""
    changed = 0
    for tenant in portals:
        portal = sandbox.portal(tenant)
        ids = portal.deal_ids()[:8]
        for deal_id in ids[:5]:
            portal.update_deal(deal_id, {"pipeline": "default", "dealstage": "closedwon",
                                         "hs_next_step": "Invoice sent"})
        portal.archive_deal(ids[5])
        for n in range(2):
            portal.create_deal({"dealname": f"Demo follow-up {n + 1}", "amount": "1500",
                                "dealstage": "appointmentscheduled", "pipeline": "default"})
        changed += 8
    return changed


def _print_summary(console: Console, url: str, scan_ids: list[str]) -> None:
    conn = db.connect(url)
    try:
        with conn, conn.cursor() as cur:
            cur.execute(
                "select _tenant_id, count(*) filter (where not archived), "
                "count(*) filter (where archived), coalesce(sum(amount) filter "
                "(where not archived), 0) from analytics.deals group by 1 order by 1"
            )
            per_tenant = cur.fetchall()
            cur.execute(
                "select _tenant_id, coalesce(pipeline, '-'), coalesce(dealstage, '-'), count(*), "
                "coalesce(sum(amount), 0) from analytics.deals where not archived "
                "group by 1, 2, 3 order by 1, 2, 4 desc"
            )
            per_stage = cur.fetchall()
    finally:
        conn.close()
    table = Table(title="analytics.deals per tenant")
    for column in ("tenant", "live deals", "archived", "amount (live)"):
        table.add_column(column, justify="left" if column == "tenant" else "right")
    for tenant, live, archived, amount in per_tenant:
        table.add_row(tenant, f"{live:,}", f"{archived:,}", f"{amount:,.2f}")
    console.print(table)
    stages = Table(title="live deals per stage")
    for column in ("tenant", "pipeline", "stage", "deals", "amount"):
        stages.add_column(column, justify="right" if column in ("deals", "amount") else "left")
    for tenant, pipeline, stage, count, amount in per_stage:
        stages.add_row(tenant, pipeline, stage, f"{count:,}", f"{amount:,.2f}")
    console.print(stages)
    console.print("scan ids: " + ", ".join(scan_ids))
    console.print('explore: psql "$(python -m loader db url)"  ·  python -m loader scans')
