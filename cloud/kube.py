"""The official kubernetes client, used exactly as against a real cluster, off the event loop.

The one place in cloudcore that imports the kubernetes client: edgecontroller, synccontroller
and devicecontroller each hold a `Kube` of their own (own threads, own connections) and reach
the API through it.

The client is synchronous (urllib3). Every call runs in this wrapper's own thread pool; each
Informer (list, then watch from the list's resourceVersion) holds a thread of a second pool
and hands its events to the event loop's queue (bounded: `event_queue()`); while the queue is
full the thread waits, and so does its watch (backpressure, as a slow client of a watch).
Reads ask for the raw JSON (`_preload_content=False`), so objects reach the edge exactly as
the API returned them.
A watch that falls behind the server's history (410) relists; any other failure retries with
backoff; `close()` shuts the sockets of open watches so their threads end at once.
Errors leave as `cloud.kubeerrors` types.

What it does not: cache or interpret objects (the controllers do), or retry writes.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import urllib3
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from kubernetes.watch.watch import iter_resp_lines

from cloud.kubeerrors import APIUnavailable, Gone, KubeAPIError, from_status
from common import kubeclient

log = logging.getLogger(__name__)

T = TypeVar("T")
Obj = dict[str, Any]

PAGE_SIZE = 500
BACKOFF_INITIAL = 0.2
BACKOFF_MAX = 30.0
CONNECT_TIMEOUT = 10.0
CALL_TIMEOUT = 30.0


@dataclass(frozen=True)
class WatchEvent:
    """ADDED / MODIFIED / DELETED with `obj`, or SYNC with the complete listing in `items`.
    `version`: the resourceVersion the informer has reached with this event."""

    type: str
    obj: Obj = field(default_factory=dict)
    items: list[Obj] = field(default_factory=list)
    version: str = ""


EventQueue = asyncio.Queue[tuple[str, WatchEvent]]
EVENT_QUEUE = 10_000  # watch events waiting for a controller; then informers wait


def event_queue(size: int = EVENT_QUEUE) -> EventQueue:
    """The queue a controller's informers hand their events to (bounded)."""
    return asyncio.Queue(size)


class Kube:
    """One kubernetes ApiClient for one module, with its own threads."""

    core: client.CoreV1Api
    coordination: client.CoordinationV1Api
    custom: client.CustomObjectsApi

    def __init__(
        self,
        kubeconfig: Path,
        *,
        name: str = "kube",
        workers: int = 4,
        watch_timeout: float = 30.0,
    ) -> None:
        self.kubeconfig = kubeconfig
        self.name = name
        self.watch_timeout = watch_timeout
        self._calls = concurrent.futures.ThreadPoolExecutor(workers, f"{name}-api")
        self._watch_pool: concurrent.futures.ThreadPoolExecutor | None = None
        self._informers: list[Informer] = []
        self._api: client.ApiClient | None = None

    @property
    def connected(self) -> bool:
        return self._api is not None

    async def connect(self) -> None:
        """Build the client (once)."""
        if self._api is not None:
            return
        self._api = await self._run(self._load)
        self.core = client.CoreV1Api(self._api)
        self.coordination = client.CoordinationV1Api(self._api)
        self.custom = client.CustomObjectsApi(self._api)

    def _load(self) -> client.ApiClient:
        # watches hold connections; calls need their own
        return kubeclient.ApiClient(self.kubeconfig, pool_size=32)

    async def close(self) -> None:
        """Stop every informer, wait briefly for their threads, drop the client."""
        for informer in self._informers:
            informer.stop()
        self._calls.shutdown(wait=False, cancel_futures=True)
        if self._watch_pool is not None:
            self._watch_pool.shutdown(wait=False, cancel_futures=True)
        running = [i.future for i in self._informers if i.future is not None]
        if running:  # a thread inside a list call ends when that call does (CALL_TIMEOUT)
            await asyncio.wait(running, timeout=1.0)
        if self._api is not None:
            self._api.close()  # type: ignore[no-untyped-call]
            self._api = None

    # -- calls -----------------------------------------------------------------------------

    async def _run(self, fn: Callable[[], T]) -> T:
        try:
            return await asyncio.get_running_loop().run_in_executor(self._calls, fn)
        except RuntimeError as exc:  # the pool is shut down: the module is stopping
            raise APIUnavailable(f"{self.name}: client closed") from exc

    async def call(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        """`fn(*args, **kwargs)` on the client's threads; errors wrapped."""
        kwargs.setdefault("_request_timeout", (CONNECT_TIMEOUT, CALL_TIMEOUT))
        return await self._run(functools.partial(_checked, fn, *args, **kwargs))

    async def read(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        """A GET/LIST as the raw JSON the server sent."""
        kwargs.setdefault("_request_timeout", (CONNECT_TIMEOUT, CALL_TIMEOUT))
        return await self._run(functools.partial(read_json, fn, *args, **kwargs))

    async def list_all(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> list[Obj]:
        """Every item of a (paginated) listing, as raw JSON."""
        items, _ = await self._run(functools.partial(list_pages, fn, *args, **kwargs))
        return items

    # -- informers -------------------------------------------------------------------------

    def informer(
        self,
        kind: str,
        api_version: str,
        list_fn: Callable[..., Any],
        queue: EventQueue,
        **selectors: Any,
    ) -> Informer:
        """Declare a list+watch of `list_fn`; it starts with start_informers().

        `list_fn` takes only keyword arguments (selectors, watch, paging): bind positional
        ones (a custom resource's group, version and plural) with functools.partial."""
        informer = Informer(kind, api_version, list_fn, queue, self.watch_timeout, selectors)
        self._informers.append(informer)
        return informer

    def start_informers(self) -> None:
        loop = asyncio.get_running_loop()
        pending = [i for i in self._informers if i.future is None]
        if not pending:
            return
        self._watch_pool = concurrent.futures.ThreadPoolExecutor(
            len(self._informers), f"{self.name}-watch"
        )
        for informer in pending:
            informer.start(loop, self._watch_pool)


def _checked(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    try:
        return fn(*args, **kwargs)
    except ApiException as exc:
        raise wrap_api_exception(exc) from exc
    except (urllib3.exceptions.HTTPError, OSError) as exc:
        raise APIUnavailable(f"Kubernetes API unreachable: {exc}") from exc


def wrap_api_exception(exc: ApiException) -> KubeAPIError:
    status = int(exc.status or 0)
    message, reason = str(exc.reason or ""), ""
    try:
        body = json.loads(exc.body or "")
        message = body.get("message") or message
        reason = body.get("reason") or ""
    except (ValueError, AttributeError):
        pass
    return from_status(status, f"{status} {message}".strip(), reason)


def read_json(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    resp = _checked(fn, *args, _preload_content=False, **kwargs)
    try:
        return json.loads(resp.data)
    finally:
        resp.release_conn()


def list_pages(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> tuple[list[Obj], str]:
    """All pages of a listing and the listing's resourceVersion."""
    items: list[Obj] = []
    token: str | None = None
    version = ""
    while True:
        page = read_json(fn, *args, limit=PAGE_SIZE, _continue=token, **kwargs)
        items.extend(page.get("items") or [])
        meta = page.get("metadata") or {}
        version = version or str(meta.get("resourceVersion") or "")
        token = meta.get("continue") or None
        if not token:
            return items, version


class Informer:
    """List then watch one collection in a worker thread; events land in an asyncio queue."""

    def __init__(
        self,
        kind: str,
        api_version: str,
        list_fn: Callable[..., Any],
        queue: EventQueue,
        watch_timeout: float,
        selectors: dict[str, Any],
    ) -> None:
        self.kind = kind
        self.api_version = api_version
        self.list_fn = list_fn
        self.queue = queue
        self.watch_timeout = max(1, int(watch_timeout))
        self.selectors = selectors
        self.future: asyncio.Future[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._resp: Any = None

    def start(
        self, loop: asyncio.AbstractEventLoop, pool: concurrent.futures.ThreadPoolExecutor
    ) -> None:
        self._loop = loop
        self.future = loop.run_in_executor(pool, self._run)

    def stop(self) -> None:
        """Ask the thread to end and cut its open watch, so it notices at once."""
        self._stopping.set()
        with self._lock:
            resp, self._resp = self._resp, None
        if resp is not None:
            with contextlib.suppress(ValueError, RuntimeError, OSError):
                resp.shutdown()

    def _emit(self, event: WatchEvent) -> None:
        """Hand an event to the loop's queue, waiting while it is full (or until stopped)."""
        assert self._loop is not None
        try:
            put = asyncio.run_coroutine_threadsafe(self.queue.put((self.kind, event)), self._loop)
        except RuntimeError:  # the loop is closed: nobody listens any more
            self._stopping.set()
            return
        while not self._stopping.is_set():
            try:
                put.result(timeout=0.5)
                return
            except concurrent.futures.TimeoutError:
                continue
        put.cancel()

    def _run(self) -> None:
        delay = BACKOFF_INITIAL
        version = ""
        while not self._stopping.is_set():
            try:
                if not version:
                    version = self._list()
                    delay = BACKOFF_INITIAL
                started = time.monotonic()
                version, seen = self._watch(version)
                if seen or time.monotonic() - started > 1.0:
                    delay = BACKOFF_INITIAL
                    continue
                self._stopping.wait(delay)  # the server ends watches at once: do not spin
                delay = min(delay * 2, BACKOFF_MAX)
            except Gone:
                log.info("informer %s: version %s is gone; listing again", self.kind, version)
                version = ""
            except Exception as exc:
                if self._stopping.is_set():
                    return
                log.warning("informer %s: %s; retrying in %.1fs", self.kind, exc, delay)
                self._stopping.wait(delay)
                delay = min(delay * 2, BACKOFF_MAX)

    def _list(self) -> str:
        items, version = list_pages(
            self.list_fn, _request_timeout=(CONNECT_TIMEOUT, CALL_TIMEOUT), **self.selectors
        )
        for item in items:  # list items carry no kind; the edge wants whole objects
            item.setdefault("apiVersion", self.api_version)
            item.setdefault("kind", self.kind)
        self._emit(WatchEvent("SYNC", items=items, version=version))
        return version

    def _watch(self, version: str) -> tuple[str, int]:
        resp = _checked(
            self.list_fn,
            watch=True,
            resource_version=version,
            allow_watch_bookmarks=True,
            timeout_seconds=self.watch_timeout,
            _preload_content=False,
            _request_timeout=(CONNECT_TIMEOUT, self.watch_timeout + 15),
            **self.selectors,
        )
        with self._lock:
            if self._stopping.is_set():
                resp.close()
                return version, 0
            self._resp = resp
        seen = 0
        complete = False
        try:
            for line in iter_resp_lines(resp):  # type: ignore[no-untyped-call]
                if self._stopping.is_set() or not line:
                    continue
                version = self._on_line(line, version)
                seen += 1
            complete = True
        finally:
            with self._lock:
                self._resp = None
            if not complete:
                resp.close()
            resp.release_conn()
        return version, seen

    def _on_line(self, line: str, version: str) -> str:
        event = json.loads(line)
        kind, obj = event.get("type", ""), event.get("object") or {}
        if kind == "ERROR":
            code = int(obj.get("code") or 0)
            raise from_status(code, str(obj.get("message") or "watch error"), obj.get("reason", ""))
        version = str((obj.get("metadata") or {}).get("resourceVersion") or version)
        if kind in ("ADDED", "MODIFIED", "DELETED"):
            obj.setdefault("apiVersion", self.api_version)
            obj.setdefault("kind", self.kind)
            self._emit(WatchEvent(kind, obj, version=version))
        return version
