"""cloudhub's live streams: a log query goes out undurably and what the node answers comes
back to the module that asked, until the last frame, an error, or the node's disconnection."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from common.envelope import Message, new_message, with_node
from common.names import Group, Module, Operation
from tests.support.controllers import FakeEdgedLogs
from tests.support.controlplane import TestControlPlane
from tests.support.modules import Recorder
from tests.support.stack import CloudStack, EdgeStack, start_cloud, start_edge
from tests.support.waiting import eventually

NODE = "edge-1"
ASKER = "test-asker"


@pytest.fixture
async def cloud(tmp_path: Path, kube: TestControlPlane) -> AsyncIterator[CloudStack]:
    stack = await start_cloud(tmp_path / "cloud", kubeconfig=str(kube.cloudcore_kubeconfig))
    yield stack
    await stack.stop()


@pytest.fixture
async def asker(cloud: CloudStack) -> AsyncIterator[Recorder]:
    """A cloud module that sends log queries and records what comes back."""
    recorder = Recorder(cloud.supervisor.bus, ASKER, "test-asking")
    cloud.supervisor.bus.register(ASKER, "test-asking")
    task = asyncio.create_task(recorder.run(), name="test-asker")
    yield recorder
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


@pytest.fixture
async def edge(cloud: CloudStack, tmp_path: Path) -> AsyncIterator[EdgeStack]:
    stack = await start_edge(tmp_path / "edge", NODE, cloud.address)
    await asyncio.wait_for(stack.hub.connected.wait(), 10)
    await eventually(lambda: NODE in cloud.hub.sessions, what="session")
    yield stack
    await stack.stop()


def log_query(pod: str) -> Message:
    msg = new_message(
        source=ASKER,
        group=Group.EDGED,
        operation=Operation.QUERY,
        resource=with_node(NODE, f"default/log/{pod}"),
    )
    msg.log_query.namespace, msg.log_query.pod = "default", pod
    return msg


async def test_frames_reach_the_asking_module_in_order(
    cloud: CloudStack, edge: EdgeStack, asker: Recorder
) -> None:
    """Every frame the node streams reaches the module that sent the query, in order, and
    the query itself is never queued durably."""
    fake = FakeEdgedLogs(edge, {("default", "web"): ["a", "b", "c"]}).start()
    try:
        query = log_query("web")
        await cloud.supervisor.bus.send(Module.CLOUDHUB, query)
        await asker.wait_for(3, 10)
        frames = [m.stream_frame for m in asker.messages]
        assert [f.data for f in frames] == [b"a\n", b"b\n", b"c\n"]
        assert [f.end for f in frames] == [False, False, True]
        assert {m.header.parent_id for m in asker.messages} == {query.header.id}
        assert asker.messages[0].route.resource == with_node(NODE, "default/log/web")
        assert cloud.hub.outbox.pending(NODE) == 0
        assert cloud.hub.streams == {}
    finally:
        await fake.stop()


async def test_node_error_ends_the_stream(
    cloud: CloudStack, edge: EdgeStack, asker: Recorder
) -> None:
    """An error the node answers reaches the asking module and closes the stream."""
    fake = FakeEdgedLogs(edge, {}).start()
    try:
        await cloud.supervisor.bus.send(Module.CLOUDHUB, log_query("missing"))
        await asker.wait_for(1, 10)
        assert asker.messages[0].route.operation == Operation.ERROR
        assert asker.messages[0].error.code == 404
        assert cloud.hub.streams == {}
    finally:
        await fake.stop()


async def test_query_to_a_disconnected_node_fails_at_once(
    cloud: CloudStack, asker: Recorder
) -> None:
    """With no stream from the node, the asking module gets a 503 error immediately."""
    await cloud.supervisor.bus.send(Module.CLOUDHUB, log_query("web"))
    await asker.wait_for(1, 5)
    assert asker.messages[0].error.code == 503
    assert cloud.hub.outbox.pending(NODE) == 0


async def test_disconnection_ends_an_open_stream(
    cloud: CloudStack, asker: Recorder, tmp_path: Path
) -> None:
    """A node that leaves mid-stream ends it with a 503 error to the asking module."""
    edge = await start_edge(tmp_path / "edge", NODE, cloud.address)
    try:
        await eventually(lambda: NODE in cloud.hub.sessions, what="session")
        query = log_query("web")  # nothing on the edge answers it
        await cloud.supervisor.bus.send(Module.CLOUDHUB, query)
        await eventually(lambda: query.header.id in cloud.hub.streams, what="stream open")
    finally:
        await edge.stop()
    await asker.wait_for(1, 10)
    assert asker.messages[0].header.parent_id == query.header.id
    assert asker.messages[0].error.code == 503
    assert "disconnected" in asker.messages[0].error.message
