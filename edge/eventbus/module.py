"""eventbus: edgecore's MQTT side — the embedded broker (or an external one) and edgecore's client.

What it does:
- `--mqtt-mode internal` (default): starts the embedded amqtt broker (edge/eventbus/broker.py)
  on `--mqtt-listen`, with optional username/password and TLS; `--mqtt-mode external`: uses the
  broker at `--mqtt-broker tcp://HOST:PORT` (e.g. mosquitto) instead;
- keeps one MQTT client connected to that broker (reconnecting with jittered backoff, and
  subscribing again on every connect, so its subscriptions survive broker and edgecore
  restarts) and subscribes to KubeEdge's request topics (edge/eventbus/topics.py);
- inbound: a message on a device or membership topic goes to the bus group `twin` (operation
  `publish`, resource = the topic, body `opaque`); `$hw/events/upload/#` and
  `SYS/dis/upload_records` go up to the cloud through edgehub (group `user`, `upload`);
- outbound: messages sent to this module (operation `publish`, resource = topic, body
  `opaque`) are published. While no broker is reachable they are dropped, as MQTT QoS 0 does;
  the twin publishes a fresh delta on the next change.

What it does not: interpret payloads (the twin module does), or keep messages for mappers
that are away (the broker's persistent sessions do, for clients that ask).
"""

from __future__ import annotations

import asyncio
import logging
import random
import ssl
from urllib.parse import urlsplit

from common.bus import Bus
from common.envelope import Message, new_message
from common.errors import ConfigError, UnknownModule
from common.names import CLUSTER_NAMESPACE, Group, Module, Operation, ResourceType
from common.settings import split_host_port
from common.sqlite import Database
from common.supervisor import together
from edge.eventbus import topics
from edge.eventbus.broker import BrokerOptions, EmbeddedBroker
from edge.eventbus.mqtt import SUBSCRIBE_FAILED, MQTTClient, MQTTError, Received
from edge.settings import EdgeSettings

log = logging.getLogger(__name__)

INTERNAL, EXTERNAL = "internal", "external"


def broker_address(url: str) -> tuple[str, int]:
    """`tcp://HOST:PORT` (or mqtt://) -> (host, port); raises ConfigError when malformed."""
    parts = urlsplit(url)
    if parts.scheme not in ("tcp", "mqtt") or not parts.hostname:
        raise ConfigError(f"--mqtt-broker must be tcp://HOST:PORT, got {url!r}")
    try:
        port = parts.port or 1883
    except ValueError as exc:
        raise ConfigError(f"--mqtt-broker has a bad port: {url!r}") from exc
    return parts.hostname, port


class EventBus:
    name: str = Module.EVENTBUS
    group: str = Group.BUS

    def __init__(self, bus: Bus, settings: EdgeSettings, db: Database) -> None:
        self.bus = bus
        self.settings = settings
        self.filters = topics.subscriptions(settings.node_name)
        if settings.mqtt_qos not in (0, 1):
            raise ConfigError(f"--mqtt-qos must be 0 or 1, not {settings.mqtt_qos}")
        self.broker: EmbeddedBroker | None = None
        self._external = ("", 0)
        if settings.mqtt_mode == INTERNAL:
            host, port = split_host_port(settings.mqtt_listen, "--mqtt-listen")
            opts = BrokerOptions(
                host=host,
                port=port,
                username=settings.mqtt_username,
                password=settings.mqtt_password,
                tls_cert=settings.mqtt_tls_cert,
                tls_key=settings.mqtt_tls_key,
                session_expiry=settings.mqtt_session_expiry,
            )
            self.broker = EmbeddedBroker(opts, db)
        elif settings.mqtt_mode == EXTERNAL:
            self._external = broker_address(settings.mqtt_broker)
        else:
            raise ConfigError(
                f"--mqtt-mode must be internal or external, not {settings.mqtt_mode!r}"
            )
        self.client: MQTTClient | None = None
        self.connected = asyncio.Event()
        self.connects = 0
        self.dropped = 0  # outbound messages dropped while no broker was reachable
        self._broker_started = False

    async def run(self) -> None:
        if self.broker is not None and not self._broker_started:
            await self.broker.start()
            self._broker_started = True
        await together(eventbus_outbound=self._outbound(), eventbus_client=self._client_loop())

    async def close(self) -> None:
        if self.broker is not None and self._broker_started:
            self._broker_started = False
            await self.broker.stop()

    # -- the client ------------------------------------------------------------------------

    def _target(self) -> tuple[str, int, ssl.SSLContext | None]:
        if self.broker is None:
            host, port = self._external
            return host, port, None
        host = self.broker.opts.host
        if host in ("0.0.0.0", "::", ""):
            host = "127.0.0.1"
        tls = None
        if self.settings.mqtt_tls_cert:
            # Our own broker, in this process: trust exactly its certificate, whatever its name.
            tls = ssl.create_default_context(cafile=self.settings.mqtt_tls_cert)
            tls.check_hostname = False
            tls.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
        return host, self.broker.port, tls

    def _new_client(self) -> MQTTClient:
        host, port, tls = self._target()
        return MQTTClient(
            host,
            port,
            client_id=f"edgecore-{self.settings.node_name}",
            username=self.settings.mqtt_username,
            password=self.settings.mqtt_password,
            tls=tls,
            keepalive=self.settings.mqtt_keepalive,
            on_message=self._inbound,
        )

    async def _client_loop(self) -> None:
        initial = self.settings.mqtt_reconnect
        delay = initial
        while True:
            client = self._new_client()
            try:
                await client.connect()
                reader = asyncio.create_task(client.run(), name="eventbus-mqtt-read")
                try:
                    await self._subscribe(client)
                    self.client = client
                    self.connects += 1
                    self.connected.set()
                    delay = initial
                    log.info("eventbus: connected to MQTT broker %s:%d", client.host, client.port)
                    await reader
                finally:
                    self.connected.clear()
                    self.client = None
                    reader.cancel()
                    await asyncio.gather(reader, return_exceptions=True)
            except MQTTError as exc:
                log.warning("eventbus: %s", exc)
            finally:
                await client.close()
            await asyncio.sleep(random.uniform(delay / 2, delay))
            delay = min(delay * 2, max(initial, self.settings.reconnect_max))

    async def _subscribe(self, client: MQTTClient) -> None:
        granted = await client.subscribe(self.filters, self.settings.mqtt_qos)
        refused = [
            f for f, code in zip(self.filters, granted, strict=False) if code == SUBSCRIBE_FAILED
        ]
        if refused or len(granted) != len(self.filters):
            raise MQTTError(f"the broker refused subscriptions: {', '.join(refused) or granted}")

    # -- inbound: MQTT -> bus ---------------------------------------------------------------

    async def _inbound(self, received: Received) -> None:
        if topics.is_upload(received.topic):
            msg = new_message(
                source=self.name,
                group=Group.USER,
                operation=Operation.UPLOAD,
                resource=f"{CLUSTER_NAMESPACE}/{ResourceType.UPLOAD}/{received.topic}",
            )
            msg.opaque.content_type = "application/octet-stream"
            msg.opaque.data = received.payload
            try:
                await self.bus.send(Module.EDGEHUB, msg)
            except UnknownModule:
                log.debug("eventbus: no edgehub; upload on %s dropped", received.topic)
            return
        if not self.bus.has_group(Group.TWIN):
            return
        msg = topics.mqtt_message(self.name, received.topic, received.payload)
        await self.bus.send_to_group(Group.TWIN, msg)

    # -- outbound: bus -> MQTT --------------------------------------------------------------

    async def _outbound(self) -> None:
        while True:
            msg = await self.bus.receive(self.name)
            if msg.route.operation != Operation.PUBLISH or msg.WhichOneof("body") != "opaque":
                log.warning(
                    "eventbus: ignoring %s %s from %s",
                    msg.route.operation,
                    msg.WhichOneof("body"),
                    msg.route.source,
                )
                continue
            client = self.client
            if client is None:
                self._drop(msg, "no broker connection")
                continue
            try:
                await client.publish(msg.route.resource, msg.opaque.data, self.settings.mqtt_qos)
            except MQTTError as exc:
                self._drop(msg, str(exc))

    def _drop(self, msg: Message, why: str) -> None:
        self.dropped += 1
        log.debug("eventbus: dropped publish to %s: %s", msg.route.resource, why)
