"""A cloudcore process on the test session's real control plane, and kubectl run against it."""

from __future__ import annotations

import asyncio
import json
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from keadm import tokens
from tests.support.controlplane import TestControlPlane
from tests.support.procs import Proc, python
from tests.support.waiting import free_port

KUBECTL = shutil.which("kubectl", path=str(Path(sys.executable).parent)) or "kubectl"


@dataclass
class Cluster:
    proc: Proc
    data_dir: Path
    control_plane: TestControlPlane
    extra: list[str]
    bootstrap: str
    """HOST:PORT of cloudcore's BootstrapService (where nodes spend join tokens)."""

    @property
    def kubeconfig(self) -> Path:
        """The admin kubeconfig (what kubectl uses)."""
        return self.control_plane.kubeconfig

    async def kubectl(self, *args: str, stdin: str | None = None, check: bool = True) -> str:
        proc = await asyncio.create_subprocess_exec(
            KUBECTL,
            "--kubeconfig",
            str(self.kubeconfig),
            *args,
            stdin=asyncio.subprocess.PIPE if stdin is not None else None,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(
            proc.communicate(stdin.encode() if stdin is not None else None), 60
        )
        if check and proc.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed: {err.decode()}")
        return out.decode() if check else out.decode() + err.decode()

    async def token(self, node: str = "", ttl: str = "10m") -> str:
        """A join token made as `keadm gettoken` makes it (for `node` only, if given)."""
        return await asyncio.to_thread(new_token, self.kubeconfig, node, ttl)

    async def join_flags(self, node: str) -> list[str]:
        """edgecore flags that join this cluster as `node` with a fresh token."""
        return ["--token", await self.token(node), "--bootstrap", self.bootstrap]

    async def get_json(self, *args: str) -> Any:
        return json.loads(await self.kubectl("get", *args, "-o", "json"))

    async def restart(self, *, kill: bool) -> None:
        if kill:
            await self.proc.kill()
        else:
            await self.proc.terminate()
        self.proc = await start_proc(self.data_dir, self.control_plane, self.all_flags)

    @property
    def all_flags(self) -> list[str]:
        return ["--bootstrap-listen", self.bootstrap, *self.extra]


def new_token(kubeconfig: Path, node: str = "", ttl: str = "10m") -> str:
    core = tokens.core_api(kubeconfig)
    try:
        return str(tokens.create(core, tokens.parse_duration(ttl), node, wait=30))
    finally:
        core.api_client.close()


async def start_proc(data_dir: Path, cp: TestControlPlane, extra: list[str]) -> Proc:
    proc = await Proc(
        python(
            "cloud.main",
            "--data-dir",
            str(data_dir),
            "--kubeconfig",
            str(cp.cloudcore_kubeconfig),
            "--kubelet-tunnel-socket",
            str(cp.cp.kubelet_tunnel),
            "--hub-listen",
            "127.0.0.1:0",
            "--metrics-listen",
            "127.0.0.1:0",
            *extra,
        ),
        "cloudcore",
    ).start()
    await proc.wait_line("serving HubService")
    return proc


async def start_cluster(data_dir: Path, cp: TestControlPlane, *extra: str) -> Cluster:
    """cloudcore on `cp` (the `kube` fixture: the session's control plane, wiped after)."""
    bootstrap = f"127.0.0.1:{free_port()}"
    flags = ["--bootstrap-listen", bootstrap, *extra]
    return Cluster(await start_proc(data_dir, cp, flags), data_dir, cp, list(extra), bootstrap)
