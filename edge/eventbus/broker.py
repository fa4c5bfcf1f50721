"""The embedded MQTT broker: amqtt 0.12.1 with one rule changed, two plugins, state in SQLite.

This is the only module that touches amqtt.

**The changed rule.** amqtt refuses a client PUBLISH to any topic beginning with "$"
(Broker._handle_message_delivery: "[MQTT-4.7.2-1] ... cannot use a topic with a leading $
character", and it drops the client). MQTT 3.1.1 §4.7.2 reserves "$" topics for the server
(amqtt publishes `$SYS/...` statistics), and says a server SHOULD keep clients from using them to
talk to each other. KubeEdge's device topics all begin with `$hw/` (and `$ke/`), and mappers
publish to them on mosquitto, which allows it. KubeEdgeBroker overrides that one method: a
publish to a topic beginning with `$hw/` or `$ke/` (and without wildcards) takes the normal
path — the MESSAGE_RECEIVED event, the topic-filter plugins' PUBLISH check, the broadcast, the
retain — and everything else goes to amqtt's own method unchanged. Why this is safe:
- the exception is two prefixes that amqtt itself never uses, so `$SYS/` stays the broker's:
  a client still cannot forge broker statistics, and is still dropped for trying;
- the other half of the rule, that a filter beginning with a wildcard (`#`, `+/...`) does not
  match a `$` topic, is kept (Broker._matches is untouched): a client subscribed to `#` does not
  start receiving device traffic; mosquitto behaves the same way;
- authentication and topic filtering still apply to these publishes, and the listener is
  127.0.0.1 unless the operator says otherwise.

**Plugins** (an explicit set replaces amqtt's defaults, which cost 25-40 % throughput):
AuthPlugin allows anonymous clients, or checks the one configured username/password; it does
not mark clients anonymous, because amqtt keeps no offline session and queues nothing for an
anonymous client, and a client that asks for clean_session=false should get its session.
SessionStorePlugin keeps persistent sessions (subscriptions, messages queued while the client
is away) and retained messages in SQLite, in the node's edge.db, and restores them when the
broker starts, so they outlive an edgecore restart. amqtt's own SessionDBPlugin would need
SQLAlchemy and it re-adds subscriptions on every SUBSCRIBE, never forgets unsubscribed ones and
never forgets queued messages once delivered; this one is ~80 lines on the shared apsw writer.
Will messages are not persisted.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import apsw
from amqtt.broker import Broker, RetainedApplicationMessage
from amqtt.contexts import Action
from amqtt.errors import BrokerError as AmqttBrokerError
from amqtt.errors import PluginError, PluginLoadError
from amqtt.events import BrokerEvents
from amqtt.plugins.base import BaseAuthPlugin, BasePlugin

from common.errors import ConfigError, TemporaryError
from common.sqlite import Database
from edge.eventbus.topics import KUBEEDGE_PREFIXES

log = logging.getLogger(__name__)


class BrokerError(TemporaryError):
    """The embedded broker could not start (port in use, bad certificate, ...)."""


def is_kubeedge_topic(topic: str) -> bool:
    """A `$hw/` or `$ke/` topic name that ordinary clients may publish to."""
    return topic.startswith(KUBEEDGE_PREFIXES) and "+" not in topic and "#" not in topic


class KubeEdgeBroker(Broker):  # type: ignore[misc]  # amqtt ships no type information
    """amqtt's Broker, letting clients publish to KubeEdge's `$hw/` and `$ke/` topics."""

    async def _handle_message_delivery(
        self, client_session: Any, handler: Any, wait_deliver: asyncio.Future[Any]
    ) -> bool:
        message = wait_deliver.result()
        if message is None or not is_kubeedge_topic(message.topic or ""):
            result: bool = await super()._handle_message_delivery(
                client_session, handler, wait_deliver
            )
            return result
        # amqtt's path for any other topic, after its "$" check (amqtt 0.12.1, broker.py).
        client_id = client_session.client_id
        await self.plugins_manager.fire_event(
            BrokerEvents.MESSAGE_RECEIVED, client_id=client_id, message=message
        )
        topic = message.topic
        if not await self._topic_filtering(client_session, topic=topic, action=Action.PUBLISH):
            log.info("mqtt: %s may not publish to %s", client_id, topic)
            return True
        await self.plugins_manager.fire_event(
            BrokerEvents.MESSAGE_BROADCAST, client_id=client_id, message=message
        )
        await self._broadcast_message(client_session, topic, message.data)
        if message.publish_packet and message.publish_packet.retain_flag:
            await self.retain_message(client_session, topic, message.data, message.qos)
        return True

    async def stream_connected(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, listener_name: str
    ) -> None:
        """Remember each client's socket, so shutdown can close the ones amqtt leaves open;
        close it when amqtt is done with it."""
        self._open_writers().add(writer)
        try:
            await super().stream_connected(reader, writer, listener_name)
        finally:
            self._open_writers().discard(writer)
            # amqtt 0.12.1 can return with the socket still open: when the client left before
            # CONNECT (no close at all), and when its own close fails at write_eof() because
            # the client is already gone (ENOTCONN, logged at debug; it marked the writer
            # closed first, so nothing retries). Nobody reads that socket again: close it here
            # rather than leak it.
            if not writer.transport.is_closing():
                writer.transport.abort()

    def _open_writers(self) -> set[asyncio.StreamWriter]:
        writers: set[asyncio.StreamWriter] | None = getattr(self, "_kubeedge_writers", None)
        if writers is None:
            writers = set()
            self._kubeedge_writers = writers
        return writers

    def close_client_sockets(self) -> None:
        for writer in list(self._open_writers()):
            writer.transport.abort()
        self._open_writers().clear()

    def bound_port(self) -> int:
        """The TCP port the default listener is bound to (the configured one may be 0)."""
        server = self._servers.get("default")
        sockets = server.instance.sockets if server is not None else ()
        return int(sockets[0].getsockname()[1]) if sockets else 0


# -- authentication --------------------------------------------------------------------------


class AuthPlugin(BaseAuthPlugin):  # type: ignore[misc]
    """Anonymous access, or exactly one username/password when configured."""

    @dataclass
    class Config:
        username: str = ""
        password: str = ""

    async def authenticate(self, *, session: Any) -> bool:
        cfg = self.context.config
        if not cfg.username:
            return True
        given_user = (session.username or "").encode()
        given_pass = (session.password or "").encode()
        ok = hmac.compare_digest(given_user, cfg.username.encode()) and hmac.compare_digest(
            given_pass, cfg.password.encode()
        )
        if not ok:
            log.warning("mqtt: refused client %s: bad username or password", session.client_id)
        return ok


# -- persistent sessions and retained messages -----------------------------------------------

SCHEMA = """
CREATE TABLE IF NOT EXISTS mqtt_session (
    client_id TEXT PRIMARY KEY,
    disconnected_at REAL            -- NULL while connected (or when edgecore died)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS mqtt_subscription (
    client_id TEXT NOT NULL,
    topic_filter TEXT NOT NULL,
    qos INTEGER NOT NULL,
    PRIMARY KEY (client_id, topic_filter)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS mqtt_queued (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    client_id TEXT NOT NULL,
    topic TEXT NOT NULL,
    data BLOB NOT NULL,
    qos INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS mqtt_retained (
    topic TEXT PRIMARY KEY,
    data BLOB NOT NULL,
    qos INTEGER NOT NULL
) WITHOUT ROWID;
"""


@dataclass
class StoredSession:
    client_id: str
    subscriptions: list[tuple[str, int]] = field(default_factory=list)
    queued: list[tuple[str, bytes, int]] = field(default_factory=list)


class SessionStore:
    """SQLite rows for persistent sessions (clean_session=false) and retained messages."""

    def __init__(self, db: Database, expiry: float) -> None:
        self.db = db
        self.expiry = expiry  # seconds a disconnected session is kept; 0 = forever
        db.run_blocking(lambda c: c.execute(SCHEMA))

    async def connected(self, client_id: str, clean: bool) -> None:
        def write(conn: apsw.Connection) -> None:
            # Queued rows are in the session's memory now and delivered right after this event.
            conn.execute("DELETE FROM mqtt_queued WHERE client_id = ?", (client_id,))
            if clean:
                conn.execute("DELETE FROM mqtt_session WHERE client_id = ?", (client_id,))
                conn.execute("DELETE FROM mqtt_subscription WHERE client_id = ?", (client_id,))
            else:
                conn.execute(
                    "INSERT INTO mqtt_session (client_id, disconnected_at) VALUES (?, NULL) "
                    "ON CONFLICT (client_id) DO UPDATE SET disconnected_at = NULL",
                    (client_id,),
                )

        await self.db.transaction(write)

    async def disconnected(self, client_id: str) -> None:
        await self.db.run(
            lambda c: c.execute(
                "UPDATE mqtt_session SET disconnected_at = ? WHERE client_id = ?",
                (time.time(), client_id),
            )
        )

    async def subscribed(self, client_id: str, topic_filter: str, qos: int) -> None:
        await self.db.run(
            lambda c: c.execute(
                "INSERT INTO mqtt_subscription (client_id, topic_filter, qos) VALUES (?, ?, ?) "
                "ON CONFLICT (client_id, topic_filter) DO UPDATE SET qos = excluded.qos",
                (client_id, topic_filter, qos),
            )
        )

    async def unsubscribed(self, client_id: str, topic_filter: str) -> None:
        await self.db.run(
            lambda c: c.execute(
                "DELETE FROM mqtt_subscription WHERE client_id = ? AND topic_filter = ?",
                (client_id, topic_filter),
            )
        )

    async def queue(self, client_id: str, topic: str, data: bytes, qos: int) -> None:
        await self.db.run(
            lambda c: c.execute(
                "INSERT INTO mqtt_queued (client_id, topic, data, qos) VALUES (?, ?, ?, ?)",
                (client_id, topic, data, qos),
            )
        )

    async def retain(self, topic: str, data: bytes, qos: int) -> None:
        if data:
            sql = (
                "INSERT INTO mqtt_retained (topic, data, qos) VALUES (?, ?, ?) "
                "ON CONFLICT (topic) DO UPDATE SET data = excluded.data, qos = excluded.qos"
            )
            await self.db.run(lambda c: c.execute(sql, (topic, data, qos)))
        else:
            await self.db.run(
                lambda c: c.execute("DELETE FROM mqtt_retained WHERE topic = ?", (topic,))
            )

    async def mark_all_disconnected(self) -> None:
        now = time.time()
        await self.db.run(
            lambda c: c.execute(
                "UPDATE mqtt_session SET disconnected_at = ? WHERE disconnected_at IS NULL", (now,)
            )
        )

    async def load(self) -> tuple[list[StoredSession], list[tuple[str, bytes, int]]]:
        """Unexpired sessions (expired ones are deleted) and the retained messages."""

        def read(conn: apsw.Connection) -> tuple[list[StoredSession], list[tuple[str, bytes, int]]]:
            now = time.time()
            if self.expiry > 0:
                cutoff = now - self.expiry
                stale = "SELECT client_id FROM mqtt_session WHERE disconnected_at < ?"
                for table in ("mqtt_queued", "mqtt_subscription", "mqtt_session"):
                    conn.execute(f"DELETE FROM {table} WHERE client_id IN ({stale})", (cutoff,))
            sessions = {
                cid: StoredSession(cid)
                for (cid,) in conn.execute("SELECT client_id FROM mqtt_session")
            }
            for cid, topic_filter, qos in conn.execute(
                "SELECT client_id, topic_filter, qos FROM mqtt_subscription"
            ):
                if cid in sessions:
                    sessions[cid].subscriptions.append((topic_filter, qos))
            for cid, topic, data, qos in conn.execute(
                "SELECT client_id, topic, data, qos FROM mqtt_queued ORDER BY seq"
            ):
                if cid in sessions:
                    sessions[cid].queued.append((topic, bytes(data), qos))
            retained = [(t, bytes(d), q) for t, d, q in conn.execute("SELECT * FROM mqtt_retained")]
            return list(sessions.values()), retained

        return await self.db.transaction(read)


class SessionStorePlugin(BasePlugin):  # type: ignore[misc]
    """Mirrors amqtt's persistent sessions and retained messages into a SessionStore.

    Each handler makes exactly one store call and awaits nothing before it, so the writes reach
    the single SQLite thread in the order amqtt fired the events."""

    @dataclass
    class Config:
        store: Any = None

    @property
    def store(self) -> SessionStore:
        store: SessionStore = self.context.config.store
        return store

    async def on_broker_client_connected(self, *, client_id: str, client_session: Any) -> None:
        await self.store.connected(client_id, clean=client_session.clean_session is not False)

    async def on_broker_client_disconnected(self, *, client_id: str, client_session: Any) -> None:
        if client_session.clean_session is False:
            await self.store.disconnected(client_id)

    async def on_broker_client_subscribed(self, *, client_id: str, topic: str, qos: int) -> None:
        session = self.context.get_session(client_id)
        if session is not None and session.clean_session is False:
            await self.store.subscribed(client_id, topic, qos)

    async def on_broker_client_unsubscribed(self, *, client_id: str, topic: str) -> None:
        await self.store.unsubscribed(client_id, topic)

    async def on_broker_retained_message(
        self, *, client_id: str | None, retained_message: Any
    ) -> None:
        data = bytes(retained_message.data or b"")
        qos = retained_message.qos or 0
        if client_id is None:
            await self.store.retain(retained_message.topic, data, qos)
        else:  # queued for a persistent session whose client is away
            await self.store.queue(client_id, retained_message.topic, data, qos)

    async def on_broker_pre_shutdown(self) -> None:
        await self.store.mark_all_disconnected()

    async def on_broker_post_start(self) -> None:
        sessions, retained = await self.store.load()
        for stored in sessions:
            await self.context.add_subscription(stored.client_id, None, None)
            session = self.context.get_session(stored.client_id)
            session.clean_session = False
            for topic_filter, qos in stored.subscriptions:
                await self.context.add_subscription(stored.client_id, topic_filter, qos)
            for topic, data, qos in stored.queued:
                await session.retained_messages.put(
                    RetainedApplicationMessage(None, topic, data, qos)
                )
        for topic, data, qos in retained:
            self.context.retained_messages[topic] = RetainedApplicationMessage(
                None, topic, data, qos
            )
        if sessions or retained:
            log.info(
                "mqtt: restored %d persistent session(s), %d retained message(s)",
                len(sessions),
                len(retained),
            )


# -- the broker as edgecore runs it ----------------------------------------------------------


@dataclass(frozen=True)
class BrokerOptions:
    host: str
    port: int
    username: str = ""
    password: str = ""
    tls_cert: str = ""
    tls_key: str = ""
    session_expiry: float = 0.0  # seconds; 0 keeps disconnected persistent sessions forever


def broker_config(opts: BrokerOptions, store: SessionStore) -> dict[str, Any]:
    """amqtt's configuration: one explicit listener and an explicit, minimal plugin set."""
    if bool(opts.tls_cert) != bool(opts.tls_key):
        raise ConfigError("--mqtt-tls-cert and --mqtt-tls-key must be given together")
    listener: dict[str, Any] = {"type": "tcp", "bind": f"{opts.host}:{opts.port}"}
    if opts.tls_cert:
        for path in (opts.tls_cert, opts.tls_key):
            if not Path(path).is_file():
                raise ConfigError(f"MQTT TLS file {path} does not exist")
        listener.update(ssl=True, certfile=opts.tls_cert, keyfile=opts.tls_key)
    return {
        "listeners": {"default": listener},
        "session_expiry_interval": int(opts.session_expiry) or None,
        "plugins": {
            f"{__name__}.AuthPlugin": {"username": opts.username, "password": opts.password},
            f"{__name__}.SessionStorePlugin": {"store": store},
        },
    }


class EmbeddedBroker:
    """Starts and stops a KubeEdgeBroker; must be started inside the running event loop."""

    def __init__(self, opts: BrokerOptions, db: Database) -> None:
        self.opts = opts
        self.store = SessionStore(db, opts.session_expiry)
        self.port = 0
        self._broker: KubeEdgeBroker | None = None

    async def start(self) -> None:
        for name in ("amqtt", "transitions"):  # amqtt and its state machines
            third_party = logging.getLogger(name)
            if third_party.level == logging.NOTSET:
                # They log every connection and state change at INFO; keep edgecore's log
                # about edgecore.
                third_party.setLevel(max(logging.WARNING, logging.getLogger().level))
        config = broker_config(self.opts, self.store)
        try:
            broker = KubeEdgeBroker(config)
        except (PluginError, PluginLoadError, ValueError, OSError) as exc:
            raise ConfigError(f"MQTT broker configuration: {exc!r}") from exc
        starting = asyncio.ensure_future(broker.start())
        try:
            await asyncio.shield(starting)
        except asyncio.CancelledError:
            await self._finish_cancelled_start(broker, starting)
            raise
        except AmqttBrokerError as exc:
            await self._discard(broker)
            raise BrokerError(f"MQTT broker cannot listen on {self._where()}: {exc}") from exc
        self._broker = broker
        self.port = broker.bound_port()
        log.info("mqtt: embedded broker listening on %s:%d", self.opts.host, self.port)

    async def _finish_cancelled_start(
        self, broker: KubeEdgeBroker, starting: asyncio.Future[None]
    ) -> None:
        """Let a start we were cancelled in finish, then take the broker down again.

        amqtt's start() is not cancellation-safe: cancelled once its listener is bound (in
        asyncio.start_server or in its POST_START event), it leaves a listening socket that
        no one will close (edgecore stopped right after it started leaked one)."""
        await asyncio.wait({starting})
        if starting.exception() is not None:
            await self._discard(broker)
            return
        await broker.shutdown()
        broker.close_client_sockets()

    async def _discard(self, broker: KubeEdgeBroker) -> None:
        """Release what a broker that failed to start holds (plugins, the broadcast loop)."""
        try:
            await broker.plugins_manager.close()
        except Exception:
            log.debug("mqtt: cleaning up a broker that did not start failed", exc_info=True)

    def _where(self) -> str:
        return f"{self.opts.host}:{self.opts.port}"

    async def stop(self) -> None:
        broker, self._broker = self._broker, None
        if broker is not None:
            await broker.shutdown()
            broker.close_client_sockets()
