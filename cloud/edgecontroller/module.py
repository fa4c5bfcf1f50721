"""edgecontroller: Kubernetes objects to edge nodes, and what edge nodes report to Kubernetes.

What it does:
- downstream: lists and watches Nodes, Pods, ConfigMaps and Secrets of the cluster
  --kubeconfig names, through the official kubernetes client, and sends each edge node what
  belongs on it (downstream.py), as docs/protocol.md says;
- upstream: applies node registration, node status, leases, pod status, pod-gone reports
  and Events that cloudhub hands to group "resource" (upstream.py);
- node liveness: a silent, disconnected edge node becomes Ready=Unknown (liveness.py);
- pods/log: answers a log request handed to it (an aiohttp handler, through
  `log_streamer_sink`) by asking the node (logs.py). cloudstream plugs itself in there: it
  receives kube-apiserver's kubelet requests for edge nodes. The node's answers come to an
  inbox of their own (Module.LOGSTREAMS), so they never wait behind reports that wait for a
  slow API server.

What it does not: keep ObjectSync records (synccontroller's Ledger does; this module tells it
what it sends and asks it what nodes hold), or deliver reliably (cloudhub's queue does).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cloud.edgecontroller.downstream import Downstream
from cloud.edgecontroller.liveness import NodeMonitor
from cloud.edgecontroller.logs import LogStreams
from cloud.edgecontroller.objects import CONFIGMAP, KINDS, NODE, POD, SECRET
from cloud.edgecontroller.upstream import Upstream
from cloud.kube import EventQueue, Kube, event_queue
from cloud.metrics import CloudMetrics
from cloud.settings import CloudSettings
from cloud.synccontroller.ledger import Ledger, Record
from common.bus import Bus
from common.names import Group, Module
from common.supervisor import together

log = logging.getLogger(__name__)

# Receives the coroutine that serves pods/log, once the kubernetes client is connected.
LogStreamerSink = Callable[[Callable[..., Any]], None]


class EdgeController:
    name: str = Module.EDGECONTROLLER
    group: str = Group.RESOURCE
    kinds = frozenset(KINDS)  # the kinds whose ObjectSync records this module reconciles

    def __init__(
        self,
        bus: Bus,
        settings: CloudSettings,
        *,
        kubeconfig: Path,
        ledger: Ledger,
        connected: Callable[[str], bool],
        metrics: CloudMetrics | None = None,
        log_streamer_sink: LogStreamerSink | None = None,
    ) -> None:
        self.bus = bus
        self.settings = settings
        self.ledger = ledger
        self.kube = Kube(
            kubeconfig,
            name="edgecontroller",
            watch_timeout=settings.kube_watch_timeout,
        )
        self.downstream = Downstream(bus, ledger, metrics)
        self.upstream = Upstream(
            self.kube, self.downstream.node, self.downstream.pod, self.downstream.synced, metrics
        )
        self.monitor = NodeMonitor(
            self.kube,
            self.downstream.edge_node_objects,
            connected,
            grace=settings.node_grace_period,
            period=settings.node_monitor_period,
        )
        self.logs = LogStreams(bus, connected, settings.log_timeout)
        bus.register(Module.LOGSTREAMS, Group.LOGS)
        self._log_streamer_sink = log_streamer_sink
        self._events: EventQueue = event_queue()
        self._watching = False

    def edge_node_addresses(self) -> set[str]:
        """Every address (IP or hostname) edge nodes report: where the API server would dial
        their kubelets."""
        out: set[str] = set()
        for node in self.downstream.edge_node_objects().values():
            for address in (node.get("status") or {}).get("addresses") or []:
                if address.get("address"):
                    out.add(str(address["address"]))
        return out

    @property
    def synced(self) -> asyncio.Event:
        """Set once every informer's first listing has been applied."""
        return self.downstream.synced

    async def reconcile(self, record: Record) -> None:
        await self.downstream.reconcile(record)

    async def run(self) -> None:
        await self.kube.connect()
        if self._log_streamer_sink is not None:
            self._log_streamer_sink(self.logs.serve)
        if not self._watching:
            self._watch()
        await together(
            edge_events=self._apply_events(),
            edge_inbox=self._inbox(),
            edge_log_answers=self.logs.answers(),
            edge_upstream=self.upstream.run(),
            edge_monitor=self.monitor.run(),
        )

    async def close(self) -> None:
        await self.kube.close()

    def _watch(self) -> None:
        core, queue = self.kube.core, self._events
        self.kube.informer(NODE.kind, "v1", core.list_node, queue)
        self.kube.informer(POD.kind, "v1", core.list_pod_for_all_namespaces, queue)
        self.kube.informer(CONFIGMAP.kind, "v1", core.list_config_map_for_all_namespaces, queue)
        self.kube.informer(SECRET.kind, "v1", core.list_secret_for_all_namespaces, queue)
        self.kube.start_informers()
        self._watching = True

    async def _apply_events(self) -> None:
        # What nodes already hold must be known first, or a restart would resend everything.
        await self.ledger.loaded.wait()
        while True:
            kind, event = await self._events.get()
            await self.downstream.handle(kind, event)

    async def _inbox(self) -> None:
        while True:
            msg = await self.bus.receive(self.name)
            await self.upstream.submit(msg)
