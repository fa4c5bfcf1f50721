"""Helpers for edgecontroller/synccontroller tests: the API as a test client sees it (the
session's real control plane), edge-side reports, and a fake log answerer.

`FakeEdgedLogs` is a test double standing where edged will answer log queries (edged is
written elsewhere): it sits on a real edge bus in group edged and answers `log_query`
messages with `stream_frame`s (or an error) through the real edgehub.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from common import kubeclient
from common.envelope import Message, make_error, new_message
from common.names import Group, Module, Operation
from tests.support.stack import CloudStack, EdgeStack
from tests.support.waiting import eventually

# Short timers for the controllers (on top of stack.FAST_CLOUD).
FAST_CONTROLLERS: dict[str, Any] = {
    "sync_period": 0.3,
    "node_monitor_period": 0.2,
    # Above the stacks' keepalive timeout (1.5 s): one slow keepalive on a loaded machine
    # drops the stream for a moment, and must not be enough to mark a live node Unknown.
    "node_grace_period": 3.0,
    "kube_watch_timeout": 5.0,
    "log_timeout": 5.0,
}
EDGE_LABEL = {"node-role.kubernetes.io/edge": ""}
RELIABLESYNCS = ("reliablesyncs.kubeedge.io", "v1alpha1")


class K8s:
    """The official client against a kubeconfig, each call in a thread."""

    def __init__(self, kubeconfig: Path) -> None:
        self.api_client = kubeclient.ApiClient(kubeconfig)
        self.core = client.CoreV1Api(self.api_client)
        self.custom = client.CustomObjectsApi(self.api_client)
        self.coordination = client.CoordinationV1Api(self.api_client)

    async def call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return await asyncio.to_thread(fn, *args, **kwargs)

    async def raw(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """The JSON the server sent, as dicts."""

        def read() -> Any:
            resp = fn(*args, _preload_content=False, **kwargs)
            return json.loads(resp.data)

        return await asyncio.to_thread(read)

    async def ready_for_pods(self, namespace: str = "default") -> None:
        """Wait for the namespace's default ServiceAccount: the API refuses pods until the
        service-account controller has made it (just after the control plane starts)."""

        async def exists() -> bool:
            try:
                await self.call(self.core.read_namespaced_service_account, "default", namespace)
            except ApiException as exc:
                if exc.status == 404:
                    return False
                raise
            return True

        await eventually(exists, 60, f"ServiceAccount {namespace}/default")

    async def node(self, name: str) -> Any:
        return await self.raw(self.core.read_node, name)

    async def pod(self, name: str, namespace: str = "default") -> Any:
        return await self.raw(self.core.read_namespaced_pod, name, namespace)

    async def object_syncs(self) -> dict[str, str]:
        """{record name: status.objectResourceVersion} of every (Cluster)ObjectSync."""
        out: dict[str, str] = {}
        for plural in ("objectsyncs", "clusterobjectsyncs"):
            listing = await self.call(
                self.custom.list_cluster_custom_object, *RELIABLESYNCS, plural
            )
            for item in listing["items"]:
                status = item.get("status") or {}
                out[item["metadata"]["name"]] = str(status.get("objectResourceVersion", ""))
        return out

    def close(self) -> None:
        self.api_client.close()


def pod_spec(
    node: str, *, configmaps: tuple[str, ...] = (), secrets: tuple[str, ...] = ()
) -> dict[str, Any]:
    """A pod bound to `node` with a volume per configmap and an env var per secret, and
    no service-account token volume (which would reference configmap kube-root-ca.crt), so
    the configmaps and secrets it references are exactly the ones named here."""
    volumes: list[dict[str, Any]] = [
        {"name": f"cm-{name}", "configMap": {"name": name}} for name in configmaps
    ]
    env = [
        {"name": f"S_{i}", "valueFrom": {"secretKeyRef": {"name": name, "key": "k"}}}
        for i, name in enumerate(secrets)
    ]
    return {
        "nodeName": node,
        "automountServiceAccountToken": False,
        "containers": [{"name": "c", "image": "busybox", "env": env}],
        "volumes": volumes,
    }


def module(stack: CloudStack | EdgeStack, name: str) -> Any:
    return stack.supervisor.get(name)


def report(resource: str, operation: str = Operation.UPDATE) -> Message:
    """An upstream report as an edge module sends it to edgehub (group resource)."""
    return new_message(
        source=Module.EDGED, group=Group.RESOURCE, operation=operation, resource=resource
    )


async def send_up(edge: EdgeStack, msg: Message) -> None:
    await edge.supervisor.bus.send(Module.EDGEHUB, msg)


async def ask_up(edge: EdgeStack, msg: Message, timeout: float = 10) -> Message:
    """Send an upstream report through the edge's real edgehub and return the cloud's answer
    to it, as edgehub hands it back: the ack, or an error."""
    return await edge.supervisor.bus.send_sync(Module.EDGEHUB, msg, timeout)


class FakeEdgedLogs:
    """Answers log queries on an edge bus: `logs[(ns, pod)]` lines, honouring tail_lines;
    an unknown pod gets a 404 error. A follow query then gets a line every `tick` seconds
    until a StreamCancel for it arrives. Records every query and cancel it saw."""

    name = "fake-edged-logs"

    def __init__(
        self, edge: EdgeStack, logs: dict[tuple[str, str], list[str]], tick: float = 0.05
    ) -> None:
        self.bus = edge.supervisor.bus
        self.logs = logs
        self.tick = tick
        self.queries: list[Message] = []
        self.cancels: list[Message] = []
        self.following: dict[str, asyncio.Task[None]] = {}
        self.bus.register(self.name, Group.EDGED)
        self._task: asyncio.Task[None] | None = None

    def start(self) -> FakeEdgedLogs:
        self._task = asyncio.create_task(self._run(), name="fake-edged-logs")
        return self

    async def stop(self) -> None:
        tasks = [t for t in [self._task, *self.following.values()] if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _run(self) -> None:
        while True:
            msg = await self.bus.receive(self.name)
            if msg.WhichOneof("body") == "log_query":
                self.queries.append(msg)
                await self._answer(msg)
            elif msg.WhichOneof("body") == "stream_cancel":
                self.cancels.append(msg)
                task = self.following.pop(msg.stream_cancel.stream_id, None)
                if task is not None:
                    task.cancel()

    async def _answer(self, query: Message) -> None:
        q = query.log_query
        lines = self.logs.get((q.namespace, q.pod))
        if lines is None:
            err = make_error(query, source=Module.EDGED, code=404, reason=f"no pod {q.pod}")
            await self.bus.send(Module.EDGEHUB, err)
            return
        if q.tail_lines > 0:
            lines = lines[-q.tail_lines :]
        chunks = [line.encode() + b"\n" for line in lines] or [b""]
        for seq, chunk in enumerate(chunks):
            last = seq == len(chunks) - 1 and not q.follow
            await self.send_frame(query, query.header.id, seq, chunk, end=last)
        if q.follow:
            self.following[query.header.id] = asyncio.create_task(
                self._follow(query, len(chunks)), name=f"fake-follow:{query.header.id}"
            )

    async def _follow(self, query: Message, seq: int) -> None:
        while True:
            await asyncio.sleep(self.tick)
            await self.send_frame(query, query.header.id, seq, f"tick {seq}\n".encode())
            seq += 1

    async def send_frame(
        self, query: Message, stream_id: str, seq: int, data: bytes, *, end: bool = False
    ) -> None:
        frame = new_message(
            source=Module.EDGED,
            group=Group.EDGED,
            operation=Operation.RESPONSE,
            resource=query.route.resource,
            parent_id=stream_id,
        )
        frame.stream_frame.stream_id = stream_id
        frame.stream_frame.sequence = seq
        frame.stream_frame.data = data
        frame.stream_frame.end = end
        await self.bus.send(Module.EDGEHUB, frame)
