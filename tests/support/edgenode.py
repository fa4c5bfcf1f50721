"""Real edgecore processes for end-to-end tests: each with its own data dir, containerd, CNI
bridge and pod subnet (so several run side by side), sub-second timers, and the demo images."""

from __future__ import annotations

import asyncio
import itertools
import json
import random
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from edge.edged.containerd import socket_path_for
from edge.edged.cri import CRI
from tests.support.cluster import Cluster
from tests.support.procs import Proc, python

ROOT = Path(__file__).parents[2]
# Each node of this test process gets its own bridge name and /24 (two random picks collided).
_NEXT = itertools.count(random.randint(0, 10_000))
# cloudcore flags that make node liveness and resends quick.
FAST_CLOUD = [
    "--node-monitor-period",
    "0.5",
    "--node-grace-period",
    "5",
    "--sync-period",
    "1",
    "--resend-interval",
    "1",
    "--keepalive-timeout",
    "5",
]
FAST_EDGE = [
    "--node-status-interval",
    "1",
    "--lease-renew-interval",
    "1",
    "--keepalive-interval",
    "0.5",
    "--keepalive-timeout",
    "3",
    "--reconnect-initial",
    "0.1",
    "--reconnect-max",
    "0.5",
    "--resend-interval",
    "1",
    "--pod-sync-interval",
    "0.3",
    "--crash-backoff-initial",
    "0.5",
    "--crash-backoff-max",
    "2",
]


@dataclass
class Node:
    name: str
    proc: Proc
    data_dir: Path
    flags: list[str]

    async def restart(self) -> None:
        await self.proc.terminate()
        self.proc = await Proc(python("edge.main", *self.flags), self.name).start()

    async def cri(self) -> CRI:
        runtime = CRI()
        await runtime.connect(f"unix://{socket_path_for(self.data_dir / 'containerd')}")
        return runtime

    async def stop_and_reset(self) -> None:
        """Stop edgecore, then remove its pods, containerd and bridge."""
        await self.proc.terminate()
        await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "edge.edged.reset", "--data-dir", str(self.data_dir)],
            capture_output=True,
            check=False,
        )


def build_images(out: Path) -> Path:
    subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "build-image.py"), "--out", str(out)],
        check=True,
        capture_output=True,
    )
    return out


async def start_node(
    name: str, data_dir: Path, hub: str, images: Path, *extra: str, mqtt: bool = False
) -> Node:
    """An edgecore named `name` connecting to `hub`, on a bridge and subnet of its own."""
    n = next(_NEXT)
    flags = [
        "--data-dir",
        str(data_dir),
        "--node-name",
        name,
        "--cloud",
        hub,
        "--images-dir",
        str(images),
        "--cni-bridge",
        f"ket{n % 100_000}",
        "--pod-cidr",
        f"10.{200 + n // 250 % 50}.{n % 250}.0/24",
        *([] if mqtt else ["--mqtt-listen", "127.0.0.1:0"]),
        *FAST_EDGE,
        *extra,
    ]
    return Node(name, await Proc(python("edge.main", *flags), name).start(), data_dir, flags)


async def node_ready(cluster: Cluster, name: str = "edge-1") -> bool:
    out = await cluster.kubectl("get", "node", name, "-o", "json", check=False)
    try:
        node = json.loads(out)
    except ValueError:
        return False
    return any(
        c["type"] == "Ready" and c["status"] == "True"
        for c in node.get("status", {}).get("conditions", [])
    )
