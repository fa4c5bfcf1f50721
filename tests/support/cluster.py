"""A cloudcore process on the test session's real control plane, and kubectl run against it."""

from __future__ import annotations

import asyncio
import json
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.support.controlplane import TestControlPlane
from tests.support.procs import Proc, python

KUBECTL = shutil.which("kubectl", path=str(Path(sys.executable).parent)) or "kubectl"


@dataclass
class Cluster:
    proc: Proc
    data_dir: Path
    control_plane: TestControlPlane
    extra: list[str]

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

    async def get_json(self, *args: str) -> Any:
        return json.loads(await self.kubectl("get", *args, "-o", "json"))

    async def restart(self, *, kill: bool) -> None:
        if kill:
            await self.proc.kill()
        else:
            await self.proc.terminate()
        self.proc = await start_proc(self.data_dir, self.control_plane, self.extra)


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
    return Cluster(await start_proc(data_dir, cp, list(extra)), data_dir, cp, list(extra))
