"""Workloads on edge nodes: the real scheduler and controllers (Deployment, ReplicaSet,
DaemonSet, StatefulSet, Job) place pods on edgecore nodes, which run them in containerd and
report the status those controllers read (ready, restarts, phase)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.cluster import Cluster
from tests.support.edgenode import Node, build_images, node_ready, start_node
from tests.support.waiting import eventually, http_get

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(400)]
IMAGE = "kubeedge-py/busybox:latest"


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_images(tmp_path_factory.mktemp("images"))


@pytest.fixture
async def nodes(
    cloud: tuple[Cluster, str], images: Path, tmp_path: Path, request: pytest.FixtureRequest
) -> AsyncIterator[list[Node]]:
    """One edge node, or as many as the test's `nodes` marker-free param says (default 1)."""
    cluster, hub = cloud
    count = getattr(request, "param", 1)
    started: list[Node] = []
    try:
        for i in range(1, count + 1):
            name = f"edge-{i}"
            joined = await cluster.join_flags(name)
            started.append(await start_node(name, tmp_path / name, hub, images, *joined))
        for node in started:
            await eventually(lambda n=node: node_ready(cluster, n.name), 60, f"{node.name} Ready")
        yield started
    finally:
        for node in started:
            await node.stop_and_reset()


async def pods(cluster: Cluster, selector: str) -> list[dict[str, Any]]:
    listing = await cluster.get_json("pods", "-l", selector)
    return [p for p in listing["items"] if not p["metadata"].get("deletionTimestamp")]


def is_ready(pod: dict[str, Any]) -> bool:
    conditions = pod.get("status", {}).get("conditions") or []
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


async def ready_pods(cluster: Cluster, selector: str, count: int) -> list[dict[str, Any]]:
    async def check() -> list[dict[str, Any]] | None:
        found = await pods(cluster, selector)
        ready = [p for p in found if p["status"].get("phase") == "Running" and is_ready(p)]
        return ready if len(ready) == count == len(found) else None

    return list(await eventually(check, 90, f"{count} ready pods with {selector}"))


def web_deployment(name: str, replicas: int) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {
                    "terminationGracePeriodSeconds": 1,
                    "containers": [
                        {
                            "name": "httpd",
                            "image": IMAGE,
                            "imagePullPolicy": "Never",
                            "command": [
                                "sh",
                                "-c",
                                "echo $HOSTNAME > /tmp/id; exec httpd -f -p 8080 -h /tmp",
                            ],
                            "readinessProbe": {
                                "httpGet": {"port": 8080, "path": "/id"},
                                "periodSeconds": 1,
                            },
                        }
                    ],
                },
            },
        },
    }


async def test_deployment_runs_serves_heals_scales_and_rolls_back(
    cloud: tuple[Cluster, str], nodes: list[Node]
) -> None:
    """A Deployment of 2 lands on the edge node and serves; a deleted pod is replaced; scale
    to 3 works; a changed template rolls out (rollout status) and rollout undo restores it."""
    cluster, _ = cloud
    await cluster.kubectl("apply", "-f", "-", stdin=json.dumps(web_deployment("web", 2)))
    running = await ready_pods(cluster, "app=web", 2)
    for pod in running:
        assert pod["spec"]["nodeName"] == "edge-1"
        assert pod["status"]["observedGeneration"] == pod["metadata"]["generation"]
        served = await asyncio.to_thread(http_get, f"http://{pod['status']['podIP']}:8080/id")
        assert served.strip() == pod["metadata"]["name"]

    victim = running[0]["metadata"]["name"]
    await cluster.kubectl("delete", "pod", victim, "--timeout=60s")
    replaced = await ready_pods(cluster, "app=web", 2)
    assert victim not in {p["metadata"]["name"] for p in replaced}

    await cluster.kubectl("scale", "deployment/web", "--replicas=3")
    await ready_pods(cluster, "app=web", 3)

    await cluster.kubectl("set", "env", "deployment/web", "STAGE=two")
    await cluster.kubectl("rollout", "status", "deployment/web", "--timeout=120s")
    envs = [p["spec"]["containers"][0].get("env") for p in await ready_pods(cluster, "app=web", 3)]
    assert envs == [[{"name": "STAGE", "value": "two"}]] * 3

    await cluster.kubectl("rollout", "undo", "deployment/web")
    await cluster.kubectl("rollout", "status", "deployment/web", "--timeout=120s")
    envs = [p["spec"]["containers"][0].get("env") for p in await ready_pods(cluster, "app=web", 3)]
    assert envs == [None] * 3
    status = (await cluster.get_json("deployment", "web"))["status"]
    assert status["readyReplicas"] == status["availableReplicas"] == 3


async def test_kubectl_create_deployment_with_a_local_image(
    cloud: tuple[Cluster, str], nodes: list[Node]
) -> None:
    """`kubectl create deployment --image=<local image> --replicas=2` (a protobuf body; pull
    policy Always for :latest, so edged's failed pull falls back to the imported image) rolls
    out on the edge node."""
    cluster, _ = cloud
    await cluster.kubectl(
        "create", "deployment", "gen", f"--image={IMAGE}", "--replicas=2",
        "--", "httpd", "-f", "-p", "8080", "-h", "/etc",
    )  # fmt: skip
    await cluster.kubectl("rollout", "status", "deployment/gen", "--timeout=120s")
    running = await ready_pods(cluster, "app=gen", 2)
    assert {p["spec"]["containers"][0]["imagePullPolicy"] for p in running} == {"Always"}


@pytest.mark.parametrize("nodes", [2], indirect=True)
async def test_daemonset_puts_one_pod_on_each_edge_node(
    cloud: tuple[Cluster, str], nodes: list[Node]
) -> None:
    """A DaemonSet runs exactly one pod on each of two edge nodes, and reports them ready."""
    cluster, _ = cloud
    ds = {
        "apiVersion": "apps/v1",
        "kind": "DaemonSet",
        "metadata": {"name": "agent", "namespace": "default"},
        "spec": {
            "selector": {"matchLabels": {"app": "agent"}},
            "template": {
                "metadata": {"labels": {"app": "agent"}},
                "spec": {
                    "nodeSelector": {"node-role.kubernetes.io/edge": ""},
                    "terminationGracePeriodSeconds": 1,
                    "containers": [
                        {
                            "name": "a",
                            "image": IMAGE,
                            "imagePullPolicy": "Never",
                            "command": ["sleep", "3600"],
                        }
                    ],
                },
            },
        },
    }
    await cluster.kubectl("apply", "-f", "-", stdin=json.dumps(ds))
    running = await ready_pods(cluster, "app=agent", 2)
    assert sorted(p["spec"]["nodeName"] for p in running) == ["edge-1", "edge-2"]

    async def counted() -> bool:
        status = (await cluster.get_json("daemonset", "agent"))["status"]
        return status.get("numberReady") == status.get("desiredNumberScheduled") == 2

    await eventually(counted, 30, "the DaemonSet to count 2 ready")


async def test_statefulset_starts_pods_in_order(
    cloud: tuple[Cluster, str], nodes: list[Node]
) -> None:
    """A StatefulSet of 2 creates db-0, and db-1 only once db-0 is ready."""
    cluster, _ = cloud
    sts = {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": {"name": "db", "namespace": "default"},
        "spec": {
            "serviceName": "db",
            "replicas": 2,
            "selector": {"matchLabels": {"app": "db"}},
            "template": {
                "metadata": {"labels": {"app": "db"}},
                "spec": {
                    "terminationGracePeriodSeconds": 1,
                    "containers": [
                        {
                            "name": "db",
                            "image": IMAGE,
                            "imagePullPolicy": "Never",
                            "command": ["sh", "-c", "sleep 2; touch /tmp/up; sleep 3600"],
                            "readinessProbe": {
                                "exec": {"command": ["test", "-f", "/tmp/up"]},
                                "periodSeconds": 1,
                            },
                        }
                    ],
                },
            },
        },
    }
    await cluster.kubectl("apply", "-f", "-", stdin=json.dumps(sts))
    db0_ready = False

    async def db1_appeared() -> bool:
        nonlocal db0_ready
        found = {p["metadata"]["name"]: p for p in await pods(cluster, "app=db")}
        if "db-1" not in found:
            return False
        # db-0 turns ready 2 s after it starts: seen ready when db-1 first shows means the
        # controller waited for it (pods created together would show db-0 not yet ready).
        db0_ready = "db-0" in found and is_ready(found["db-0"])
        return True

    await eventually(db1_appeared, 90, "db-1 to be created")
    assert db0_ready, "db-1 was created before db-0 was ready"
    running = await ready_pods(cluster, "app=db", 2)
    assert {p["metadata"]["name"] for p in running} == {"db-0", "db-1"}


async def test_job_runs_to_completion(cloud: tuple[Cluster, str], nodes: list[Node]) -> None:
    """A Job's pod runs on the edge node, exits 0, and the Job controller marks it Complete."""
    cluster, _ = cloud
    job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "once", "namespace": "default"},
        "spec": {
            "backoffLimit": 0,
            "template": {
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [
                        {
                            "name": "w",
                            "image": IMAGE,
                            "imagePullPolicy": "Never",
                            "command": ["sh", "-c", "echo done"],
                        }
                    ],
                }
            },
        },
    }
    await cluster.kubectl("apply", "-f", "-", stdin=json.dumps(job))
    await cluster.kubectl("wait", "--for=condition=Complete", "job/once", "--timeout=90s")
    (pod,) = await pods(cluster, "job-name=once")
    assert pod["status"]["phase"] == "Succeeded" and pod["spec"]["nodeName"] == "edge-1"
