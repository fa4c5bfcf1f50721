"""The durable send queue both hub ends use: cloud→node downstream, edge→cloud upstream.

Rules (DESIGN.md, reliable delivery):
- a message is stored in SQLite before it can be sent, and leaves only when the peer acks it;
- queued updates of one object (same resource and uid) collapse into the newest; a delete of
  one object is never replaced by the create of the next object of the same name;
- an update whose resourceVersion is older than one already queued or sent for that object is
  dropped, so an older version is never sent after a newer one; deletes always pass;
- un-acked messages are resent after `resend_interval`; a reconnect makes all of them due.

Memory holds, per target, the unsent messages in order and the in-flight ones in send order,
so choosing the next batch costs O(batch). Acks are removed from memory at once and from
SQLite in batches (a lost delete only causes a resend, which the receiver de-duplicates).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

import apsw

from common.envelope import Message, object_key, rv_older
from common.errors import BadMessage
from common.names import Operation
from common.sqlite import Database

log = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    target TEXT NOT NULL,
    msg_id TEXT NOT NULL UNIQUE,
    key TEXT,
    envelope BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS outbox_rv (
    target TEXT NOT NULL,
    key TEXT NOT NULL,
    rv TEXT NOT NULL,
    PRIMARY KEY (target, key)
) WITHOUT ROWID;
"""


@dataclass(slots=True)
class _Entry:
    msg: Message
    key: str | None
    sent_at: float = 0.0


@dataclass
class _Target:
    unsent: OrderedDict[str, _Entry] = field(default_factory=OrderedDict)
    inflight: OrderedDict[str, _Entry] = field(default_factory=OrderedDict)
    by_key: dict[str, str] = field(default_factory=dict)
    last_rv: dict[str, str] = field(default_factory=dict)
    ready: asyncio.Event = field(default_factory=asyncio.Event)

    def __len__(self) -> int:
        return len(self.unsent) + len(self.inflight)


class Outbox:
    def __init__(
        self,
        db: Database,
        *,
        resend_interval: float,
        max_inflight: int,
        max_envelope_bytes: int,
        on_acked: Callable[[str, Message], None] | None = None,
    ) -> None:
        self.db = db
        self.on_acked = on_acked  # told of every message the peer acknowledged
        self.resend_interval = resend_interval
        self.max_inflight = max_inflight
        self.max_envelope_bytes = max_envelope_bytes
        self._targets: dict[str, _Target] = {}
        self._acked: list[str] = []
        self._put_lock = asyncio.Lock()
        self.db.run_blocking(lambda c: c.execute(SCHEMA))
        self._load()

    def _target(self, target: str) -> _Target:
        t = self._targets.get(target)
        if t is None:
            t = self._targets[target] = _Target()
        return t

    def _load(self) -> None:
        def read(
            conn: apsw.Connection,
        ) -> tuple[list[tuple[str, bytes]], list[tuple[str, str, str]]]:
            rows = list(conn.execute("SELECT target, envelope FROM outbox ORDER BY seq"))
            rvs = list(conn.execute("SELECT target, key, rv FROM outbox_rv"))
            return rows, rvs

        rows, rvs = self.db.run_blocking(read)
        for target, key, rv in rvs:
            self._target(target).last_rv[key] = rv
        for target, blob in rows:
            msg = Message.FromString(blob)
            t = self._target(target)
            obj_key = object_key(msg)
            t.unsent[msg.header.id] = _Entry(msg, obj_key)
            if obj_key is not None:
                t.by_key[obj_key] = msg.header.id
        if rows:
            log.info("outbox: %d un-acked message(s) loaded for resend", len(rows))

    # -- producers -------------------------------------------------------------------------

    def check_size(self, msg: Message) -> None:
        if msg.ByteSize() > self.max_envelope_bytes:
            raise BadMessage(
                f"message {msg.header.id} is {msg.ByteSize()} bytes, over the "
                f"{self.max_envelope_bytes}-byte limit",
                code=413,
            )

    async def put(self, target: str, msgs: list[Message]) -> list[bool]:
        """Store messages for `target` durably; returns, per message, whether it was queued
        (False: dropped as older than what was already queued or sent for its object).
        Nothing is visible to the sender before its row is committed."""
        for msg in msgs:
            self.check_size(msg)
        async with self._put_lock:  # one planner at a time: plans read last_rv and by_key
            t = self._target(target)
            accepted, survivors, rvs = self._plan(t, msgs)
            replaced = [t.by_key[k] for _, k in survivors if k is not None and k in t.by_key]

            def write(conn: apsw.Connection) -> None:
                conn.executemany(
                    "INSERT INTO outbox (target, msg_id, key, envelope) VALUES (?, ?, ?, ?)",
                    ((target, m.header.id, k, m.SerializeToString()) for m, k in survivors),
                )
                conn.executemany("DELETE FROM outbox WHERE msg_id = ?", ((i,) for i in replaced))
                conn.executemany(
                    "INSERT INTO outbox_rv (target, key, rv) VALUES (?, ?, ?) "
                    "ON CONFLICT (target, key) DO UPDATE SET rv = excluded.rv",
                    ((target, k, rv) for k, rv in rvs.items()),
                )

            if not survivors:
                return accepted
            await self.db.transaction(write)
            for msg, key in survivors:
                if key is not None:
                    old_id = t.by_key.pop(key, None)
                    if old_id is not None and t.unsent.pop(old_id, None) is None:
                        t.inflight.pop(old_id, None)
                    t.by_key[key] = msg.header.id
                t.unsent[msg.header.id] = _Entry(msg, key)
            t.last_rv.update(rvs)
            t.ready.set()
            return accepted

    @staticmethod
    def _plan(
        t: _Target, msgs: list[Message]
    ) -> tuple[list[bool], list[tuple[Message, str | None]], dict[str, str]]:
        """Which messages to queue (newest per object within the batch) and the new RVs."""
        rvs: dict[str, str] = {}
        accepted: list[bool] = []
        queued: list[tuple[Message, str | None]] = []
        for msg in msgs:
            key = object_key(msg)
            rv = msg.header.resource_version
            if key is not None:
                # Versions are ordered per name: the next object of a name (another uid) is
                # newer than the last version of the one before.
                name = msg.route.resource
                newest = rvs.get(name, t.last_rv.get(name, ""))
                if msg.route.operation != Operation.DELETE and rv_older(rv, newest):
                    accepted.append(False)
                    continue
                if rv:
                    rvs[name] = rv
            queued.append((msg, key))
            accepted.append(True)
        last = {key: i for i, (_, key) in enumerate(queued) if key is not None}
        survivors = [(m, k) for i, (m, k) in enumerate(queued) if k is None or last[k] == i]
        return accepted, survivors, rvs

    # -- the sender ------------------------------------------------------------------------

    def take(self, target: str, limit: int, now: float | None = None) -> list[Message]:
        """Up to `limit` messages due now: resends first (oldest send first), then new ones.
        Marks them in flight; never exceeds `max_inflight` un-acked messages."""
        t = self._target(target)
        now = time.monotonic() if now is None else now
        out: list[Message] = []
        for _ in range(min(limit, len(t.inflight))):  # each in-flight message at most once
            msg_id, entry = next(iter(t.inflight.items()))
            if now - entry.sent_at < self.resend_interval:
                break
            t.inflight.move_to_end(msg_id)
            entry.sent_at = now
            out.append(entry.msg)
        while t.unsent and len(out) < limit and len(t.inflight) < self.max_inflight:
            msg_id, entry = t.unsent.popitem(last=False)
            entry.sent_at = now
            t.inflight[msg_id] = entry
            out.append(entry.msg)
        if not t.unsent or len(t.inflight) >= self.max_inflight:
            t.ready.clear()
        return out

    def next_resend_in(self, target: str, now: float | None = None) -> float | None:
        """Seconds until the oldest in-flight message is due again, None when none is."""
        t = self._target(target)
        if not t.inflight:
            return None
        now = time.monotonic() if now is None else now
        entry = next(iter(t.inflight.values()))
        return max(0.0, entry.sent_at + self.resend_interval - now)

    def ready_event(self, target: str) -> asyncio.Event:
        """Set while `target` has unsent messages and room in its window."""
        return self._target(target).ready

    def ack(self, target: str, msg_id: str) -> bool:
        """The peer applied `msg_id`: forget it. False when it was not (or no longer) queued."""
        t = self._target(target)
        entry = t.inflight.pop(msg_id, None) or t.unsent.pop(msg_id, None)
        if entry is None:
            return False
        if entry.key is not None and t.by_key.get(entry.key) == msg_id:
            del t.by_key[entry.key]
        self._acked.append(msg_id)
        if t.unsent and len(t.inflight) < self.max_inflight:
            t.ready.set()
        if self.on_acked is not None:
            self.on_acked(target, entry.msg)
        return True

    def reset(self, target: str) -> None:
        """The link to `target` was re-established: everything un-acked is due again, in order."""
        t = self._target(target)
        if not t.inflight:
            return
        merged: OrderedDict[str, _Entry] = OrderedDict(t.inflight)
        merged.update(t.unsent)
        t.unsent, t.inflight = merged, OrderedDict()
        t.ready.set()

    def pending(self, target: str) -> int:
        return len(self._target(target))

    def targets(self) -> list[str]:
        return [name for name, t in self._targets.items() if len(t)]

    async def flush_acks(self) -> int:
        """Delete acked messages from SQLite; returns how many."""
        if not self._acked:
            return 0
        done, self._acked = self._acked, []
        await self.db.transaction(
            lambda c: c.executemany("DELETE FROM outbox WHERE msg_id = ?", ((i,) for i in done))
        )
        return len(done)
