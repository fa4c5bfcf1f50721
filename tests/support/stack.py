"""In-process cloud and edge stacks with the real modules and sub-second timers."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from cloud.hub.module import CloudHub
from cloud.main import register_modules as register_cloud
from cloud.settings import CloudSettings
from common.bus import Bus
from common.names import Group, Module
from common.sqlite import Database
from common.supervisor import Backoff, Supervisor
from edge.hub.module import EdgeHub
from edge.main import node_identity, open_database
from edge.main import register_modules as register_edge
from edge.meta.module import MetaManager
from edge.settings import EdgeSettings
from tests.support.modules import Recorder

FAST_CLOUD: dict[str, Any] = {
    "hub_listen": "127.0.0.1:0",
    "insecure_hub": True,  # these stacks test the hub's logic; tests/e2e run it over mTLS
    "metrics_listen": "127.0.0.1:0",
    "keepalive_timeout": 1.5,
    "resend_interval": 0.5,
    "stop_grace": 0.2,
}
FAST_EDGE: dict[str, Any] = {
    "edged": False,
    "insecure_hub": True,
    "mqtt_listen": "127.0.0.1:0",
    "keepalive_interval": 0.2,
    "keepalive_timeout": 1.5,
    "reconnect_initial": 0.05,
    "reconnect_max": 0.3,
    "resend_interval": 0.5,
    "stop_grace": 0.2,
}


def flags(values: dict[str, Any]) -> list[str]:
    """The same settings as command-line flags, for subprocesses."""
    out = []
    for key, value in values.items():
        flag = key.replace("_", "-")
        if isinstance(value, bool):
            out.append(f"--{flag}" if value else f"--no-{flag}")
        else:
            out += [f"--{flag}", str(value)]
    return out


@dataclass
class CloudStack:
    supervisor: Supervisor
    hub: CloudHub
    recorder: Recorder

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.hub.port}"

    async def stop(self) -> None:
        await self.supervisor.stop()


@dataclass
class EdgeStack:
    supervisor: Supervisor
    hub: EdgeHub
    meta: MetaManager
    recorder: Recorder
    db: Database

    async def stop(self) -> None:
        await self.supervisor.stop()
        self.db.close()


async def start_cloud(data_dir: Path, **overrides: Any) -> CloudStack:
    """cloudcore's modules in this process. As cloudcore, they need `kubeconfig=`: a test
    passes its control plane's (`str(kube.cloudcore_kubeconfig)`)."""
    cfg = CloudSettings(data_dir=data_dir, **{**FAST_CLOUD, **overrides})
    supervisor = Supervisor(Bus(), Backoff(0.05, 0.2), stop_timeout=2)
    hub = register_cloud(supervisor, cfg)
    recorder = Recorder(supervisor.bus, "test-recorder", Group.USER)
    supervisor.add(recorder)
    await supervisor.start()
    await hub.started.wait()
    return CloudStack(supervisor, hub, recorder)


async def start_edge(
    data_dir: Path, node: str, cloud: str, *, join: tuple[str, str] | None = None, **overrides: Any
) -> EdgeStack:
    """edgecore's modules in this process; plaintext, or with `join=(token, bootstrap)` over
    mutual TLS with a certificate got with that token."""
    if join is not None:
        overrides = {**overrides, "insecure_hub": False, "token": join[0], "bootstrap": join[1]}
    cfg = EdgeSettings(data_dir=data_dir, node_name=node, cloud=cloud, **{**FAST_EDGE, **overrides})
    identity = await node_identity(cfg)
    db = open_database(cfg)
    supervisor = Supervisor(Bus(), Backoff(0.05, 0.2), stop_timeout=2)
    hub = register_edge(supervisor, cfg, db, identity)
    meta = supervisor.get(Module.METAMANAGER)
    assert isinstance(meta, MetaManager)
    recorder = Recorder(supervisor.bus, "test-edged", Group.EDGED)
    supervisor.add(recorder)
    await supervisor.start()
    return EdgeStack(supervisor, hub, meta, recorder, db)


def with_settings(cfg: Any, **changes: Any) -> Any:
    return replace(cfg, **changes)
