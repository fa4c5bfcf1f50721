"""Bad input on the hub stream gets a clear answer, and nobody else is disturbed."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from kubeedge.hub.v1 import hub_pb2, hub_pb2_grpc

from common.envelope import Message, new_message
from common.names import Group, Operation
from tests.support.controlplane import TestControlPlane
from tests.support.modules import object_event
from tests.support.stack import CloudStack, start_cloud, start_edge
from tests.support.waiting import eventually

LIMIT = 64 * 1024


@pytest.fixture
async def cloud(tmp_path: Path, kube: TestControlPlane) -> AsyncIterator[CloudStack]:
    stack = await start_cloud(
        tmp_path / "cloud", kubeconfig=str(kube.cloudcore_kubeconfig), max_message_bytes=LIMIT
    )
    yield stack
    await stack.stop()


@pytest.fixture
async def channel(cloud: CloudStack) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(
        cloud.address, options=[("grpc.max_send_message_length", 4 * LIMIT)]
    ) as ch:
        yield ch


def connect(channel: grpc.aio.Channel, node: str | None = "raw-node") -> grpc.aio.StreamStreamCall:  # type: ignore[type-arg]
    metadata = (("node-name", node),) if node is not None else ()
    return hub_pb2_grpc.HubServiceStub(channel).Connect(metadata=metadata)


async def exchange(call: grpc.aio.StreamStreamCall, *msgs: Message) -> list[Message]:  # type: ignore[type-arg]
    """Send one frame, return the envelopes of the next frame the cloud sends."""
    await call.write(hub_pb2.ConnectRequest(messages=list(msgs)))
    response = await asyncio.wait_for(call.read(), 5)
    assert response is not grpc.aio.EOF
    return list(response.messages)


def keepalive() -> Message:
    msg = new_message(source="raw", group=Group.HUB, operation=Operation.KEEPALIVE)
    msg.keepalive.SetInParent()
    return msg


@pytest.mark.parametrize(
    "node",
    [pytest.param(None, id="no-node-name"), pytest.param("Not_A_Node!", id="invalid-node-name")],
)
async def test_stream_without_valid_node_name_is_refused(
    channel: grpc.aio.Channel, node: str | None
) -> None:
    """A stream that does not name a valid node ends with INVALID_ARGUMENT and a reason."""
    call = connect(channel, node)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await call.read()
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "node" in (err.value.details() or "")


def no_body() -> Message:
    return new_message(source="raw", group=Group.USER, operation=Operation.UPLOAD, resource="a/b/c")


def unknown_operation() -> Message:
    msg = new_message(source="raw", group=Group.USER, operation="explode", resource="a/b/c")
    msg.opaque.data = b"x"
    return msg


def unknown_group() -> Message:
    msg = new_message(
        source="raw", group="nosuchgroup", operation=Operation.UPLOAD, resource="a/b/c"
    )
    msg.opaque.data = b"x"
    return msg


@pytest.mark.parametrize(
    ("make", "code", "words"),
    [
        pytest.param(no_body, 400, "no body", id="no-body"),
        pytest.param(unknown_operation, 400, "unknown operation", id="unknown-operation"),
        pytest.param(unknown_group, 404, "no cloud module", id="unknown-group"),
    ],
)
async def test_bad_message_gets_error_reply_and_stream_lives(
    cloud: CloudStack,
    channel: grpc.aio.Channel,
    make,
    code: int,
    words: str,  # type: ignore[no-untyped-def]
) -> None:
    """A bad envelope is answered with an Error naming it; the same stream keeps working."""
    call = connect(channel)
    bad = make()
    replies = await exchange(call, bad)
    errors = [m for m in replies if m.WhichOneof("body") == "error"]
    assert len(errors) == 1
    assert errors[0].header.parent_id == bad.header.id
    assert errors[0].error.code == code and words in errors[0].error.message
    replies = await exchange(call, keepalive())
    assert [m.route.operation for m in replies] == [Operation.KEEPALIVE]
    assert cloud.recorder.messages == []  # nothing bad was handed on
    call.cancel()


async def test_oversize_frame_is_refused_without_hurting_other_nodes(
    cloud: CloudStack, channel: grpc.aio.Channel, tmp_path: Path
) -> None:
    """A frame over the size limit ends that stream with RESOURCE_EXHAUSTED; another node's
    queued messages are still delivered."""
    edge = await start_edge(tmp_path / "edge", "edge-1", cloud.address, max_message_bytes=LIMIT)
    try:
        await asyncio.wait_for(edge.hub.connected.wait(), 10)
        call = connect(channel, "raw-node")
        big = new_message(
            source="raw", group=Group.USER, operation=Operation.UPLOAD, resource="a/b/c"
        )
        big.opaque.data = b"x" * (2 * LIMIT)
        await call.write(hub_pb2.ConnectRequest(messages=[big]))
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await call.read()
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        await cloud.hub.send_to_nodes([object_event("edge-1", f"cm-{i}", i + 1) for i in range(10)])
        await eventually(lambda: cloud.hub.outbox.pending("edge-1") == 0, what="delivery")
        assert len(await edge.meta.store.list("configmap")) == 10
        assert cloud.recorder.messages == []
    finally:
        await edge.stop()


async def test_oversize_object_is_not_queued(cloud: CloudStack, tmp_path: Path) -> None:
    """An object too big for the link is refused at the queue; the others still go."""
    edge = await start_edge(tmp_path / "edge", "edge-1", cloud.address, max_message_bytes=LIMIT)
    try:
        huge = object_event("edge-1", "huge", 1, data=b"{" + b" " * (2 * LIMIT) + b"}")
        await cloud.hub.send_to_nodes([huge, object_event("edge-1", "small", 2)])
        await eventually(lambda: cloud.hub.outbox.pending("edge-1") == 0, what="delivery")
        assert [o.name for o in await edge.meta.store.list("configmap")] == ["small"]
    finally:
        await edge.stop()


async def test_edge_rejects_message_for_unknown_group(cloud: CloudStack, tmp_path: Path) -> None:
    """The edge answers a message no edge module serves with a 404 error, settling it."""
    edge = await start_edge(tmp_path / "edge", "edge-1", cloud.address)
    try:
        msg = object_event("edge-1", "odd", 1)
        msg.route.group = "nosuchgroup"
        await cloud.hub.send_to_nodes([msg])
        await eventually(lambda: cloud.hub.outbox.pending("edge-1") == 0, what="error reply")
        assert await edge.meta.store.list("configmap") == []
    finally:
        await edge.stop()


async def test_second_stream_for_a_node_replaces_the_first(
    cloud: CloudStack, channel: grpc.aio.Channel
) -> None:
    """A node reconnecting while its old stream lingers gets the new one; the old ends ABORTED."""
    first = connect(channel, "twice")
    await exchange(first, keepalive())
    second = connect(channel, "twice")
    await exchange(second, keepalive())
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await asyncio.wait_for(first.read(), 5)
    assert err.value.code() == grpc.StatusCode.ABORTED
    assert cloud.hub.connected_nodes() == ["twice"]
    second.cancel()


async def test_silent_node_is_dropped_after_keepalive_timeout(
    cloud: CloudStack, channel: grpc.aio.Channel
) -> None:
    """A node that says nothing for keepalive_timeout is disconnected with DEADLINE_EXCEEDED."""
    call = connect(channel, "silent")
    await exchange(call, keepalive())
    assert cloud.hub.connected_nodes() == ["silent"]
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await asyncio.wait_for(call.read(), 10)
    assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert cloud.hub.connected_nodes() == []
