"""Pods end to end: kubectl → cloudcore → hub → edgecore → containerd, and status back."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
from pathlib import Path
from typing import Any

import pytest

from edge.edged.cri import CRIError
from tests.support.cluster import KUBECTL, Cluster
from tests.support.edgenode import Node, node_ready, start_node
from tests.support.waiting import eventually, free_port, http_get

pytestmark = pytest.mark.e2e


WEB = {
    "apiVersion": "v1",
    "kind": "Pod",
    "metadata": {"name": "web", "namespace": "default", "labels": {"app": "web"}},
    "spec": {
        "nodeName": "edge-1",
        "terminationGracePeriodSeconds": 2,
        "containers": [
            {
                "name": "httpd",
                "image": "kubeedge-py/busybox:latest",
                "imagePullPolicy": "Never",
                "command": ["sh", "-c", "echo serving; exec httpd -f -v -p 8080 -h /www"],
                "env": [
                    {
                        "name": "GREETING",
                        "valueFrom": {"configMapKeyRef": {"name": "content", "key": "greeting"}},
                    }
                ],
                "volumeMounts": [{"name": "www", "mountPath": "/www"}],
                "resources": {"limits": {"cpu": "200m", "memory": "64Mi"}},
                "readinessProbe": {
                    "httpGet": {"port": 8080, "path": "/index.html"},
                    "periodSeconds": 1,
                },
            },
        ],
        "volumes": [{"name": "www", "configMap": {"name": "content"}}],
    },
}
CONTENT = {
    "apiVersion": "v1",
    "kind": "ConfigMap",
    "metadata": {"name": "content", "namespace": "default"},
    "data": {"index.html": "version one\n", "greeting": "hi"},
}


async def pod(cluster: Cluster, name: str) -> dict[str, Any]:
    out = await cluster.kubectl("get", "pod", name, "-o", "json", check=False)
    try:
        return dict(json.loads(out))
    except ValueError:
        return {}


async def test_pod_serves_configmap_and_follows_its_changes(stack: tuple[Cluster, Node]) -> None:
    """A pod on the CNI bridge goes Running, serves its configmap over HTTP at its pod IP,
    serves the new content after the configmap changes, and shows its output in kubectl logs."""
    cluster, _ = stack
    await cluster.kubectl("apply", "-f", "-", stdin=json.dumps(CONTENT))
    await cluster.kubectl("apply", "-f", "-", stdin=json.dumps(WEB))

    async def running() -> dict[str, Any] | None:
        p = await pod(cluster, "web")
        status = p.get("status", {})
        ready = any(
            c["type"] == "Ready" and c["status"] == "True" for c in status.get("conditions", [])
        )
        return p if status.get("phase") == "Running" and status.get("podIP") and ready else None

    p = await eventually(running, 60, "pod web Running and Ready")
    ip = p["status"]["podIP"]
    assert not ip.startswith("127.") and ip != p["status"].get("hostIP")  # the bridge network
    container = p["status"]["containerStatuses"][0]
    assert container["containerID"].startswith("containerd://") and container["imageID"]
    url = f"http://{ip}:8080/index.html"
    assert await asyncio.to_thread(http_get, url) == "version one\n"
    changed = {**CONTENT, "data": {**CONTENT["data"], "index.html": "version two\n"}}
    await cluster.kubectl("apply", "-f", "-", stdin=json.dumps(changed))

    async def updated() -> bool:
        return await asyncio.to_thread(http_get, url) == "version two\n"

    await eventually(updated, 30, "the served file to change")
    logs = await cluster.kubectl("logs", "web")
    assert "serving" in logs


async def test_crashing_and_unhealthy_containers_restart(stack: tuple[Cluster, Node]) -> None:
    """A container exiting non-zero is restarted (restartCount rises) and a failing liveness
    probe restarts its container."""
    cluster, _ = stack
    crasher = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "crasher", "namespace": "default"},
        "spec": {
            "nodeName": "edge-1",
            "terminationGracePeriodSeconds": 1,
            "containers": [
                {
                    "name": "fail",
                    "image": "kubeedge-py/busybox:latest",
                    "imagePullPolicy": "Never",
                    "command": ["sh", "-c", "echo attempt; exit 3"],
                },
                {
                    "name": "sick",
                    "image": "kubeedge-py/busybox:latest",
                    "imagePullPolicy": "Never",
                    "command": ["sleep", "3600"],
                    "livenessProbe": {
                        "exec": {"command": ["cat", "/nonexistent"]},
                        "periodSeconds": 1,
                        "failureThreshold": 2,
                    },
                },
            ],
        },
    }
    await cluster.kubectl("apply", "-f", "-", stdin=json.dumps(crasher))

    async def restarted() -> bool:
        statuses = {
            c["name"]: c
            for c in (await pod(cluster, "crasher")).get("status", {}).get("containerStatuses", [])
        }
        fail, sick = statuses.get("fail", {}), statuses.get("sick", {})
        return fail.get("restartCount", 0) >= 2 and sick.get("restartCount", 0) >= 1

    await eventually(restarted, 60, "both containers restarted")
    statuses = {
        c["name"]: c for c in (await pod(cluster, "crasher"))["status"]["containerStatuses"]
    }
    last = statuses["fail"].get("lastState", {}).get("terminated") or statuses["fail"]["state"].get(
        "terminated", {}
    )
    assert last.get("exitCode") == 3
    wanted = {
        ("BackOff", "spec.containers{fail}"),
        ("Unhealthy", "spec.containers{sick}"),
        ("Killing", "spec.containers{sick}"),
    }

    async def reported() -> bool:  # Events travel on their own queue, after the status
        found = {
            (e["reason"], e["involvedObject"].get("fieldPath"))
            for e in await events(cluster, "crasher")
        }
        return wanted <= found

    await eventually(reported, 30, f"the Events {sorted(wanted)}")


def pod_on_edge_1(name: str, *containers: dict[str, Any]) -> dict[str, Any]:
    """The manifest of pod default/NAME with these containers, bound to edge-1."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"nodeName": "edge-1", "containers": list(containers)},
    }


async def events(cluster: Cluster, involved: str) -> list[dict[str, Any]]:
    """What `kubectl get events --field-selector involvedObject.name=...` lists."""
    selector = f"involvedObject.name={involved}"
    out = await cluster.kubectl("get", "events", "--field-selector", selector, "-o", "json")
    return list(json.loads(out)["items"])


async def test_an_image_that_cannot_be_pulled_is_an_event_on_the_pod(
    stack: tuple[Cluster, Node],
) -> None:
    """Issue 10: a pod whose image cannot be pulled (its registry refuses connections) gets the
    kubelet's Events about its container — Pulling, then Failed with the runtime's error —
    from source kubelet on edge-1, and its container waits in ErrImagePull/ImagePullBackOff."""
    cluster, _ = stack
    image = f"127.0.0.1:{free_port()}/kubeedge-py/missing:v1"  # nothing listens there
    app = {"name": "app", "image": image, "imagePullPolicy": "IfNotPresent"}
    await cluster.kubectl("apply", "-f", "-", stdin=json.dumps(pod_on_edge_1("missing", app)))

    async def failed() -> dict[str, Any] | None:
        found = [e for e in await events(cluster, "missing") if e["reason"] == "Failed"]
        return found[0] if found else None

    event = await eventually(failed, 60, "a Failed event about pod missing")
    assert event["type"] == "Warning" and "Failed to pull image" in event["message"]
    assert event["involvedObject"]["fieldPath"] == "spec.containers{app}"
    assert event["source"] == {"component": "kubelet", "host": "edge-1"}
    reasons = {e["reason"] for e in await events(cluster, "missing")}
    assert "Pulling" in reasons

    async def waiting() -> bool:
        statuses = (await pod(cluster, "missing")).get("status", {}).get("containerStatuses")
        reason = (statuses or [{}])[0].get("state", {}).get("waiting", {}).get("reason")
        return reason in ("ErrImagePull", "ImagePullBackOff")

    await eventually(waiting, 30, "the container waiting for its image")


async def test_delete_removes_containers_then_the_pod(stack: tuple[Cluster, Node]) -> None:
    """kubectl delete stops the pod on the node: sandbox and containers are gone from
    containerd (asked through the CRI) and the pod is gone from the API."""
    cluster, node = stack
    await cluster.kubectl("apply", "-f", "-", stdin=json.dumps(CONTENT))
    await cluster.kubectl("apply", "-f", "-", stdin=json.dumps(WEB))

    async def has_sandbox() -> bool:
        p = await pod(cluster, "web")
        return p.get("status", {}).get("phase") == "Running"

    await eventually(has_sandbox, 60, "pod running")
    uid = (await pod(cluster, "web"))["metadata"]["uid"]
    await cluster.kubectl("delete", "pod", "web", "--timeout=60s")
    assert (await pod(cluster, "web")) == {}
    runtime = await node.cri()
    try:
        from cri.runtime.v1 import api_pb2 as cri

        label = {"io.kubernetes.pod.uid": uid}
        assert await runtime.list_pod_sandbox(cri.PodSandboxFilter(label_selector=label)) == []
        assert await runtime.list_containers(cri.ContainerFilter(label_selector=label)) == []
    finally:
        await runtime.close()


async def test_edge_restart_without_cloud_adopts_running_pods(stack: tuple[Cluster, Node]) -> None:
    """With cloudcore down, a restarted edgecore rebuilds its pods from SQLite and adopts the
    running containers; when the cloud returns nothing is recreated."""
    cluster, node = stack
    await cluster.kubectl("apply", "-f", "-", stdin=json.dumps(CONTENT))
    await cluster.kubectl("apply", "-f", "-", stdin=json.dumps(WEB))

    async def container_id() -> str:
        statuses = (await pod(cluster, "web")).get("status", {}).get("containerStatuses", [])
        running = [c for c in statuses if "running" in c.get("state", {})]
        return str(running[0]["containerID"]) if running else ""

    before = await eventually(container_id, 60, "container running")
    await cluster.proc.terminate()
    await node.restart()
    await node.proc.wait_line("pod(s) restored from the local store", 60)
    runtime = await node.cri()
    try:
        from cri.runtime.v1 import api_pb2 as cri

        await asyncio.sleep(2)  # a few pod-sync rounds with no cloud
        running = await runtime.list_containers(
            cri.ContainerFilter(state=cri.ContainerStateValue(state=cri.CONTAINER_RUNNING))
        )
        assert [f"containerd://{c.id}" for c in running] == [before]
    finally:
        await runtime.close()
    await cluster.restart(kill=False)
    await eventually(lambda: node_ready(cluster), 60, "edge-1 Ready again")
    await asyncio.sleep(2)
    assert await container_id() == before


async def test_a_host_network_pod_runs_with_the_nodes_address(
    stack: tuple[Cluster, Node],
) -> None:
    """Regression (issue 10): hostNetwork pods never started (RunPodSandbox: "unable to set
    hostname without a private UTS namespace"). Now it runs, on the node's network, and its
    pod IP is the node's address."""
    cluster, _ = stack
    host_pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "on-host", "namespace": "default"},
        "spec": {
            "nodeName": "edge-1",
            "hostNetwork": True,
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
    }
    await cluster.kubectl("apply", "-f", "-", stdin=json.dumps(host_pod))

    async def running() -> dict[str, Any] | None:
        found = await pod(cluster, "on-host")
        return found if found.get("status", {}).get("phase") == "Running" else None

    status = (await eventually(running, 60, "host-network pod Running"))["status"]
    assert status["podIP"] == status["hostIP"] != ""


async def test_security_context_is_applied_in_the_container(stack: tuple[Cluster, Node]) -> None:
    """Regression (issue 10): securityContext was ignored. In containerd, one container runs as
    runAsUser/runAsGroup with the pod's supplementalGroups on a read-only root filesystem;
    another, as root, keeps only the one capability it adds after dropping ALL."""
    cluster, _ = stack
    report = "id -u; id -g; id -G; grep CapEff /proc/self/status; touch /probe 2>&1; echo end"
    manifest = talker("confined", report + "; sleep 3600")
    user, caps = manifest["spec"]["containers"][0], dict(manifest["spec"]["containers"][0])
    user["securityContext"] = {"readOnlyRootFilesystem": True, "allowPrivilegeEscalation": False}
    caps["name"] = "caps"
    caps["securityContext"] = {
        "runAsUser": 0,
        "capabilities": {"drop": ["ALL"], "add": ["NET_BIND_SERVICE"]},
    }
    manifest["spec"]["containers"].append(caps)
    manifest["spec"]["securityContext"] = {
        "runAsUser": 1000,
        "runAsGroup": 3000,
        "supplementalGroups": [4000],
    }
    await cluster.kubectl("apply", "-f", "-", stdin=json.dumps(manifest))

    async def logs(container: str) -> list[str] | None:
        out = await cluster.kubectl("logs", "confined", "-c", container, check=False)
        return out.splitlines() if "end" in out.splitlines() else None

    confined = await eventually(lambda: logs("c"), 60, "the confined container's report")
    assert confined[:2] == ["1000", "3000"]
    assert set(confined[2].split()) == {"3000", "4000"}
    assert "Read-only file system" in confined[4]
    root = await eventually(lambda: logs("caps"), 30, "the root container's report")
    assert root[0] == "0"
    assert root[3].split() == ["CapEff:", "0000000000000400"]  # CAP_NET_BIND_SERVICE only


def with_a_bad_archive(images: Path, folder: Path) -> Path:
    """A copy of the demo images, and `broken.tar`, which is no archive."""
    folder.mkdir()
    for archive in images.glob("*.tar"):
        shutil.copy(archive, folder / archive.name)
    (folder / "broken.tar").write_bytes(b"not an archive at all")
    return folder


async def test_a_bad_image_archive_is_skipped_with_a_node_event(
    cloud: tuple[Cluster, str], images: Path, tmp_path: Path
) -> None:
    """Issue 10: an image archive that cannot be imported is skipped — the node still comes
    up Ready — with a Warning ImageImportFailed Event about the Node naming the archive."""
    cluster, hub = cloud
    own = await asyncio.to_thread(with_a_bad_archive, images, tmp_path / "images")
    node = await start_node(
        "edge-1", tmp_path / "edge", hub, own, *await cluster.join_flags("edge-1")
    )
    try:
        await eventually(lambda: node_ready(cluster), 60, "edge-1 Ready")

        async def skipped() -> dict[str, Any] | None:
            found = [
                e for e in await events(cluster, "edge-1") if e["reason"] == "ImageImportFailed"
            ]
            return found[0] if found else None

        event = await eventually(skipped, 30, "an ImageImportFailed event about edge-1")
        assert event["type"] == "Warning" and "broken.tar" in event["message"]
        assert event["involvedObject"]["kind"] == "Node"
        assert event["metadata"]["namespace"] == "default"
    finally:
        await node.stop_and_reset()


async def test_container_logs_are_rotated_by_size_and_count(
    cloud: tuple[Cluster, str], images: Path, tmp_path: Path
) -> None:
    """Regression (issue 10): container logs grew without limit. With a 64 KiB limit and 3
    files, a container that writes ~1.8 MB of log leaves at most 3 files, well under that
    total; the last line written is in them, and `kubectl logs` still shows what the container
    writes after the rotations (it reads the current file, as the kubelet's does: right after a
    rotation that file may be empty, so the container goes on writing a short line)."""
    cluster, hub = cloud
    limits = ["--container-log-max-bytes", "65536", "--container-log-max-files", "3"]
    node = await start_node(
        "edge-1", tmp_path / "edge", hub, images, *await cluster.join_flags("edge-1"), *limits
    )
    try:
        await eventually(lambda: node_ready(cluster), 60, "edge-1 Ready")
        chatty = talker("chatty", WRITE_LINES)
        chatty["spec"]["restartPolicy"] = "Always"
        await cluster.kubectl("apply", "-f", "-", stdin=json.dumps(chatty))

        async def done_writing() -> bool:
            out = await cluster.kubectl("logs", "chatty", "--tail", "1", check=False)
            return "written" in out

        await eventually(done_writing, 90, "the last line in kubectl logs")
        uid = (await pod(cluster, "chatty"))["metadata"]["uid"]
        folder = tmp_path / "edge" / "pods" / uid / "logs" / "c"
        await asyncio.sleep(1.0)  # a sync round after the last write
        files = sorted(p.name for p in folder.iterdir())
        assert len(files) <= 3 and "0.log" in files, files
        assert sum(p.stat().st_size for p in folder.iterdir()) < 400_000
        assert any("line-19999-" in p.read_text() for p in folder.iterdir())
    finally:
        await node.stop_and_reset()


# 20,000 lines of ~50 bytes, in bursts of 500 a third of a second apart (rotation looks
# once per pod sync, so one burst must not be the whole log), then a short line every half
# second.
WRITE_LINES = (
    "i=0; while [ $i -lt 20000 ]; do echo line-$i-" + "0" * 40 + "; i=$((i+1)); "
    "[ $((i % 500)) -eq 0 ] && sleep 0.3; done; while true; do echo written; sleep 0.5; done"
)


def talker(name: str, script: str) -> dict[str, Any]:
    """Pod NAME on edge-1: one busybox container `c` running `script`, never restarted."""
    busybox = {"name": "c", "image": "kubeedge-py/busybox:latest", "imagePullPolicy": "Never"}
    manifest = pod_on_edge_1(name, {**busybox, "command": ["sh", "-c", script]})
    manifest["spec"].update(restartPolicy="Never", terminationGracePeriodSeconds=1)
    return manifest


async def follow_logs(cluster: Cluster, name: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        KUBECTL, "--kubeconfig", str(cluster.kubeconfig), "logs", "-f", name,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip


async def test_kubectl_logs_follow_ends_when_the_container_exits_or_the_pod_goes(
    stack: tuple[Cluster, Node],
) -> None:
    """Regression (issue 10): `kubectl logs -f` never ended for an exited container and hung
    when the pod was deleted. Now it prints everything and returns in both cases."""
    cluster, _ = stack
    await cluster.kubectl(
        "apply", "-f", "-", stdin=json.dumps(talker("brief", "echo one; sleep 4; echo two"))
    )
    await cluster.kubectl(
        "apply", "-f", "-", stdin=json.dumps(talker("lasting", "echo up; exec sleep 3600"))
    )

    async def running(name: str) -> bool:
        return (await pod(cluster, name)).get("status", {}).get("phase") == "Running"

    await eventually(lambda: running("brief"), 60, "brief running")
    brief = await follow_logs(cluster, "brief")
    out, err = await asyncio.wait_for(brief.communicate(), 60)
    assert (brief.returncode, out.decode()) == (0, "one\ntwo\n"), err.decode()

    await eventually(lambda: running("lasting"), 60, "lasting running")
    lasting = await follow_logs(cluster, "lasting")
    try:
        assert lasting.stdout is not None
        assert await asyncio.wait_for(lasting.stdout.readline(), 30) == b"up\n"
        await cluster.kubectl("delete", "pod", "lasting", "--wait=false")
        out, _ = await asyncio.wait_for(lasting.communicate(), 60)
        assert out == b""  # ended, with nothing more to say
    finally:
        if lasting.returncode is None:
            lasting.kill()
            await lasting.wait()


async def test_a_killed_containerd_is_started_again_and_its_pods_live_on(
    stack: tuple[Cluster, Node],
) -> None:
    """edgecore's private containerd SIGKILLed (an OOM kill, a crash): edged starts it again,
    the pod's container (in its shim all along) is found again, and nothing is recreated."""
    cluster, node = stack
    await cluster.kubectl(
        "apply", "-f", "-", stdin=json.dumps(talker("steady", "echo up; exec sleep 3600"))
    )

    async def running() -> bool:
        return (await pod(cluster, "steady")).get("status", {}).get("phase") == "Running"

    await eventually(running, 60, "steady running")
    before = await container_ids(node)
    pid_file = node.data_dir / "containerd" / "containerd.pid"
    old_pid = int(pid_file.read_text())
    os.kill(old_pid, signal.SIGKILL)

    async def restarted() -> bool:
        text = pid_file.read_text().strip() if pid_file.exists() else ""
        return text.isdigit() and int(text) != old_pid

    await eventually(restarted, 30, "a new containerd")
    await eventually(lambda: node_ready(cluster), 30, "edge-1 Ready")

    async def serving() -> bool:  # the pid file is written when containerd is spawned
        try:
            await container_ids(node)
        except CRIError:
            return False
        return True

    await eventually(serving, 30, "the new containerd serving")
    assert await container_ids(node) == before
    await asyncio.sleep(2)  # a few pod syncs: still nothing recreated
    assert await container_ids(node) == before
    assert (await pod(cluster, "steady"))["status"]["containerStatuses"][0]["restartCount"] == 0


async def container_ids(node: Node) -> list[str]:
    from cri.runtime.v1 import api_pb2 as cri

    runtime = await node.cri()
    try:
        state = cri.ContainerStateValue(state=cri.CONTAINER_RUNNING)
        return sorted(c.id for c in await runtime.list_containers(cri.ContainerFilter(state=state)))
    finally:
        await runtime.close()
