"""edgecore: the edge part. `register_modules` is the map of the process."""

from __future__ import annotations

import asyncio
import logging
import sys
from pathlib import Path

from common import logs, settings
from common.bus import Bus
from common.errors import ConfigError
from common.process import serve
from common.sqlite import Database
from common.supervisor import Supervisor
from edge.edged.module import Edged
from edge.eventbus.module import EventBus
from edge.hub.identity import NodeIdentity
from edge.hub.module import EdgeHub
from edge.meta.module import MetaManager
from edge.private import private_dir
from edge.settings import EdgeSettings
from edge.twin.module import DeviceTwin

log = logging.getLogger("edgecore")

DESCRIPTION = (
    "edgecore: kubeedge-py's edge part. Keeps one gRPC stream to cloudcore, stores everything "
    "it receives in SQLite before acknowledging it, runs pods on containerd through the CRI "
    "(its own containerd unless --runtime-endpoint is given), keeps device twins that mappers "
    "reach over MQTT on KubeEdge's $hw/ topics, and queues what it reports in a durable "
    "outbox, so the node keeps working when the cloud is away."
)


def open_database(cfg: EdgeSettings) -> Database:
    """The node's one SQLite file: metamanager's store and edgehub's outbox share its writer.
    DATA_DIR is made (or tightened to) 0700 first: it holds Secrets."""
    return Database(private_dir(Path(cfg.data_dir)) / "edge.db", "SELECT 1")


async def node_identity(cfg: EdgeSettings) -> NodeIdentity | None:
    """The node's certificate, joining with --token first if it has none (None: plaintext)."""
    if cfg.insecure_hub:
        log.warning(
            "--insecure-hub: the link to the cloud is plaintext and unauthenticated; "
            "for debugging only, never on a real network"
        )
        return None
    identity = NodeIdentity(cfg)
    await identity.ensure()
    return identity


def register_modules(
    supervisor: Supervisor, cfg: EdgeSettings, db: Database, identity: NodeIdentity | None
) -> EdgeHub:
    """Every edgecore module, in start order (stopped in reverse)."""
    if identity is None and not cfg.insecure_hub:
        raise ConfigError("edgehub needs the node's certificate (or --insecure-hub)")
    supervisor.add(MetaManager(supervisor.bus, db))
    if cfg.edged:
        supervisor.add(Edged(supervisor.bus, cfg))
    supervisor.add(DeviceTwin(supervisor.bus, cfg, db))
    supervisor.add(EventBus(supervisor.bus, cfg, db))
    hub = EdgeHub(supervisor.bus, cfg, db, identity)
    supervisor.add(hub)
    return hub


async def run(cfg: EdgeSettings) -> None:
    identity = await node_identity(cfg)
    if cfg.join_only:
        where = "nothing to join: --insecure-hub" if identity is None else str(identity.dir)
        log.info("--join-only: done (%s)", where)
        return
    db = open_database(cfg)
    try:
        supervisor = Supervisor(Bus(), stop_timeout=cfg.stop_grace)
        register_modules(supervisor, cfg, db, identity)
        await serve(supervisor, f"edgecore {cfg.node_name}")
    finally:
        db.close()


def main(argv: list[str] | None = None) -> None:
    cfg = settings.load(EdgeSettings, argv, "edgecore", DESCRIPTION)
    logs.setup(cfg.log_level, f"edgecore[{cfg.node_name}]")
    try:
        asyncio.run(run(cfg))
    except ConfigError as exc:
        log.error("%s", exc)
        sys.exit(2)
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
