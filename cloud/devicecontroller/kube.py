"""devicecontroller's use of the official kubernetes client: list-then-watch and status writes.

The client is synchronous (urllib3), so nothing here runs on the event loop: calls run in a
small thread pool, and each watch (DeviceModels, Devices) runs in a thread of its own that
lists, then watches from the list's resourceVersion, and hands events to an asyncio queue with
`call_soon_threadsafe`. A watch that falls out of the server's history (410 Gone) lists again;
other failures retry with backoff; `close()` shuts the open watch sockets so the threads end at
once. Objects are read as raw JSON (`_preload_content=False`), exactly as the API sent them.

What it does not: interpret objects (module.py does), or retry writes (status.py does).
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
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException

from common.errors import ConfigError, TemporaryError

log = logging.getLogger(__name__)

GROUP, VERSION = "devices.kubeedge.io", "v1beta1"
API_VERSION = f"{GROUP}/{VERSION}"
CONNECT_TIMEOUT, CALL_TIMEOUT = 10.0, 30.0
BACKOFF_INITIAL, BACKOFF_MAX = 0.2, 30.0
MERGE_PATCH = "application/merge-patch+json"

T = TypeVar("T")
Obj = dict[str, Any]


class KubeError(TemporaryError):
    """The API refused or could not be reached; `status` is the HTTP status (0: unreachable)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Event:
    """ADDED / MODIFIED / DELETED of `obj`, or SYNC with a complete listing in `items`.
    `version`: the resourceVersion the watch has reached with this event."""

    type: str
    kind: str
    version: str
    obj: Obj = field(default_factory=dict)
    items: list[Obj] = field(default_factory=list)


def _call(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    try:
        return fn(*args, **kwargs)
    except ApiException as exc:
        raise KubeError(int(exc.status or 0), f"{exc.status} {exc.reason}: {exc.body!r}") from exc
    except (urllib3.exceptions.HTTPError, OSError) as exc:
        raise KubeError(0, f"Kubernetes API unreachable: {exc}") from exc


def _json(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    resp = _call(fn, *args, _preload_content=False, **kwargs)
    try:
        return json.loads(resp.data)
    finally:
        resp.release_conn()


class Kube:
    """One ApiClient for devicecontroller, with its own threads."""

    def __init__(self, kubeconfig: Path, *, workers: int, watch_timeout: float) -> None:
        self.kubeconfig = kubeconfig
        self.watch_timeout = max(1, int(watch_timeout))
        self._pool = concurrent.futures.ThreadPoolExecutor(workers, "devicecontroller-api")
        self._watch_pool = concurrent.futures.ThreadPoolExecutor(2, "devicecontroller-watch")
        self._api: client.ApiClient | None = None
        self._watches: list[Watch] = []

    async def connect(self) -> None:
        self._api = await self._run(self._load)

    def _load(self) -> client.ApiClient:
        cfg = client.Configuration()
        try:
            config.load_kube_config(  # type: ignore[no-untyped-call]
                config_file=str(self.kubeconfig), client_configuration=cfg
            )
        except (ConfigException, OSError) as exc:
            raise ConfigError(f"cannot use kubeconfig {self.kubeconfig}: {exc}") from exc
        cfg.connection_pool_maxsize = 16
        return client.ApiClient(cfg)

    @property
    def custom(self) -> client.CustomObjectsApi:
        assert self._api is not None, "connect() first"
        return client.CustomObjectsApi(self._api)

    async def _run(self, fn: Callable[[], T]) -> T:
        try:
            return await asyncio.get_running_loop().run_in_executor(self._pool, fn)
        except RuntimeError as exc:  # the pool is shut down: we are stopping
            raise KubeError(0, "devicecontroller's client is closed") from exc

    async def patch_status(self, namespace: str, name: str, status: Obj) -> None:
        """Merge-patch a Device's status subresource."""
        fn = functools.partial(
            _call,
            self.custom.patch_namespaced_custom_object_status,
            GROUP,
            VERSION,
            namespace,
            "devices",
            name,
            {"status": status},
            _content_type=MERGE_PATCH,
            _request_timeout=(CONNECT_TIMEOUT, CALL_TIMEOUT),
        )
        await self._run(fn)

    async def node_names(self) -> list[str]:
        """The names of the Nodes the API knows (empty when it cannot say)."""
        core = client.CoreV1Api(self._api)
        try:
            listing = await self._run(
                functools.partial(_json, core.list_node, _request_timeout=CALL_TIMEOUT)
            )
        except KubeError as exc:
            log.warning("devicecontroller: cannot list nodes: %s", exc)
            return []
        return [str(n.get("metadata", {}).get("name")) for n in listing.get("items") or []]

    def watch(self, kind: str, plural: str, queue: asyncio.Queue[Event]) -> Watch:
        """Start listing and watching `plural` cluster-wide; events go to `queue`."""
        w = Watch(self, kind, plural, queue, asyncio.get_running_loop())
        w.future = asyncio.get_running_loop().run_in_executor(self._watch_pool, w.run)
        self._watches.append(w)
        return w

    async def close(self) -> None:
        for w in self._watches:
            w.stop()
        running = [w.future for w in self._watches if w.future is not None]
        if running:
            await asyncio.wait(running, timeout=5)
        self._watches.clear()
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._watch_pool.shutdown(wait=False, cancel_futures=True)
        if self._api is not None:
            self._api.close()  # type: ignore[no-untyped-call]
            self._api = None


class Watch:
    """List, then watch, one custom resource in a worker thread."""

    def __init__(
        self,
        kube: Kube,
        kind: str,
        plural: str,
        queue: asyncio.Queue[Event],
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self.kube, self.kind, self.plural = kube, kind, plural
        self.queue, self.loop = queue, loop
        self.future: asyncio.Future[None] | None = None
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._resp: Any = None

    def stop(self) -> None:
        """End the thread: set the flag and cut the open watch so a blocked read returns."""
        self._stopping.set()
        with self._lock:
            resp, self._resp = self._resp, None
        if resp is not None:
            with contextlib.suppress(ValueError, RuntimeError, OSError):
                resp.shutdown()

    def _emit(self, event: Event) -> None:
        try:
            self.loop.call_soon_threadsafe(self.queue.put_nowait, event)
        except RuntimeError:  # the loop is closed: nobody listens any more
            self._stopping.set()

    def run(self) -> None:
        delay = BACKOFF_INITIAL
        version = ""
        while not self._stopping.is_set():
            try:
                if not version:
                    version = self._list()
                started = time.monotonic()
                version, seen = self._watch(version)
                if seen or time.monotonic() - started > 1.0:
                    delay = BACKOFF_INITIAL
                    continue
                self._stopping.wait(delay)  # the server ends watches at once: do not spin
                delay = min(delay * 2, BACKOFF_MAX)
            except KubeError as exc:
                if self._stopping.is_set():
                    return
                if exc.status == 410:
                    log.info("devicecontroller: %s version %s is gone; listing", self.kind, version)
                    version = ""
                    continue
                log.warning(
                    "devicecontroller: watching %s: %s; retry in %.1fs", self.kind, exc, delay
                )
                self._stopping.wait(delay)
                delay = min(delay * 2, BACKOFF_MAX)

    def _list(self) -> str:
        fn = self.kube.custom.list_cluster_custom_object
        listing = _json(fn, GROUP, VERSION, self.plural, _request_timeout=CALL_TIMEOUT)
        items = [i for i in listing.get("items") or [] if isinstance(i, dict)]
        for item in items:  # list items carry no kind; the edge wants whole objects
            item.setdefault("apiVersion", API_VERSION)
            item.setdefault("kind", self.kind)
        version = str((listing.get("metadata") or {}).get("resourceVersion") or "")
        self._emit(Event("SYNC", self.kind, version, items=items))
        return version

    def _watch(self, version: str) -> tuple[str, int]:
        """One watch until the server ends it; the version reached and the events seen."""
        timeout = self.kube.watch_timeout
        resp: Any = _call(
            self.kube.custom.list_cluster_custom_object,
            GROUP,
            VERSION,
            self.plural,
            watch=True,
            resource_version=version,
            allow_watch_bookmarks=True,
            timeout_seconds=timeout,
            _preload_content=False,
            _request_timeout=(CONNECT_TIMEOUT, timeout + 15),
        )
        with self._lock:
            if self._stopping.is_set():
                resp.close()
                return version, 0
            self._resp = resp
        seen = 0
        try:
            buffer = b""
            for chunk in resp.stream(None, decode_content=False):
                buffer += chunk
                *lines, buffer = buffer.split(b"\n")
                for line in lines:
                    if line.strip() and not self._stopping.is_set():
                        version = self._on_line(line, version)
                        seen += 1
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            if not self._stopping.is_set():
                raise KubeError(0, f"watch of {self.plural} broke: {exc}") from exc
        finally:
            with self._lock:
                self._resp = None
            resp.release_conn()
        return version, seen

    def _on_line(self, line: bytes, version: str) -> str:
        event = json.loads(line)
        kind, obj = event.get("type", ""), event.get("object") or {}
        if kind == "ERROR":
            raise KubeError(int(obj.get("code") or 0), str(obj.get("message") or "watch error"))
        version = str((obj.get("metadata") or {}).get("resourceVersion") or version)
        if kind in ("ADDED", "MODIFIED", "DELETED"):
            obj.setdefault("apiVersion", API_VERSION)
            obj.setdefault("kind", self.kind)
            self._emit(Event(kind, self.kind, version, obj=obj))
        return version
