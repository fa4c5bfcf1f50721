"""A pod cannot make the root-run edgecore touch files outside its volumes, with real
containerd: paths that escape are refused with a clear container status, nothing appears
outside, other pods run; and the node's state on disk is readable by root only."""

from __future__ import annotations

import json
import os
import stat
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.cluster import Cluster
from tests.support.edgenode import Node, start_node
from tests.support.fakehub import FakeHub
from tests.support.waiting import eventually

pytestmark = pytest.mark.e2e

IMAGE = "kubeedge-py/busybox:latest"


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """The canary folder: no pod may make anything appear in it."""
    folder = tmp_path / "outside"
    folder.mkdir()
    return folder


def pod_object(
    name: str, volumes: list[dict[str, Any]], containers: list[dict[str, Any]]
) -> dict[str, Any]:
    for c in containers:
        c.setdefault("image", IMAGE)
        c.setdefault("imagePullPolicy", "Never")
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "default", "uid": f"uid-{name}"},
        "spec": {
            "nodeName": "edge-1",
            "terminationGracePeriodSeconds": 1,
            "volumes": volumes,
            "containers": containers,
        },
    }


def container(name: str, script: str, mounts: list[dict[str, Any]]) -> dict[str, Any]:
    return {"name": name, "command": ["sh", "-c", script], "volumeMounts": mounts}


def waiting(status: dict[str, Any], name: str) -> dict[str, Any]:
    """The waiting state of container `name` in a pod status ({} when it is not waiting)."""
    for c in status.get("containerStatuses") or []:
        if c["name"] == name:
            return dict(c.get("state", {}).get("waiting") or {})
    return {}


def running(status: dict[str, Any]) -> bool:
    return all("running" in c["state"] for c in status.get("containerStatuses") or [{"state": {}}])


def files_under(path: Path) -> list[str]:
    return sorted(str(p.relative_to(path)) for p in path.rglob("*"))


def mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


# -- a cloud that sends what the API server refuses ----------------------------------------------


@pytest.fixture
async def tampered(tmp_path: Path, images: Path) -> AsyncIterator[tuple[FakeHub, Node]]:
    hub = await FakeHub().start()
    node = await start_node("edge-1", tmp_path / "edge", hub.address, images, "--insecure-hub")
    try:
        yield hub, node
    finally:
        await node.stop_and_reset()
        await hub.stop()


CONFIGMAP = {
    "apiVersion": "v1",
    "kind": "ConfigMap",
    "metadata": {"name": "cm", "namespace": "default", "uid": "uid-cm", "resourceVersion": "1"},
    "data": {"a": "from the configmap\n"},
}


def refused_pods(outside: Path) -> dict[str, tuple[dict[str, Any], str]]:
    """Pods the API server would refuse, each with what the refusal must say."""
    sleep = "sleep 3600"
    cfg_mount = [{"name": "cfg", "mountPath": "/cfg"}]

    def cm_volume(path: str) -> list[dict[str, Any]]:
        return [{"name": "cfg", "configMap": {"name": "cm", "items": [{"key": "a", "path": path}]}}]

    absolute_sub = [{"name": "scratch", "mountPath": "/mnt", "subPath": str(outside)}]
    return {
        "item-dotdot": (
            pod_object("item-dotdot", cm_volume("../x"), [container("c", sleep, cfg_mount)]),
            "volume 'cfg': item path '../x' must not contain '..'",
        ),
        "item-absolute": (
            pod_object(
                "item-absolute", cm_volume(str(outside / "x")), [container("c", sleep, cfg_mount)]
            ),
            "must be a relative path",
        ),
        "subpath-absolute": (
            pod_object(
                "subpath-absolute",
                [{"name": "scratch", "emptyDir": {}}],
                [container("c", "touch /mnt/canary; sleep 3600", absolute_sub)],
            ),
            "volumeMount 'scratch' of container 'c'",
        ),
    }


async def test_paths_the_api_would_refuse_are_refused_by_the_edge_too(
    tampered: tuple[FakeHub, Node], outside: Path, tmp_path: Path
) -> None:
    """Sent straight to edgecore (as a tampered cloud could): a configMap item `../x`, an
    absolute item path and an absolute subPath each leave the container waiting with
    CreateContainerConfigError and a message naming the volume and path; nothing appears
    outside the volume; a good pod on the node runs meanwhile."""
    hub, node = tampered
    pods = refused_pods(outside)
    good = pod_object(
        "good",
        [{"name": "cfg", "configMap": {"name": "cm"}}],
        [container("c", "cat /cfg/a; sleep 3600", [{"name": "cfg", "mountPath": "/cfg"}])],
    )
    hub.send("ConfigMap", CONFIGMAP)
    for obj in [*(p for p, _ in pods.values()), good]:
        obj["metadata"]["resourceVersion"] = "2"
        hub.send("Pod", obj)

    for name, (_, message) in pods.items():
        # The refusal itself, not the first waiting state (ContainerCreating may come first).
        def refused(name: str = name, message: str = message) -> dict[str, Any]:
            statuses = hub.pod_statuses(name)
            state = waiting(statuses[-1], "c") if statuses else {}
            wanted = state.get("reason") == "CreateContainerConfigError"
            return state if wanted and message in state.get("message", "") else {}

        await eventually(refused, 90, f"pod {name} refused with {message!r}")
    await eventually(lambda: any(map(running, hub.pod_statuses("good"))), 60, "good pod running")
    assert files_under(outside) == []
    volumes = node.data_dir / "pods" / "uid-item-dotdot" / "volumes"
    assert not (volumes / "x").exists() and files_under(volumes) in ([], ["cfg"])


async def test_state_on_disk_is_private_after_running_a_pod(
    tampered: tuple[FakeHub, Node],
) -> None:
    """After edgecore ran a pod with a configMap volume: DATA_DIR, containerd's folder, the
    pods folder, the pod's folder, its volumes and logs folders are 0700; the SQLite files
    (database, -wal, -shm) and containerd's log are 0600."""
    hub, node = tampered
    good = pod_object(
        "good",
        [{"name": "cfg", "configMap": {"name": "cm"}}],
        [container("c", "sleep 3600", [{"name": "cfg", "mountPath": "/cfg"}])],
    )
    good["metadata"]["resourceVersion"] = "2"
    hub.send("ConfigMap", CONFIGMAP)
    hub.send("Pod", good)
    await eventually(lambda: any(map(running, hub.pod_statuses("good"))), 90, "pod running")
    data = node.data_dir
    pod_dir = data / "pods" / "uid-good"
    folders = [data, data / "containerd", data / "pods", pod_dir, pod_dir / "volumes"]
    assert {str(f): mode(f) for f in [*folders, pod_dir / "logs"]} == {
        str(f): 0o700 for f in [*folders, pod_dir / "logs"]
    }
    files = [data / n for n in ("edge.db", "edge.db-wal", "edge.db-shm")]
    files.append(data / "containerd" / "containerd.log")
    assert {str(f): mode(f) for f in files} == {str(f): 0o600 for f in files}


# -- through the real API ------------------------------------------------------------------------


async def apply(cluster: Cluster, obj: dict[str, Any], check: bool = True) -> str:
    obj = {**obj, "metadata": {k: v for k, v in obj["metadata"].items() if k != "uid"}}
    return await cluster.kubectl("apply", "-f", "-", stdin=json.dumps(obj), check=check)


async def status_of(cluster: Cluster, name: str) -> dict[str, Any]:
    out = await cluster.kubectl("get", "pod", name, "-o", "json", check=False)
    try:
        return dict(json.loads(out).get("status") or {})
    except ValueError:
        return {}


def symlink_pods(tmp_path: Path, outside: Path) -> list[dict[str, Any]]:
    """A hostPath volume with a link out, used through a subPath (and one deeper), and an
    emptyDir in which one container plants a link out that the other mounts as its subPath."""
    host = tmp_path / "host"
    host.mkdir()
    (host / "escape").symlink_to(outside)
    touch = "touch /mnt/canary; sleep 1; exit 1"  # restarted: each start resolves the subPath
    host_volume = [{"name": "host", "hostPath": {"path": str(host), "type": "Directory"}}]
    pods = [
        pod_object(
            name,
            host_volume,
            [container("c", touch, [{"name": "host", "mountPath": "/mnt", "subPath": sub}])],
        )
        for name, sub in (("host-escape", "escape"), ("host-escape-deeper", "escape/new"))
    ]
    # Until the link is in place: while `c` runs, /vol/link may be the folder edged made for
    # its subPath and busy as its mount point (rm fails); `c` exits within a second.
    plant = (
        f"until [ -L /vol/link ]; do rm -rf /vol/link && ln -s {outside} /vol/link; "
        "sleep 0.2; done; sleep 3600"
    )
    pods.append(
        pod_object(
            "planted",
            [{"name": "shared", "emptyDir": {}}],
            [
                container("maker", plant, [{"name": "shared", "mountPath": "/vol"}]),
                container("c", touch, [{"name": "shared", "mountPath": "/mnt", "subPath": "link"}]),
            ],
        )
    )
    return pods


async def test_symlinks_out_of_a_volume_are_not_followed(
    stack: tuple[Cluster, Node], tmp_path: Path, outside: Path
) -> None:
    """The API server itself refuses a configMap item `../x` and an absolute subPath. What it
    cannot see: a hostPath volume holding a link out, used through a subPath, and a container
    planting a link out in an emptyDir its neighbour mounts by subPath. Each container is
    refused with CreateContainerConfigError naming the mount and saying 'outside', and the
    canary folder the links point to stays empty."""
    cluster, _ = stack
    for name, message in (
        ("item-dotdot", "must not contain '..'"),
        ("subpath-absolute", "must be a relative path"),
    ):
        out = await apply(cluster, refused_pods(outside)[name][0], check=False)
        assert message in out, out
    pods = symlink_pods(tmp_path, outside)
    for obj in pods:
        await apply(cluster, obj)
    for obj in pods:
        name = obj["metadata"]["name"]

        # Not the first refusal: the `maker` loop's rm/ln may remove the subPath while edged
        # mounts it ("was removed while it was being mounted"); the next start sees the link.
        async def refused(name: str = name) -> dict[str, Any]:
            state = waiting(await status_of(cluster, name), "c")
            final = "outside" in state.get("message", "")
            return state if state.get("reason") == "CreateContainerConfigError" and final else {}

        state = await eventually(refused, 90, f"pod {name} refused as outside its volume")
        assert "volumeMount" in state["message"], state
    assert files_under(outside) == []
