"""metamanager (first part): commit every downstream object to SQLite, then ack it.

It drains its bus inbox in batches, applies a batch of object events in one transaction,
and only after the commit sends each message's ack to edgehub (so an ack never precedes its
commit; a crash before the commit means no ack, so the cloud resends). Objects that changed
the store are passed on to edged when an edged module is registered. Queries from edge
modules are answered from SQLite, so they work with no cloud.
"""

from __future__ import annotations

import logging

from common.bus import Bus
from common.envelope import Message, make_ack, make_error, parse_resource, reply_to
from common.errors import BadMessage
from common.names import Group, Module, Operation
from common.sqlite import Database
from edge.meta.store import MetaStore

log = logging.getLogger(__name__)

BATCH = 500


class MetaManager:
    name: str = Module.METAMANAGER
    group: str = Group.META

    def __init__(self, bus: Bus, db: Database) -> None:
        self.bus = bus
        self.store = MetaStore(db)
        self.applied = 0

    async def run(self) -> None:
        while True:
            batch = await self.bus.receive_batch(self.name, BATCH)
            await self.handle(batch)

    async def close(self) -> None:
        return None

    async def handle(self, batch: list[Message]) -> None:
        objects: list[Message] = []
        for msg in batch:
            if msg.route.operation == Operation.QUERY:
                await self._answer(msg)
            elif msg.WhichOneof("body") == "object":
                try:
                    parse_resource(msg.route.resource)
                except BadMessage as exc:
                    await self._reject(msg, exc)
                    continue
                objects.append(msg)
            else:
                await self._reject(
                    msg, BadMessage(f"metamanager cannot store a {msg.WhichOneof('body')}")
                )
        if not objects:
            return
        changed = await self.store.apply(objects)
        self.applied += sum(changed)
        for msg, did_change in zip(objects, changed, strict=True):
            await self.bus.send(Module.EDGEHUB, make_ack(msg, source=self.name))
            if did_change and self.bus.has_group(Group.EDGED):
                await self.bus.send_to_group(Group.EDGED, msg)

    async def _reject(self, msg: Message, exc: BadMessage) -> None:
        log.warning("metamanager: rejecting %s: %s", msg.header.id, exc.reason)
        err = make_error(msg, source=self.name, code=exc.code, reason=exc.reason)
        await self.bus.send(Module.EDGEHUB, err)

    async def _answer(self, msg: Message) -> None:
        q = msg.query
        type_ = (
            parse_resource(msg.route.resource).type
            if msg.route.resource.count("/") >= 2
            else q.kind.lower()
        )
        reply = reply_to(msg, source=self.name)
        for obj in await self.store.list(type_, q.namespace or None):
            if q.name and obj.name != q.name:
                continue
            ev = reply.query_result.objects.add()
            ev.kind, ev.namespace, ev.name = q.kind, obj.namespace, obj.name
            ev.uid, ev.resource_version, ev.object_json = obj.uid, obj.resource_version, obj.value
        if not self.bus.respond(reply):
            await self.bus.send(reply.route.destination or Module.EDGEHUB, reply)
