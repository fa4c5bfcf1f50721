"""Pod startup: create -> Running in the API, through the whole stack, against bare CRI.

One run (about two minutes) measures, on this machine:

stack     the real control plane (kine, kube-apiserver, controller-manager, scheduler),
          cloudcore and one edgecore with its own containerd, all real processes. This process
          creates pods with the official kubernetes client (no nodeName: the scheduler places
          them) and a watch records when each first shows `phase: Running`. Latency per pod =
          that moment - the moment its create request was sent. First 1 pod at a time
          (--single rounds, each pod deleted before the next), then --pods at once.
bare      the floor: what edged itself asks of containerd — RunPodSandbox (CNI bridge network)
          + CreateContainer + StartContainer — straight over the CRI to a private containerd,
          1 at a time (--single rounds) and --pods at once.

It prints p50/p99 for each and `ratio:` lines (stack / bare) for 1 and for --pods; the goal
is p50 <= 3x and p99 <= 5x. Pods are busybox `sleep`, imagePullPolicy Never, no service
account token. What it does not: assert anything. Figures go to docs/benchmarks.md by hand;
`--json FILE` also writes them to a file.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import random
import secrets
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from cri.runtime.v1 import api_pb2 as pb
from kubernetes import client, watch

from common import kubeclient
from edge.edged.containerd import ManagedContainerd, import_images
from edge.edged.cri import CRI
from keadm import pki
from keadm.controlplane import ControlPlane, ControlPlaneSettings
from keadm.processes import ProcessGroup
from tests.support.cluster import new_token
from tests.support.procs import Proc, python
from tests.support.waiting import free_port

ROOT = Path(__file__).resolve().parents[1]
NS = "default"
IMAGE = "docker.io/kubeedge-py/busybox:latest"


def percentiles(samples: list[float]) -> dict[str, float]:
    ms = sorted(s * 1000 for s in samples)
    if len(ms) == 1:
        ms = ms * 2
    cuts = statistics.quantiles(ms, n=100, method="inclusive")
    return {"n": len(samples), "p50": round(cuts[49], 1), "p99": round(cuts[98], 1)}


def subnet() -> str:
    used = subprocess.run(
        ["ip", "-o", "-4", "addr"], capture_output=True, text=True, check=False
    ).stdout
    for _ in range(50):
        third = random.randint(100, 250)
        if f" 10.245.{third}." not in used:
            return f"10.245.{third}.0/24"
    raise RuntimeError("no free 10.245.x.0/24 subnet")


async def run(argv: list[str], *, check: bool = False) -> None:
    """A helper command, its output kept out of the figures."""
    await asyncio.to_thread(subprocess.run, argv, capture_output=True, check=check)


# -- bare CRI ------------------------------------------------------------------------------


async def bare_pod(cri: CRI, log_root: Path) -> float:
    uid = secrets.token_hex(8)
    name = f"bare-{uid}"
    namespaces = pb.NamespaceOption(network=pb.POD, pid=pb.CONTAINER, ipc=pb.POD)
    sandbox = pb.PodSandboxConfig(
        metadata=pb.PodSandboxMetadata(name=name, uid=uid, namespace=NS),
        hostname=name,
        log_directory=str(log_root / uid),
        linux=pb.LinuxPodSandboxConfig(
            security_context=pb.LinuxSandboxSecurityContext(namespace_options=namespaces)
        ),
    )
    container = pb.ContainerConfig(
        metadata=pb.ContainerMetadata(name="c"),
        image=pb.ImageSpec(image=IMAGE),
        command=["sleep", "3600"],
        log_path="c/0.log",
        linux=pb.LinuxContainerConfig(
            security_context=pb.LinuxContainerSecurityContext(namespace_options=namespaces)
        ),
    )
    start = time.monotonic()
    sandbox_id = await cri.run_pod_sandbox(sandbox)
    container_id = await cri.create_container(sandbox_id, container, sandbox)
    await cri.start_container(container_id)
    return time.monotonic() - start


async def measure_bare(tmp: Path, rounds: int, count: int) -> dict[str, Any]:
    bridge = f"keb{secrets.token_hex(4)}"
    mc = ManagedContainerd(tmp / "bare" / "containerd", bridge=bridge, pod_cidr=subnet())
    images = tmp / "images"
    try:
        await mc.start()
        await import_images(mc.socket_path, images)
        async with CRI(timeout=60.0) as cri:
            await cri.connect(mc.endpoint)
            single = []
            for _ in range(rounds):
                single.append(await bare_pod(cri, tmp / "bare" / "logs"))
                await remove_sandboxes(cri)
            many = await asyncio.gather(
                *(bare_pod(cri, tmp / "bare" / "logs") for _ in range(count))
            )
            await remove_sandboxes(cri)
        return {"single": percentiles(single), "many": percentiles(list(many))}
    finally:
        await mc.stop()
        await run(["ip", "link", "del", bridge])


async def remove_sandboxes(cri: CRI) -> None:
    for sandbox in await cri.list_pod_sandbox():
        await cri.stop_pod_sandbox(sandbox.id)
        await cri.remove_pod_sandbox(sandbox.id)


# -- the whole stack -----------------------------------------------------------------------


@contextlib.asynccontextmanager
async def stack(tmp: Path) -> AsyncIterator[ControlPlane]:
    group = ProcessGroup()
    cp = ControlPlane(ControlPlaneSettings(tmp / "cp", "127.0.0.1:0"), group)
    hub, bootstrap = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    procs: list[Proc] = []
    edge_dir = tmp / "edge-1"
    try:
        await cp.start()
        cloud_args = [
            "--data-dir",
            str(tmp / "cloud"),
            "--hub-listen",
            hub,
            "--bootstrap-listen",
            bootstrap,
            "--metrics-listen",
            "127.0.0.1:0",
            "--kubeconfig",
            str(cp.kubeconfig_for(pki.CLOUDCORE)),
        ]
        procs.append(await Proc(python("cloud.main", *cloud_args), "cloudcore").start())
        await procs[-1].wait_line("serving HubService", 60)
        edge_args = [
            "--data-dir",
            str(edge_dir),
            "--node-name",
            "edge-1",
            "--cloud",
            hub,
            "--token",
            await asyncio.to_thread(new_token, cp.kubeconfig, "edge-1"),
            "--bootstrap",
            bootstrap,
            "--images-dir",
            str(tmp / "images"),
            "--mqtt-listen",
            "127.0.0.1:0",
            "--cni-bridge",
            f"keb{secrets.token_hex(4)}",
            "--pod-cidr",
            subnet(),
            "--pod-sync-interval",
            "0.2",
            "--node-status-interval",
            "2",
        ]
        procs.append(await Proc(python("edge.main", *edge_args), "edgecore").start())
        yield cp
    finally:
        for proc in reversed(procs):
            await proc.terminate()
        await run([sys.executable, "-m", "edge.edged.reset", "--data-dir", str(edge_dir)])
        await group.stop()


class RunningWatch:
    """A watch on pods in a thread: when each pod was first seen Running (monotonic time)."""

    def __init__(self, api: client.ApiClient) -> None:
        self.core = client.CoreV1Api(api)
        self.running: dict[str, float] = {}
        self._stopped = False
        self._watch = watch.Watch()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        stream = self._watch.stream(self.core.list_namespaced_pod, NS, label_selector="bench")
        try:
            for event in stream:
                pod = event["object"]
                if pod.status.phase == "Running" and pod.metadata.name not in self.running:
                    self.running[pod.metadata.name] = time.monotonic()
        except Exception as exc:  # the API server stopping at the end of the run ends it too
            if not self._stopped:
                print(f"pod watch failed: {exc!r}", file=sys.stderr, flush=True)

    def stop(self) -> None:
        self._stopped = True
        self._watch.stop()


def pod(name: str) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "labels": {"bench": "1"}},
        "spec": {
            "terminationGracePeriodSeconds": 0,
            "automountServiceAccountToken": False,
            "containers": [
                {
                    "name": "c",
                    "image": IMAGE,
                    "imagePullPolicy": "Never",
                    "command": ["sleep", "3600"],
                }
            ],
        },
    }


async def wait_for(check: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        await asyncio.sleep(0.02)


async def measure_stack(cp: ControlPlane, rounds: int, count: int) -> dict[str, Any]:
    api = kubeclient.ApiClient(cp.kubeconfig)
    core = client.CoreV1Api(api)
    await wait_node_ready(core)
    seen = RunningWatch(api)
    pool = ThreadPoolExecutor(16)
    loop = asyncio.get_running_loop()

    async def create(name: str) -> float:
        start = time.monotonic()
        await loop.run_in_executor(pool, core.create_namespaced_pod, NS, pod(name))
        return start

    try:
        single = []
        for i in range(rounds):
            name = f"one-{i}"
            start = await create(name)
            await wait_for(lambda n=name: n in seen.running, 120, f"{name} Running")
            single.append(seen.running[name] - start)
            await loop.run_in_executor(pool, core.delete_namespaced_pod, name, NS)
        names = [f"many-{i}" for i in range(count)]
        starts = await asyncio.gather(*(create(n) for n in names))
        await wait_for(lambda: all(n in seen.running for n in names), 300, "all Running")
        many = [seen.running[n] - s for n, s in zip(names, starts, strict=True)]
        await loop.run_in_executor(
            pool, lambda: core.delete_collection_namespaced_pod(NS, label_selector="bench")
        )
        return {"single": percentiles(single), "many": percentiles(many)}
    finally:
        seen.stop()
        pool.shutdown(wait=False)
        api.close()


async def wait_node_ready(core: client.CoreV1Api) -> None:
    def ready() -> bool:
        try:
            node = core.read_node("edge-1")
        except client.exceptions.ApiException:
            return False
        return any(c.type == "Ready" and c.status == "True" for c in node.status.conditions or [])

    deadline = time.monotonic() + 120
    while not await asyncio.to_thread(ready):
        if time.monotonic() > deadline:
            raise TimeoutError("edge-1 never became Ready")
        await asyncio.sleep(0.5)


async def main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="kep-bench-") as raw:
        tmp = Path(raw)
        await run(
            [sys.executable, str(ROOT / "scripts/build-image.py"), "--out", str(tmp / "images")]
        )
        print(f"machine: {platform.node()} {platform.machine()}, cpus={os.cpu_count()}", flush=True)
        bare = await measure_bare(tmp, args.single, args.pods)
        print(f"bare CRI, 1 pod ({args.single} rounds): {bare['single']}", flush=True)
        print(f"bare CRI, {args.pods} at once: {bare['many']}", flush=True)
        async with stack(tmp) as cp:
            full = await measure_stack(cp, args.single, args.pods)
        print(f"stack, 1 pod ({args.single} rounds): {full['single']}", flush=True)
        print(f"stack, {args.pods} at once: {full['many']}", flush=True)
        ratios = {}
        for case, label in (("single", "1 pod"), ("many", f"{args.pods} pods")):
            for p in ("p50", "p99"):
                ratios[f"{case}_{p}"] = round(full[case][p] / bare[case][p], 2)
                print(f"ratio: {label} {p} stack/bare = {ratios[f'{case}_{p}']}", flush=True)
        if args.json:
            figures = {"bare": bare, "stack": full, "ratio": ratios}
            await asyncio.to_thread(Path(args.json).write_text, json.dumps(figures))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pods", type=int, default=50, help="pods created at once")
    parser.add_argument("--single", type=int, default=10, help="rounds of 1 pod at a time")
    parser.add_argument("--json", help="also write the figures to this file")
    asyncio.run(main(parser.parse_args()))
