"""cloudcore: the cloud part. `register_modules` is the map of the process."""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path

from cloud.devicecontroller.module import DeviceController
from cloud.edgecontroller.module import EdgeController
from cloud.hub.authority import EdgeAuthority
from cloud.hub.module import CloudHub
from cloud.kube import Kube
from cloud.metrics import CloudMetrics, MetricsServer
from cloud.settings import CloudSettings
from cloud.stream.module import CloudStream
from cloud.synccontroller.module import SyncController
from common import logs, settings
from common.bus import Bus
from common.errors import ConfigError
from common.process import serve
from common.supervisor import Supervisor

DESCRIPTION = (
    "cloudcore: kubeedge-py's cloud part, on top of the Kubernetes cluster --kubeconfig names "
    "(`keadm up` starts a real one on this machine and passes its kubeconfig). Serves the "
    "HubService gRPC stream every edge node keeps open. Sends each edge node its pods, "
    "configmaps, secrets and devices reliably (durable per-node queues, ObjectSync), writes "
    "node, pod and device status the nodes report back, and serves kubectl logs and "
    "Prometheus metrics."
)


def register_modules(supervisor: Supervisor, cfg: CloudSettings) -> CloudHub:
    """Every cloudcore module, in start order (stopped in reverse)."""
    bus = supervisor.bus
    if not cfg.kubeconfig:
        raise ConfigError(
            "cloudcore needs --kubeconfig: the cluster it works on "
            "(`keadm up` starts one on this machine and passes its kubeconfig)"
        )
    kubeconfig = Path(cfg.kubeconfig)
    metrics = CloudMetrics()
    hub = CloudHub(bus, cfg, metrics, None if cfg.insecure_hub else edge_authority(cfg))
    metrics.watch_hub(hub.connected_nodes, hub.queue_depths)
    sync = SyncController(bus, cfg, kubeconfig=kubeconfig)
    stream = CloudStream(bus, cfg)
    edge = EdgeController(
        bus,
        cfg,
        kubeconfig=kubeconfig,
        ledger=sync.ledger,
        connected=hub.is_connected,
        metrics=metrics,
        log_streamer_sink=stream.install,
    )
    stream.pods = edge.downstream.pod
    stream.edge_addresses = edge.edge_node_addresses
    sync.reconcilers.append(edge)
    devices = DeviceController(bus, cfg, kubeconfig=kubeconfig)
    hub.authorizer.pods, hub.authorizer.devices = edge.downstream, devices
    metrics.gauge(
        "kubeedge_synccontroller_objectsyncs",
        "Objects held by edge nodes, as ObjectSync records",
        lambda: len(sync.ledger),
    )
    supervisor.add(MetricsServer(bus, metrics, cfg))
    supervisor.add(sync)
    supervisor.add(edge)
    supervisor.add(devices)
    supervisor.add(hub)
    supervisor.add(stream)
    return hub


def edge_authority(cfg: CloudSettings) -> EdgeAuthority:
    advertise = [h.strip() for h in cfg.hub_advertise_address.split(",") if h.strip()]
    return EdgeAuthority(
        Kube(Path(cfg.kubeconfig), name="edgeca", workers=2),
        node_cert_lifetime=cfg.node_cert_lifetime,
        advertise=advertise,
    )


async def run(cfg: CloudSettings) -> None:
    supervisor = Supervisor(Bus())
    register_modules(supervisor, cfg)
    await serve(supervisor, "cloudcore")


def main(argv: list[str] | None = None) -> None:
    cfg = settings.load(CloudSettings, argv, "cloudcore", DESCRIPTION)
    logs.setup(cfg.log_level, "cloudcore")
    code = 0
    try:
        asyncio.run(run(cfg))
    except KeyboardInterrupt:
        code = 130
    # The shutdown is done (queues flushed, files closed). A Kubernetes API call still running
    # in a client thread (the API server may be stopping too, with connections that hang until
    # their timeout and retries) must not hold the process: Python would join those threads.
    logging.shutdown()
    os._exit(code)


if __name__ == "__main__":
    main()
