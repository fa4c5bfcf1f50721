"""cloudhub and edgehub over loopback gRPC: delivery, acks after commit, keepalive, reconnect."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from common.envelope import Message
from common.names import Module
from edge.edged.events import EventRecorder
from edge.hub import module as edge_hub
from tests.support.controlplane import TestControlPlane
from tests.support.modules import object_event, upload
from tests.support.proxy import FaultProxy
from tests.support.stack import CloudStack, EdgeStack, start_cloud, start_edge
from tests.support.waiting import eventually


@pytest.fixture
async def cloud(tmp_path: Path, kube: TestControlPlane) -> AsyncIterator[CloudStack]:
    stack = await start_cloud(tmp_path / "cloud", kubeconfig=str(kube.cloudcore_kubeconfig))
    yield stack
    await stack.stop()


@pytest.fixture
async def proxy(cloud: CloudStack) -> AsyncIterator[FaultProxy]:
    p = await FaultProxy(cloud.hub.port).start()
    yield p
    await p.close()


@pytest.fixture
async def edge(tmp_path: Path, proxy: FaultProxy) -> AsyncIterator[EdgeStack]:
    stack = await start_edge(tmp_path / "edge", "edge-1", proxy.address)
    yield stack
    await stack.stop()


async def test_edge_connects_and_cloud_knows_it(cloud: CloudStack, edge: EdgeStack) -> None:
    """An edgecore names itself in metadata and cloudhub lists it as connected."""
    await asyncio.wait_for(edge.hub.connected.wait(), 10)
    await eventually(lambda: cloud.hub.connected_nodes() == ["edge-1"], what="session")


async def test_downstream_objects_are_stored_then_acked(cloud: CloudStack, edge: EdgeStack) -> None:
    """Objects sent to a node land in its SQLite store, and the cloud's queue empties by acks."""
    await cloud.hub.send_to_nodes([object_event("edge-1", f"cm-{i}", 10 + i) for i in range(50)])
    await eventually(lambda: cloud.hub.outbox.pending("edge-1") == 0, what="acks")
    stored = await edge.meta.store.list("configmap", "default")
    assert sorted(o.name for o in stored) == sorted(f"cm-{i}" for i in range(50))
    assert {o.resource_version for o in stored} == {str(10 + i) for i in range(50)}
    assert len(edge.recorder.messages) == 50  # each passed on to edged exactly once


async def test_ack_is_sent_only_after_commit(cloud: CloudStack, edge: EdgeStack) -> None:
    """When the cloud holds no more un-acked copy, the edge's store already has the object."""
    await asyncio.wait_for(edge.hub.connected.wait(), 10)
    store = edge.meta.store
    seen_acked_before_commit = []

    original_ack = cloud.hub.outbox.ack

    def checking_ack(target: str, msg_id: str) -> bool:
        # The edge's ack crossed the wire; its row must already be committed.
        row = store.db.conn.execute(
            "SELECT count(*) FROM meta WHERE key LIKE 'default/configmap/%'"
        )
        if next(iter(row))[0] == 0:
            seen_acked_before_commit.append(msg_id)
        return original_ack(target, msg_id)

    cloud.hub.outbox.ack = checking_ack  # type: ignore[method-assign]
    await cloud.hub.send_to_nodes([object_event("edge-1", "cm-a", 5)])
    await eventually(lambda: cloud.hub.outbox.pending("edge-1") == 0, what="ack")
    assert seen_acked_before_commit == []
    assert (await store.get("default/configmap/cm-a")) is not None


async def test_older_version_never_overwrites_newer(cloud: CloudStack, edge: EdgeStack) -> None:
    """A stale resourceVersion queued after a newer one is neither sent nor stored."""
    await cloud.hub.send_to_nodes([object_event("edge-1", "cm", 20, data=b'{"v":20}')])
    await cloud.hub.send_to_nodes([object_event("edge-1", "cm", 15, data=b'{"v":15}')])
    await eventually(lambda: cloud.hub.outbox.pending("edge-1") == 0, what="acks")
    obj = await edge.meta.store.get("default/configmap/cm")
    assert obj is not None and obj.resource_version == "20" and obj.value == b'{"v":20}'


async def test_delete_removes_the_object_at_the_edge(cloud: CloudStack, edge: EdgeStack) -> None:
    """A delete always passes and removes the stored object."""
    await cloud.hub.send_to_nodes([object_event("edge-1", "gone", 7)])
    await eventually(lambda: cloud.hub.outbox.pending("edge-1") == 0, what="insert ack")
    await cloud.hub.send_to_nodes([object_event("edge-1", "gone", 9, op="delete")])
    await eventually(lambda: cloud.hub.outbox.pending("edge-1") == 0, what="delete ack")
    assert await edge.meta.store.get("default/configmap/gone") is None


async def test_upstream_outbox_reaches_cloud_module_once(
    cloud: CloudStack, edge: EdgeStack
) -> None:
    """Reports an edge module queues reach the cloud module of their group, once each."""
    for i in range(30):
        await edge.supervisor.bus.send(Module.EDGEHUB, upload(i))
    await cloud.recorder.wait_for(30, 10)
    await eventually(lambda: edge.hub.outbox.pending("cloud") == 0, what="upstream acks")
    assert cloud.recorder.payloads() == {str(i).encode(): 1 for i in range(30)}
    assert all(m.route.resource.startswith("node/edge-1/") for m in cloud.recorder.messages)


async def test_upstream_queued_while_cloud_unreachable(
    cloud: CloudStack, edge: EdgeStack, proxy: FaultProxy
) -> None:
    """Reports made while the link is down wait in the outbox and arrive after it returns."""
    await asyncio.wait_for(edge.hub.connected.wait(), 10)
    proxy.block()
    await eventually(lambda: not edge.hub.connected.is_set(), what="link down")
    for i in range(20):
        await edge.supervisor.bus.send(Module.EDGEHUB, upload(i))
    await eventually(lambda: edge.hub.outbox.pending("cloud") == 20, what="queued")
    assert cloud.recorder.messages == []
    proxy.unblock()
    await cloud.recorder.wait_for(20, 10)
    assert cloud.recorder.payloads() == {str(i).encode(): 1 for i in range(20)}


async def test_events_are_dropped_while_the_outbox_is_backed_up(
    cloud: CloudStack, edge: EdgeStack, proxy: FaultProxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Events are best-effort (issue 10): with the link down and EVENT_BACKLOG messages
    waiting, an Event is not stored, while every other report still queues."""
    monkeypatch.setattr(edge_hub, "EVENT_BACKLOG", 5)
    await asyncio.wait_for(edge.hub.connected.wait(), 10)
    proxy.block()
    await eventually(lambda: not edge.hub.connected.is_set(), what="link down")
    bus = edge.supervisor.bus
    events = EventRecorder("edge-1", lambda msg: bus.send_nowait(Module.EDGEHUB, msg) is None)
    assert events.node("Starting", "before the backlog")
    for i in range(4):
        await bus.send(Module.EDGEHUB, upload(i))
    await eventually(lambda: edge.hub.outbox.pending("cloud") == 5, what="backlog")
    assert events.node("ImageImportFailed", "during the backlog", warning=True)
    await bus.send(Module.EDGEHUB, upload(4))
    await eventually(lambda: edge.hub.outbox.pending("cloud") == 6, what="queued")
    rows = await edge.db.run(lambda c: list(c.execute("SELECT envelope FROM outbox")))
    kept = [Message.FromString(blob).route.resource for (blob,) in rows]
    assert sum("/event/" in r for r in kept) == 1, kept  # the one from before the backlog


async def test_reconnect_after_cuts_delivers_everything_once(
    cloud: CloudStack, edge: EdgeStack, proxy: FaultProxy
) -> None:
    """Cutting the link repeatedly mid-flow loses nothing and applies nothing twice."""
    await asyncio.wait_for(edge.hub.connected.wait(), 10)
    for round_ in range(5):
        batch = [object_event("edge-1", f"cm-{round_}-{i}", 100 * round_ + i) for i in range(40)]
        await cloud.hub.send_to_nodes(batch)
        for i in range(10):
            await edge.supervisor.bus.send(Module.EDGEHUB, upload(round_ * 10 + i))
        await asyncio.sleep(0.01)
        proxy.cut()
    await eventually(lambda: cloud.hub.outbox.pending("edge-1") == 0, 20, "downstream drained")
    await cloud.recorder.wait_for(50, 20)
    stored = await edge.meta.store.list("configmap")
    assert len(stored) == 200
    keys = [(m.route.resource, m.header.resource_version) for m in edge.recorder.messages]
    assert len(keys) == len(set(keys)) == 200
    assert cloud.recorder.payloads() == {str(i).encode(): 1 for i in range(50)}
    assert proxy.connections >= 2


async def test_edge_reconnects_when_cloud_goes_silent(
    cloud: CloudStack, edge: EdgeStack, proxy: FaultProxy
) -> None:
    """A frozen link (open but silent) is detected by keepalive and replaced by a new stream."""
    await asyncio.wait_for(edge.hub.connected.wait(), 10)
    connects = edge.hub.connects
    proxy.freeze()
    await eventually(lambda: edge.hub.connects > connects, 10, "a new stream")
    await cloud.hub.send_to_nodes([object_event("edge-1", "after-freeze", 3)])
    await eventually(lambda: cloud.hub.outbox.pending("edge-1") == 0, what="delivery")
    assert await edge.meta.store.get("default/configmap/after-freeze") is not None


async def test_outbox_survives_edge_restart(cloud: CloudStack, tmp_path: Path) -> None:
    """Reports queued while disconnected are still there after edgecore restarts."""
    edge = await start_edge(tmp_path / "edge-r", "edge-r", "127.0.0.1:1")  # nothing listens
    for i in range(5):
        await edge.supervisor.bus.send(Module.EDGEHUB, upload(i))
    await eventually(lambda: edge.hub.outbox.pending("cloud") == 5, what="queued")
    await edge.stop()
    edge = await start_edge(tmp_path / "edge-r", "edge-r", cloud.address)
    try:
        await cloud.recorder.wait_for(5, 10)
        assert cloud.recorder.payloads() == {str(i).encode(): 1 for i in range(5)}
    finally:
        await edge.stop()
