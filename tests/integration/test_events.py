"""Kubernetes Events from the edge, end to end: edged's recorder on node A's real edge stack
(joined, mutual TLS), cloudhub's node authorization, edgecontroller's writes with cloudcore's
own RBAC, and the session's real control plane, read back with kubectl."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from common.envelope import Message, is_ack
from common.names import Module, Operation
from edge.edged.events import EventRecorder
from tests.integration.test_node_authorization import A, B, World, world_of
from tests.support.cluster import KUBECTL
from tests.support.controllers import ask_up
from tests.support.controlplane import TestControlPlane
from tests.support.waiting import eventually


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def world(tmp_path: Path, kube: TestControlPlane) -> AsyncIterator[World]:
    async with world_of(tmp_path, kube) as made:
        yield made


async def kubectl_events(kube: TestControlPlane, involved: str) -> list[dict[str, Any]]:
    """`kubectl get events -A --field-selector involvedObject.name=...` as JSON items."""
    proc = await asyncio.create_subprocess_exec(
        KUBECTL,
        "--kubeconfig",
        str(kube.kubeconfig),
        "get",
        "events",
        "-A",
        "--field-selector",
        f"involvedObject.name={involved}",
        "-o",
        "json",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()
    return list(json.loads(out)["items"])


def recorder_for(world: World, clock: Clock) -> EventRecorder:
    """edged's recorder on A's edge bus, exactly as edged wires it (never waiting)."""
    bus = world.edge.supervisor.bus

    def send(msg: Message) -> bool:
        bus.send_nowait(Module.EDGEHUB, msg)
        return True

    return EventRecorder(A, send, clock=clock)


def capturing(clock: Clock) -> tuple[EventRecorder, list[Message]]:
    """A recorder whose messages are kept, for the test to send and see answered."""
    sent: list[Message] = []

    def send(msg: Message) -> bool:
        sent.append(msg)
        return True

    return EventRecorder(A, send, clock=clock), sent


async def test_an_edge_event_appears_and_a_repeat_bumps_its_count(
    world: World, kube: TestControlPlane
) -> None:
    """An Event edged records about its pod's container is in `kubectl get events` with the
    kubelet's source and fieldPath; the same event again is the same Event with count 2. A
    Node event about A itself lands in namespace default."""
    clock = Clock()
    events = recorder_for(world, clock)
    pod = await world.k8s.pod(f"{A}-pod")
    message = "Back-off restarting failed container c"
    assert events.pod(pod, "BackOff", message, container="c", warning=True)
    assert events.node("ImageImportFailed", "image archive bad.tar skipped", warning=True)

    async def listed(name: str, count: int) -> dict[str, Any] | None:
        # Only the kubelet's (edged's): the control plane's node controller records Events
        # about a new Node too (RegisteredNode), whenever it gets to it.
        found = [
            e
            for e in await kubectl_events(kube, name)
            if (e.get("source") or {}).get("component") == "kubelet"
        ]
        return found[0] if len(found) == 1 and found[0].get("count") == count else None

    first = await eventually(lambda: listed(f"{A}-pod", 1), what="the pod's Event in the API")
    assert (first["reason"], first["type"], first["message"]) == ("BackOff", "Warning", message)
    assert first["source"] == {"component": "kubelet", "host": A}
    assert first["involvedObject"]["fieldPath"] == "spec.containers{c}"
    assert first["involvedObject"]["uid"] == pod["metadata"]["uid"]
    node_event = await eventually(lambda: listed(A, 1), what="the node's Event in the API")
    assert node_event["metadata"]["namespace"] == "default"
    assert node_event["reason"] == "ImageImportFailed"
    clock.now += 60
    assert events.pod(pod, "BackOff", message, container="c", warning=True)
    again = await eventually(lambda: listed(f"{A}-pod", 2), what="count 2 on the same Event")
    assert again["metadata"]["name"] == first["metadata"]["name"]
    assert again["lastTimestamp"] > first["lastTimestamp"]


async def test_an_update_of_an_event_never_created_creates_it(
    world: World, kube: TestControlPlane
) -> None:
    """An update whose insert never reached the cloud (it collapsed into the update in the
    outbox, or the Event expired) creates the Event, count and all."""
    clock = Clock()
    events, sent = capturing(clock)
    pod = await world.k8s.pod(f"{A}-pod")
    events.pod(pod, "Unhealthy", "Liveness probe failed", container="c", warning=True)
    clock.now += 60
    events.pod(pod, "Unhealthy", "Liveness probe failed", container="c", warning=True)
    assert sent[1].route.operation == Operation.UPDATE
    assert is_ack(await ask_up(world.edge, sent[1]))

    async def created() -> bool:
        found = await kubectl_events(kube, f"{A}-pod")
        return [e.get("count") for e in found] == [2]

    await eventually(created, what="the Event created from its update")


async def test_node_a_cannot_write_events_about_node_b_or_its_pod(
    world: World, kube: TestControlPlane
) -> None:
    """An Event about B's pod, or about node B, sent on A's stream is refused with a 403
    naming A, counted under kind event, and nothing reaches the API."""
    clock = Clock()
    events, sent = capturing(clock)
    events.pod(await world.k8s.pod(f"{B}-pod"), "Killing", "Stopping container c", container="c")
    events.record({"kind": "Node", "name": B, "uid": B}, "Rebooted", "tampered", warning=True)
    for msg in sent:
        answer = await ask_up(world.edge, msg)
        assert answer.route.operation == Operation.ERROR and answer.error.code == 403
        assert A in answer.error.message
    assert world.denied("event") == 2
    # A's own Event after them, on the same stream: cloudhub hands a node's messages on in
    # order and edgecontroller applies Events in order (one queue, one worker), so once it
    # is handled, anything handed on before it was handled too.
    events.pod(await world.k8s.pod(f"{A}-pod"), "Started", "Started container c", container="c")
    assert is_ack(await ask_up(world.edge, sent[-1]))
    await eventually(lambda: world.upstream("event", "applied") == 1, what="A's own Event")
    assert world.refused_upstream("event") == 0  # refused at the hub: never handed on
    assert len(await kubectl_events(kube, f"{A}-pod")) == 1
    assert await kubectl_events(kube, f"{B}-pod") == []
    assert [e for e in await kubectl_events(kube, B) if e["reason"] == "Rebooted"] == []


async def test_node_a_cannot_overwrite_an_event_it_did_not_write(
    world: World, kube: TestControlPlane
) -> None:
    """An update that names an existing Event about B's pod from host B, sent by A about
    its own pod, passes the hub (A's own pod) but edgecontroller refuses to patch it: the
    Event there is about another object from another host. It stays as it was."""
    b_pod = await world.k8s.pod(f"{B}-pod")
    theirs = {
        "metadata": {"name": "shared"},
        "involvedObject": {"kind": "Pod", "name": f"{B}-pod", "namespace": "default"},
        "reason": "Started",
        "message": "B's own",
        "count": 1,
        "source": {"component": "kubelet", "host": B},
    }
    theirs["involvedObject"]["uid"] = b_pod["metadata"]["uid"]
    await world.k8s.call(world.k8s.core.create_namespaced_event, "default", theirs)
    events, sent = capturing(Clock())
    events.pod(await world.k8s.pod(f"{A}-pod"), "Killing", "tampered", container="c")
    sent[0].route.resource, sent[0].route.operation = "default/event/shared", Operation.UPDATE
    assert is_ack(await ask_up(world.edge, sent[0]))
    await eventually(lambda: world.refused_upstream("event") == 1, what="the refusal")
    (there,) = await kubectl_events(kube, f"{B}-pod")
    assert (there["message"], there["count"], there["source"]["host"]) == ("B's own", 1, B)
    assert await kubectl_events(kube, f"{A}-pod") == []
