"""Init containers end to end on a real containerd: run in order to completion before the
containers, not run again after an edgecore restart, restarted with back-off when they fail
(or failing the pod under restartPolicy Never), and their status and logs reach kubectl."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from cri.runtime.v1 import api_pb2 as cri

from tests.e2e.test_pods import pod
from tests.support.cluster import Cluster
from tests.support.edgenode import Node
from tests.support.waiting import eventually

pytestmark = pytest.mark.e2e

BUSYBOX = {"image": "kubeedge-py/busybox:latest", "imagePullPolicy": "Never"}
WORK = [{"name": "work", "mountPath": "/work"}]


def init_pod(
    name: str, init: list[dict[str, Any]], *, policy: str = "Always", volumes: bool = False
) -> dict[str, Any]:
    """A pod on edge-1 with init containers `init` and one long-running container `main`."""
    main = {"name": "main", **BUSYBOX, "command": ["sh", "-c", "cat /work/log; sleep 3600"]}
    spec: dict[str, Any] = {
        "nodeName": "edge-1",
        "restartPolicy": policy,
        "terminationGracePeriodSeconds": 1,
        "initContainers": init,
        "containers": [{**main, "volumeMounts": WORK} if volumes else main],
    }
    if volumes:
        spec["volumes"] = [{"name": "work", "emptyDir": {}}]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "default"},
        "spec": spec,
    }


def appender(name: str) -> dict[str, Any]:
    """An init container that appends $WORD (its env) to /work/log and says so on stdout."""
    return {
        "name": name,
        **BUSYBOX,
        "command": ["sh", "-c", "echo $WORD | tee -a /work/log"],
        "env": [{"name": "WORD", "value": f"from-{name}"}],
        "volumeMounts": WORK,
    }


def failing(name: str) -> dict[str, Any]:
    return {"name": name, **BUSYBOX, "command": ["sh", "-c", "echo failing; exit 3"]}


def condition(status: dict[str, Any], kind: str) -> dict[str, Any]:
    return next((c for c in status.get("conditions", []) if c["type"] == kind), {})


async def containers_of(node: Node, uid: str) -> list[cri.Container]:
    """What containerd holds for the pod, asked through the CRI."""
    runtime = await node.cri()
    try:
        label = {"io.kubernetes.pod.uid": uid}
        return list(await runtime.list_containers(cri.ContainerFilter(label_selector=label)))
    finally:
        await runtime.close()


async def test_init_containers_run_in_order_once_before_the_containers(
    stack: tuple[Cluster, Node],
) -> None:
    """Two init containers append to a shared emptyDir in order, each once; then the container
    runs and sees both lines; the status says Initialized with both Completed; kubectl logs -c
    reaches an init container; an edgecore restart runs neither again; delete removes all."""
    cluster, node = stack
    spec = init_pod("ordered", [appender("first"), appender("second")], volumes=True)
    await cluster.kubectl("apply", "-f", "-", stdin=json.dumps(spec))

    async def running() -> dict[str, Any] | None:
        status: dict[str, Any] = (await pod(cluster, "ordered")).get("status", {})
        return status if status.get("phase") == "Running" else None

    status = await eventually(running, 60, "pod ordered Running")
    assert condition(status, "Initialized")["status"] == "True"
    for c, name in zip(status["initContainerStatuses"], ["first", "second"], strict=True):
        assert c["name"] == name and c["ready"] is True and c["restartCount"] == 0
        assert c["containerID"].startswith("containerd://") and c["imageID"]
        done = c["state"]["terminated"]
        assert (done["reason"], done["exitCode"]) == ("Completed", 0)

    async def main_log() -> bool:  # not the first answer: it may be an error, or partial
        out = await cluster.kubectl("logs", "ordered", "-c", "main", check=False)
        return out == "from-first\nfrom-second\n"

    await eventually(main_log, 30, "main's log")
    assert await cluster.kubectl("logs", "ordered", "-c", "second") == "from-second\n"

    uid = (await pod(cluster, "ordered"))["metadata"]["uid"]
    before = sorted((c.metadata.name, c.id) for c in await containers_of(node, uid))
    await node.restart()
    await node.proc.wait_line("pod(s) restored from the local store", 60)
    await asyncio.sleep(2)  # several pod-sync rounds (0.3 s) after the restart
    assert sorted((c.metadata.name, c.id) for c in await containers_of(node, uid)) == before
    log = node.data_dir / "pods" / uid / "volumes" / "work" / "log"
    assert log.read_text() == "from-first\nfrom-second\n"

    await cluster.kubectl("delete", "pod", "ordered", "--timeout=60s")
    assert await containers_of(node, uid) == []


async def test_a_failing_init_container_is_restarted_with_back_off(
    stack: tuple[Cluster, Node],
) -> None:
    """restartPolicy Always: a failing init container restarts (restartCount grows) with
    CrashLoopBackOff between tries — Init:CrashLoopBackOff in kubectl —, the next init
    container and the container are never created, and the pod stays Pending, not Initialized."""
    cluster, node = stack
    spec = init_pod("stuck", [failing("fail"), appender("after")], volumes=True)
    await cluster.kubectl("apply", "-f", "-", stdin=json.dumps(spec))
    seen: set[str] = set()

    async def crash_looping() -> dict[str, Any] | None:
        status: dict[str, Any] = (await pod(cluster, "stuck")).get("status", {})
        inits = status.get("initContainerStatuses") or [{}]
        seen.add(inits[0].get("state", {}).get("waiting", {}).get("reason", ""))
        if inits[0].get("restartCount", 0) >= 2 and "CrashLoopBackOff" in seen:
            return status
        return None

    status = await eventually(crash_looping, 60, "fail restarted twice, in CrashLoopBackOff")
    assert status["phase"] == "Pending"
    initialized = condition(status, "Initialized")
    assert (initialized["status"], initialized["reason"]) == ("False", "ContainersNotInitialized")
    after, main = status["initContainerStatuses"][1], status["containerStatuses"][0]
    for waiting in (after, main):
        assert waiting["state"] == {"waiting": {"reason": "PodInitializing"}}
        assert "containerID" not in waiting

    async def kubectl_shows_back_off() -> bool:
        line = await cluster.kubectl("get", "pod", "stuck", "--no-headers")
        return "Init:CrashLoopBackOff" in line

    await eventually(kubectl_shows_back_off, 30, "kubectl get pod to say Init:CrashLoopBackOff")
    assert "failing" in await cluster.kubectl("logs", "stuck", "-c", "fail")
    uid = (await pod(cluster, "stuck"))["metadata"]["uid"]
    assert {c.metadata.name for c in await containers_of(node, uid)} == {"fail"}


async def test_a_failing_init_container_fails_the_pod_under_restart_policy_never(
    stack: tuple[Cluster, Node],
) -> None:
    """restartPolicy Never: the failed init container is not run again, the pod goes Failed,
    and its container is never created."""
    cluster, node = stack
    spec = init_pod("doomed", [failing("fail")], policy="Never")
    await cluster.kubectl("apply", "-f", "-", stdin=json.dumps(spec))

    async def failed() -> dict[str, Any] | None:
        status: dict[str, Any] = (await pod(cluster, "doomed")).get("status", {})
        return status if status.get("phase") == "Failed" else None

    status = await eventually(failed, 60, "pod doomed Failed")
    fail = status["initContainerStatuses"][0]
    assert fail["state"]["terminated"]["exitCode"] == 3
    assert fail["state"]["terminated"]["reason"] == "Error"
    assert status["containerStatuses"][0]["state"] == {"waiting": {"reason": "PodInitializing"}}
    await asyncio.sleep(1.5)  # back-offs here are 0.5 s to 2 s: long enough for a retry
    uid = (await pod(cluster, "doomed"))["metadata"]["uid"]
    found = await containers_of(node, uid)
    assert [(c.metadata.name, c.metadata.attempt) for c in found] == [("fail", 0)]
