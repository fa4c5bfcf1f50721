"""Fuzzing the hub: frame decoding, envelope validation, the resource grammar, node authorization,
and a live cloudhub stream fed garbage (profile "deterministic", tests/conftest.py)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from google.protobuf.message import DecodeError
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from kubeedge.hub.v1 import hub_pb2

from cloud.hub.authorizer import Denied, NodeAuthorizer, Verdict
from cloud.hub.module import CloudHub
from cloud.hub.session import NodeSession
from cloud.settings import CloudSettings
from common.bus import Bus
from common.envelope import (
    Message,
    new_message,
    object_key,
    parse_resource,
    rv_older,
    split_node,
    validate,
)
from common.errors import BadMessage
from common.link import LinkFeeder
from common.names import NODE_NAME_METADATA, Group, Module, Operation, ResourceType

NODE = "edge-1"
LIMIT = 64 * 1024
CONNECT = "/kubeedge.hub.v1.HubService/Connect"
BODIES = [f.name for f in Message.DESCRIPTOR.oneofs_by_name["body"].fields]

names = st.one_of(
    st.sampled_from([*Group, *Operation, *ResourceType, *Module, "", "null", "node"]),
    st.text(max_size=40),
)
resources = st.one_of(
    st.builds(lambda *p: "/".join(p), names, names, names),
    st.builds(lambda n, r: f"node/{n}/{r}", names, names),
    st.text(max_size=80),
    st.just("ns/type/" + "x" * 300_000),  # oversized
)


@st.composite
def envelopes(draw: st.DrawFn) -> Message:
    """Structurally valid envelopes with arbitrary, often wrong, headers, routes and bodies."""
    msg = new_message(
        source=draw(names),
        group=draw(names),
        operation=draw(names),
        resource=draw(resources),
        destination=draw(names),
        resource_version=draw(st.one_of(st.text(max_size=12), st.integers().map(str))),
        sync=draw(st.booleans()),
        parent_id=draw(st.one_of(st.just(""), st.text(max_size=40))),
    )
    msg.header.id = draw(st.one_of(st.just(""), st.text(max_size=40), st.just(msg.header.id)))
    body = draw(st.one_of(st.none(), st.sampled_from(BODIES)))
    if body is not None:
        getattr(msg, body).SetInParent()
    return msg


def frame_of(msgs: list[Message]) -> bytes:
    return hub_pb2.ConnectRequest(messages=msgs).SerializeToString()


def assert_validates_or_refuses(msg: Message) -> bool:
    """validate() accepts, or raises BadMessage with a reason; True when accepted."""
    try:
        validate(msg)
    except BadMessage as exc:
        assert exc.reason and exc.code == 400
        return False
    return True


# -- pure functions: total on anything -------------------------------------------------------


@settings(max_examples=300)
@given(st.binary(max_size=600))
@example(b"\x0a\x05\x0a\x03\x0a\x01\xff")  # an envelope whose header.id is not UTF-8
@example(b"\x0a\xff\xff\xff\xff\x0f")  # a length prefix far past the end of the frame
@example(frame_of([Message()]))  # an empty envelope
def test_arbitrary_bytes_decode_to_envelopes_or_a_decode_error(data: bytes) -> None:
    """Any bytes decode as a hub frame or raise DecodeError, and what decodes validates or not."""
    try:
        request = hub_pb2.ConnectRequest.FromString(data)
    except DecodeError:
        return
    for msg in request.messages:
        assert_validates_or_refuses(msg)


@settings(max_examples=300)
@given(envelopes())
def test_envelope_validation_and_resource_grammar_are_total(msg: Message) -> None:
    """validate, parse_resource, split_node, object_key and rv_older answer any envelope."""
    accepted = assert_validates_or_refuses(msg)
    if accepted:
        assert msg.header.id and msg.WhichOneof("body") is not None
    for fn in (parse_resource, split_node):
        try:
            fn(msg.route.resource)
        except BadMessage as exc:
            assert exc.reason
    key = object_key(msg)
    assert key is None or key == msg.route.resource
    assert isinstance(rv_older(msg.header.resource_version, msg.header.parent_id), bool)


@settings(max_examples=300)
@given(envelopes(), st.sampled_from([NODE, "edge-2", ""]))
def test_node_authorization_decides_any_envelope(msg: Message, node: str) -> None:
    """The node authorizer answers every envelope with allow, wait or a bounded refusal."""
    decision = NodeAuthorizer().decide(node, msg)
    assert decision in (Verdict.ALLOW, Verdict.WAIT) or isinstance(decision, Denied)
    if isinstance(decision, Denied):
        assert decision.reason and len(decision.reason) <= 1024


# -- cloudhub's upstream path, in process ---------------------------------------------------


@pytest.fixture
async def hub(tmp_path: Path) -> AsyncIterator[CloudHub]:
    """A cloudhub serving on 127.0.0.1:0 with a 64 KiB frame limit; group twin has a module."""
    bus = Bus()
    bus.register(Module.DEVICETWIN, Group.TWIN)
    settings_ = CloudSettings(
        data_dir=tmp_path,
        hub_listen="127.0.0.1:0",
        insecure_hub=True,
        max_message_bytes=LIMIT,
        stop_grace=0.1,
    )
    hub = CloudHub(bus, settings_)
    await hub._start_server()
    yield hub
    await hub.close()


async def assert_nothing_stored(hub: CloudHub) -> None:
    """No recorded upstream message, nothing queued downstream, no session or stream open."""
    assert await hub.inbox.count(NODE) == 0
    assert hub.outbox.pending(NODE) == 0
    assert hub.bus._inbox(Module.DEVICETWIN).empty()
    assert hub.streams == {}


@settings(max_examples=150, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(envelopes(), max_size=4))
async def test_on_frame_answers_bad_envelopes_and_stores_none(
    hub: CloudHub, msgs: list[Message]
) -> None:
    """cloudhub's frame handler never raises; a refused envelope gets an error and is not kept."""
    feeder = LinkFeeder(hub.outbox, NODE, batch_size=1000, max_frame_bytes=64 * LIMIT)
    session = NodeSession(NODE, feeder, keepalive_timeout=30.0)
    hub.authorizer.enabled = True  # no pod or device facts: twin updates wait, the rest refused
    await hub.on_frame(session, msgs)
    replies = feeder._collect()
    for reply in replies:
        assert reply.route.operation in (Operation.ERROR, Operation.KEEPALIVE, Operation.RESPONSE)
        if reply.route.operation == Operation.ERROR:
            assert reply.error.code in (400, 403, 404) and reply.error.message
    await assert_nothing_stored(hub)


# -- a live stream ---------------------------------------------------------------------------


async def send_raw(hub: CloudHub, frames: list[bytes]) -> grpc.StatusCode | None:
    """Send raw frames on one Connect stream; the status it ended with, or None if it lived."""
    target = f"127.0.0.1:{hub.port}"
    options = [("grpc.max_send_message_length", 8 * 1024 * 1024)]
    async with grpc.aio.insecure_channel(target, options=options) as channel:
        call = channel.stream_stream(CONNECT)(metadata=((NODE_NAME_METADATA, NODE),))
        try:
            for frame in frames:
                await call.write(frame)
            await call.done_writing()
            async for _ in call:
                pass
        except grpc.aio.AioRpcError as exc:
            return exc.code()
        finally:
            call.cancel()
    return None


async def wait_closed(hub: CloudHub) -> None:
    for _ in range(200):
        if not hub.sessions:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"sessions left open: {hub.connected_nodes()}")


@settings(max_examples=25, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.binary(max_size=300), min_size=1, max_size=3))
@example([b"\xff\xff\xff"])  # not a protobuf at all
@example([b"\x0a\x05\x0a\x03\x0a\x01\xff"])  # an envelope whose header.id is not UTF-8
async def test_garbage_frames_end_the_stream_cleanly(hub: CloudHub, frames: list[bytes]) -> None:
    """Arbitrary bytes on a live stream end it with a gRPC status or an answer; nothing is kept."""
    code = await send_raw(hub, frames)
    assert code in (
        None,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.CANCELLED,
    )
    await wait_closed(hub)
    await assert_nothing_stored(hub)


async def test_a_4mib_frame_is_refused_and_leaves_no_state(hub: CloudHub) -> None:
    """A 4 MiB frame (64x the limit) is refused by size; no session, record or queue remains."""
    big = new_message(source="x", group=Group.TWIN, operation=Operation.UPDATE, resource="a/b/c")
    big.object.object_json = b"{" * (4 * 1024 * 1024)
    code = await send_raw(hub, [frame_of([big])])
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
    await wait_closed(hub)
    await assert_nothing_stored(hub)
    assert await send_raw(hub, [frame_of([])]) is None  # the hub still serves
