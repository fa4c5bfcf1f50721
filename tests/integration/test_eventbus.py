"""edgecore's eventbus against real MQTT clients: the embedded amqtt broker's `$hw/` rule,
authentication, TLS, persistent sessions across restarts, edgecore's client coming back
after its (external) broker restarts, and no socket left open by the broker."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import errno
import ipaddress
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from common.names import Module
from edge.eventbus.module import EventBus
from edge.eventbus.mqtt import CONNACK, DISCONNECT, connect_packet, packet
from tests.support.mqtt import Subscriber, publish, start_mosquitto
from tests.support.stack import EdgeStack, start_edge
from tests.support.waiting import eventually, free_port

NODE = "edge-1"
NO_CLOUD = "127.0.0.1:1"  # nothing listens there: these tests need no cloud
UNKNOWN_GET = "$hw/events/device/demo/nobody/twin/get"


async def edge_with(data_dir: Path, **mqtt: Any) -> tuple[EdgeStack, EventBus]:
    stack = await start_edge(data_dir, NODE, NO_CLOUD, **mqtt)
    eventbus = stack.supervisor.get(Module.EVENTBUS)
    assert isinstance(eventbus, EventBus)
    try:
        await asyncio.wait_for(eventbus.connected.wait(), 10)
    except BaseException:
        await stack.stop()
        raise
    return stack, eventbus


def port_of(eventbus: EventBus) -> int:
    assert eventbus.broker is not None
    return eventbus.broker.port


@pytest.fixture
async def embedded(tmp_path: Path) -> AsyncIterator[tuple[EdgeStack, EventBus]]:
    stack, eventbus = await edge_with(tmp_path / "edge", mqtt_listen="127.0.0.1:0")
    yield stack, eventbus
    await stack.stop()


async def test_clients_may_publish_to_kubeedge_dollar_topics(
    embedded: tuple[EdgeStack, EventBus],
) -> None:
    """A plain client's publish to `$hw/...` and `$ke/...` is routed; edgecore answers it."""
    port = port_of(embedded[1])
    sub = await Subscriber(port, "$hw/events/device/+/+/twin/get/result").start()
    ke = await Subscriber(port, "$ke/events/demo").start()
    try:
        await publish(port, UNKNOWN_GET, '{"event_id": "e1"}')
        result = await sub.wait_for("/twin/get/result", lambda p: p["event_id"] == "e1")
        assert result["code"] == 404
        await publish(port, "$ke/events/demo", "hello")
        assert [m.payload for m in await ke.wait_count(1)] == ["hello"]
    finally:
        await sub.stop()
        await ke.stop()


async def test_other_dollar_topics_and_wildcards_keep_amqtt_rules(
    embedded: tuple[EdgeStack, EventBus],
) -> None:
    """`$SYS/...` stays the broker's, and a `#` subscriber does not receive `$hw/` traffic."""
    port = port_of(embedded[1])
    everything = await Subscriber(port, "#").start()
    sys_sub = await Subscriber(port, "$SYS/#").start()
    try:
        await publish(port, "$SYS/broker/fake", "forged")
        await publish(port, UNKNOWN_GET, '{"event_id": "e2"}')
        await publish(port, "plain/topic", "visible")
        await everything.wait_count(1)
        await asyncio.sleep(0.3)  # time for anything wrongly routed to arrive as well
        assert [m.topic for m in everything.messages] == ["plain/topic"]
        assert sys_sub.messages == []
    finally:
        await everything.stop()
        await sys_sub.stop()


async def test_username_and_password_are_checked(tmp_path: Path) -> None:
    """With --mqtt-username/--mqtt-password the broker refuses other clients; edgecore's own
    client (which sends them) connects."""
    stack, eventbus = await edge_with(
        tmp_path / "edge", mqtt_listen="127.0.0.1:0", mqtt_username="kube", mqtt_password="s3cret"
    )
    port = port_of(eventbus)
    try:
        for creds in ([], ["-u", "kube", "-P", "wrong"]):
            with pytest.raises(AssertionError, match="failed"):
                await publish(port, "t/x", "no", *creds)
        await publish(port, "t/x", "yes", "-u", "kube", "-P", "s3cret")
    finally:
        await stack.stop()


def self_signed(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and its key, as PEM files."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "edge-1 mqtt")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "mqtt.crt", directory / "mqtt.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


async def test_tls_listener_serves_mqtt_over_tls(tmp_path: Path) -> None:
    """With --mqtt-tls-cert/--mqtt-tls-key the broker speaks TLS: mosquitto clients verifying
    the certificate get answers, and edgecore's own client connects too."""
    cert, key = self_signed(tmp_path)
    stack, eventbus = await edge_with(
        tmp_path / "edge",
        mqtt_listen="127.0.0.1:0",
        mqtt_tls_cert=str(cert),
        mqtt_tls_key=str(key),
    )
    port = port_of(eventbus)
    sub = Subscriber(port, "$hw/events/device/+/+/twin/get/result", "--cafile", str(cert))
    try:
        await sub.start()
        await publish(port, UNKNOWN_GET, '{"event_id": "tls"}', "--cafile", str(cert))
        result = await sub.wait_for("/twin/get/result", lambda p: p["event_id"] == "tls")
        assert result["code"] == 404
        with pytest.raises(AssertionError, match="failed"):
            await publish(port, UNKNOWN_GET, "{}")  # plain MQTT on the TLS port
    finally:
        with contextlib.suppress(Exception):
            await sub.stop()
        await stack.stop()


async def test_persistent_session_survives_an_edgecore_restart(tmp_path: Path) -> None:
    """A clean_session=false client's subscription outlives edgecore: a QoS 1 message published
    while the client and edgecore were both away is delivered when the client returns."""
    stack, eventbus = await edge_with(tmp_path / "edge", mqtt_listen="127.0.0.1:0")
    port = port_of(eventbus)
    keeper = ["-c", "-i", "keeper", "-q", "1"]
    first = await Subscriber(port, "app/commands", *keeper).start()
    await first.stop()
    await stack.stop()

    stack, eventbus = await edge_with(tmp_path / "edge", mqtt_listen=f"127.0.0.1:{port}")
    try:
        await publish(port, "app/commands", "reboot", "-q", "1")
        again = await Subscriber(port, "app/commands", *keeper).start()
        try:
            assert [m.payload for m in await again.wait_count(1)] == ["reboot"]
        finally:
            await again.stop()
    finally:
        await stack.stop()


async def test_edgecore_subscribes_again_after_its_broker_restarts(tmp_path: Path) -> None:
    """With an external mosquitto, edgecore reconnects after the broker restarts and its
    subscriptions are back: requests are answered again."""
    mosquitto = await start_mosquitto(tmp_path / "mosquitto")
    try:
        stack, eventbus = await edge_with(
            tmp_path / "edge",
            mqtt_mode="external",
            mqtt_broker=mosquitto.url,
            mqtt_reconnect=0.05,
        )
        try:
            await mosquitto.restart()
            await eventually(
                lambda: eventbus.connects >= 2 and eventbus.connected.is_set(), 10, "reconnect"
            )
            sub = await Subscriber(mosquitto.port, "$hw/events/device/+/+/twin/get/result").start()
            try:
                await publish(mosquitto.port, UNKNOWN_GET, '{"event_id": "back"}')
                result = await sub.wait_for("/twin/get/result", lambda p: p["event_id"] == "back")
                assert result["code"] == 404
            finally:
                await sub.stop()
        finally:
            await stack.stop()
    finally:
        await mosquitto.stop()


# -- sockets: the broker leaves none open behind it ------------------------------------------


async def wait_broker_closes(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Read until the broker closes its side of the connection (EOF or reset); fail if it
    keeps it open."""
    try:
        async with asyncio.timeout(5):
            while await reader.read(1024):
                pass
    except ConnectionError:
        pass
    except TimeoutError:
        pytest.fail("the broker kept the connection open after it was done with it")
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


def write_eof_to_a_gone_client(self: asyncio.StreamWriter) -> None:
    """What write_eof() raises when the client has already reset the connection."""
    raise OSError(errno.ENOTCONN, os.strerror(errno.ENOTCONN))


@pytest.mark.parametrize(
    "handshake",
    [
        pytest.param(False, id="client-leaves-before-connect"),
        pytest.param(True, id="write-eof-fails-after-disconnect"),
    ],
)
async def test_broker_closes_connections_it_is_done_with(
    embedded: tuple[EdgeStack, EventBus], monkeypatch: pytest.MonkeyPatch, handshake: bool
) -> None:
    """A client that leaves before CONNECT, or whose connection amqtt fails to close (its
    write_eof() raising ENOTCONN), still gets its connection closed by the broker: no socket
    is left open (it used to surface as a ResourceWarning in some later test)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port_of(embedded[1]))
    if handshake:
        monkeypatch.setattr(asyncio.StreamWriter, "write_eof", write_eof_to_a_gone_client)
        writer.write(connect_packet("leaver", 30))
        assert (await reader.readexactly(4))[0] >> 4 == CONNACK
        writer.write(packet(DISCONNECT, 0, b""))
    writer.transport.write_eof()  # half-close, so this side still sees what the broker does
    await wait_broker_closes(reader, writer)


@pytest.mark.parametrize("turns", range(0, 40, 3))
async def test_stopping_while_the_broker_starts_leaves_no_listener(
    tmp_path: Path, turns: int
) -> None:
    """edgecore stopped at any point of its broker's start (after `turns` event-loop turns;
    the start takes ~10-50) leaves nothing listening on the MQTT port."""
    port = free_port()
    stack = await start_edge(tmp_path / "edge", NODE, NO_CLOUD, mqtt_listen=f"127.0.0.1:{port}")
    for _ in range(turns):
        await asyncio.sleep(0)
    await stack.stop()
    with pytest.raises(ConnectionRefusedError):
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.close()
