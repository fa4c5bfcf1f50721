"""The durable outbox on real SQLite: collapse, RV ordering, windows, resends, acks, restarts."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from common.envelope import Message, new_message
from common.errors import BadMessage
from common.names import Group, Module, Operation
from common.outbox import Outbox
from common.sqlite import Database

NODE = "edge-1"


def obj(name: str, rv: str = "", op: str = Operation.UPDATE, payload: bytes = b"") -> Message:
    msg = new_message(
        source=Module.EDGECONTROLLER,
        group=Group.RESOURCE,
        operation=op,
        resource=f"ns/configmap/{name}",
        resource_version=rv,
    )
    msg.object.name = name
    msg.object.resource_version = rv
    msg.object.object_json = payload
    return msg


def ids(msgs: list[Message]) -> list[str]:
    return [m.header.id for m in msgs]


def open_outbox(db: Database, **overrides: float) -> Outbox:
    kwargs: dict[str, float] = {
        "resend_interval": 10.0,
        "max_inflight": 100,
        "max_envelope_bytes": 64 * 1024,
    }
    kwargs.update(overrides)
    return Outbox(
        db,
        resend_interval=kwargs["resend_interval"],
        max_inflight=int(kwargs["max_inflight"]),
        max_envelope_bytes=int(kwargs["max_envelope_bytes"]),
    )


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    database = Database(tmp_path / "outbox.db", "SELECT 1")
    yield database
    database.close()


@pytest.fixture
def outbox(db: Database) -> Outbox:
    return open_outbox(db)


# -- collapse and resourceVersion order ---------------------------------------------------


async def test_queued_updates_of_one_object_collapse_into_the_newest(outbox: Outbox) -> None:
    """Two queued updates of one resource leave only the newer one to send."""
    old, new, other = obj("a", "1"), obj("a", "2"), obj("b", "1")
    assert await outbox.put(NODE, [old]) == [True]
    assert await outbox.put(NODE, [other]) == [True]
    assert await outbox.put(NODE, [new]) == [True]
    assert outbox.pending(NODE) == 2
    assert ids(outbox.take(NODE, 10, now=0)) == ids([other, new])
    assert outbox.ack(NODE, old.header.id) is False


async def test_collapse_within_one_put(outbox: Outbox) -> None:
    """Two updates of one resource in a single put() leave only the newer one to send."""
    old, new = obj("a", "1"), obj("a", "2")
    assert await outbox.put(NODE, [old, new]) == [True, True]
    assert ids(outbox.take(NODE, 10, now=0)) == ids([new])


async def test_an_update_replaces_an_in_flight_one(outbox: Outbox) -> None:
    """A newer update of an object whose older update is in flight replaces it: only it is sent."""
    old, new = obj("a", "1"), obj("a", "2")
    await outbox.put(NODE, [old])
    assert ids(outbox.take(NODE, 10, now=0)) == ids([old])
    await outbox.put(NODE, [new])
    assert outbox.pending(NODE) == 1
    assert ids(outbox.take(NODE, 10, now=100)) == ids([new])
    assert outbox.ack(NODE, old.header.id) is False
    assert outbox.ack(NODE, new.header.id) is True


async def test_an_update_older_than_a_queued_one_is_dropped(outbox: Outbox) -> None:
    """put returns False for an update whose RV is older than the one queued; the newer stays."""
    newer, older = obj("a", "5"), obj("a", "3")
    assert await outbox.put(NODE, [newer]) == [True]
    assert await outbox.put(NODE, [older]) == [False]
    assert ids(outbox.take(NODE, 10, now=0)) == ids([newer])


async def test_an_update_older_than_one_already_sent_is_dropped(outbox: Outbox) -> None:
    """After an RV was sent and acked, an older update of that object is never queued again."""
    sent = obj("a", "5")
    await outbox.put(NODE, [sent])
    outbox.take(NODE, 10, now=0)
    assert outbox.ack(NODE, sent.header.id)
    await outbox.flush_acks()
    assert await outbox.put(NODE, [obj("a", "4")]) == [False]
    assert await outbox.put(NODE, [obj("a", "5")]) == [True]
    assert outbox.pending(NODE) == 1


async def test_a_delete_always_passes(outbox: Outbox) -> None:
    """A delete is queued even when its RV is older (or empty) and it replaces the queued update."""
    update = obj("a", "10")
    await outbox.put(NODE, [update])
    old_delete = obj("a", "3", op=Operation.DELETE)
    assert await outbox.put(NODE, [old_delete]) == [True]
    assert ids(outbox.take(NODE, 10, now=0)) == ids([old_delete])
    bare_delete = obj("a", "", op=Operation.DELETE)
    assert await outbox.put(NODE, [bare_delete]) == [True]
    assert ids(outbox.take(NODE, 10, now=1)) == ids([bare_delete])


@pytest.mark.parametrize("one_put", [True, False], ids=["one-put", "two-puts"])
async def test_a_delete_is_not_replaced_by_the_next_object_of_the_same_name(
    outbox: Outbox, one_put: bool
) -> None:
    """Regression (issue 10): a pod deleted and created again with the same name (new uid)
    while the node is away: the delete of uid-1 and the insert of uid-2 both go, in order
    (collapsing them by name lost the delete: the old pod's containers kept running)."""
    gone = obj("web", "10", Operation.DELETE)
    gone.object.uid = "uid-1"
    again = obj("web", "12", Operation.INSERT)
    again.object.uid = "uid-2"
    newer = obj("web", "13")
    newer.object.uid = "uid-2"
    if one_put:
        await outbox.put(NODE, [gone, again, newer])
    else:
        for msg in (gone, again, newer):
            await outbox.put(NODE, [msg])
    assert ids(outbox.take(NODE, 10)) == ids([gone, newer])  # uid-2's updates still collapse


async def test_batch_mixes_accepted_and_dropped(outbox: Outbox) -> None:
    """put reports per message which were queued; other objects are not affected by a drop."""
    await outbox.put(NODE, [obj("a", "7")])
    result = await outbox.put(NODE, [obj("a", "6"), obj("b", "1"), obj("a", "x")])
    assert result == [False, True, True]


async def test_targets_are_independent(outbox: Outbox) -> None:
    """RV memory, collapse and queues are per target: one node's RV does not drop another's."""
    await outbox.put("n1", [obj("a", "9")])
    assert await outbox.put("n2", [obj("a", "1")]) == [True]
    assert outbox.pending("n1") == outbox.pending("n2") == 1
    assert sorted(outbox.targets()) == ["n1", "n2"]


# -- take: batches, window, resends -------------------------------------------------------


async def test_take_respects_limit_and_max_inflight(db: Database) -> None:
    """take returns at most `limit` messages, in put order, and never more than max_inflight
    un-acked; an ack makes room for the next one."""
    box = open_outbox(db, max_inflight=3)
    msgs = [obj(f"o{i}", "1") for i in range(5)]
    await box.put(NODE, msgs)
    assert ids(box.take(NODE, 2, now=0)) == ids(msgs[:2])
    assert ids(box.take(NODE, 10, now=0)) == ids(msgs[2:3])
    assert box.take(NODE, 10, now=0) == []
    assert not box.ready_event(NODE).is_set()
    assert box.ack(NODE, msgs[0].header.id)
    assert box.ready_event(NODE).is_set()
    assert ids(box.take(NODE, 10, now=0)) == ids(msgs[3:4])
    assert box.pending(NODE) == 4


async def test_in_flight_message_is_resent_only_after_resend_interval(outbox: Outbox) -> None:
    """An un-acked message is not taken again before resend_interval and is taken again after."""
    msg = obj("a", "1")
    await outbox.put(NODE, [msg])
    assert ids(outbox.take(NODE, 10, now=100.0)) == ids([msg])
    assert outbox.take(NODE, 10, now=105.0) == []
    assert outbox.next_resend_in(NODE, now=105.0) == pytest.approx(5.0)
    assert outbox.take(NODE, 10, now=109.9) == []
    assert ids(outbox.take(NODE, 10, now=110.0)) == ids([msg])
    assert outbox.take(NODE, 10, now=115.0) == []
    assert ids(outbox.take(NODE, 10, now=120.0)) == ids([msg])


async def test_resends_come_before_new_messages(outbox: Outbox) -> None:
    """When a resend is due it is taken ahead of messages never sent."""
    first, second = obj("a", "1"), obj("b", "1")
    await outbox.put(NODE, [first])
    outbox.take(NODE, 10, now=0)
    await outbox.put(NODE, [second])
    assert ids(outbox.take(NODE, 10, now=50)) == ids([first, second])


async def test_next_resend_in_is_none_without_in_flight(outbox: Outbox) -> None:
    """next_resend_in is None when nothing is in flight, 0 when a resend is overdue."""
    assert outbox.next_resend_in(NODE) is None
    await outbox.put(NODE, [obj("a", "1")])
    assert outbox.next_resend_in(NODE) is None
    outbox.take(NODE, 10, now=0)
    assert outbox.next_resend_in(NODE, now=30) == 0.0


async def test_ack_removes_a_message_once(outbox: Outbox) -> None:
    """ack forgets an in-flight message and returns True; a second ack (or unknown id) is False."""
    a, b = obj("a", "1"), obj("b", "1")
    await outbox.put(NODE, [a, b])
    outbox.take(NODE, 10, now=0)
    assert outbox.ack(NODE, a.header.id) is True
    assert outbox.ack(NODE, a.header.id) is False
    assert outbox.ack(NODE, "no-such-id") is False
    assert outbox.pending(NODE) == 1
    assert ids(outbox.take(NODE, 10, now=1000)) == ids([b])
    assert await outbox.flush_acks() == 1
    assert await outbox.flush_acks() == 0


async def test_ack_of_an_unsent_message_removes_it(outbox: Outbox) -> None:
    """An ack for a message still queued (e.g. sent before a restart) removes it too."""
    a = obj("a", "1")
    await outbox.put(NODE, [a])
    assert outbox.ack(NODE, a.header.id) is True
    assert outbox.take(NODE, 10, now=0) == []
    assert outbox.pending(NODE) == 0


async def test_reset_makes_in_flight_messages_due_again_in_order(outbox: Outbox) -> None:
    """After reset every in-flight message is due at once, in send order, not after the interval."""
    a, b, c = (obj(n, "1") for n in "abc")
    await outbox.put(NODE, [a, b, c])
    outbox.take(NODE, 10, now=0)
    assert outbox.take(NODE, 10, now=1) == []
    assert not outbox.ready_event(NODE).is_set()
    outbox.reset(NODE)
    assert outbox.ready_event(NODE).is_set()
    assert ids(outbox.take(NODE, 10, now=1)) == ids([a, b, c])
    assert outbox.take(NODE, 10, now=2) == []


async def test_reset_keeps_unsent_messages_after_the_in_flight_ones(outbox: Outbox) -> None:
    """reset puts the in-flight messages ahead of never-sent ones, keeping each group's order."""
    a, b, c = obj("a", "1"), obj("b", "1"), obj("c", "1")
    await outbox.put(NODE, [a, b])
    outbox.take(NODE, 10, now=0)
    await outbox.put(NODE, [c])
    outbox.reset(NODE)
    assert ids(outbox.take(NODE, 10, now=1)) == ids([a, b, c])


# -- size ---------------------------------------------------------------------------------


async def test_oversized_envelope_is_rejected_with_413(db: Database) -> None:
    """check_size and put raise BadMessage 413 for an envelope over max_envelope_bytes."""
    box = open_outbox(db, max_envelope_bytes=500)
    small, big = obj("a", "1", payload=b"x" * 100), obj("b", "1", payload=b"x" * 600)
    box.check_size(small)
    with pytest.raises(BadMessage) as info:
        box.check_size(big)
    assert info.value.code == 413
    assert "500-byte limit" in info.value.reason
    with pytest.raises(BadMessage) as info:
        await box.put(NODE, [small, big])
    assert info.value.code == 413
    assert box.pending(NODE) == 0


# -- durability ---------------------------------------------------------------------------


async def test_unacked_messages_and_rv_memory_survive_a_restart(tmp_path: Path) -> None:
    """After close and reopen the un-acked messages are back in order, acked-and-flushed ones
    are gone, and updates older than what was queued or sent are still dropped."""
    path = tmp_path / "outbox.db"
    acked, inflight, queued = obj("a", "5"), obj("b", "7"), obj("c", "3")
    db1 = Database(path, "SELECT 1")
    try:
        box1 = open_outbox(db1)
        await box1.put(NODE, [acked, inflight])
        box1.take(NODE, 10, now=0)
        await box1.put(NODE, [queued])
        assert box1.ack(NODE, acked.header.id)
        assert await box1.flush_acks() == 1
    finally:
        db1.close()

    db2 = Database(path, "SELECT 1")
    try:
        box2 = open_outbox(db2)
        assert box2.targets() == [NODE]
        assert box2.pending(NODE) == 2
        taken = box2.take(NODE, 10, now=0)
        assert ids(taken) == ids([inflight, queued])
        assert [m.object.name for m in taken] == ["b", "c"]
        assert await box2.put(NODE, [obj("a", "4")]) == [False]
        assert await box2.put(NODE, [obj("b", "6")]) == [False]
        assert await box2.put(NODE, [obj("c", "2")]) == [False]
        assert await box2.put(NODE, [obj("a", "6")]) == [True]
    finally:
        db2.close()


async def test_an_ack_not_yet_flushed_is_resent_after_restart(tmp_path: Path) -> None:
    """An ack that was only in memory when the process stopped costs a resend, not a loss."""
    path = tmp_path / "outbox.db"
    msg = obj("a", "1")
    db1 = Database(path, "SELECT 1")
    try:
        box1 = open_outbox(db1)
        await box1.put(NODE, [msg])
        box1.take(NODE, 10, now=0)
        assert box1.ack(NODE, msg.header.id)
    finally:
        db1.close()
    db2 = Database(path, "SELECT 1")
    try:
        assert ids(open_outbox(db2).take(NODE, 10, now=0)) == ids([msg])
    finally:
        db2.close()


@pytest.mark.parametrize(
    "one_put",
    [pytest.param(False, id="separate-puts"), pytest.param(True, id="one-put")],
)
async def test_collapse_survives_a_restart(tmp_path: Path, one_put: bool) -> None:
    """Two updates of one object collapse in SQLite too: after reopen only the newest is sent."""
    path = tmp_path / "outbox.db"
    old, new = obj("a", "1"), obj("a", "2")
    db1 = Database(path, "SELECT 1")
    try:
        box1 = open_outbox(db1)
        if one_put:
            await box1.put(NODE, [old, new])
        else:
            await box1.put(NODE, [old])
            await box1.put(NODE, [new])
        assert box1.pending(NODE) == 1
    finally:
        db1.close()
    db2 = Database(path, "SELECT 1")
    try:
        box2 = open_outbox(db2)
        assert box2.pending(NODE) == 1
        assert ids(box2.take(NODE, 10, now=0)) == ids([new])
    finally:
        db2.close()


async def test_a_message_is_not_taken_before_it_is_stored(outbox: Outbox, db: Database) -> None:
    """While put() has not yet written a message to SQLite, take() does not hand it out
    (DESIGN: a message is stored in SQLite before it can be sent)."""
    gate = threading.Event()
    busy = asyncio.create_task(db.run(lambda _c: gate.wait(5)))  # holds the SQLite thread
    msg = obj("a", "1")
    putting = asyncio.create_task(outbox.put(NODE, [msg]))
    try:
        for _ in range(3):
            await asyncio.sleep(0)
        assert not putting.done()
        taken_before_stored = outbox.take(NODE, 10, now=0)
    finally:
        gate.set()
        await busy
        await putting
    assert taken_before_stored == []
    assert ids(outbox.take(NODE, 10, now=0)) == ids([msg])
