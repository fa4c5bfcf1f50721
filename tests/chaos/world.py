"""The chaos world: the real control plane, one cloudcore and two edgecores, and the handles
that break each part.

Each edgecore has its own containerd, CNI bridge and subnet, a data dir on a small tmpfs of its
own (so a disk can be filled without touching the machine's), an MQTT broker on its own port,
and reaches the hub through a FaultProxy (cut, freeze). Everything listens on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import signal
import subprocess
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from kubernetes import client

from common import kubeclient
from edge.edged import subpaths
from tests.support.cluster import Cluster, start_cluster, start_proc
from tests.support.controlplane import TestControlPlane
from tests.support.edgenode import FAST_CLOUD, Node, build_images, node_ready, start_node
from tests.support.procs import Proc, python
from tests.support.proxy import FaultProxy
from tests.support.waiting import eventually, free_port

NODES = ("edge-1", "edge-2")
DISK = "256m"  # each edge node's data dir: a tmpfs this big
FILLER = "chaos-filler"


@dataclass
class Edge:
    node: Node
    proxy: FaultProxy
    mqtt_port: int
    up: bool = True

    @property
    def name(self) -> str:
        return self.node.name

    @property
    def data_dir(self) -> Path:
        return self.node.data_dir


@dataclass
class World:
    root: Path
    cp: TestControlPlane
    cluster: Cluster
    edges: dict[str, Edge] = field(default_factory=dict)
    cloud_up: bool = True

    # -- life ------------------------------------------------------------------------------

    @classmethod
    async def start(cls, root: Path) -> World:
        cp = TestControlPlane(root / "cp")
        await asyncio.to_thread(cp.start)
        world: World | None = None
        try:
            hub_port = free_port()
            cluster = await start_cluster(
                root / "cloud", cp, "--hub-listen", f"127.0.0.1:{hub_port}", *FAST_CLOUD
            )
            world = cls(root, cp, cluster)
            images = await asyncio.to_thread(build_images, root / "images")
            for name in NODES:
                world.edges[name] = await world._start_edge(name, hub_port, images)
            for name in NODES:
                await eventually(lambda n=name: node_ready(cluster, n), 90, f"{name} Ready")
            return world
        except BaseException:
            if world is not None:
                await world.stop()
            else:
                await asyncio.to_thread(cp.stop)
            raise

    async def _start_edge(self, name: str, hub_port: int, images: Path) -> Edge:
        data_dir = self.root / name
        data_dir.mkdir(parents=True)
        _run("mount", "-t", "tmpfs", "-o", f"size={DISK},mode=0700", "tmpfs", str(data_dir))
        proxy: FaultProxy | None = None
        try:
            proxy = await FaultProxy(hub_port).start()
            mqtt_port = free_port()
            node = await start_node(
                name,
                data_dir,
                proxy.address,
                images,
                *await self.cluster.join_flags(name),
                "--mqtt-listen",
                f"127.0.0.1:{mqtt_port}",
                mqtt=True,
            )
        except BaseException:
            if proxy is not None:
                await proxy.close()
            _run("umount", str(data_dir), check=False)
            raise
        return Edge(node, proxy, mqtt_port)

    async def stop(self) -> None:
        """Stop and remove everything, whatever state the chaos left it in: each part is
        released even when releasing another failed; the failures are raised at the end."""
        failures: list[BaseException] = []
        for edge in self.edges.values():
            failures += await _each(
                lambda e=edge: self._stop_edge(e), lambda e=edge: e.proxy.close()
            )
            try:  # edged's reset unmounts what is under its data dir, maybe this tmpfs too
                if subpaths.is_mounted(edge.data_dir.resolve()):
                    _run("umount", str(edge.data_dir))
            except RuntimeError as exc:
                failures.append(exc)
        if self.cloud_up:
            failures += await _each(self.cluster.proc.terminate)
        failures += await _each(lambda: asyncio.to_thread(self.cp.stop))
        if failures:
            raise ExceptionGroup("the chaos world did not come down cleanly", failures)

    async def _stop_edge(self, edge: Edge) -> None:
        """edgecore stopped, then its pods, containerd and bridge removed (edged.reset)."""
        self.free_disk(edge.name)
        if edge.up:
            await edge.node.proc.terminate()
        done = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "edge.edged.reset", "--data-dir", str(edge.data_dir)],
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"reset of {edge.name} failed: {done.stdout}{done.stderr}")

    def api(self) -> client.ApiClient:
        return kubeclient.ApiClient(self.cp.kubeconfig)

    # -- faults and their healing -----------------------------------------------------------

    async def kill_cloudcore(self) -> None:
        await self.cluster.proc.kill()
        self.cloud_up = False

    async def start_cloudcore(self) -> None:
        c = self.cluster
        c.proc = await start_proc(c.data_dir, c.control_plane, c.all_flags)
        self.cloud_up = True

    async def kill_edgecore(self, name: str) -> None:
        edge = self.edges[name]
        await edge.node.proc.kill()
        edge.up = False

    async def start_edgecore(self, name: str) -> None:
        edge = self.edges[name]
        edge.node.proc = await Proc(python("edge.main", *edge.node.flags), name).start()
        edge.up = True

    def kill_containerd(self, name: str) -> int:
        """SIGKILL the node's containerd; its pid (edged starts another)."""
        pid = self.containerd_pid(name)
        os.kill(pid, signal.SIGKILL)
        return pid

    def containerd_pid(self, name: str) -> int:
        return int((self.edges[name].data_dir / "containerd" / "containerd.pid").read_text())

    def fill_disk(self, name: str) -> int:
        """Fill the node's data dir to the last byte; how many bytes that took."""
        path = self.edges[name].data_dir / FILLER
        written = 0
        chunk = b"\0" * (1 << 20)
        with path.open("wb") as f:
            while True:
                try:
                    written += f.write(chunk)
                    f.flush()
                except OSError as exc:
                    if exc.errno != errno.ENOSPC:
                        raise
                    break
        return written

    def free_disk(self, name: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            (self.edges[name].data_dir / FILLER).unlink()


async def _each(*steps: Callable[[], Awaitable[object]]) -> list[BaseException]:
    """Run every step; the exceptions they raised."""
    failures: list[BaseException] = []
    for step in steps:
        try:
            await step()
        except Exception as exc:
            failures.append(exc)
    return failures


def _run(*argv: str, check: bool = True) -> None:
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if check and done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: {done.stderr.strip()}")
