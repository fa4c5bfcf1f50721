"""cloudcore: the cloud part. `register_modules` is the map of the process."""

from __future__ import annotations

import asyncio
import sys

from cloud.apiserver.module import APIServer
from cloud.hub.module import CloudHub
from cloud.settings import CloudSettings
from common import logs, settings
from common.bus import Bus
from common.process import serve
from common.supervisor import Supervisor

DESCRIPTION = (
    "cloudcore: kubeedge-py's cloud part. Serves an embedded Kubernetes-compatible API "
    "(kubectl works against DATA_DIR/kubeconfig) unless --kubeconfig names a real cluster, and "
    "the HubService gRPC stream every edge node keeps open; delivers objects to nodes reliably "
    "(durable per-node queues, resend until acked) and hands what nodes report to the cloud "
    "modules."
)


def register_modules(supervisor: Supervisor, cfg: CloudSettings) -> CloudHub:
    """Every cloudcore module, in start order (stopped in reverse)."""
    if not cfg.kubeconfig:
        supervisor.add(APIServer(cfg))
    hub = CloudHub(supervisor.bus, cfg)
    supervisor.add(hub)
    return hub


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
