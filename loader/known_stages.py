"""What the warehouse already knows of each deal's stage, so incremental scans fetch stage history
only for deals whose stage changed (or that are new): a deal's history gains entries only when its
stage changes, so for every other changed deal the history we hold is still complete."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from . import db

StageLookup = Callable[[Sequence[str]], dict[str, str | None]]


def stage_lookup(url: str, tenant_id: str) -> StageLookup:
    """A function mapping deal ids to their stored ``dealstage`` in ``analytics.deals``.

    Deals absent from the warehouse are absent from the result (their history is fetched).
    If the mart does not exist yet, every lookup returns nothing.
    """

    def lookup(ids: Sequence[str]) -> dict[str, str | None]:
        if not ids:
            return {}
        conn = db.connect(url)
        try:
            with conn, conn.cursor() as cur:
                cur.execute("select to_regclass('analytics.deals') is not null")
                if not cur.fetchone()[0]:
                    return {}
                cur.execute(
                    "select id, dealstage from analytics.deals "
                    "where _tenant_id = %s and id = any(%s)",
                    (tenant_id, list(ids)),
                )
                return dict(cur.fetchall())
        finally:
            conn.close()

    return lookup
