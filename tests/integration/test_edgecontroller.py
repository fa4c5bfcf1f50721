"""edgecontroller end to end: cloudhub and the controllers in one process on the session's
real control plane, a real edge stack (edgehub + metamanager) over loopback gRPC."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from kubernetes.client.exceptions import ApiException

from cloud.edgecontroller.liveness import parse_time
from common.envelope import new_message
from common.names import Module, Operation
from edge.edged.node import node_status as edged_node_status
from tests.support.controllers import (
    EDGE_LABEL,
    FAST_CONTROLLERS,
    FakeEdgedLogs,
    K8s,
    module,
    pod_spec,
    report,
    send_up,
)
from tests.support.controlplane import TestControlPlane
from tests.support.stack import CloudStack, EdgeStack, start_cloud, start_edge
from tests.support.waiting import eventually

NODE = "edge-1"


@pytest.fixture
async def cloud(tmp_path: Path, kube: TestControlPlane) -> AsyncIterator[CloudStack]:
    stack = await start_cloud(
        tmp_path / "cloud", kubeconfig=str(kube.cloudcore_kubeconfig), **FAST_CONTROLLERS
    )
    yield stack
    await stack.stop()


@pytest.fixture
async def k8s(cloud: CloudStack, kube: TestControlPlane) -> AsyncIterator[K8s]:
    api = K8s(kube.kubeconfig)
    await api.ready_for_pods()
    yield api
    api.close()


@pytest.fixture
async def edge(cloud: CloudStack, tmp_path: Path) -> AsyncIterator[EdgeStack]:
    stack = await start_edge(tmp_path / "edge", NODE, cloud.address)
    yield stack
    await stack.stop()


async def stored(edge: EdgeStack, key: str) -> Any:
    """The object the edge's store holds under `key` (as JSON), or None."""
    row = await edge.meta.store.get(key)
    return None if row is None else json.loads(row.value)


async def edge_rv(edge: EdgeStack, key: str) -> str | None:
    row = await edge.meta.store.get(key)
    return None if row is None else row.resource_version


async def make_edge_node(k8s: K8s, name: str = NODE) -> None:
    await k8s.call(k8s.core.create_node, {"metadata": {"name": name, "labels": EDGE_LABEL}})


async def make_pod_with_configmap(k8s: K8s) -> None:
    await make_edge_node(k8s)
    await k8s.call(
        k8s.core.create_namespaced_config_map,
        "default",
        {"metadata": {"name": "settings"}, "data": {"v": "1"}},
    )
    await k8s.call(
        k8s.core.create_namespaced_pod,
        "default",
        {"metadata": {"name": "web"}, "spec": pod_spec(NODE, configmaps=("settings",))},
    )


async def edge_holds(edge: EdgeStack, *keys: str) -> bool:
    return all([await edge.meta.store.get(k) is not None for k in keys])


# -- downstream ------------------------------------------------------------------------------


async def test_pod_and_its_configmap_reach_the_edge(
    cloud: CloudStack, edge: EdgeStack, k8s: K8s
) -> None:
    """A pod bound to an edge node, its configmap and the node itself land in the edge store,
    as the API returned them."""
    await make_pod_with_configmap(k8s)
    keys = ("default/pod/web", "default/configmap/settings", f"null/node/{NODE}")
    await eventually(lambda: edge_holds(edge, *keys), what="objects at the edge")
    pod = await stored(edge, "default/pod/web")
    api_pod = await k8s.pod("web")
    assert pod["metadata"]["uid"] == api_pod["metadata"]["uid"]
    assert pod["kind"] == "Pod" and pod["spec"]["nodeName"] == NODE
    assert (await stored(edge, "default/configmap/settings"))["data"] == {"v": "1"}


async def test_configmap_change_reaches_the_edge(
    cloud: CloudStack, edge: EdgeStack, k8s: K8s
) -> None:
    """A new version of a referenced configmap replaces the edge's copy."""
    await make_pod_with_configmap(k8s)
    await eventually(lambda: edge_holds(edge, "default/configmap/settings"), what="configmap")
    changed = await k8s.call(
        k8s.core.patch_namespaced_config_map, "settings", "default", {"data": {"v": "2"}}
    )

    async def updated() -> bool:
        cm = await stored(edge, "default/configmap/settings")
        return bool(cm and cm["data"] == {"v": "2"})

    await eventually(updated, what="new configmap version at the edge")
    rv = await edge_rv(edge, "default/configmap/settings")
    assert rv == changed.metadata.resource_version


async def test_unreferenced_objects_are_not_sent(
    cloud: CloudStack, edge: EdgeStack, k8s: K8s
) -> None:
    """Configmaps no pod on the node references, and pods of other nodes, stay in the cloud."""
    await make_pod_with_configmap(k8s)
    await k8s.call(
        k8s.core.create_namespaced_config_map,
        "default",
        {"metadata": {"name": "unrelated"}, "data": {}},
    )
    await k8s.call(k8s.core.create_node, {"metadata": {"name": "cloud-node"}})
    await k8s.call(
        k8s.core.create_namespaced_pod,
        "default",
        {"metadata": {"name": "elsewhere"}, "spec": pod_spec("cloud-node")},
    )
    await eventually(lambda: edge_holds(edge, "default/pod/web"), what="pod at the edge")
    controller = module(cloud, Module.EDGECONTROLLER)
    await eventually(lambda: controller.downstream.pod("default", "elsewhere"), what="cache")
    async with controller.downstream.lock:  # every event seen so far is fully handled
        pass
    assert await edge.meta.store.get("default/configmap/unrelated") is None
    assert await edge.meta.store.get("default/pod/elsewhere") is None
    assert await edge.meta.store.get("null/node/cloud-node") is None


async def test_secrets_from_env_and_image_pull_reach_the_edge(
    cloud: CloudStack, edge: EdgeStack, k8s: K8s
) -> None:
    """Secrets a pod names in env valueFrom and imagePullSecrets go to its node."""
    await make_edge_node(k8s)
    for name in ("token", "registry"):
        await k8s.call(
            k8s.core.create_namespaced_secret,
            "default",
            {"metadata": {"name": name}, "data": {"k": "dg=="}},
        )
    spec = pod_spec(NODE, secrets=("token",))
    spec["imagePullSecrets"] = [{"name": "registry"}]
    await k8s.call(
        k8s.core.create_namespaced_pod, "default", {"metadata": {"name": "app"}, "spec": spec}
    )
    keys = ("default/secret/token", "default/secret/registry", "default/pod/app")
    await eventually(lambda: edge_holds(edge, *keys), what="secrets at the edge")


async def test_service_account_volume_brings_the_cluster_ca_configmap(
    cloud: CloudStack, edge: EdgeStack, k8s: K8s
) -> None:
    """A pod the API gave a service-account token volume gets the configmap that volume
    projects (kube-root-ca.crt, which the cluster keeps in every namespace) on its node."""
    await make_edge_node(k8s)
    spec = pod_spec(NODE)
    del spec["automountServiceAccountToken"]
    await k8s.call(
        k8s.core.create_namespaced_pod, "default", {"metadata": {"name": "app"}, "spec": spec}
    )
    keys = ("default/pod/app", "default/configmap/kube-root-ca.crt")
    await eventually(lambda: edge_holds(edge, *keys), what="pod and CA configmap at the edge")
    ca = await stored(edge, "default/configmap/kube-root-ca.crt")
    assert "BEGIN CERTIFICATE" in ca["data"]["ca.crt"]
    volumes = (await stored(edge, "default/pod/app"))["spec"]["volumes"]
    assert any("projected" in v for v in volumes)


async def test_status_only_pod_change_is_not_sent(
    cloud: CloudStack, edge: EdgeStack, k8s: K8s
) -> None:
    """Patching only a pod's status changes its resourceVersion but sends nothing down; a
    label change does go down."""
    await make_pod_with_configmap(k8s)
    await eventually(lambda: edge_holds(edge, "default/pod/web"), what="pod at the edge")
    before = await edge_rv(edge, "default/pod/web")

    def pod_messages() -> int:  # the cluster's controllers may change other objects meanwhile
        return sum(m.route.resource == "default/pod/web" for m in edge.recorder.messages)

    passed_on = pod_messages()
    assert passed_on >= 1
    patched = await k8s.call(
        k8s.core.patch_namespaced_pod_status,
        "web",
        "default",
        {"status": {"phase": "Running"}},
        _content_type="application/merge-patch+json",
    )
    version = patched.metadata.resource_version
    assert version != before
    controller = module(cloud, Module.EDGECONTROLLER)

    def seen() -> bool:
        pod = controller.downstream.pod("default", "web")
        return bool(pod and pod["metadata"]["resourceVersion"] == version)

    await eventually(seen, what="the status change reaching edgecontroller")
    async with controller.downstream.lock:
        pass
    await asyncio.sleep(0.3)  # a message queued now would have reached the edge
    assert await edge_rv(edge, "default/pod/web") == before
    assert pod_messages() == passed_on
    relabelled = await k8s.call(
        k8s.core.patch_namespaced_pod, "web", "default", {"metadata": {"labels": {"a": "b"}}}
    )
    new_version = relabelled.metadata.resource_version

    async def relabel_arrived() -> bool:
        return await edge_rv(edge, "default/pod/web") == new_version

    await eventually(relabel_arrived, what="label change at the edge")


async def test_pod_deletion_reaches_the_edge_and_drops_its_configmap(
    cloud: CloudStack, edge: EdgeStack, k8s: K8s
) -> None:
    """Deleting a pod first sends its deletionTimestamp; once the node reports it gone the pod
    is removed from the API and from the edge, with the configmap only it referenced."""
    await make_pod_with_configmap(k8s)
    keys = ("default/pod/web", "default/configmap/settings")
    await eventually(lambda: edge_holds(edge, *keys), what="pod at the edge")
    await k8s.call(k8s.core.delete_namespaced_pod, "web", "default")

    async def terminating() -> bool:
        pod = await stored(edge, "default/pod/web")
        return bool(pod and pod["metadata"].get("deletionTimestamp"))

    await eventually(terminating, what="deletionTimestamp at the edge")
    uid = (await stored(edge, "default/pod/web"))["metadata"]["uid"]
    gone = report("default/pod/web", Operation.DELETE)
    gone.pod_status.namespace, gone.pod_status.name, gone.pod_status.uid = "default", "web", uid
    await send_up(edge, gone)

    async def removed() -> bool:
        return not await edge_holds(edge, "default/pod/web") and not await edge_holds(
            edge, "default/configmap/settings"
        )

    await eventually(removed, what="pod and configmap deleted at the edge")
    pods = await k8s.raw(k8s.core.list_namespaced_pod, "default")
    assert pods["items"] == []


async def test_pod_gone_with_a_stale_uid_is_ignored(
    cloud: CloudStack, edge: EdgeStack, k8s: K8s
) -> None:
    """A pod-gone report naming another uid does not delete the pod of that name."""
    await make_pod_with_configmap(k8s)
    await eventually(lambda: edge_holds(edge, "default/pod/web"), what="pod at the edge")
    await k8s.call(k8s.core.delete_namespaced_pod, "web", "default")
    gone = report("default/pod/web", Operation.DELETE)
    gone.pod_status.namespace, gone.pod_status.name, gone.pod_status.uid = "default", "web", "x"
    await send_up(edge, gone)
    status = report("default/podstatus/web")
    status.pod_status.namespace, status.pod_status.name = "default", "web"
    status.pod_status.uid = (await k8s.pod("web"))["metadata"]["uid"]
    status.pod_status.status_json = json.dumps({"phase": "Running"}).encode()
    await send_up(edge, status)  # applied after the stale delete: same worker, in order

    async def running() -> bool:
        return bool((await k8s.pod("web")).get("status", {}).get("phase") == "Running")

    await eventually(running, what="the later status report")
    assert (await k8s.pod("web"))["metadata"]["deletionTimestamp"]


# -- upstream --------------------------------------------------------------------------------


async def test_node_registration_creates_then_updates_the_node(
    cloud: CloudStack, edge: EdgeStack, k8s: K8s
) -> None:
    """An edge registers its Node; registering again keeps labels users set."""
    node = {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": NODE, "labels": {"kubernetes.io/arch": "amd64"}},
        "status": {
            "addresses": [{"type": "InternalIP", "address": "10.0.0.5"}],
            "capacity": {"cpu": "2", "memory": "1Gi", "pods": "110"},
        },
    }
    msg = report(f"null/node/{NODE}", Operation.INSERT)
    msg.object.kind, msg.object.name = "Node", NODE
    msg.object.object_json = json.dumps(node).encode()
    await send_up(edge, msg)

    async def registered() -> bool:
        try:
            return bool((await k8s.node(NODE)).get("status", {}).get("capacity"))
        except ApiException:
            return False

    await eventually(registered, what="node registered")
    created = await k8s.node(NODE)
    assert created["metadata"]["labels"]["node-role.kubernetes.io/edge"] == ""
    assert created["status"]["addresses"][0]["address"] == "10.0.0.5"
    await k8s.call(k8s.core.patch_node, NODE, {"metadata": {"labels": {"team": "ops"}}})
    node["status"]["capacity"]["cpu"] = "4"
    again = report(f"null/node/{NODE}", Operation.INSERT)
    again.object.object_json = json.dumps(node).encode()
    await send_up(edge, again)

    async def updated() -> bool:
        return bool((await k8s.node(NODE))["status"]["capacity"]["cpu"] == "4")

    await eventually(updated, what="capacity updated")
    labels = (await k8s.node(NODE))["metadata"]["labels"]
    assert labels["team"] == "ops" and labels["kubernetes.io/arch"] == "amd64"


async def test_node_cannot_register_another_node(
    cloud: CloudStack, edge: EdgeStack, k8s: K8s
) -> None:
    """A registration naming a node other than the sender is refused."""
    msg = report("null/node/someone-else", Operation.INSERT)
    msg.object.object_json = json.dumps({"metadata": {"name": "someone-else"}}).encode()
    await send_up(edge, msg)
    marker = report(f"null/node/{NODE}", Operation.INSERT)
    marker.object.object_json = json.dumps({"metadata": {"name": NODE}}).encode()
    await send_up(edge, marker)

    async def marker_done() -> bool:
        nodes = await k8s.raw(k8s.core.list_node)
        return any(n["metadata"]["name"] == NODE for n in nodes["items"])

    await eventually(marker_done, what="own registration")
    names = [n["metadata"]["name"] for n in (await k8s.raw(k8s.core.list_node))["items"]]
    assert "someone-else" not in names


def node_status(ready: str, **extra: Any) -> bytes:
    conditions = [{"type": "Ready", "status": ready, "reason": "EdgeReady", "message": "ok"}]
    return json.dumps({"conditions": conditions, **extra}).encode()


async def send_node_status(edge: EdgeStack, ready: str = "True") -> None:
    msg = report(f"null/nodestatus/{NODE}")
    msg.node_status.node_name = NODE
    msg.node_status.status_json = node_status(ready)
    await send_up(edge, msg)


async def send_lease(edge: EdgeStack, renew_ms: int) -> None:
    msg = report(f"kube-node-lease/lease/{NODE}")
    msg.lease.node_name = NODE
    msg.lease.renew_time_ms = renew_ms
    msg.lease.lease_duration_seconds = 40
    await send_up(edge, msg)


def ready_of(node: Any) -> dict[str, Any]:
    conditions = node.get("status", {}).get("conditions") or []
    return next((c for c in conditions if c["type"] == "Ready"), {})


async def test_node_status_merges_conditions(cloud: CloudStack, edge: EdgeStack, k8s: K8s) -> None:
    """A status report updates the Ready condition and keeps conditions others set."""
    await make_edge_node(k8s)
    other = {"type": "NetworkUnavailable", "status": "False", "reason": "RouteCreated"}
    await k8s.call(k8s.core.patch_node_status, NODE, {"status": {"conditions": [other]}})
    await send_node_status(edge, "True")

    async def ready() -> bool:
        return ready_of(await k8s.node(NODE)).get("status") == "True"

    await eventually(ready, what="Ready=True")
    node = await k8s.node(NODE)
    types = {c["type"] for c in node["status"]["conditions"]}
    assert types == {"Ready", "NetworkUnavailable"}
    assert ready_of(node)["lastHeartbeatTime"] and ready_of(node)["lastTransitionTime"]


async def test_node_ready_keeps_its_transition_time_while_unchanged(
    cloud: CloudStack, edge: EdgeStack, k8s: K8s
) -> None:
    """Regression: edgecore stamped lastTransitionTime on every report, so `kubectl describe
    node` and the node lifecycle controller saw Ready change every few seconds. What edged
    really sends (edged.node.node_status): the same status keeps its transition time, a new
    status moves it."""
    await make_edge_node(k8s)

    async def send(ready: bool) -> None:
        msg = report(f"null/nodestatus/{NODE}")
        msg.node_status.node_name = NODE
        status = edged_node_status("containerd://1.6", ready=ready)
        msg.node_status.status_json = json.dumps(status).encode()
        await send_up(edge, msg)

    async def ready_after(status: str, heartbeat: str) -> dict[str, Any] | None:
        ready = ready_of(await k8s.node(NODE))
        fresh = ready.get("status") == status and ready.get("lastHeartbeatTime", "") > heartbeat
        return ready if fresh else None

    await send(True)
    first = await eventually(lambda: ready_after("True", ""), what="Ready=True")
    await asyncio.sleep(1.1)  # times have whole seconds
    await send(True)
    second = await eventually(
        lambda: ready_after("True", first["lastHeartbeatTime"]), what="a later heartbeat"
    )
    assert second["lastTransitionTime"] == first["lastTransitionTime"]
    await send(False)
    third = await eventually(lambda: ready_after("False", ""), what="Ready=False")
    assert third["lastTransitionTime"] > first["lastTransitionTime"]


async def lease_versions(k8s: K8s, since: str) -> list[dict[str, Any]]:
    """Every version of NODE's Lease written after resourceVersion `since`, oldest first (a
    watch from `since`, replayed from the API server's watch cache)."""

    def read() -> list[dict[str, Any]]:
        resp = k8s.coordination.list_namespaced_lease(
            "kube-node-lease",
            watch=True,
            resource_version=since,
            field_selector=f"metadata.name={NODE}",
            timeout_seconds=1,
            _preload_content=False,
        )
        try:
            events = [json.loads(line) for line in resp.data.splitlines() if line]
        finally:
            resp.release_conn()
        errors = [e["object"] for e in events if e["type"] == "ERROR"]
        assert not errors, f"the watch failed: {errors}"
        return [e["object"] for e in events]

    return await asyncio.to_thread(read)


async def test_lease_is_created_then_renewed(cloud: CloudStack, edge: EdgeStack, k8s: K8s) -> None:
    """Lease renewals create kube-node-lease/{node}, owned by the Node and renewed from its
    first version on (node lifecycle never sees a Lease without renewTime: it would keep that
    copy and stop judging the node), then move its renewTime. The first renewal is on a whole
    second, which a MicroTime must still carry with its microseconds."""
    await make_edge_node(k8s)
    with pytest.raises(ApiException) as absent:  # the fixture wipes Leases between tests
        await k8s.call(k8s.coordination.read_namespaced_lease, NODE, "kube-node-lease")
    assert absent.value.status == 404
    since = (await k8s.raw(k8s.coordination.list_namespaced_lease, "kube-node-lease"))["metadata"][
        "resourceVersion"
    ]
    first = 1_700_000_000_000

    async def renewed_at(ms: int) -> bool:
        try:
            lease = await k8s.raw(k8s.coordination.read_namespaced_lease, NODE, "kube-node-lease")
        except ApiException:
            return False
        return parse_time(lease["spec"].get("renewTime")) == datetime.fromtimestamp(ms / 1000, UTC)

    await send_lease(edge, first)
    await eventually(lambda: renewed_at(first), what="lease created")
    lease = await k8s.raw(k8s.coordination.read_namespaced_lease, NODE, "kube-node-lease")
    assert lease["spec"]["holderIdentity"] == NODE
    assert lease["spec"]["leaseDurationSeconds"] == 40
    node_uid = (await k8s.node(NODE))["metadata"]["uid"]
    assert [o["uid"] for o in lease["metadata"]["ownerReferences"]] == [node_uid]
    await send_lease(edge, first + 10_123)
    await eventually(lambda: renewed_at(first + 10_123), what="lease renewed")
    versions = await lease_versions(k8s, since)
    assert len(versions) >= 2
    assert [v["spec"].get("renewTime") for v in versions][:1] == ["2023-11-14T22:13:20.000000Z"]
    assert all(v["spec"].get("renewTime") for v in versions), versions


async def test_pod_status_is_written(cloud: CloudStack, edge: EdgeStack, k8s: K8s) -> None:
    """A pod status report lands in the pod's status."""
    await make_pod_with_configmap(k8s)
    uid = (await k8s.pod("web"))["metadata"]["uid"]
    msg = report("default/podstatus/web")
    msg.pod_status.namespace, msg.pod_status.name, msg.pod_status.uid = "default", "web", uid
    status = {
        "phase": "Running",
        "podIP": "10.244.0.7",
        "conditions": [{"type": "Ready", "status": "True"}],
    }
    msg.pod_status.status_json = json.dumps(status).encode()
    await send_up(edge, msg)

    async def written() -> bool:
        return bool((await k8s.pod("web")).get("status", {}).get("podIP") == "10.244.0.7")

    await eventually(written, what="pod status written")
    assert (await k8s.pod("web"))["status"]["phase"] == "Running"


# -- node liveness ---------------------------------------------------------------------------


async def test_silent_disconnected_node_becomes_unknown_then_ready_again(
    cloud: CloudStack, k8s: K8s, tmp_path: Path
) -> None:
    """An edge that stops (no stream, no lease renewal for the grace period) turns
    Ready=Unknown; its next status report makes it Ready again."""
    await make_edge_node(k8s)
    edge = await start_edge(tmp_path / "edge", NODE, cloud.address)
    try:
        await send_lease(edge, int(time.time() * 1000))
        await send_node_status(edge, "True")

        async def ready_is(value: str) -> bool:
            return ready_of(await k8s.node(NODE)).get("status") == value

        await eventually(lambda: ready_is("True"), what="Ready=True")
        # Longer than the grace period: the stream keeps it alive.
        await asyncio.sleep(FAST_CONTROLLERS["node_grace_period"] + 0.5)
        assert await ready_is("True")
    finally:
        await edge.stop()
    await eventually(lambda: ready_is("Unknown"), what="Ready=Unknown")
    unknown = ready_of(await k8s.node(NODE))
    assert unknown["reason"] == "NodeStatusUnknown"
    assert unknown["message"] == "edgecore stopped posting node status"
    edge = await start_edge(tmp_path / "edge", NODE, cloud.address)
    try:
        await send_lease(edge, int(time.time() * 1000))
        await send_node_status(edge, "True")
        await eventually(lambda: ready_is("True"), what="Ready again")
    finally:
        await edge.stop()


# -- pods/log --------------------------------------------------------------------------------
# The real kube-apiserver asks the node's kubelet endpoint for logs, not cloudcore; these tests
# drive edgecontroller's log streaming (LogStreams.serve) from a small HTTP server standing
# where an API server's pods/{name}/log handler would call it.


@pytest.fixture
async def pods_log(cloud: CloudStack) -> AsyncIterator[str]:
    """The base URL of an HTTP server whose pods/{name}/log calls edgecontroller's
    LogStreams with the pod edgecontroller has cached."""
    controller = module(cloud, Module.EDGECONTROLLER)

    async def handle(request: web.Request) -> web.StreamResponse:
        pod = controller.downstream.pod(request.match_info["ns"], request.match_info["name"])
        if pod is None:
            raise web.HTTPNotFound()
        response: web.StreamResponse = await controller.logs.serve(request, pod)
        return response

    app = web.Application()
    app.router.add_get("/api/v1/namespaces/{ns}/pods/{name}/log", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    await runner.cleanup()


async def pod_log(base: str, pod: str, **params: str) -> tuple[int, str]:
    """(HTTP status, the log text or the Status message) of GET pods/{pod}/log."""
    url = f"{base}/api/v1/namespaces/default/pods/{pod}/log"
    async with aiohttp.ClientSession() as session, session.get(url, params=params) as resp:
        if resp.status == 200:
            return resp.status, await resp.text()
        return resp.status, str((await resp.json())["message"])


async def cached_pod(cloud: CloudStack, name: str) -> None:
    controller = module(cloud, Module.EDGECONTROLLER)
    await eventually(lambda: controller.downstream.pod("default", name), what="pod in the cache")


async def test_pod_log_streams_from_the_node(
    cloud: CloudStack, edge: EdgeStack, k8s: K8s, pods_log: str
) -> None:
    """A pods/log request reaches the node through the hub and returns what it streams
    back, honouring tailLines and container."""
    fake = FakeEdgedLogs(edge, {("default", "web"): ["one", "two", "three"]}).start()
    try:
        await make_pod_with_configmap(k8s)
        await cached_pod(cloud, "web")
        await asyncio.wait_for(edge.hub.connected.wait(), 10)
        assert await pod_log(pods_log, "web") == (200, "one\ntwo\nthree\n")
        assert await pod_log(pods_log, "web", tailLines="1", container="c") == (200, "three\n")
        query = fake.queries[-1].log_query
        assert (query.namespace, query.pod, query.container, query.tail_lines) == (
            "default",
            "web",
            "c",
            1,
        )
    finally:
        await fake.stop()


async def test_logs_errors_become_statuses(
    cloud: CloudStack, edge: EdgeStack, k8s: K8s, pods_log: str
) -> None:
    """An edge error maps to its Status code; a bad container is refused before asking."""
    fake = FakeEdgedLogs(edge, {}).start()
    try:
        await make_pod_with_configmap(k8s)
        await cached_pod(cloud, "web")
        await asyncio.wait_for(edge.hub.connected.wait(), 10)
        code, message = await pod_log(pods_log, "web")
        assert code == 404 and "no pod web" in message
        code, message = await pod_log(pods_log, "web", container="nope")
        assert code == 400 and "container nope is not valid" in message
        assert len(fake.queries) == 1
    finally:
        await fake.stop()


async def test_logs_of_a_disconnected_node_is_503(
    cloud: CloudStack, k8s: K8s, pods_log: str
) -> None:
    """With no stream from the pod's node, pods/log answers 503 at once."""
    await make_pod_with_configmap(k8s)
    await cached_pod(cloud, "web")
    code, message = await pod_log(pods_log, "web")
    assert code == 503 and f"node {NODE} is not connected" in message


async def ready_to_follow(cloud: CloudStack, edge: EdgeStack, k8s: K8s) -> None:
    await make_pod_with_configmap(k8s)
    await cached_pod(cloud, "web")
    await asyncio.wait_for(edge.hub.connected.wait(), 10)


async def follow_web(session: aiohttp.ClientSession, base: str) -> aiohttp.ClientResponse:
    """GET pods/web/log?follow=true, past its first line (closed with the session)."""
    url = f"{base}/api/v1/namespaces/default/pods/web/log"
    resp = await session.get(url, params={"follow": "true"})
    assert await resp.content.readline() == b"one\n"
    return resp


async def test_a_follow_client_that_leaves_stops_the_stream_at_the_node(
    cloud: CloudStack, edge: EdgeStack, k8s: K8s, pods_log: str
) -> None:
    """Regression (issue 10): `kubectl logs -f` left the node tailing forever after the
    client went away. Now the node gets a StreamCancel for the stream and stops it."""
    fake = FakeEdgedLogs(edge, {("default", "web"): ["one"]}).start()
    try:
        await ready_to_follow(cloud, edge, k8s)
        async with aiohttp.ClientSession() as session:
            resp = await follow_web(session, pods_log)
            assert (await resp.content.readline()).startswith(b"tick")  # still following
            resp.close()  # the client goes away
        await eventually(lambda: fake.cancels, what="a StreamCancel at the node")
        stream_id = fake.queries[-1].header.id
        assert fake.cancels[0].stream_cancel.stream_id == stream_id
        await eventually(lambda: not fake.following, what="the node's follow task ended")
    finally:
        await fake.stop()


async def test_a_stream_ends_when_its_hub_stream_does_even_if_the_node_is_back_at_once(
    cloud: CloudStack, edge: EdgeStack, k8s: K8s, pods_log: str
) -> None:
    """The node's hub stream ends (here: cut by cloudhub) and the node reconnects at once: the
    log stream that went out on the old one ends for its client rather than hanging, and the
    node, still producing it on the new one, is told to stop."""
    fake = FakeEdgedLogs(edge, {("default", "web"): ["one"]}).start()
    try:
        await ready_to_follow(cloud, edge, k8s)
        async with aiohttp.ClientSession() as session:
            resp = await follow_web(session, pods_log)
            module(cloud, Module.CLOUDHUB).sessions[NODE].end("cut for the test")
            rest = await asyncio.wait_for(resp.content.read(), 15)  # the stream ends
            assert b"one" not in rest
        await eventually(lambda: fake.cancels, what="a StreamCancel on the new hub stream")
        await eventually(lambda: not fake.following, what="the node's follow task ended")
    finally:
        await fake.stop()


async def test_logs_flow_while_reports_wait_for_a_slow_api(
    cloud: CloudStack, edge: EdgeStack, k8s: K8s, pods_log: str
) -> None:
    """Reports wait (backpressure) while the API is slow; a log stream's frames come to an
    inbox of their own, so `kubectl logs` goes on meanwhile (it used to wait behind them)."""
    fake = FakeEdgedLogs(edge, {("default", "web"): ["one", "two"]}).start()
    controller = module(cloud, Module.EDGECONTROLLER)
    stuck = asyncio.Event()

    async def slow_api(msg: Any) -> None:
        stuck.set()
        await asyncio.Event().wait()  # an API server that never answers

    try:
        await ready_to_follow(cloud, edge, k8s)
        controller.upstream.submit = slow_api
        lease = new_message(
            source="edged", group="resource", operation=Operation.UPDATE,
            resource=f"kube-node-lease/lease/{NODE}",
        )  # fmt: skip
        lease.lease.node_name, lease.lease.lease_duration_seconds = NODE, 40
        await edge.supervisor.bus.send(Module.EDGEHUB, lease)
        await asyncio.wait_for(stuck.wait(), 15)  # the report waits for the API
        assert await pod_log(pods_log, "web") == (200, "one\ntwo\n")
    finally:
        await fake.stop()


async def test_frames_of_a_stream_nobody_reads_get_one_cancel(
    cloud: CloudStack, edge: EdgeStack, k8s: K8s
) -> None:
    """Frames for a stream the cloud no longer has open (its client left, or cloudcore
    restarted) make cloudhub tell the node to stop it, once."""
    fake = FakeEdgedLogs(edge, {}).start()
    try:
        await asyncio.wait_for(edge.hub.connected.wait(), 10)
        query = new_message(
            source=Module.EDGECONTROLLER,
            group="edged",
            operation=Operation.QUERY,
            resource="default/log/web",
        )
        for seq in range(5):
            await fake.send_frame(query, "gone-stream", seq, b"x\n")
        await eventually(lambda: fake.cancels, what="a StreamCancel at the node")
        await asyncio.sleep(0.3)
        assert [c.stream_cancel.stream_id for c in fake.cancels] == ["gone-stream"]
    finally:
        await fake.stop()


# -- metrics ---------------------------------------------------------------------------------


async def test_metrics_endpoint_counts_hub_traffic(
    cloud: CloudStack, edge: EdgeStack, k8s: K8s
) -> None:
    """GET /metrics shows per-node message counters, connected nodes and queue depth."""
    await make_pod_with_configmap(k8s)
    keys = ("default/pod/web", "default/configmap/settings", f"null/node/{NODE}")
    await eventually(lambda: edge_holds(edge, *keys), what="objects at the edge")
    port = module(cloud, Module.METRICS).port

    async def scrape() -> dict[str, float]:
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"http://127.0.0.1:{port}/metrics") as resp,
        ):
            assert resp.status == 200
            text = await resp.text()
        samples = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                samples[name] = float(value)
        return samples

    async def all_synced() -> dict[str, float] | None:  # the ledger counts acks as they come
        samples = await scrape()
        return samples if samples.get("kubeedge_synccontroller_objectsyncs") == 3 else None

    samples = await eventually(all_synced, what="3 ObjectSyncs in the metrics")
    assert samples[f'kubeedge_hub_messages_sent_total{{node="{NODE}"}}'] >= 3
    assert samples[f'kubeedge_hub_messages_received_total{{node="{NODE}"}}'] >= 3
    assert samples["kubeedge_hub_connected_nodes"] == 1
    assert f'kubeedge_hub_queue_depth{{node="{NODE}"}}' in samples
    assert (
        samples['kubeedge_edgecontroller_downstream_messages_total{kind="Pod",operation="insert"}']
        == 1
    )
    assert samples["kubeedge_synccontroller_objectsyncs"] == 3
