"""LinkFeeder: what goes into each stream frame, in what order, and when next_frame waits."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubeedge.hub.v1 import hub_pb2

from common.envelope import Message, make_ack, new_message
from common.link import LinkFeeder
from common.names import Group, Module, Operation
from common.outbox import Outbox
from common.sqlite import Database

NODE = "edge-1"


def obj(name: str, payload: int = 0) -> Message:
    msg = new_message(
        source=Module.EDGECONTROLLER,
        group=Group.RESOURCE,
        operation=Operation.UPDATE,
        resource=f"ns/configmap/{name}",
        resource_version="1",
    )
    msg.object.name = name
    msg.object.object_json = b"x" * payload
    return msg


def control(name: str = "ack") -> Message:
    return make_ack(obj(name), source=Module.CLOUDHUB)


def ids(msgs: list[Message]) -> list[str]:
    return [m.header.id for m in msgs]


def frame_bytes(batch: list[Message]) -> int:
    """The size of the stream message that carries `batch`."""
    return hub_pb2.ConnectResponse(messages=batch).ByteSize()


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    database = Database(tmp_path / "link.db", "SELECT 1")
    yield database
    database.close()


@pytest.fixture
def outbox(db: Database) -> Outbox:
    return Outbox(db, resend_interval=60.0, max_inflight=1000, max_envelope_bytes=64 * 1024)


async def drain(feeder: LinkFeeder) -> list[list[Message]]:
    """Every frame the feeder has ready now (stops when next_frame would wait)."""
    frames: list[list[Message]] = []
    while True:
        try:
            frames.append(await asyncio.wait_for(feeder.next_frame(), 0.05))
        except TimeoutError:
            return frames


# -- order --------------------------------------------------------------------------------


async def test_control_messages_go_before_outbox_data(outbox: Outbox) -> None:
    """Control messages pushed after data was queued still lead the frame, in push order."""
    data = [obj("a"), obj("b")]
    await outbox.put(NODE, data)
    feeder = LinkFeeder(outbox, NODE, batch_size=10, max_frame_bytes=64 * 1024)
    first, second = control("x"), control("y")
    feeder.push(first)
    feeder.push(second)
    frame = await asyncio.wait_for(feeder.next_frame(), 1)
    assert ids(frame) == ids([first, second, *data])


async def test_control_messages_fill_the_frame_before_data(outbox: Outbox) -> None:
    """With more control messages than batch_size, data waits until the controls are out."""
    data = obj("a")
    await outbox.put(NODE, [data])
    feeder = LinkFeeder(outbox, NODE, batch_size=2, max_frame_bytes=64 * 1024)
    controls = [control(str(i)) for i in range(3)]
    for c in controls:
        feeder.push(c)
    frames = await drain(feeder)
    assert [ids(f) for f in frames] == [ids(controls[:2]), ids([controls[2], data])]


async def test_control_messages_go_before_data_held_from_an_earlier_frame(
    outbox: Outbox,
) -> None:
    """A control message pushed while taken data waits for room leads the next frame, so an
    ack is not stuck behind data already taken from the outbox."""
    data = [obj(f"o{i}", payload=1500) for i in range(3)]
    await outbox.put(NODE, data)
    feeder = LinkFeeder(outbox, NODE, batch_size=10, max_frame_bytes=2000)
    assert ids(await asyncio.wait_for(feeder.next_frame(), 1)) == ids(data[:1])
    c = control()
    feeder.push(c)
    frames = await drain(feeder)
    assert [m.header.id for f in frames for m in f] == ids([c, *data[1:]])


async def test_control_messages_are_not_stored_or_resent(outbox: Outbox) -> None:
    """A pushed control message is sent once and never enters the outbox."""
    feeder = LinkFeeder(outbox, NODE, batch_size=10, max_frame_bytes=64 * 1024)
    c = control()
    feeder.push(c)
    assert [ids(f) for f in await drain(feeder)] == [ids([c])]
    assert outbox.pending(NODE) == 0


# -- frame limits -------------------------------------------------------------------------


async def test_frame_holds_at_most_batch_size_envelopes(outbox: Outbox) -> None:
    """Seven queued messages with batch_size 3 go out as frames of 3, 3 and 1, in order."""
    data = [obj(f"o{i}") for i in range(7)]
    await outbox.put(NODE, data)
    feeder = LinkFeeder(outbox, NODE, batch_size=3, max_frame_bytes=64 * 1024)
    frames = await drain(feeder)
    assert [len(f) for f in frames] == [3, 3, 1]
    assert [m.header.id for f in frames for m in f] == ids(data)


async def test_frame_stays_under_max_frame_bytes(outbox: Outbox) -> None:
    """Big envelopes are spread over frames that each stay within max_frame_bytes; none is lost."""
    limit = 2500
    data = [obj(f"o{i}", payload=1000) for i in range(5)]
    await outbox.put(NODE, data)
    feeder = LinkFeeder(outbox, NODE, batch_size=10, max_frame_bytes=limit)
    frames = await drain(feeder)
    assert [len(f) for f in frames] == [2, 2, 1]
    assert all(frame_bytes(f) <= limit for f in frames)
    assert [m.header.id for f in frames for m in f] == ids(data)


async def test_frame_size_counts_the_framing_of_each_envelope(outbox: Outbox) -> None:
    """Two envelopes whose bare sizes just fit the limit are still split, because the frame
    also spends bytes on each envelope's field tag and length."""
    data = [obj("a", payload=1000), obj("b", payload=1000)]
    await outbox.put(NODE, data)
    limit = sum(m.ByteSize() for m in data) + 2
    assert frame_bytes(data) > limit
    feeder = LinkFeeder(outbox, NODE, batch_size=10, max_frame_bytes=limit)
    frames = await drain(feeder)
    assert [ids(f) for f in frames] == [ids(data[:1]), ids(data[1:])]
    assert all(frame_bytes(f) <= limit for f in frames)


async def test_message_that_does_not_fit_goes_in_the_next_frame(outbox: Outbox) -> None:
    """A message too big for the rest of a frame is held and leads the next frame."""
    big_a, big_b = obj("a", payload=1500), obj("b", payload=1500)
    await outbox.put(NODE, [big_a, big_b])
    feeder = LinkFeeder(outbox, NODE, batch_size=10, max_frame_bytes=2000)
    first = await asyncio.wait_for(feeder.next_frame(), 1)
    assert ids(first) == ids([big_a])
    later = obj("c")
    await outbox.put(NODE, [later])
    second = await asyncio.wait_for(feeder.next_frame(), 1)
    assert ids(second) == ids([big_b, later])
    assert frame_bytes(first) <= 2000
    assert frame_bytes(second) <= 2000


async def test_control_messages_respect_max_frame_bytes(outbox: Outbox) -> None:
    """Control messages too big to share a frame are split over frames as well."""
    feeder = LinkFeeder(outbox, NODE, batch_size=10, max_frame_bytes=300)
    controls = []
    for i in range(3):
        c = control(str(i))
        c.ack.resource_version = "9" * 60
        controls.append(c)
        feeder.push(c)
    frames = await drain(feeder)
    assert [ids(f) for f in frames] == [ids([c]) for c in controls]
    assert all(frame_bytes(f) <= 300 for f in frames)


async def test_an_envelope_bigger_than_a_frame_still_goes_alone(outbox: Outbox) -> None:
    """One envelope larger than max_frame_bytes is sent alone rather than stuck forever."""
    huge, small = obj("huge", payload=3000), obj("small")
    await outbox.put(NODE, [huge, small])
    feeder = LinkFeeder(outbox, NODE, batch_size=10, max_frame_bytes=1000)
    frames = await drain(feeder)
    assert [ids(f) for f in frames] == [ids([huge]), ids([small])]


# -- waiting ------------------------------------------------------------------------------


async def test_next_frame_waits_until_a_control_message_is_pushed(outbox: Outbox) -> None:
    """next_frame blocks while nothing is due and returns once a control message is pushed."""
    feeder = LinkFeeder(outbox, NODE, batch_size=10, max_frame_bytes=64 * 1024)
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(feeder.next_frame(), 0.05)
    waiting = asyncio.create_task(feeder.next_frame())
    await asyncio.sleep(0.02)
    assert not waiting.done()
    c = control()
    feeder.push(c)
    assert ids(await asyncio.wait_for(waiting, 1)) == ids([c])


async def test_next_frame_wakes_when_data_is_put(outbox: Outbox) -> None:
    """A next_frame waiting on an empty outbox returns the message once put() stores it."""
    feeder = LinkFeeder(outbox, NODE, batch_size=10, max_frame_bytes=64 * 1024)
    waiting = asyncio.create_task(feeder.next_frame())
    await asyncio.sleep(0.02)
    assert not waiting.done()
    msg = obj("a")
    await outbox.put(NODE, [msg])
    assert ids(await asyncio.wait_for(waiting, 1)) == ids([msg])


async def test_next_frame_returns_a_due_resend_without_a_push(db: Database) -> None:
    """An un-acked message comes back from next_frame by itself once resend_interval passes."""
    box = Outbox(db, resend_interval=0.1, max_inflight=10, max_envelope_bytes=64 * 1024)
    msg = obj("a")
    await box.put(NODE, [msg])
    feeder = LinkFeeder(box, NODE, batch_size=10, max_frame_bytes=64 * 1024)
    assert ids(await asyncio.wait_for(feeder.next_frame(), 1)) == ids([msg])
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(feeder.next_frame(), 0.03)
    assert ids(await asyncio.wait_for(feeder.next_frame(), 1)) == ids([msg])


async def test_next_frame_waits_while_the_window_is_full(db: Database) -> None:
    """With max_inflight messages un-acked, queued data waits until an ack makes room."""
    box = Outbox(db, resend_interval=60.0, max_inflight=1, max_envelope_bytes=64 * 1024)
    first, second = obj("a"), obj("b")
    await box.put(NODE, [first, second])
    feeder = LinkFeeder(box, NODE, batch_size=10, max_frame_bytes=64 * 1024)
    assert ids(await asyncio.wait_for(feeder.next_frame(), 1)) == ids([first])
    waiting = asyncio.create_task(feeder.next_frame())
    await asyncio.sleep(0.05)
    assert not waiting.done()
    assert box.ack(NODE, first.header.id)
    assert ids(await asyncio.wait_for(waiting, 1)) == ids([second])
