"""HTTP access to HubSpot's CRM v3 API: auth, retries, pacing, paging and the search walker."""

from __future__ import annotations

import logging
import queue
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import urlencode

import certifi
import orjson
import urllib3
from urllib3.util import Retry, Timeout

from ..errors import LoaderError
from . import settings
from .pacer import RequestPacer, policy_for

logger = logging.getLogger(__name__)

RETRY_STATUS = (429, 500, 502, 503, 504)


class HubSpotError(LoaderError):
    """HubSpot answered in a way the scan cannot continue from."""


class HubSpotClient:
    """A HubSpot API client for one portal (tenant), with retries and rate-limit pacing.

    The transport is a ``urllib3`` connection pool (thread-safe, keep-alive): a page costs about
    a fifth of the CPU it cost through ``requests`` with dlt's retrying session (make bench,
    README "Performance"). Every attempt passes through the portal's :class:`RequestPacer`.
    429 and 5xx answers, connection errors and bodies cut short are retried up to
    ``max_attempts`` times, waiting as ``Retry-After`` says or with exponential back-off (at most
    ``max_retry_delay`` seconds). 401/403 fail at once with a message naming the tenant — never
    the token.
    """

    def __init__(
        self,
        base_url: str,
        access_token: str,
        tenant_id: str,
        *,
        pacer: RequestPacer | None = None,
        max_attempts: int = 8,
        backoff_factor: float = 0.5,
        max_retry_delay: float = 30.0,
        timeout: float = 60.0,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.tenant_id = tenant_id
        self.pacer = pacer or RequestPacer()
        self.max_attempts = max_attempts
        self.backoff_factor = backoff_factor
        self.max_retry_delay = max_retry_delay
        self._http = urllib3.PoolManager(
            num_pools=2,
            maxsize=8,
            retries=False,  # retried here, so that every attempt is paced
            timeout=Timeout(connect=min(timeout, 10.0), read=timeout),
            ca_certs=certifi.where(),
        )
        common = {
            "Authorization": f"Bearer {access_token}",
            "Accept": "application/json",
            "Accept-Encoding": "gzip, deflate",
            "User-Agent": "hubspot-deals-loader",
        }
        self._get_headers = dict(common)
        self._post_headers = {**common, "Content-Type": "application/json"}

    # -- transport ---------------------------------------------------------------------------

    def get(self, path: str, params: Sequence[tuple[str, str]] = ()) -> dict[str, Any]:
        """GET ``path`` with query ``params`` (repeated keys allowed); the parsed JSON object."""
        # Commas stay as they are (legal in a query, as HubSpot's docs write `properties=a,b`):
        # a query with no "%" takes urllib3's fast path instead of being re-encoded byte by
        # byte on every request (0.2 ms of a page's 0.6 ms client CPU with the property list).
        query = urlencode(list(params), safe=",")
        url = f"{self.base_url}{path}" + (f"?{query}" if query else "")
        if len(url) - len(self.base_url) > settings.MAX_URL_LENGTH:
            raise HubSpotError(f"internal: request URL for {path} exceeds the safe length")
        return self._request("GET", url, None)

    def post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """POST a JSON ``body`` to ``path``; the parsed JSON object."""
        return self._request("POST", f"{self.base_url}{path}", orjson.dumps(body))

    def _request(self, method: str, url: str, body: bytes | None) -> dict[str, Any]:
        path = url[len(self.base_url):].split("?", 1)[0]
        policy = policy_for(path)
        headers = self._get_headers if body is None else self._post_headers
        for attempt in range(1, self.max_attempts + 1):
            last = attempt == self.max_attempts
            sent_at = self.pacer.acquire(policy)
            try:
                response = self._http.urlopen(method, url, body=body, headers=headers)
            except urllib3.exceptions.HTTPError as exc:  # refused, reset, timed out, cut short
                self.pacer.answered(policy, sent_at)
                if not last:
                    self._wait(attempt, None)
                    continue
                raise HubSpotError(
                    f"tenant {self.tenant_id}: {method} {path} failed after retries: "
                    f"{type(exc).__name__}"
                ) from None
            self.pacer.answered(policy, sent_at)
            status = response.status
            self.pacer.observe(policy, status, response.headers)
            if status in (401, 403):
                raise HubSpotError(
                    f"tenant {self.tenant_id}: HubSpot refused the access token "
                    f"({status} {_category(response.data)}); check the tenant's token"
                )
            if status in RETRY_STATUS:
                if not last:
                    self._wait(attempt, response.headers.get("Retry-After"))
                    continue
                raise HubSpotError(
                    f"tenant {self.tenant_id}: {method} {path} still failing with "
                    f"{status} after {self.max_attempts} attempts"
                )
            if status >= 400:
                raise HubSpotError(
                    f"tenant {self.tenant_id}: {method} {path} answered {status}: "
                    f"{_message(response.data)}"
                )
            try:
                payload = orjson.loads(response.data)
            except orjson.JSONDecodeError:
                # A body cut short in transit: worth another try, then a clear failure.
                if not last:
                    logger.warning("tenant %s: %s %s: body is not JSON, retrying",
                                   self.tenant_id, method, path)
                    continue
                raise HubSpotError(
                    f"tenant {self.tenant_id}: {method} {path} returned 200 with a body that is "
                    "not JSON"
                ) from None
            if not isinstance(payload, dict):
                raise HubSpotError(
                    f"tenant {self.tenant_id}: {method} {path} returned 200 with a body that is "
                    "not a JSON object"
                )
            return payload
        raise AssertionError("unreachable")

    def _wait(self, attempt: int, retry_after: str | None) -> None:
        """Sleep before attempt ``attempt + 1``: as ``Retry-After`` says (seconds or an HTTP
        date, parsed by urllib3), else ``backoff_factor * 2 ** (attempt - 1)``; never longer
        than ``max_retry_delay``."""
        delay = self.backoff_factor * 2 ** (attempt - 1)
        if retry_after:
            try:
                delay = Retry.parse_retry_after(Retry(), retry_after)
            except urllib3.exceptions.InvalidHeader:
                pass
        time.sleep(max(0.0, min(delay, self.max_retry_delay)))

    # -- endpoints ---------------------------------------------------------------------------

    def deal_property_names(self) -> list[str]:
        """Every deal property name the portal defines, custom ones included."""
        payload = self.get(settings.PROPERTIES_PATH, [("archived", "false")])
        results = _results(payload, self.tenant_id, settings.PROPERTIES_PATH)
        names = [r["name"] for r in results if isinstance(r, dict) and r.get("name")]
        ordered = dict.fromkeys([*settings.REQUIRED_PROPERTIES, *names])
        return list(ordered)

    def pipelines(self) -> list[dict[str, Any]]:
        """The portal's deal pipelines with their stages."""
        payload = self.get(settings.PIPELINES_PATH)
        return _results(payload, self.tenant_id, settings.PIPELINES_PATH)

    def split_properties(
        self, properties: Sequence[str], fixed: Sequence[tuple[str, str]]
    ) -> tuple[list[str], list[str]]:
        """Split ``properties`` into those that fit in a list URL and the rest."""
        budget = settings.MAX_URL_LENGTH - len(settings.DEALS_PATH) - 1
        budget -= len(urlencode([*fixed, ("after", "9" * 24)], safe=",")) + len("&properties=")
        fitted: list[str] = []
        used = 0
        for index, name in enumerate(properties):
            cost = len(urlencode([("p", name)], safe=",")) - 2 + 1  # encoded name + comma (see get)
            if used + cost > budget:
                return fitted, list(properties[index:])
            fitted.append(name)
            used += cost
        return fitted, []

    def list_deals(
        self,
        properties: Sequence[str],
        *,
        archived: bool = False,
        history_of: Sequence[str] = (),
        archived_since_ms: int | None = None,
    ) -> Iterator[list[dict[str, Any]]]:
        """Yield pages of deals from the list endpoint, all ``properties`` filled in.

        Properties that do not fit in the URL are fetched for the same page through a POST batch
        read and merged in, so no request exceeds HubSpot's URL length limit.

        With ``archived_since_ms`` (archived deals only) a page keeps only the deals archived at
        or after that time (epoch ms; a deal without ``archivedAt`` is kept): the list endpoint
        cannot filter, so every page is still read, but with ``hs_object_id`` alone; the deals
        kept get every property from a batch read, and the others are not filled in or
        yielded (nor is a page that keeps none). (A portal's archived deals are mostly stored
        already and cannot change: an incremental scan read them whole on every pass before,
        100 deals of every property a page.)

        The next page is fetched in a background thread while the caller works on this one (the
        cursor walk is sequential, so this overlaps the wait for HubSpot with our own work); the
        requests and their order are the same as without it.
        """
        limit = settings.HISTORY_PAGE_SIZE if history_of else settings.LIST_PAGE_SIZE
        fixed: list[tuple[str, str]] = [("limit", str(limit)), ("archived", str(archived).lower())]
        if history_of:
            fixed.append(("propertiesWithHistory", ",".join(history_of)))
        if archived_since_ms is not None:
            in_url, rest = [settings.ID_PROPERTY], list(properties)
        else:
            in_url, rest = self.split_properties(properties, fixed)

        def fetch(after: str | None) -> tuple[list[dict[str, Any]], str | None]:
            params = list(fixed)
            if in_url:
                params.append(("properties", ",".join(in_url)))
            if after:
                params.append(("after", after))
            payload = self.get(settings.DEALS_PATH, params)
            page = _results(payload, self.tenant_id, settings.DEALS_PATH)
            if archived_since_ms is not None:
                page = [d for d in page if not _archived_before(d, archived_since_ms)]
            if rest and page:
                self._fill_properties(page, rest, archived=archived)
            return page, _next_after(payload)

        def walk() -> Iterator[list[dict[str, Any]]]:
            page, after = fetch(None)
            while True:
                if page or archived_since_ms is None:
                    yield page
                if not after:
                    return
                page, after = fetch(after)

        yield from prefetched(walk())

    def read_deals(
        self,
        ids: Sequence[str],
        properties: Sequence[str],
        *,
        archived: bool = False,
        history_of: Sequence[str] = (),
    ) -> list[dict[str, Any]]:
        """Batch-read deals by id (≤ 100 per request, ≤ 50 with history), in the order of the
        chunks. Up to :data:`settings.BATCH_READ_CONCURRENCY` chunks are in flight at once (the
        requests are independent; each still passes the pacer): an incremental scan's history
        reads for one searched page took one round trip after another."""
        size = settings.HISTORY_PAGE_SIZE if history_of else settings.BATCH_READ_SIZE
        path = settings.DEALS_BATCH_READ_PATH + ("?archived=true" if archived else "")

        def read(chunk: Sequence[str]) -> list[dict[str, Any]]:
            body: dict[str, Any] = {
                "inputs": [{"id": i} for i in chunk],
                "properties": list(properties),
                "propertiesWithHistory": list(history_of),
            }
            return _results(self.post(path, body), self.tenant_id, settings.DEALS_BATCH_READ_PATH)

        chunks = [ids[start:start + size] for start in range(0, len(ids), size)]
        if len(chunks) <= 1:
            return read(chunks[0]) if chunks else []
        workers = min(len(chunks), settings.BATCH_READ_CONCURRENCY)
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="hubspot-read") as pool:
            return [deal for part in pool.map(read, chunks) for deal in part]

    def _fill_properties(
        self, page: list[dict[str, Any]], properties: Sequence[str], *, archived: bool
    ) -> None:
        by_id = {d["id"]: d for d in page}
        for extra in self.read_deals(list(by_id), properties, archived=archived):
            target = by_id.get(extra.get("id"))
            if target is not None:
                target.setdefault("properties", {}).update(extra.get("properties") or {})

    def count_deals(self) -> int:
        """How many live (not archived) deals the portal has, per the search API's ``total``."""
        body = {"limit": 1, "properties": ["hs_object_id"]}
        payload = self.post(settings.DEALS_SEARCH_PATH, body)
        total = payload.get("total")
        return int(total) if isinstance(total, int) else 0

    def search_modified(
        self,
        properties: Sequence[str],
        since_ms: int,
        until_ms: int,
        *,
        on_total: Any = None,
    ) -> Iterator[list[dict[str, Any]]]:
        """Yield pages of deals with ``since_ms <= hs_lastmodifieddate <= until_ms``, each once.

        The search API stops at 10,000 results per query. We sort by modification time and, at
        the cap, start a new query from the last timestamp seen, skipping the deals already
        emitted at exactly that timestamp. If a whole capped query shares one timestamp (more
        than 10,000 deals changed in the same millisecond), we walk that timestamp by
        ``hs_object_id`` instead, so the walk always makes progress and never loops.
        """
        cursor = settings.CURSOR_PROPERTY
        lo = since_ms
        seen_at_lo: set[str] = set()
        first = True
        while lo <= until_ms:
            filters = [
                {"propertyName": cursor, "operator": "GTE", "value": str(lo)},
                {"propertyName": cursor, "operator": "LTE", "value": str(until_ms)},
            ]
            sort = {"propertyName": cursor, "direction": "ASCENDING"}
            max_ts, seen_at_max, capped = lo, set(seen_at_lo), False
            emitted_any = False
            for page, total, capped_now in self._search_query(properties, filters, sort):
                if first and on_total is not None:
                    on_total(total)
                first = False
                fresh = []
                for deal in page:
                    ts = _modified_ms(deal)
                    if ts == max_ts and deal["id"] in seen_at_max:
                        continue
                    if ts > max_ts:
                        max_ts, seen_at_max = ts, set()
                    seen_at_max.add(deal["id"])
                    fresh.append(deal)
                if fresh:
                    emitted_any = True
                    yield fresh
                capped = capped_now
            if not capped:
                return
            if max_ts > lo or (emitted_any and max_ts != lo):
                lo, seen_at_lo = max_ts, seen_at_max
                continue
            # Every result of a capped query had the same timestamp: walk it by object id.
            yield from self._walk_one_timestamp(properties, lo, seen_at_max)
            lo, seen_at_lo = lo + 1, set()

    def _walk_one_timestamp(
        self, properties: Sequence[str], ts: int, already: set[str]
    ) -> Iterator[list[dict[str, Any]]]:
        last_id = 0
        while True:
            filters = [
                {"propertyName": settings.CURSOR_PROPERTY, "operator": "EQ", "value": str(ts)},
                {"propertyName": "hs_object_id", "operator": "GT", "value": str(last_id)},
            ]
            sort = {"propertyName": "hs_object_id", "direction": "ASCENDING"}
            capped = False
            for page, _total, capped_now in self._search_query(properties, filters, sort):
                fresh = [d for d in page if d["id"] not in already]
                if page:
                    last_id = max(last_id, *(int(d["id"]) for d in page))
                if fresh:
                    yield fresh
                capped = capped_now
            if not capped:
                return

    def _search_query(
        self, properties: Sequence[str], filters: list[dict[str, Any]], sort: dict[str, str]
    ) -> Iterator[tuple[list[dict[str, Any]], int, bool]]:
        """Pages of one search query as (page, total, capped): capped means more results exist
        than the 10,000 one query may return."""
        limit = settings.SEARCH_PAGE_SIZE
        offset = 0
        after: str | None = None
        while True:
            body: dict[str, Any] = {
                "filterGroups": [{"filters": filters}],
                "sorts": [sort],
                "properties": list(properties),
                "limit": limit,
            }
            if after:
                body["after"] = after
            payload = self.post(settings.DEALS_SEARCH_PATH, body)
            page = _results(payload, self.tenant_id, settings.DEALS_SEARCH_PATH)
            total = payload.get("total")
            if not isinstance(total, int):
                raise HubSpotError(
                    f"tenant {self.tenant_id}: search returned 200 without a numeric 'total'"
                )
            offset += len(page)
            after = _next_after(payload)
            more = bool(after) and bool(page)
            capped = more and offset + limit > settings.SEARCH_RESULT_CAP
            yield page, total, capped
            if not more or capped:
                return


class InOrderCalls:
    """One thread that makes calls in the order they are submitted; their answers (or what they
    raised) are taken back in the same order with :meth:`answer`.

    What a ``ThreadPoolExecutor(max_workers=1)`` gave :func:`prefetched` (a call per page) and
    the scan's progress writes (a call per batch), on two ``SimpleQueue``: no ``Future``, lock
    or condition per call. A full scan of 200,000 deals makes 4,000 of each; through the
    executor they took a tenth of the scan's GIL samples (py-spy ``--gil``), and the loader's
    CPU went down by 3-4% without them (README "Performance").
    """

    def __init__(self, name: str) -> None:
        self._calls: queue.SimpleQueue[tuple[Callable[..., Any], tuple[Any, ...]] | None] = \
            queue.SimpleQueue()
        self._answers: queue.SimpleQueue[tuple[bool, Any]] = queue.SimpleQueue()
        #: Calls submitted whose answer has not been taken.
        self.pending = 0
        self._thread = threading.Thread(target=self._serve, name=name, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while (call := self._calls.get()) is not None:
            fn, args = call
            try:
                self._answers.put((True, fn(*args)))
            except BaseException as exc:  # noqa: BLE001 - handed to the caller by answer()
                self._answers.put((False, exc))

    def submit(self, fn: Callable[..., Any], *args: Any) -> None:
        self._calls.put((fn, args))
        self.pending += 1

    def answer(self) -> Any:
        """The oldest call's answer, waiting for it; raises what the call raised."""
        ok, value = self._answers.get()
        self.pending -= 1
        if not ok:
            raise value
        return value

    def close(self) -> list[BaseException]:
        """Stop the thread once the calls submitted are made; the answers not taken are taken
        here, and what those calls raised is returned (for callers that are giving up)."""
        self._calls.put(None)
        self._thread.join()
        raised: list[BaseException] = []
        while self.pending:
            ok, value = self._answers.get()
            self.pending -= 1
            if not ok:
                raised.append(value)
        return raised


def prefetched(items: Iterator[Any]) -> Iterator[Any]:
    """``items`` taken one ahead in a thread of their own: the next is fetched while the caller
    works on this one (for a walk whose requests follow one another: the list walk, the search).
    An error is raised where its item would have come; closing the iterator waits for the item
    in flight and closes ``items``."""
    calls = InOrderCalls("hubspot-prefetch")
    calls.submit(next, items, _END)
    try:
        while calls.pending:
            item = calls.answer()
            if item is _END:
                return
            calls.submit(next, items, _END)
            yield item
    finally:
        calls.close()  # waits for the item in flight; what it raised is dropped with the walk
        _close(items)


#: What :func:`prefetched` gets from ``next`` once the items have ended.
_END = object()


class WalkAhead:
    """``items`` taken in a thread of their own from the moment this is made, before anyone asks
    for them, up to ``depth`` of them waiting: a walk that does not depend on the work before
    it (an incremental scan's pass over the archived list) runs while that work goes on.

    :meth:`items` hands them out in order and raises the walk's error where it happened. The
    walk stops at its next item once :meth:`stop` is called, once :meth:`items` is closed
    early, or once this object is gone (a scan that failed before it asked): the thread holds
    no reference to it, and a walk nobody will take from never waits for ever.
    """

    #: Seconds between looks at whether the walk should stop, while it waits for room.
    POLL_SECONDS = 0.1

    def __init__(self, items: Iterator[Any], depth: int, *, name: str = "hubspot-ahead") -> None:
        self._queue: queue.Queue[tuple[bool, Any]] = queue.Queue(maxsize=max(1, depth))
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=_walk_ahead, args=(items, self._queue, self._stop, weakref.ref(self)),
            name=name, daemon=True)
        self._thread.start()

    def items(self) -> Iterator[Any]:
        """The walk's items, in order (once: a second call finds the walk taken)."""
        try:
            while True:
                try:
                    ok, item = self._queue.get(timeout=self.POLL_SECONDS)
                except queue.Empty:
                    if self._thread.is_alive():
                        continue
                    try:  # it may have put its end just before it ended
                        ok, item = self._queue.get_nowait()
                    except queue.Empty:
                        raise RuntimeError("internal: a walk ahead ended without its "
                                           "end") from None
                if ok:
                    yield item
                elif item is _END:
                    return
                else:
                    raise item
        finally:
            self.stop()

    def stop(self) -> None:
        """Stop the walk at its next item (what it fetched is thrown away)."""
        self._stop.set()


def _walk_ahead(items: Iterator[Any], out: queue.Queue[tuple[bool, Any]], stop: threading.Event,
                owner: weakref.ref[WalkAhead]) -> None:
    def put(entry: tuple[bool, Any]) -> bool:
        while not stop.is_set() and owner() is not None:
            try:
                out.put(entry, timeout=WalkAhead.POLL_SECONDS)
                return True
            except queue.Full:
                continue
        return False

    try:
        for item in items:
            if stop.is_set() or not put((True, item)):
                return
        put((False, _END))
    except Exception as exc:  # noqa: BLE001 - raised to the taker where its item would be
        put((False, exc))
    finally:
        _close(items)


def _close(items: Iterator[Any]) -> None:
    """Close ``items`` if it can be closed (a generator's ``finally`` runs)."""
    close = getattr(items, "close", None)
    if close is not None:
        close()


def _results(payload: dict[str, Any], tenant_id: str, path: str) -> list[dict[str, Any]]:
    results = payload.get("results")
    if not isinstance(results, list) or not all(isinstance(r, dict) for r in results):
        raise HubSpotError(
            f"tenant {tenant_id}: {path} returned 200 without a 'results' list "
            "(unexpected response shape); nothing from this scan was committed past the cursor"
        )
    return results


def _archived_before(deal: dict[str, Any], since_ms: int) -> bool:
    """Whether ``deal`` says it was archived before ``since_ms`` (epoch ms)."""
    from .records import parse_hubspot_ms

    archived_ms = parse_hubspot_ms(deal.get("archivedAt"))
    return archived_ms is not None and archived_ms < since_ms


def _next_after(payload: dict[str, Any]) -> str | None:
    paging = payload.get("paging")
    if not isinstance(paging, dict):
        return None
    nxt = paging.get("next")
    if not isinstance(nxt, dict):
        return None
    after = nxt.get("after")
    return str(after) if after not in (None, "") else None


def _modified_ms(deal: dict[str, Any]) -> int:
    from .records import parse_hubspot_ms

    props = deal.get("properties") or {}
    value = props.get(settings.CURSOR_PROPERTY) or deal.get("updatedAt")
    return parse_hubspot_ms(value)


def _category(body: bytes) -> str:
    try:
        return str(orjson.loads(body).get("category") or "")
    except (orjson.JSONDecodeError, AttributeError):
        return ""


def _message(body: bytes) -> str:
    try:
        parsed = orjson.loads(body)
        text = str(parsed.get("message") or parsed)
    except (orjson.JSONDecodeError, AttributeError):
        text = body[:200].decode("utf-8", "replace")
    return " ".join(text.split())[:300]
