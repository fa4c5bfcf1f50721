"""Node authorization end to end: node A's real edge stack (joined with a token, on a mutual
TLS stream as system:node:edge-a), with hand-built (tampered) reports pushed into its edgehub,
against cloudcore's modules and the session's real control plane.
Whatever A sends about node B is refused with a 403 error and changes nothing in the API;
what A sends about itself still applies."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from common.envelope import Message, is_ack, new_message
from common.names import Group, Module, Operation, ResourceType
from tests.support.cluster import new_token
from tests.support.controllers import (
    EDGE_LABEL,
    FAST_CONTROLLERS,
    K8s,
    ask_up,
    module,
    pod_spec,
    report,
)
from tests.support.controlplane import TestControlPlane
from tests.support.stack import CloudStack, EdgeStack, start_cloud, start_edge
from tests.support.waiting import eventually

A, B = "edge-a", "edge-b"
NS = "default"
DEVICES = ("devices.kubeedge.io", "v1beta1")
# No liveness writes to node B (never connected) while the test compares it.
CLOUD = {**FAST_CONTROLLERS, "node_grace_period": 3600.0}


@dataclass
class World:
    cloud: CloudStack
    edge: EdgeStack  # node A's, connected as edge-a
    k8s: K8s
    b_pod_uid: str = ""

    def denied(self, kind: str) -> float:
        """How many of A's messages of this kind cloudhub refused."""
        return self._sample("kubeedge_cloudhub_denied_total", {"node": A, "kind": kind})

    def refused_upstream(self, type_: str) -> float:
        """How many reports of this type edgecontroller's own checks refused."""
        return self.upstream(type_, "refused")

    def upstream(self, type_: str, result: str) -> float:
        """How many reports of this type edgecontroller handled with this result."""
        labels = {"type": type_, "result": result}
        return self._sample("kubeedge_edgecontroller_upstream_messages_total", labels)

    def _sample(self, name: str, labels: dict[str, str]) -> float:
        registry = module(self.cloud, Module.METRICS).metrics.registry
        return registry.get_sample_value(name, labels) or 0


@contextlib.asynccontextmanager
async def world_of(tmp_path: Path, kube: TestControlPlane, **cloud: Any) -> AsyncIterator[World]:
    """cloudcore in this process; nodes A and B, each with a pod, a secret only that pod
    references, and a Device; B's Lease; A's edge stack connected and holding its objects."""
    stack = await start_cloud(
        tmp_path / "cloud",
        kubeconfig=str(kube.cloudcore_kubeconfig),
        **{**CLOUD, "insecure_hub": False, "bootstrap_listen": "127.0.0.1:0", **cloud},
    )
    k8s = K8s(kube.kubeconfig)
    edge = None
    try:
        await k8s.ready_for_pods()
        token = await asyncio.to_thread(new_token, kube.kubeconfig, A)
        joining = (token, f"127.0.0.1:{stack.hub.bootstrap_port}")
        edge_a = await start_edge(tmp_path / "edge-a", A, stack.address, join=joining)
        world = World(stack, edge_a, k8s)
        edge = world.edge
        await populate(world)
        yield world
    finally:
        if edge is not None:
            await edge.stop()
        await stack.stop()
        k8s.close()


@pytest.fixture
async def world(tmp_path: Path, kube: TestControlPlane) -> AsyncIterator[World]:
    async with world_of(tmp_path, kube) as made:
        yield made


async def populate(world: World) -> None:
    k8s = world.k8s
    for node in (A, B):
        await k8s.call(k8s.core.create_node, {"metadata": {"name": node, "labels": EDGE_LABEL}})
        secret = {"metadata": {"name": f"{node}-secret"}, "data": {"k": "dg=="}}
        await k8s.call(k8s.core.create_namespaced_secret, NS, secret)
        pod = {
            "metadata": {"name": f"{node}-pod"},
            "spec": pod_spec(node, secrets=(secret["metadata"]["name"],)),
        }
        await k8s.call(k8s.core.create_namespaced_pod, NS, pod)
    await make_devices(k8s)
    lease = {
        "metadata": {"name": B},
        "spec": {
            "holderIdentity": B,
            "leaseDurationSeconds": 40,
            # Not a whole second: the client's create would drop the microseconds (a 400).
            "renewTime": "2026-01-01T00:00:00.250000Z",
        },
    }
    await k8s.call(k8s.coordination.create_namespaced_lease, "kube-node-lease", lease)
    world.b_pod_uid = (await k8s.pod(f"{B}-pod"))["metadata"]["uid"]
    await settled(world)


async def make_devices(k8s: K8s) -> None:
    model = {
        "apiVersion": "/".join(DEVICES),
        "kind": "DeviceModel",
        "metadata": {"name": "thermostat"},
        "spec": {"properties": [{"name": "temperature", "type": "INT"}]},
    }
    await k8s.call(k8s.custom.create_namespaced_custom_object, *DEVICES, NS, "devicemodels", model)
    for node in (A, B):
        device = {
            "apiVersion": "/".join(DEVICES),
            "kind": "Device",
            "metadata": {"name": f"{node}-dev"},
            "spec": {
                "nodeName": node,
                "deviceModelRef": {"name": "thermostat"},
                "properties": [{"name": "temperature"}],
            },
        }
        await k8s.call(k8s.custom.create_namespaced_custom_object, *DEVICES, NS, "devices", device)


async def settled(world: World) -> None:
    """The controllers' caches hold everything above: what the authorizer decides from."""
    store = world.edge.meta.store

    async def a_holds_its_objects() -> bool:
        keys = (f"{NS}/pod/{A}-pod", f"{NS}/secret/{A}-secret")
        return all([await store.get(k) is not None for k in keys])

    await eventually(a_holds_its_objects, what="A's pod and secret at the edge")
    edges = module(world.cloud, Module.EDGECONTROLLER).downstream
    await eventually(lambda: edges.pod(NS, f"{B}-pod"), what="B's pod in the cache")
    devices = module(world.cloud, Module.DEVICECONTROLLER).devices
    wanted = {f"{NS}/{A}-dev", f"{NS}/{B}-dev"}
    await eventually(lambda: wanted <= set(devices), what="both devices in the cache")


# -- the reports --------------------------------------------------------------------------


def register(node: str, labels: dict[str, str]) -> Message:
    msg = report(f"null/node/{node}", Operation.INSERT)
    obj = {"metadata": {"name": node, "labels": labels}, "status": {"capacity": {"cpu": "999"}}}
    msg.object.kind, msg.object.name, msg.object.object_json = (
        "Node",
        node,
        json.dumps(obj).encode(),
    )
    return msg


def node_status(resource_node: str, named: str, ready: str, reason: str) -> Message:
    msg = report(f"null/nodestatus/{resource_node}")
    msg.node_status.node_name = named
    condition = {"type": "Ready", "status": ready, "reason": reason}
    msg.node_status.status_json = json.dumps({"conditions": [condition]}).encode()
    return msg


def lease(node: str, renew_ms: int) -> Message:
    msg = report(f"kube-node-lease/lease/{node}")
    msg.lease.node_name, msg.lease.renew_time_ms, msg.lease.lease_duration_seconds = (
        node,
        renew_ms,
        40,
    )
    return msg


def pod_status(pod: str, uid: str, status: dict[str, Any]) -> Message:
    msg = report(f"{NS}/podstatus/{pod}")
    msg.pod_status.namespace, msg.pod_status.name, msg.pod_status.uid = NS, pod, uid
    msg.pod_status.status_json = json.dumps(status).encode()
    return msg


def pod_gone(pod: str, uid: str) -> Message:
    msg = report(f"{NS}/pod/{pod}", Operation.DELETE)
    msg.pod_status.namespace, msg.pod_status.name, msg.pod_status.uid = NS, pod, uid
    return msg


def device_report(type_: ResourceType, device: str) -> Message:
    """A report devicetwin sends about a device (group twin); the caller sets the body."""
    return new_message(
        source=Module.DEVICETWIN,
        group=Group.TWIN,
        operation=Operation.UPDATE,
        resource=f"{NS}/{type_}/{device}",
    )


def twin(device: str, value: str) -> Message:
    msg = device_report(ResourceType.TWIN, device)
    msg.twin_update.device_id = f"{NS}/{device}"
    msg.twin_update.timestamp_ms = msg.header.timestamp_ms
    msg.twin_update.twin["temperature"].actual.value = value
    return msg


def device_state(device: str, state: str) -> Message:
    msg = device_report(ResourceType.DEVICE_STATE, device)
    msg.device_state.device_id, msg.device_state.state = f"{NS}/{device}", state
    return msg


def query(type_: str, name: str) -> Message:
    msg = report(f"{NS}/{type_}/{name}", Operation.QUERY)
    msg.query.namespace, msg.query.name = NS, name
    return msg


# (what A tries, the metric kind it is counted under, the message)
TAMPERED: list[tuple[str, str, Callable[[World], Message]]] = [
    ("register B", "node", lambda w: register(B, {"tampered": "yes"})),
    ("B's node status", "nodestatus", lambda w: node_status(B, B, "False", "Tampered")),
    (
        "B's status, named in the body",
        "nodestatus",
        lambda w: node_status(A, B, "False", "Tampered"),
    ),
    ("B's Lease", "lease", lambda w: lease(B, 1_700_000_000_123)),
    (
        "status of B's pod",
        "podstatus",
        lambda w: pod_status(f"{B}-pod", w.b_pod_uid, {"phase": "Failed"}),
    ),
    ("B's pod gone", "pod", lambda w: pod_gone(f"{B}-pod", w.b_pod_uid)),
    ("twin of B's device", "twin", lambda w: twin(f"{B}-dev", "666")),
    ("state of B's device", "devicestate", lambda w: device_state(f"{B}-dev", "tampered")),
    ("read B's secret", "secret", lambda w: query(ResourceType.SECRET, f"{B}-secret")),
]


async def snapshot_of_b(k8s: K8s) -> dict[str, Any]:
    """What the tampered reports would change about node B. The Node is compared by the fields
    they carry (the cluster's own controllers annotate, taint and may mark nodes); the rest
    whole, by resourceVersion (nothing else writes them during the test)."""
    node = await k8s.node(B)
    lease_obj = await k8s.raw(k8s.coordination.read_namespaced_lease, B, "kube-node-lease")
    device = await k8s.call(
        k8s.custom.get_namespaced_custom_object, *DEVICES, NS, "devices", f"{B}-dev"
    )
    pod = await k8s.pod(f"{B}-pod")
    return {
        "node labels": node["metadata"].get("labels"),
        "node capacity": node.get("status", {}).get("capacity"),
        "tampered node conditions": [
            c
            for c in node.get("status", {}).get("conditions") or []
            if c.get("reason") == "Tampered"
        ],
        "lease": lease_obj["metadata"]["resourceVersion"],
        "pod": (pod["metadata"]["resourceVersion"], pod["metadata"].get("deletionTimestamp")),
        "device": device["metadata"]["resourceVersion"],
    }


async def assert_own_reports_apply(world: World) -> None:
    """A's reports about itself are acked and land in the API."""
    k8s, edge = world.k8s, world.edge
    a_pod_uid = (await k8s.pod(f"{A}-pod"))["metadata"]["uid"]
    own = [
        node_status(A, A, "True", "EdgeReady"),
        lease(A, 1_700_000_000_123),
        pod_status(f"{A}-pod", a_pod_uid, {"phase": "Running", "podIP": "10.244.0.9"}),
        twin(f"{A}-dev", "21"),
        device_state(f"{A}-dev", "online"),
        query(ResourceType.SECRET, f"{A}-secret"),
    ]
    for msg in own:
        answer = await ask_up(edge, msg)
        assert is_ack(answer), f"{msg.route.resource}: {answer.error.message}"

    async def applied() -> bool:
        pod = await k8s.pod(f"{A}-pod")
        device = await k8s.call(
            k8s.custom.get_namespaced_custom_object, *DEVICES, NS, "devices", f"{A}-dev"
        )
        reported = [
            t.get("reported", {}).get("value") for t in device.get("status", {}).get("twins", [])
        ]
        conditions = (await k8s.node(A)).get("status", {}).get("conditions") or []
        # The ack means recorded: reports are applied by several workers, the Lease a little
        # after the rest at times.
        leases = await k8s.raw(k8s.coordination.list_namespaced_lease, "kube-node-lease")
        holders = {
            item["metadata"]["name"]: item["spec"].get("holderIdentity") for item in leases["items"]
        }
        return (
            holders.get(A) == A
            and pod.get("status", {}).get("podIP") == "10.244.0.9"
            and reported == ["21"]
            and device.get("status", {}).get("state") == "online"
            and any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)
        )

    await eventually(applied, what="A's own reports applied")


async def test_node_cannot_touch_another_nodes_objects(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    """Each write about node B (Node, status, Lease, pod status, pod deletion, device twin and
    state) and each read of B's Secret, sent on A's stream, is answered with a 403 error, counted,
    and changes nothing; A's own reports still apply."""
    before = await snapshot_of_b(world.k8s)
    for what, _, make in TAMPERED:
        answer = await ask_up(world.edge, make(world))
        assert answer.route.operation == Operation.ERROR, f"{what} was not refused"
        assert answer.error.code == 403, f"{what}: {answer.error.message}"
        assert A in answer.error.message, f"{what}: {answer.error.message}"
    await assert_own_reports_apply(world)
    assert await snapshot_of_b(world.k8s) == before
    assert await world.edge.meta.store.get(f"{NS}/secret/{B}-secret") is None
    # Refused at the hub, so never handed on: edgecontroller's own checks had nothing to do.
    kinds = ("node", "nodestatus", "lease", "podstatus", "pod")
    assert not any(world.refused_upstream(kind) for kind in kinds)
    expected: dict[str, int] = {}
    for _, kind, _ in TAMPERED:
        expected[kind] = expected.get(kind, 0) + 1
    assert {kind: world.denied(kind) for kind in expected} == expected
    refusals = [r for r in caplog.records if r.name == "cloud.hub.authorizer"]
    assert len(refusals) == len(expected)  # once per kind, though nodestatus came twice


async def test_refusal_is_logged_once_per_node_and_kind(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    """Repeated refusals of one kind from one node are all counted, and logged once."""
    for renew in range(3):
        answer = await ask_up(world.edge, lease(B, 1_700_000_000_123 + renew))
        assert answer.error.code == 403
    assert world.denied("lease") == 3
    logged = [r for r in caplog.records if r.name == "cloud.hub.authorizer"]
    assert len(logged) == 1 and logged[0].levelno == logging.WARNING
    assert "lease" in logged[0].getMessage() and A in logged[0].getMessage()


async def test_without_node_authorization_the_controllers_still_refuse_writes(
    tmp_path: Path, kube: TestControlPlane
) -> None:
    """With --no-node-authorization nothing is refused at the hub (A's reports about B are
    acked, nothing is counted), and edgecontroller still writes nothing of B's."""
    async with world_of(tmp_path, kube, node_authorization=False) as off:
        before = await snapshot_of_b(off.k8s)
        for msg in (lease(B, 1_700_000_000_123), register(B, {"tampered": "yes"})):
            assert is_ack(await ask_up(off.edge, msg))
        await eventually(lambda: off.refused_upstream("lease") and off.refused_upstream("node"))
        await assert_own_reports_apply(off)
        assert await snapshot_of_b(off.k8s) == before
        assert off.denied("lease") == 0
