"""cloudcore: the cloud part. `register_modules` is the map of the process."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cloud.apiserver.module import APIServer
from cloud.devicecontroller.module import DeviceController
from cloud.edgecontroller.module import EdgeController
from cloud.hub.module import CloudHub
from cloud.metrics import CloudMetrics, MetricsServer
from cloud.settings import CloudSettings
from cloud.synccontroller.module import SyncController
from common import logs, settings
from common.bus import Bus
from common.process import serve
from common.supervisor import Supervisor

DESCRIPTION = (
    "cloudcore: kubeedge-py's cloud part. Serves an embedded Kubernetes-compatible API "
    "(kubectl works against DATA_DIR/kubeconfig) unless --kubeconfig names a real cluster, and "
    "the HubService gRPC stream every edge node keeps open. Sends each edge node its pods, "
    "configmaps, secrets and devices reliably (durable per-node queues, ObjectSync), writes "
    "node, pod and device status the nodes report back, and serves kubectl logs and "
    "Prometheus metrics."
)


def register_modules(supervisor: Supervisor, cfg: CloudSettings) -> CloudHub:
    """Every cloudcore module, in start order (stopped in reverse)."""
    bus = supervisor.bus
    api = None if cfg.kubeconfig else APIServer(cfg)
    kubeconfig = Path(cfg.kubeconfig) if api is None else api.kubeconfig
    api_ready = None if api is None else api.started
    metrics = CloudMetrics()
    hub = CloudHub(bus, cfg, metrics)
    metrics.watch_hub(hub.connected_nodes, lambda: _queue_depths(hub))
    sync = SyncController(bus, cfg, kubeconfig=kubeconfig, api_ready=api_ready)
    edge = EdgeController(
        bus,
        cfg,
        kubeconfig=kubeconfig,
        api_ready=api_ready,
        ledger=sync.ledger,
        connected=lambda node: node in hub.sessions,
        metrics=metrics,
        log_streamer_sink=None if api is None else _pod_logs_to(api),
    )
    sync.reconcilers.append(edge)
    metrics.gauge(
        "kubeedge_synccontroller_objectsyncs",
        "Objects held by edge nodes, as ObjectSync records",
        lambda: len(sync.ledger),
    )
    if api is not None:
        supervisor.add(api)
    supervisor.add(MetricsServer(bus, metrics, cfg))
    supervisor.add(sync)
    supervisor.add(edge)
    supervisor.add(DeviceController(bus, cfg, kubeconfig=kubeconfig, api_ready=api_ready))
    supervisor.add(hub)
    return hub


def _queue_depths(hub: CloudHub) -> dict[str, int]:
    nodes = set(hub.outbox.targets()) | set(hub.sessions)
    return {node: hub.outbox.pending(node) for node in nodes}


def _pod_logs_to(api: APIServer) -> Callable[[Callable[..., Any]], None]:
    """Where edgecontroller plugs in pods/log once the embedded API server is up."""

    def install(streamer: Callable[..., Any]) -> None:
        if api.frontend is not None:
            api.frontend.log_streamer = streamer

    return install


async def run(cfg: CloudSettings) -> None:
    supervisor = Supervisor(Bus())
    register_modules(supervisor, cfg)
    await serve(supervisor, "cloudcore")


def main(argv: list[str] | None = None) -> None:
    cfg = settings.load(CloudSettings, argv, "cloudcore", DESCRIPTION)
    logs.setup(cfg.log_level, "cloudcore")
    try:
        asyncio.run(run(cfg))
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
