"""Edge autonomy against Kubernetes' node lifecycle: an edge node whose link is cut for longer
than the eviction timeout keeps its pods — bound in the API and running in containerd — and
nothing is recreated when it returns; with --offline-eviction Kubernetes evicts as usual.

Each test runs its own control plane with short node-lifecycle timers (the node is Unknown
after 5 s without a heartbeat, pods tolerate that for 2 s) and two edge nodes; edge-1 reaches
cloudcore through a fault-injecting proxy that cuts its link and blocks reconnects. Two nodes,
because Kubernetes' node lifecycle controller stops tainting when every node of a zone is
down (it takes that for a control-plane problem): with one node nothing would ever be evicted.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from cri.runtime.v1 import api_pb2 as cri

from tests.support.cluster import Cluster, start_cluster
from tests.support.controlplane import TestControlPlane
from tests.support.edgenode import FAST_CLOUD, Node, build_images, node_ready, start_node
from tests.support.proxy import FaultProxy
from tests.support.waiting import eventually, free_port

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(400)]
GRACE = 5.0  # --node-monitor-grace-period: 5 missed Lease renewals, not 3, on a loaded machine
TOLERATION = 2  # --default-unreachable-toleration-seconds
APP = {
    "apiVersion": "apps/v1",
    "kind": "Deployment",
    "metadata": {"name": "keep", "namespace": "default"},
    "spec": {
        "replicas": 1,
        "selector": {"matchLabels": {"app": "keep"}},
        "template": {
            "metadata": {"labels": {"app": "keep"}},
            "spec": {
                "nodeSelector": {"kubernetes.io/hostname": "edge-1"},
                "terminationGracePeriodSeconds": 1,
                "containers": [
                    {
                        "name": "c",
                        "image": "kubeedge-py/busybox:latest",
                        "imagePullPolicy": "Never",
                        "command": ["sleep", "3600"],
                    }
                ],
            },
        },
    },
}


@dataclass
class World:
    cluster: Cluster
    node: Node
    proxy: FaultProxy


@pytest.fixture
async def world(tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[World]:
    evict = bool(getattr(request, "param", False))
    cp = TestControlPlane(
        tmp_path / "cp",
        offline_eviction=evict,
        node_monitor_grace=GRACE,
        node_monitor_period=0.5,
        unreachable_toleration=TOLERATION,
        # V(2) logs each node-lifecycle decision: what lifecycle_report shows when a wait fails.
        extra_args={"kube-controller-manager": ["--v=2"]},
    )
    await asyncio.to_thread(cp.start)
    nodes: list[Node] = []
    cluster: Cluster | None = None
    proxy: FaultProxy | None = None
    try:
        hub_port = free_port()
        cluster = await start_cluster(
            tmp_path / "cloud", cp, "--hub-listen", f"127.0.0.1:{hub_port}", *FAST_CLOUD
        )
        proxy = await FaultProxy(hub_port).start()
        images = await asyncio.to_thread(build_images, tmp_path / "images")
        joined = await cluster.join_flags("edge-1")
        nodes.append(
            await start_node("edge-1", tmp_path / "edge-1", proxy.address, images, *joined)
        )
        direct = f"127.0.0.1:{hub_port}"
        joined = await cluster.join_flags("edge-2")
        nodes.append(await start_node("edge-2", tmp_path / "edge-2", direct, images, *joined))
        for name in ("edge-1", "edge-2"):
            await eventually(lambda n=name: node_ready(cluster, n), 60, f"{name} Ready")
        yield World(cluster, nodes[0], proxy)
    finally:
        for node in nodes:
            await node.stop_and_reset()
        if proxy is not None:
            await proxy.close()
        if cluster is not None:
            await cluster.proc.terminate()
        await asyncio.to_thread(cp.stop)


async def app_pods(cluster: Cluster) -> list[dict[str, Any]]:
    return list((await cluster.get_json("pods", "-l", "app=keep"))["items"])


async def running_app(cluster: Cluster) -> dict[str, Any] | None:
    found = await app_pods(cluster)
    if len(found) == 1 and found[0]["status"].get("phase") == "Running":
        return found[0]
    return None


async def node_taints(cluster: Cluster) -> set[str]:
    node = await cluster.get_json("node", "edge-1")
    return {f"{t['key']}:{t['effect']}" for t in node["spec"].get("taints") or []}


async def lifecycle_report(cluster: Cluster) -> str:
    """What the node lifecycle controller acts on, and what it logged about it: the nodes'
    Ready conditions and taints, their Leases, and the controller's lines about nodes."""
    lines = [f"now {datetime.now(UTC).isoformat()}"]
    for node in (await cluster.get_json("nodes"))["items"]:
        ready = [c for c in node["status"].get("conditions", []) if c["type"] == "Ready"]
        lines.append(
            f"node {node['metadata']['name']}: Ready={ready} taints={node['spec'].get('taints')}"
        )
    for lease in (await cluster.get_json("leases", "-n", "kube-node-lease"))["items"]:
        meta, spec = lease["metadata"], lease["spec"]
        lines.append(
            f"lease {meta['name']} rv={meta['resourceVersion']} renewTime={spec.get('renewTime')}"
        )
    log = cluster.control_plane.cp.data / "logs" / "kube-controller-manager.log"
    wanted = ("node_lifecycle", "controller_utils", "disruption", "Taint", "taint")
    quiet = ("hasn't been updated", "never updated by kubelet")  # every pass, every node
    kept = [
        line
        for line in log.read_text(errors="replace").splitlines()
        if any(w in line for w in wanted) and not any(q in line for q in quiet)
    ]
    return "\n".join([*lines, *kept[-80:]])


async def running_containers(node: Node) -> list[str]:
    runtime = await node.cri()
    try:
        state = cri.ContainerStateValue(state=cri.CONTAINER_RUNNING)
        found = await runtime.list_containers(cri.ContainerFilter(state=state))
        return sorted(c.id for c in found)
    finally:
        await runtime.close()


async def cut_past_eviction(w: World) -> None:
    """Cut the link, wait for the node to be tainted unreachable, then past the toleration."""
    w.proxy.block()
    unreachable = "node.kubernetes.io/unreachable:NoExecute"

    async def tainted() -> bool:
        return unreachable in await node_taints(w.cluster)

    try:
        await eventually(tainted, 60, "the unreachable taint on edge-1")
    except pytest.fail.Exception as exc:
        try:
            report = await lifecycle_report(w.cluster)
        except Exception as err:  # the timeout is the failure; a report that fails says so
            report = f"(no lifecycle report: {err!r})"
        pytest.fail(f"{exc}\n{report}")
    # Well past the eviction timeout: with --offline-eviction the pod is gone a few seconds
    # after the taint (the other test), so this much quiet means nothing will evict it.
    await asyncio.sleep(TOLERATION + 10)


async def test_offline_node_keeps_its_pods_and_nothing_is_recreated(world: World) -> None:
    """Link cut past the eviction timeout: the pod stays bound in the API and its container
    keeps running; after the link returns the same pod and container are there."""
    await world.cluster.kubectl("apply", "-f", "-", stdin=json.dumps(APP))
    before = await eventually(lambda: running_app(world.cluster), 60, "the app Running")
    containers = await running_containers(world.node)
    assert len(containers) == 1

    await cut_past_eviction(world)
    (still,) = await app_pods(world.cluster)
    assert still["metadata"]["uid"] == before["metadata"]["uid"]
    assert not still["metadata"].get("deletionTimestamp")
    assert await running_containers(world.node) == containers

    world.proxy.unblock()
    await eventually(lambda: node_ready(world.cluster), 60, "edge-1 Ready again")
    await eventually(lambda: running_app(world.cluster), 30, "the app Running again")
    (after,) = await app_pods(world.cluster)
    assert after["metadata"]["uid"] == before["metadata"]["uid"]
    assert await running_containers(world.node) == containers


@pytest.mark.parametrize("world", [True], indirect=True, ids=["offline-eviction"])
async def test_offline_eviction_evicts_as_kubernetes_does(world: World) -> None:
    """With --offline-eviction the pod of an unreachable node is evicted after the
    toleration, and its Deployment makes a replacement (Pending: its nodeSelector names only
    edge-1)."""
    await world.cluster.kubectl("apply", "-f", "-", stdin=json.dumps(APP))
    before = await eventually(lambda: running_app(world.cluster), 60, "the app Running")
    await cut_past_eviction(world)

    async def replaced() -> bool:
        uids = {
            p["metadata"]["uid"]
            for p in await app_pods(world.cluster)
            if not p["metadata"].get("deletionTimestamp")
        }
        return bool(uids) and before["metadata"]["uid"] not in uids

    await eventually(replaced, 60, "the evicted pod to be replaced")
