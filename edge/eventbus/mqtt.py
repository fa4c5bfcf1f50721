"""A small MQTT 3.1.1 client on asyncio streams: what edgecore needs and nothing more.

It connects (clean session, optional username/password and TLS), subscribes, publishes at
QoS 0 or 1, answers QoS 1 deliveries with PUBACK and keeps the connection alive with PINGREQ.
It does not reconnect, keep a session or do QoS 2: the owner (the eventbus module) makes a new
client after a failure and subscribes again, which is how KubeEdge's eventbus behaves too.

Why not amqtt's client: its reconnect logic, per-message tasks and state machines are more
than edgecore needs and harder to shut down cleanly; this one is the same against amqtt and
mosquitto, and the broker module stays the only place that touches amqtt.

Use: `await client.connect()`, then run `client.run()` (reads packets, pings) as a task
while calling `subscribe` and `publish`. Deliveries go to the `on_message` callback (awaited
in the read loop, so a slow consumer slows the reading: TCP backpressure), or else to the
`messages` queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import struct
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from common.errors import TemporaryError

log = logging.getLogger(__name__)

CONNECT, CONNACK, PUBLISH, PUBACK = 1, 2, 3, 4
PUBREC, PUBREL, PUBCOMP = 5, 6, 7
SUBSCRIBE, SUBACK, UNSUBSCRIBE, UNSUBACK = 8, 9, 10, 11
PINGREQ, PINGRESP, DISCONNECT = 12, 13, 14

SUBSCRIBE_FAILED = 0x80
MAX_REMAINING = 268_435_455  # the largest length MQTT's variable-length integer can say


class MQTTError(TemporaryError):
    """The broker refused, closed or broke the connection; a new client may succeed."""


@dataclass(frozen=True, slots=True)
class Received:
    """One PUBLISH delivered to this client."""

    topic: str
    payload: bytes
    qos: int
    retain: bool


def _encode_length(n: int) -> bytes:
    out = bytearray()
    while True:
        n, digit = divmod(n, 128)
        out.append(digit | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _string(value: str | bytes) -> bytes:
    data = value.encode() if isinstance(value, str) else value
    return struct.pack("!H", len(data)) + data


def packet(kind: int, flags: int, body: bytes) -> bytes:
    """One control packet: fixed header, then `body`."""
    if len(body) > MAX_REMAINING:
        raise ValueError(f"MQTT packet of {len(body)} bytes is too large")
    return bytes([(kind << 4) | flags]) + _encode_length(len(body)) + body


def connect_packet(client_id: str, keepalive: int, username: str = "", password: str = "") -> bytes:
    flags = 0x02  # clean session
    payload = _string(client_id)
    if username:
        flags |= 0x80
        payload += _string(username)
        if password:
            flags |= 0x40
            payload += _string(password)
    header = _string("MQTT") + bytes([4, flags]) + struct.pack("!H", keepalive)
    return packet(CONNECT, 0, header + payload)


def publish_packet(topic: str, payload: bytes, qos: int, retain: bool, packet_id: int) -> bytes:
    body = _string(topic)
    if qos:
        body += struct.pack("!H", packet_id)
    flags = (qos << 1) | (1 if retain else 0)
    return packet(PUBLISH, flags, body + payload)


def parse_publish(flags: int, body: bytes) -> tuple[Received, int]:
    """A received PUBLISH and its packet id (0 at QoS 0)."""
    (topic_len,) = struct.unpack_from("!H", body, 0)
    topic = body[2 : 2 + topic_len].decode()
    pos = 2 + topic_len
    qos = (flags >> 1) & 0x03
    packet_id = 0
    if qos:
        (packet_id,) = struct.unpack_from("!H", body, pos)
        pos += 2
    return Received(topic, bytes(body[pos:]), qos, bool(flags & 0x01)), packet_id


class MQTTClient:
    def __init__(
        self,
        host: str,
        port: int,
        *,
        client_id: str,
        username: str = "",
        password: str = "",
        tls: ssl.SSLContext | None = None,
        keepalive: int = 30,
        timeout: float = 10.0,
        queue_size: int = 1000,
        on_message: Callable[[Received], Awaitable[None]] | None = None,
    ) -> None:
        self.host, self.port = host, port
        self.client_id = client_id
        self.username, self.password = username, password
        self.tls = tls
        self.keepalive = keepalive
        self.timeout = timeout
        # Without a callback, deliveries wait here; when it is full the reader stops reading.
        self.messages: asyncio.Queue[Received] = asyncio.Queue(queue_size)
        self._deliver = on_message or self.messages.put
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._next_id = 0
        self._waiting: dict[tuple[int, int], asyncio.Future[bytes]] = {}
        self._pong = asyncio.Event()

    # -- connection ------------------------------------------------------------------------

    async def connect(self) -> None:
        """Open the connection and complete CONNECT/CONNACK; raises MQTTError when refused."""
        try:
            async with asyncio.timeout(self.timeout):
                self._reader, self._writer = await asyncio.open_connection(
                    self.host, self.port, ssl=self.tls
                )
                self._writer.write(
                    connect_packet(self.client_id, self.keepalive, self.username, self.password)
                )
                await self._writer.drain()
                kind, _, body = await self._read_packet()
        except (OSError, asyncio.IncompleteReadError, TimeoutError) as exc:
            await self.close()
            raise MQTTError(f"cannot connect to {self.host}:{self.port}: {exc!r}") from exc
        if kind != CONNACK or len(body) < 2 or body[1] != 0:
            await self.close()
            code = body[1] if kind == CONNACK and len(body) >= 2 else -1
            raise MQTTError(f"broker {self.host}:{self.port} refused the connection (code {code})")

    async def close(self) -> None:
        """Send DISCONNECT when still connected, then close the socket."""
        writer, self._writer = self._writer, None
        for fut in self._waiting.values():
            if not fut.done():
                fut.set_exception(MQTTError("connection closed"))
        self._waiting.clear()
        if writer is None:
            return
        with contextlib.suppress(Exception):
            if not writer.is_closing():
                writer.write(packet(DISCONNECT, 0, b""))
            writer.close()
            async with asyncio.timeout(1.0):
                await writer.wait_closed()

    # -- the read loop ---------------------------------------------------------------------

    async def run(self) -> None:
        """Read packets and keep the connection alive until it breaks (then raise MQTTError)."""
        pinger = asyncio.create_task(self._ping(), name=f"mqtt-ping:{self.client_id}")
        try:
            while True:
                try:
                    kind, flags, body = await self._read_packet()
                except (OSError, asyncio.IncompleteReadError) as exc:
                    raise MQTTError(f"connection to {self.host}:{self.port} lost: {exc!r}") from exc
                await self._dispatch(kind, flags, body)
        finally:
            pinger.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pinger

    async def _read_packet(self) -> tuple[int, int, bytes]:
        assert self._reader is not None, "not connected"
        first = await self._reader.readexactly(1)
        length, shift = 0, 0
        while True:
            (byte,) = await self._reader.readexactly(1)
            length |= (byte & 0x7F) << shift
            if not byte & 0x80:
                break
            shift += 7
            if shift > 21:
                raise MQTTError("malformed remaining length from the broker")
        body = await self._reader.readexactly(length) if length else b""
        return first[0] >> 4, first[0] & 0x0F, body

    async def _dispatch(self, kind: int, flags: int, body: bytes) -> None:
        if kind == PUBLISH:
            received, packet_id = parse_publish(flags, body)
            if received.qos == 1:
                self._write(packet(PUBACK, 0, struct.pack("!H", packet_id)))
            elif received.qos == 2:  # never asked for; answer so the broker does not stall
                self._write(packet(PUBREC, 0, struct.pack("!H", packet_id)))
            await self._deliver(received)
        elif kind in (PUBACK, SUBACK, UNSUBACK, PUBCOMP):
            (packet_id,) = struct.unpack_from("!H", body, 0)
            fut = self._waiting.pop((kind, packet_id), None)
            if fut is not None and not fut.done():
                fut.set_result(body[2:])
        elif kind == PUBREL:
            self._write(packet(PUBCOMP, 0, body[:2]))
        elif kind == PINGRESP:
            self._pong.set()
        else:
            log.debug("mqtt: ignoring packet type %d from the broker", kind)

    async def _ping(self) -> None:
        """PINGREQ every keepalive/2 seconds; no PINGRESP within the keepalive drops the link."""
        interval = max(0.05, self.keepalive / 2)
        while True:
            await asyncio.sleep(interval)
            self._pong.clear()
            self._write(packet(PINGREQ, 0, b""))
            try:
                await asyncio.wait_for(self._pong.wait(), max(0.1, self.keepalive))
            except TimeoutError:
                log.warning("mqtt: no PINGRESP from %s:%d; closing", self.host, self.port)
                if self._writer is not None:
                    self._writer.close()
                return

    # -- requests --------------------------------------------------------------------------

    def _write(self, data: bytes) -> None:
        if self._writer is None or self._writer.is_closing():
            raise MQTTError("not connected")
        self._writer.write(data)

    def _packet_id(self) -> int:
        self._next_id = self._next_id % 65535 + 1
        return self._next_id

    async def _request(self, data: bytes, answer: int, packet_id: int) -> bytes:
        fut: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._waiting[(answer, packet_id)] = fut
        try:
            self._write(data)
            assert self._writer is not None
            await self._writer.drain()
            async with asyncio.timeout(self.timeout):
                return await fut
        except (OSError, TimeoutError) as exc:
            raise MQTTError(f"no answer from {self.host}:{self.port}: {exc!r}") from exc
        finally:
            self._waiting.pop((answer, packet_id), None)

    async def subscribe(self, filters: list[str], qos: int = 0) -> list[int]:
        """Subscribe to `filters`; returns the granted QoS per filter (0x80: refused)."""
        packet_id = self._packet_id()
        body = struct.pack("!H", packet_id)
        for topic_filter in filters:
            body += _string(topic_filter) + bytes([qos])
        granted = await self._request(packet(SUBSCRIBE, 0x02, body), SUBACK, packet_id)
        return list(granted)

    async def publish(self, topic: str, payload: bytes, qos: int = 0, retain: bool = False) -> None:
        """Publish; at QoS 1 waits for the broker's PUBACK."""
        if qos == 0:
            self._write(publish_packet(topic, payload, 0, retain, 0))
            assert self._writer is not None
            try:
                await self._writer.drain()
            except OSError as exc:
                raise MQTTError(f"publish to {self.host}:{self.port} failed: {exc!r}") from exc
            return
        packet_id = self._packet_id()
        await self._request(publish_packet(topic, payload, 1, retain, packet_id), PUBACK, packet_id)
