"""The tenants file (``tenants.toml``): which tenants exist and where each one's token comes from.

```toml
[[tenants]]
id = "acme"
token_env = "HUBSPOT_TOKEN_ACME"                 # an environment variable's name, or
# token_secret = "sources.hubspot.acme.token"    # a key in dlt's secrets (.dlt/secrets.toml)
```

The file never holds a token itself: an entry with ``token`` is refused.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass
from pathlib import Path

from . import settings
from .errors import LoaderError, UsageError
from .ids import validate_tenant_id


@dataclass(frozen=True)
class Tenant:
    """One tenant and the *name* of where its token lives (never the token)."""

    id: str
    token_env: str | None = None
    token_secret: str | None = None

    @property
    def token_source(self) -> str:
        """Where the token comes from, safe to log and to store in ``scan_jobs.config``."""
        if self.token_env:
            return f"env:{self.token_env}"
        if self.token_secret:
            return f"dlt-secret:{self.token_secret}"
        return "env:HUBSPOT_ACCESS_TOKEN"

    def access_token(self) -> str:
        """Resolve the token; a one-line error naming the tenant and source if it is missing."""
        token: str | None
        if self.token_secret:
            import dlt

            try:
                token = dlt.secrets.get(self.token_secret)
            except Exception:  # noqa: BLE001 - any lookup failure means "not configured"
                token = None
        else:
            token = os.environ.get(self.token_env or "HUBSPOT_ACCESS_TOKEN")
        if not token:
            raise LoaderError(
                f"no HubSpot token for tenant {self.id!r}: set {self.token_source.split(':', 1)[1]}"
            )
        return str(token)


def load_tenants(path: Path | None = None) -> dict[str, Tenant]:
    """Read the tenants file; an empty dict if it does not exist."""
    path = path or settings.tenants_file()
    if not path.exists():
        return {}
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise UsageError(f"tenants file {path}: not valid TOML ({exc})") from None
    entries = data.get("tenants", [])
    if not isinstance(entries, list):
        raise UsageError(f"tenants file {path}: 'tenants' must be an array of tables")
    tenants: dict[str, Tenant] = {}
    for index, entry in enumerate(entries, start=1):
        if not isinstance(entry, dict) or "id" not in entry:
            raise UsageError(f"tenants file {path}: entry {index} has no 'id'")
        if "token" in entry or "access_token" in entry:
            raise UsageError(
                f"tenants file {path}: tenant {entry['id']!r} holds a token; "
                "name an env var (token_env) or a dlt secret (token_secret) instead"
            )
        unknown = set(entry) - {"id", "token_env", "token_secret"}
        if unknown:
            raise UsageError(
                f"tenants file {path}: tenant {entry['id']!r} has unknown keys {sorted(unknown)}"
            )
        tenant_id = validate_tenant_id(str(entry["id"]))
        if tenant_id in tenants:
            raise UsageError(f"tenants file {path}: tenant {tenant_id!r} is listed twice")
        tenants[tenant_id] = Tenant(tenant_id, entry.get("token_env"), entry.get("token_secret"))
    return tenants


def resolve(tenant_id: str) -> Tenant:
    """The tenant from the tenants file, or one using ``HUBSPOT_ACCESS_TOKEN`` if unlisted."""
    validate_tenant_id(tenant_id)
    return load_tenants().get(tenant_id) or Tenant(tenant_id)
