"""cloudcore's Prometheus metrics: one registry per process, served on --metrics-listen.

`CloudMetrics` holds the registry and the counters modules bump (cloudhub counts envelopes
per node, and what node authorization refused; edgecontroller counts what it queues for nodes
and what it applies from them).
Gauges that only mirror some module's state (connected nodes, queue depths, sync records)
are read at scrape time through callbacks, so nothing has to be kept in step.
`MetricsServer` is the bus module serving `GET /metrics` with aiohttp on the event loop, so
those callbacks read module state from the loop's own thread.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from cloud.settings import CloudSettings
from common.bus import Bus
from common.names import Group, Module
from common.settings import split_host_port

log = logging.getLogger(__name__)


@dataclass(eq=False)  # the registry keys collectors by identity
class _Views(Collector):
    """Gauges computed when scraped."""

    connected: Callable[[], list[str]] | None = None
    queue_depth: Callable[[], dict[str, int]] | None = None
    gauges: list[tuple[str, str, Callable[[], float]]] = field(default_factory=list)

    def collect(self) -> Iterable[Metric]:
        if self.connected is not None:
            yield GaugeMetricFamily(
                "kubeedge_hub_connected_nodes",
                "Edge nodes with an open HubService stream",
                value=len(self.connected()),
            )
        if self.queue_depth is not None:
            depth = GaugeMetricFamily(
                "kubeedge_hub_queue_depth",
                "Downstream messages queued for a node and not yet acknowledged",
                labels=["node"],
            )
            for node, pending in sorted(self.queue_depth().items()):
                depth.add_metric([node], pending)
            yield depth
        for name, help_text, read in self.gauges:
            yield GaugeMetricFamily(name, help_text, value=read())


class CloudMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.hub_sent = Counter(
            "kubeedge_hub_messages_sent",
            "Envelopes cloudhub sent to a node",
            ["node"],
            registry=self.registry,
        )
        self.hub_received = Counter(
            "kubeedge_hub_messages_received",
            "Envelopes cloudhub received from a node",
            ["node"],
            registry=self.registry,
        )
        self.downstream = Counter(
            "kubeedge_edgecontroller_downstream_messages",
            "Objects edgecontroller queued for edge nodes",
            ["kind", "operation"],
            registry=self.registry,
        )
        self.upstream = Counter(
            "kubeedge_edgecontroller_upstream_messages",
            "Node reports edgecontroller handled, by resource type and result",
            ["type", "result"],
            registry=self.registry,
        )
        self.denied = Counter(
            "kubeedge_cloudhub_denied",
            "Upstream messages cloudhub refused because the sending node may not make them "
            "(node authorization), by node and resource type",
            ["node", "kind"],
            registry=self.registry,
        )
        self._views = _Views()
        self.registry.register(self._views)

    def watch_hub(
        self, connected: Callable[[], list[str]], queue_depth: Callable[[], dict[str, int]]
    ) -> None:
        """Where the hub gauges read from at scrape time."""
        self._views.connected = connected
        self._views.queue_depth = queue_depth

    def gauge(self, name: str, help_text: str, read: Callable[[], float]) -> None:
        """A gauge whose value `read()` gives at scrape time."""
        self._views.gauges.append((name, help_text, read))

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class MetricsServer:
    """Serves GET /metrics (Prometheus text format) on --metrics-listen."""

    name: str = Module.METRICS
    group: str = Group.METRICS

    def __init__(self, bus: Bus, metrics: CloudMetrics, settings: CloudSettings) -> None:
        self.bus = bus
        self.metrics = metrics
        self.settings = settings
        self.port = 0
        self._runner: web.AppRunner | None = None

    async def run(self) -> None:
        if self._runner is None:
            await self._start()
        while True:  # nothing is addressed to this module; drop what arrives anyway
            msg = await self.bus.receive(self.name)
            log.debug("metrics: dropping %s from %s", msg.route.operation, msg.route.source)

    async def _start(self) -> None:
        host, port = split_host_port(self.settings.metrics_listen, "--metrics-listen")
        app = web.Application()
        app.router.add_get("/metrics", self._serve)
        runner = web.AppRunner(
            app, access_log=None, handle_signals=False, shutdown_timeout=self.settings.stop_grace
        )
        await runner.setup()
        site = web.TCPSite(runner, host, port)
        try:
            await site.start()
        except OSError:
            await runner.cleanup()
            raise
        self._runner = runner
        for address in runner.addresses:
            if isinstance(address, tuple) and len(address) >= 2:
                self.port = int(address[1])
                break
        log.info("metrics served on http://%s:%d/metrics", host, self.port)

    async def _serve(self, request: web.Request) -> web.Response:
        return web.Response(
            body=self.metrics.exposition(), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
