"""edgehub: the edge end of the link — connect, keep alive, reconnect, move envelopes.

What it does:
- opens one HubService.Connect stream to cloudcore over mutual TLS with the node's
  certificate (identity.py; plaintext only with --insecure-hub), naming the node in call
  metadata too, and reconnects with jittered exponential backoff (reconnect_initial
  doubling to reconnect_max) whenever the stream breaks or the cloud goes silent for
  keepalive_timeout;
- sends a keepalive every keepalive_interval;
- renews the node's certificate before it expires and reconnects with the new one;
- upstream: edge modules send envelopes to edgehub on the bus; replies (acks, answers) go out
  as control messages, everything else waits in the durable SQLite Outbox until the cloud's
  ack removes it — across reconnects and edgecore restarts; Kubernetes Events too, but they
  are best-effort: one is dropped while the outbox already holds EVENT_BACKLOG messages;
- downstream: each received envelope is validated (a bad one gets an Error reply), acks and
  error replies settle the outbox, replies complete send_sync waits, and the rest is handed
  to the bus group its route names (metamanager acks objects after committing them).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time

import grpc
from kubeedge.hub.v1 import hub_pb2, hub_pb2_grpc

from common.bus import Bus
from common.envelope import (
    Message,
    is_ack,
    make_error,
    make_stream_cancel,
    new_message,
    parse_resource,
    validate,
)
from common.errors import BadMessage, UnknownModule
from common.link import LinkFeeder
from common.names import NODE_NAME_METADATA, Group, Module, Operation, ResourceType
from common.outbox import Outbox
from common.sqlite import Database
from common.supervisor import together
from edge.hub.identity import NodeIdentity
from edge.settings import EdgeSettings

log = logging.getLogger(__name__)

HubCall = grpc.aio.StreamStreamCall[hub_pb2.ConnectRequest, hub_pb2.ConnectResponse]
CLOUD = "cloud"  # the outbox target: everything upstream goes to the one cloud
EVENT_BACKLOG = 1000  # no Event is queued while this many messages wait (a long outage)


class EdgeHub:
    name: str = Module.EDGEHUB
    group: str = Group.HUB

    def __init__(
        self, bus: Bus, settings: EdgeSettings, db: Database, identity: NodeIdentity | None
    ) -> None:
        self.bus = bus
        self.settings = settings
        self.identity = identity  # None: plaintext (--insecure-hub)
        frame_limit = settings.max_message_bytes - 1024
        self.outbox = Outbox(
            db,
            resend_interval=settings.resend_interval,
            max_inflight=settings.max_inflight,
            max_envelope_bytes=frame_limit,
        )
        self.feeder = LinkFeeder(
            self.outbox, CLOUD, batch_size=settings.batch_size, max_frame_bytes=frame_limit
        )
        self.connected = asyncio.Event()
        self.connects = 0
        self._last_heard = time.monotonic()
        self._heard = False
        self._renewed = asyncio.Event()
        self._dropping_events = False

    async def run(self) -> None:
        # As one: if one loop fails, the others end with it, so a restart by the supervisor
        # never leaves two link loops (two streams) for one node.
        loops = {
            "edgehub_link": self._link_loop(),
            "edgehub_upstream": self._upstream(),
            "edgehub_acks": self._flush_acks(),
        }
        if self.identity is not None:
            loops["edgehub_rotate"] = self.identity.rotate_loop(self._renewed.set)
        await together(**loops)

    async def close(self) -> None:
        await self.outbox.flush_acks()

    # -- the link --------------------------------------------------------------------------

    async def _link_loop(self) -> None:
        delay = self.settings.reconnect_initial
        while True:
            healthy = await self._connect_once()
            if healthy:
                delay = self.settings.reconnect_initial
            wait = random.uniform(delay / 2, delay)
            log.info("edgehub: reconnecting to %s in %.2fs", self.settings.cloud, wait)
            await asyncio.sleep(wait)
            delay = min(delay * 2, self.settings.reconnect_max)

    async def _connect_once(self) -> bool:
        """One stream's life; True when it carried traffic from the cloud (resets backoff)."""
        limit = self.settings.max_message_bytes
        options = [
            ("grpc.max_receive_message_length", limit),
            ("grpc.max_send_message_length", limit),
            ("grpc.use_local_subchannel_pool", 1),
        ]
        self._heard = False
        self._renewed.clear()
        async with self._channel(options) as channel:
            stub = hub_pb2_grpc.HubServiceStub(channel)
            call = stub.Connect(metadata=((NODE_NAME_METADATA, self.settings.node_name),))
            self.outbox.reset(CLOUD)
            self._last_heard = time.monotonic()
            tasks = [
                asyncio.create_task(self._read(call), name="edgehub-read"),
                asyncio.create_task(self._write(call), name="edgehub-write"),
                asyncio.create_task(self._keepalive(), name="edgehub-keepalive"),
                asyncio.create_task(self._renewed.wait(), name="edgehub-renewed"),
            ]
            try:
                done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
                if self._renewed.is_set():
                    log.info("edgehub: reconnecting with the renewed certificate")
                for task in done:
                    exc = task.exception()
                    if isinstance(exc, grpc.aio.AioRpcError):
                        log.warning("edgehub: stream ended: %s %s", exc.code().name, exc.details())
                    elif exc is not None:
                        log.error("edgehub: link task failed", exc_info=exc)
            finally:
                self.connected.clear()
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
                call.cancel()
        return self._heard

    def _channel(self, options: list[tuple[str, int]]) -> grpc.aio.Channel:
        if self.identity is None:
            return grpc.aio.insecure_channel(self.settings.cloud, options=options)
        creds = self.identity.credentials().channel()
        return grpc.aio.secure_channel(self.settings.cloud, creds, options=options)

    async def _read(self, call: HubCall) -> None:
        while True:
            response = await call.read()
            if response is grpc.aio.EOF or not isinstance(response, hub_pb2.ConnectResponse):
                log.warning("edgehub: cloud closed the stream")
                return
            self._last_heard = time.monotonic()
            self._heard = True
            if not self.connected.is_set():
                self.connects += 1
                self.connected.set()
                log.info(
                    "edgehub: connected to %s as %s", self.settings.cloud, self.settings.node_name
                )
            await self._on_frame(list(response.messages))

    async def _write(self, call: HubCall) -> None:
        # The first frame is a keepalive, so the cloud answers at once and the link is known good.
        self.feeder.push(self._keepalive_message())
        while True:
            batch = await self.feeder.next_frame()
            await call.write(hub_pb2.ConnectRequest(messages=batch))

    def _keepalive_message(self) -> Message:
        msg = new_message(source=self.name, group=Group.HUB, operation=Operation.KEEPALIVE)
        msg.keepalive.unacked = self.outbox.pending(CLOUD)
        return msg

    async def _keepalive(self) -> None:
        interval = self.settings.keepalive_interval
        timeout = self.settings.keepalive_timeout
        while True:
            await asyncio.sleep(min(interval, timeout / 2))
            silent = time.monotonic() - self._last_heard
            if silent >= timeout:
                log.warning("edgehub: cloud silent for %.1fs; dropping the stream", silent)
                return
            self.feeder.push(self._keepalive_message())

    async def _on_frame(self, msgs: list[Message]) -> None:
        for msg in msgs:
            try:
                validate(msg)
            except BadMessage as exc:
                log.warning("edgehub: bad message from the cloud: %s", exc.reason)
                self.feeder.push(
                    make_error(msg, source=self.name, code=exc.code, reason=exc.reason)
                )
                continue
            op = msg.route.operation
            if op == Operation.KEEPALIVE:
                continue
            if is_ack(msg) or (op == Operation.ERROR and msg.header.parent_id):
                if self.outbox.ack(CLOUD, msg.header.parent_id) and op == Operation.ERROR:
                    log.warning(
                        "edgehub: cloud rejected message %s: %d %s",
                        msg.header.parent_id,
                        msg.error.code,
                        msg.error.message,
                    )
                self.bus.respond(msg)
                continue
            if msg.header.parent_id and self.bus.respond(msg):
                continue
            if not self.bus.has_group(msg.route.group):
                reason = f"no edge module serves group {msg.route.group!r}"
                self.feeder.push(make_error(msg, source=self.name, code=404, reason=reason))
                continue
            await self.bus.send_to_group(msg.route.group, msg)

    # -- upstream: bus -> cloud -------------------------------------------------------------

    async def _upstream(self) -> None:
        while True:
            batch = await self.bus.receive_batch(self.name, self.settings.batch_size * 10)
            durable = []
            for msg in batch:
                if msg.header.parent_id:  # an ack or answer: control, never stored
                    self._push_reply(msg)
                    continue
                if self._drop_event(msg):
                    continue
                try:
                    self.outbox.check_size(msg)
                except BadMessage as exc:
                    log.error("edgehub: not sending upstream: %s", exc.reason)
                    continue
                durable.append(msg)
            if durable:
                await self.outbox.put(CLOUD, durable)

    def _drop_event(self, msg: Message) -> bool:
        """Whether `msg` is a Kubernetes Event the backed-up outbox has no room for: Events
        are best-effort, and must not crowd out what may not be lost."""
        try:
            if parse_resource(msg.route.resource).type != ResourceType.EVENT:
                return False
        except BadMessage:
            return False  # not ours to judge: checked (and refused) where it is sent
        backed_up = self.outbox.pending(CLOUD) >= EVENT_BACKLOG
        if backed_up and not self._dropping_events:
            log.warning(
                "edgehub: %d messages wait for the cloud; dropping Events until they go",
                self.outbox.pending(CLOUD),
            )
        self._dropping_events = backed_up
        return backed_up

    def _push_reply(self, msg: Message) -> None:
        """Queue a reply for the cloud. A log stream's frame that cannot go out (no link, or
        the stream lane full) ends its stream: edged is told to stop producing it (and says
        so to the cloud), rather than frames piling up in memory."""
        if msg.WhichOneof("body") != "stream_frame":
            self.feeder.push(msg)  # refused when full: the feeder says so; acks are resent
        elif not self.connected.is_set():
            self._cancel_stream(msg, "the link to the cloud is down")
        elif not self.feeder.push_frame(msg):
            self._cancel_stream(msg, "the log outruns the link to the cloud")

    def _cancel_stream(self, frame: Message, reason: str) -> None:
        cancel = make_stream_cancel(
            source=self.name,
            resource=frame.route.resource,
            stream_id=frame.stream_frame.stream_id,
            reason=reason,
        )
        try:
            self.bus.send_nowait_group(Group.EDGED, cancel)
        except (asyncio.QueueFull, UnknownModule) as exc:  # edged busy or gone: it ends later
            log.warning(
                "edgehub: could not cancel log stream %s: %r", frame.stream_frame.stream_id, exc
            )

    async def _flush_acks(self) -> None:
        interval = max(0.05, min(1.0, self.settings.resend_interval))
        while True:
            await asyncio.sleep(interval)
            await self.outbox.flush_acks()
