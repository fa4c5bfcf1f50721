"""The in-process bus: delivery to modules and groups, request/reply, and naming errors."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from common.bus import Bus
from common.envelope import Message, make_ack, new_message
from common.errors import ResponseTimeout, UnknownModule
from common.names import Group, Module, Operation


def _msg(name: str = "cm") -> Message:
    msg = new_message(
        source=Module.EDGECONTROLLER,
        group=Group.META,
        operation=Operation.UPDATE,
        resource=f"default/configmap/{name}",
    )
    msg.object.name = name
    return msg


@pytest.fixture
def bus() -> Bus:
    b = Bus(queue_size=4)
    b.register(Module.METAMANAGER, Group.META)
    b.register(Module.EDGED, Group.EDGED)
    b.register(Module.DEVICETWIN, Group.TWIN)
    b.register(Module.EVENTBUS, Group.TWIN)
    return b


# -- delivery -----------------------------------------------------------------------------


async def test_send_delivers_to_that_module_only(bus: Bus) -> None:
    """A message sent to one module arrives in its inbox, in order, and in no other."""
    first, second = _msg("a"), _msg("b")
    await bus.send(Module.METAMANAGER, first)
    await bus.send(Module.METAMANAGER, second)
    assert (await bus.receive(Module.METAMANAGER)).header.id == first.header.id
    assert bus.receive_nowait(Module.METAMANAGER).header.id == second.header.id
    for other in (Module.EDGED, Module.DEVICETWIN, Module.EVENTBUS):
        with pytest.raises(asyncio.QueueEmpty):
            bus.receive_nowait(other)


async def test_receive_waits_for_a_message(bus: Bus) -> None:
    """receive blocks while the inbox is empty and returns once something is sent."""
    waiter = asyncio.create_task(bus.receive(Module.EDGED))
    await asyncio.sleep(0.01)
    assert not waiter.done()
    msg = _msg()
    bus.send_nowait(Module.EDGED, msg)
    got = await asyncio.wait_for(waiter, 1)
    assert got.header.id == msg.header.id


async def test_send_to_group_reaches_every_member(bus: Bus) -> None:
    """send_to_group puts the message in the inbox of every module of the group, and no other."""
    msg = _msg()
    await bus.send_to_group(Group.TWIN, msg)
    assert bus.receive_nowait(Module.DEVICETWIN).header.id == msg.header.id
    assert bus.receive_nowait(Module.EVENTBUS).header.id == msg.header.id
    for other in (Module.METAMANAGER, Module.EDGED):
        with pytest.raises(asyncio.QueueEmpty):
            bus.receive_nowait(other)


async def test_send_nowait_raises_when_the_inbox_is_full(bus: Bus) -> None:
    """send_nowait fails with QueueFull at queue_size while send waits for room."""
    for i in range(4):
        bus.send_nowait(Module.EDGED, _msg(str(i)))
    with pytest.raises(asyncio.QueueFull):
        bus.send_nowait(Module.EDGED, _msg("over"))
    blocked = asyncio.create_task(bus.send(Module.EDGED, _msg("later")))
    await asyncio.sleep(0.01)
    assert not blocked.done()
    bus.receive_nowait(Module.EDGED)
    await asyncio.wait_for(blocked, 1)


# -- request and reply --------------------------------------------------------------------


async def test_send_sync_returns_the_reply_matched_by_parent_id(bus: Bus) -> None:
    """send_sync returns the reply whose parent id is the request id; other replies don't match."""

    async def answer() -> tuple[bool, list[bool]]:
        req = await bus.receive(Module.METAMANAGER)
        stray = make_ack(_msg("stray"), source=Module.METAMANAGER, resource_version="1")
        results = [bus.respond(stray)]
        results.append(bus.respond(make_ack(req, source=Module.METAMANAGER, resource_version="9")))
        return req.header.sync, results

    responder = asyncio.create_task(answer())
    request = _msg()
    reply = await bus.send_sync(Module.METAMANAGER, request, timeout=2)
    assert await responder == (True, [False, True])
    assert reply.header.parent_id == request.header.id
    assert reply.ack.resource_version == "9"


async def test_send_sync_raises_response_timeout_when_nobody_answers(bus: Bus) -> None:
    """send_sync raises ResponseTimeout after its timeout, and a late reply finds no waiter."""
    request = _msg()
    with pytest.raises(ResponseTimeout) as info:
        await bus.send_sync(Module.METAMANAGER, request, timeout=0.05)
    assert request.header.id in str(info.value)
    delivered = bus.receive_nowait(Module.METAMANAGER)
    assert delivered.header.id == request.header.id
    assert bus.respond(make_ack(delivered, source=Module.METAMANAGER)) is False


async def test_respond_without_a_waiter_returns_false(bus: Bus) -> None:
    """respond returns False when no send_sync waits for the reply's parent id."""
    reply = make_ack(_msg(), source=Module.METAMANAGER)
    assert bus.respond(reply) is False


# -- naming -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "call",
    [
        pytest.param(lambda b: b.send("nobody", _msg()), id="send"),
        pytest.param(lambda b: b.send_to_group("nogroup", _msg()), id="send_to_group"),
        pytest.param(lambda b: b.send_sync("nobody", _msg(), timeout=1), id="send_sync"),
        pytest.param(lambda b: b.receive("nobody"), id="receive"),
    ],
)
async def test_unknown_name_raises_unknown_module(
    bus: Bus, call: Callable[[Bus], Awaitable[object]]
) -> None:
    """Sending to or receiving from an unregistered module or group raises UnknownModule."""
    with pytest.raises(UnknownModule):
        await call(bus)


def test_unknown_module_raises_in_sync_calls(bus: Bus) -> None:
    """send_nowait and receive_nowait raise UnknownModule for an unregistered module."""
    with pytest.raises(UnknownModule, match="nobody"):
        bus.send_nowait("nobody", _msg())
    with pytest.raises(UnknownModule, match="nobody"):
        bus.receive_nowait("nobody")


async def test_send_sync_to_unknown_module_leaves_no_waiter(bus: Bus) -> None:
    """A send_sync that fails with UnknownModule does not leave a waiter that respond would hit."""
    request = _msg()
    with pytest.raises(UnknownModule):
        await bus.send_sync("nobody", request, timeout=1)
    assert bus.respond(make_ack(request, source="nobody")) is False


def test_registering_a_name_twice_fails(bus: Bus) -> None:
    """A second register of the same module name fails and leaves the groups unchanged."""
    with pytest.raises(ValueError, match="already registered"):
        bus.register(Module.METAMANAGER, Group.USER)
    assert not bus.has_group(Group.USER)
    assert bus.modules().count(Module.METAMANAGER) == 1
    assert bus.has_group(Group.META)
