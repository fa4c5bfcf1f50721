"""cloudhub: the gRPC end of every edge node's link, and the bus module behind it.

What it does:
- serves HubService.Connect and CertificateService.Renew (grpc.aio) over mutual TLS, with the
  standard health service and server reflection; a client must present a certificate of the
  edge CA (authority.py), and a stream's node is the one its certificate names
  (`system:node:NAME`); a "node-name" metadata that disagrees is refused (PERMISSION_DENIED);
- serves BootstrapService.Join on --bootstrap-listen, where a node spends a join token;
- with --insecure-hub only: plaintext, no join, and the node is whatever "node-name" says;
- one NodeSession per node; a newer stream for a node replaces the older one;
- downstream: cloud modules send envelopes whose resource is `node/{node}/{ns}/{type}/{name}`;
  cloudhub stores them in the per-node durable Outbox (collapse, RV order, resend) and streams
  them in batches; replies to an edge's request skip the outbox;
- upstream: each received envelope is validated (bad ones get an Error reply on the stream),
  acks and keepalives are handled here; everything else must be something the node may send
  (node authorization, authorizer.py: a refusal is an Error reply, 403), and is then recorded
  in the durable Inbox (de-duplicated by message id), acked, and handed to the bus group its
  route names;
- streams (kubectl logs): a `log_query` is live, not durable: it goes out on the node's
  current stream only, and what the node answers to it (stream frames, or an error) is
  relayed to the module that sent the query; when the node disconnects, that module gets an
  error (503), so a waiting client sees its stream end.

What it does not: decide what a node should receive (edgecontroller, devicecontroller and
synccontroller do).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
from cryptography import x509
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from kubeedge.hub.v1 import certificates_pb2, certificates_pb2_grpc, hub_pb2, hub_pb2_grpc

from cloud.hub.authority import EdgeAuthority, Refused
from cloud.hub.authorizer import Denied, NodeAuthorizer, Verdict
from cloud.hub.inbox import Inbox
from cloud.hub.session import NodeSession
from cloud.kubeerrors import KubeAPIError
from cloud.metrics import CloudMetrics
from cloud.settings import CloudSettings
from common import certs
from common.bus import Bus
from common.envelope import (
    Message,
    is_ack,
    make_ack,
    make_error,
    make_stream_cancel,
    new_message,
    split_node,
    validate,
    with_node,
)
from common.errors import BadMessage, UnknownModule
from common.join import NODE_USER_PREFIX
from common.link import LinkFeeder
from common.names import NODE_NAME_METADATA, Group, Module, Operation, valid_node_name
from common.outbox import Outbox
from common.settings import split_host_port
from common.sqlite import Database
from common.supervisor import together

log = logging.getLogger(__name__)

SERVICE_NAME = hub_pb2.DESCRIPTOR.services_by_name["HubService"].full_name
CERTIFICATES = certificates_pb2.DESCRIPTOR.services_by_name
RENEW_SERVICE = CERTIFICATES["CertificateService"].full_name
BOOTSTRAP_SERVICE = CERTIFICATES["BootstrapService"].full_name
BOOTSTRAP_CONCURRENCY = 16  # joins in progress at once; each costs a few API calls


class CloudHub:
    name: str = Module.CLOUDHUB
    group: str = Group.HUB

    def __init__(
        self,
        bus: Bus,
        settings: CloudSettings,
        metrics: CloudMetrics | None = None,
        authority: EdgeAuthority | None = None,
    ) -> None:
        if authority is None and not settings.insecure_hub:
            raise ValueError("cloudhub needs the edge CA (authority) unless --insecure-hub")
        self.bus = bus
        self.settings = settings
        self.metrics = metrics
        self.authority = authority
        self.db = Database(Path(settings.data_dir) / "cloudhub.db", "SELECT 1")
        self.outbox = Outbox(
            self.db,
            resend_interval=settings.resend_interval,
            max_inflight=settings.max_inflight,
            max_envelope_bytes=settings.max_message_bytes - 1024,
            on_acked=self._acked,
        )
        self.inbox = Inbox(self.db, settings.dedup_retention)
        self.authorizer = NodeAuthorizer(enabled=settings.node_authorization, metrics=metrics)
        self.sessions: dict[str, NodeSession] = {}
        # query id -> (node, module that asked, the node's session it went out on)
        self.streams: dict[str, tuple[str, str, NodeSession | None]] = {}
        self.health = health.aio.HealthServicer()
        self.server: grpc.aio.Server | None = None
        self.bootstrap_server: grpc.aio.Server | None = None
        self.port = 0
        self.bootstrap_port = 0
        self.started = asyncio.Event()

    # -- module lifecycle ------------------------------------------------------------------

    async def run(self) -> None:
        if self.server is None:
            await self._start_server()
        loops = {
            # Alongside the downstream loop, not before it: handing on a large backlog can
            # wait on controllers that wait on downstream sends (a cycle, if run first).
            "cloudhub_redeliver": self._redeliver(),
            "cloudhub_downstream": self._downstream(),
            "cloudhub_housekeeping": self._housekeeping(),
        }
        if self.authority is not None:
            loops["cloudhub_revocations"] = self._revocation_sweep()
        await together(**loops)

    async def close(self) -> None:
        if self.server is not None:
            await self._set_health(health_pb2.HealthCheckResponse.NOT_SERVING)
            await self.server.stop(self.settings.stop_grace)
            self.server = None
        if self.bootstrap_server is not None:
            await self.bootstrap_server.stop(self.settings.stop_grace)
            self.bootstrap_server = None
        await self.outbox.flush_acks()
        self.db.close()
        if self.authority is not None:
            await self.authority.kube.close()

    async def _start_server(self) -> None:
        limit = self.settings.max_message_bytes
        server = grpc.aio.server(
            options=[
                ("grpc.max_receive_message_length", limit),
                ("grpc.max_send_message_length", limit),
            ]
        )
        hub_pb2_grpc.add_HubServiceServicer_to_server(_Servicer(self), server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        names = [SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME]
        host, port = split_host_port(self.settings.hub_listen, "--hub-listen")
        address = f"{host}:{port}"
        if self.authority is None:
            log.warning(
                "cloudhub: --insecure-hub: plaintext, and a stream's node is whatever its "
                "node-name metadata claims; for debugging only, never on a real network"
            )
            self.port = server.add_insecure_port(address)
            mode = "plaintext"
        else:
            await self.authority.load()
            await self._start_bootstrap()
            certificates_pb2_grpc.add_CertificateServiceServicer_to_server(
                _Renewer(self.authority), server
            )
            names.append(RENEW_SERVICE)
            self.port = server.add_secure_port(address, self._tls(host))
            mode = "mutual TLS"
        reflection.enable_server_reflection(names, server)
        await server.start()
        self.server = server
        await self._set_health(health_pb2.HealthCheckResponse.SERVING)
        log.info("cloudhub serving HubService on %s:%d (%s)", host, self.port, mode)
        self.started.set()

    def _tls(self, host: str) -> grpc.ServerCredentials:
        assert self.authority is not None
        identity = self.authority.serving_identity(host)
        return grpc.ssl_server_credentials(
            [(identity.key_pem, identity.cert_pem)],
            root_certificates=identity.ca_pem,
            require_client_auth=True,
        )

    async def _start_bootstrap(self) -> None:
        assert self.authority is not None
        if self.bootstrap_server is not None:  # run() restarted after a later step failed
            return
        server = grpc.aio.server(
            options=[("grpc.max_receive_message_length", 64 * 1024)],
            maximum_concurrent_rpcs=BOOTSTRAP_CONCURRENCY,  # beyond: RESOURCE_EXHAUSTED
        )
        certificates_pb2_grpc.add_BootstrapServiceServicer_to_server(
            _Bootstrap(self.authority), server
        )
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        reflection.enable_server_reflection(
            [BOOTSTRAP_SERVICE, health.SERVICE_NAME, reflection.SERVICE_NAME], server
        )
        host, port = split_host_port(self.settings.bootstrap_listen, "--bootstrap-listen")
        self.bootstrap_port = server.add_insecure_port(f"{host}:{port}")
        await server.start()
        self.bootstrap_server = server
        log.info("cloudhub serving BootstrapService on %s:%d", host, self.bootstrap_port)

    async def _set_health(self, status: int) -> None:
        await self.health.set(health.OVERALL_HEALTH, status)
        await self.health.set(SERVICE_NAME, status)

    # -- downstream: bus -> node ------------------------------------------------------------

    async def _downstream(self) -> None:
        """Move envelopes from the bus to node outboxes, a drained batch at a time."""
        while True:
            batch = await self.bus.receive_batch(self.name, self.settings.batch_size * 10)
            await self.send_to_nodes(batch)

    async def send_to_nodes(self, msgs: list[Message]) -> None:
        """Route envelopes addressed `node/{node}/...` to their nodes (durably, unless a reply)."""
        per_node: dict[str, list[Message]] = {}
        for msg in msgs:
            try:
                node, wire_resource = split_node(msg.route.resource)
            except BadMessage as exc:
                log.error("cloudhub: dropping message from %s: %s", msg.route.source, exc)
                continue
            msg.route.resource = wire_resource
            if msg.WhichOneof("body") == "log_query":
                self._open_stream(node, msg)
                continue
            if msg.WhichOneof("body") == "stream_cancel":
                self._cancel_stream(node, msg)
                continue
            if msg.header.parent_id:  # a reply to the edge: not stored, not resent
                session = self.sessions.get(node)
                if session is not None:
                    session.feeder.push(msg)
                continue
            try:
                self.outbox.check_size(msg)
            except BadMessage as exc:
                log.error("cloudhub: not sending to node %s: %s", node, exc.reason)
                continue
            per_node.setdefault(node, []).append(msg)
        for node, node_msgs in per_node.items():
            await self.outbox.put(node, node_msgs)

    # -- streams: live queries whose answers go back to the module that asked ----------------

    def _open_stream(self, node: str, query: Message) -> None:
        session = self.sessions.get(node)
        self.streams[query.header.id] = (node, query.route.source, session)
        if session is None:
            self._end_stream(query.header.id, f"node {node} is not connected")
        elif not session.feeder.push(query):
            self._end_stream(query.header.id, f"the link to node {node} is congested")

    def _cancel_stream(self, node: str, cancel: Message) -> None:
        """The module that opened a stream gave up on it: forget it, and tell the node to stop
        producing it."""
        stream_id = cancel.stream_cancel.stream_id
        if self.streams.pop(stream_id, None) is None:
            return  # ended already (last frame, error, or the node disconnected)
        session = self.sessions.get(node)
        if session is not None and session.feeder.push(cancel):
            session.cancelled(stream_id)

    def _stray_frame(self, node: str, session: NodeSession, frame: Message) -> None:
        """A frame of a stream that is no longer open here (its client left, its session was
        replaced, or cloudcore restarted): tell the node once per session to stop it."""
        stream_id = frame.stream_frame.stream_id
        if frame.stream_frame.end or session.was_cancelled(stream_id):
            return
        cancel = make_stream_cancel(
            source=self.name,
            resource=frame.route.resource,
            stream_id=stream_id,
            reason="nobody reads this stream any more",
        )
        if not session.feeder.push(cancel):
            return
        session.cancelled(stream_id)
        log.info("cloudhub: told node %s to stop log stream %s", node, stream_id)

    async def _relay_stream(self, node: str, msg: Message, stream_id: str) -> None:
        owner_node, module, _ = self.streams[stream_id]
        if owner_node != node:
            log.warning(
                "cloudhub: node %s answered stream %s of node %s", node, stream_id, owner_node
            )
            return
        if is_ack(msg):  # the node took the query; its frames follow
            return
        if msg.route.operation == Operation.ERROR or msg.stream_frame.end:
            del self.streams[stream_id]
        msg.route.resource = with_node(node, msg.route.resource)
        try:
            await self.bus.send(module, msg)
        except UnknownModule:
            self.streams.pop(stream_id, None)

    def _end_stream(self, stream_id: str, reason: str) -> None:
        """Tell the module waiting on a stream that it ended without its last frame."""
        node, module, _ = self.streams.pop(stream_id)
        err = new_message(
            source=self.name,
            group=Group.RESOURCE,
            operation=Operation.ERROR,
            resource=with_node(node, "null/stream/" + stream_id),
            parent_id=stream_id,
        )
        err.error.code = 503
        err.error.message = reason
        try:
            self.bus.send_nowait(module, err)
        except (asyncio.QueueFull, UnknownModule):
            log.warning("cloudhub: could not tell %s that stream %s ended", module, stream_id)

    def _stream_of(self, msg: Message) -> str:
        """The open stream a message from a node answers, or ""."""
        stream_id = msg.header.parent_id
        if not stream_id and msg.WhichOneof("body") == "stream_frame":
            stream_id = msg.stream_frame.stream_id
        return stream_id if stream_id in self.streams else ""

    def _acked(self, node: str, msg: Message) -> None:
        """Tell synccontroller (group sync) which object version a node now holds."""
        if msg.WhichOneof("body") != "object" or not self.bus.has_group(Group.SYNC):
            return
        notice = make_ack(msg, source=self.name)
        notice.route.group = Group.SYNC
        notice.route.resource = with_node(node, msg.route.resource)
        notice.route.operation = msg.route.operation  # insert/update/delete that was applied
        notice.ack.resource_version = msg.header.resource_version
        try:
            self.bus.send_nowait_group(Group.SYNC, notice)
        except asyncio.QueueFull:
            log.warning(
                "cloudhub: synccontroller is behind; ack of %s not recorded", msg.route.resource
            )

    # -- upstream: node -> bus --------------------------------------------------------------

    async def on_frame(self, session: NodeSession, msgs: list[Message]) -> None:
        node = session.node
        if self.metrics is not None:
            self.metrics.hub_received.labels(node).inc(len(msgs))
        to_record: list[Message] = []
        for msg in msgs:
            try:
                validate(msg)
            except BadMessage as exc:
                log.warning("cloudhub: bad message from node %s: %s", node, exc.reason)
                session.feeder.push(
                    make_error(msg, source=self.name, code=exc.code, reason=exc.reason)
                )
                continue
            stream_id = self._stream_of(msg)
            if stream_id:
                await self._relay_stream(node, msg, stream_id)
                continue
            op = msg.route.operation
            if is_ack(msg) or (op == Operation.ERROR and msg.header.parent_id):
                if self.outbox.ack(node, msg.header.parent_id) and op == Operation.ERROR:
                    log.warning(
                        "cloudhub: node %s rejected message %s: %s",
                        node,
                        msg.header.parent_id,
                        msg.error.message,
                    )
                msg.route.resource = with_node(node, msg.route.resource)
                self.bus.respond(msg)
                continue
            if op == Operation.KEEPALIVE:
                reply = make_ack(msg, source=self.name)
                reply.route.operation = Operation.KEEPALIVE
                reply.keepalive.unacked = self.outbox.pending(node)
                session.feeder.push(reply)
                continue
            if msg.WhichOneof("body") == "stream_frame":
                self._stray_frame(node, session, msg)
                continue
            if msg.header.parent_id:  # the edge's answer to a cloud module's request
                msg.route.resource = with_node(node, msg.route.resource)
                if not self.bus.respond(msg):
                    log.debug("cloudhub: late reply %s from %s", msg.header.parent_id, node)
                continue
            to_record.append(msg)
        if to_record:
            # Shielded: a session replaced or dropped mid-way must not leave messages recorded
            # (so later resends count as duplicates) but never handed on.
            await asyncio.shield(self._record_and_dispatch(session, to_record))

    async def _record_and_dispatch(self, session: NodeSession, msgs: list[Message]) -> None:
        node = session.node
        routable = [msg for msg in msgs if self._admit(session, msg)]
        fresh = await self.inbox.record(node, routable)
        for msg in routable:  # acked only now that the record is committed
            session.feeder.push(make_ack(msg, source=self.name))
        await self._dispatch(node, fresh)

    def _admit(self, session: NodeSession, msg: Message) -> bool:
        """Whether to record, ack and hand on `msg`: some module serves its group and its node
        may send it. A refusal is answered here; a message the authorizer cannot decide yet
        gets no answer, so the node resends it."""
        if not self.bus.has_group(msg.route.group):
            reason = f"no cloud module serves group {msg.route.group!r}"
            session.feeder.push(make_error(msg, source=self.name, code=404, reason=reason))
            return False
        decision = self.authorizer.decide(session.node, msg)
        if isinstance(decision, Denied):
            err = make_error(msg, source=self.name, code=403, reason=decision.reason)
            session.feeder.push(err)
        return decision is Verdict.ALLOW

    async def _dispatch(self, node: str, msgs: list[Message]) -> None:
        delivered = []
        for msg in msgs:
            msg.route.resource = with_node(node, msg.route.resource)
            try:
                await self.bus.send_to_group(msg.route.group, msg)
            except UnknownModule:
                log.error(
                    "cloudhub: group %s vanished; message %s kept", msg.route.group, msg.header.id
                )
                continue
            delivered.append((node, msg.header.id))
        if delivered:
            await self.inbox.mark_delivered(delivered)

    async def _redeliver(self) -> None:
        """Hand on what was recorded but not handed on before a restart; then stay (the
        module's loops live and die together)."""
        pending = self.inbox.undelivered()
        if pending:
            log.info("cloudhub: handing on %d recorded upstream message(s)", len(pending))
        for node, msg in pending:
            await self._dispatch(node, [msg])
        await asyncio.Event().wait()

    async def _housekeeping(self) -> None:
        interval = max(0.05, min(1.0, self.settings.resend_interval))
        while True:
            await asyncio.sleep(interval)
            await self.outbox.flush_acks()
            await self.inbox.prune()

    async def _revocation_sweep(self) -> None:
        """End the streams of nodes whose certificates were revoked since they connected."""
        assert self.authority is not None
        while True:
            await asyncio.sleep(self.settings.revocation_check_period)
            try:
                revoked = await self.authority.revocations()
            except KubeAPIError as exc:
                log.warning("cloudhub: cannot read revocations: %s", exc)
                continue
            for node, session in list(self.sessions.items()):
                before = revoked.get(node)
                if session.cert is not None and self.authority.is_revoked(session.cert, before):
                    session.end(f"certificate revoked (node {node}'s certificates up to {before})")

    # -- sessions --------------------------------------------------------------------------

    def open_session(self, node: str, cert: x509.Certificate | None = None) -> NodeSession:
        old = self.sessions.get(node)
        if old is not None:
            old.end("replaced by a newer stream from the same node")
        self.outbox.reset(node)
        feeder = LinkFeeder(
            self.outbox,
            node,
            batch_size=self.settings.batch_size,
            max_frame_bytes=self.settings.max_message_bytes - 1024,
        )
        session = NodeSession(node, feeder, self.settings.keepalive_timeout, self.metrics, cert)
        self.sessions[node] = session
        log.info("cloudhub: node %s connected", node)
        return session

    def close_session(self, session: NodeSession) -> None:
        if self.sessions.get(session.node) is session:
            del self.sessions[session.node]
        # Its open streams are over, even when a newer stream replaced it: what the node had
        # queued for them may be lost, and their frames on the new stream count as strays.
        for stream_id in [s for s, (_, _, on) in self.streams.items() if on is session]:
            self._end_stream(stream_id, f"node {session.node} disconnected (its hub stream ended)")
        log.info("cloudhub: node %s disconnected: %s", session.node, session.end_reason)

    def connected_nodes(self) -> list[str]:
        return sorted(self.sessions)

    def is_connected(self, node: str) -> bool:
        return node in self.sessions

    def queue_depths(self) -> dict[str, int]:
        """Messages waiting (queued or un-acked) per node, connected or not."""
        nodes = set(self.outbox.targets()) | set(self.sessions)
        return {node: self.outbox.pending(node) for node in nodes}


class _Servicer(hub_pb2_grpc.HubServiceServicer):  # type: ignore[misc]  # generated, untyped
    def __init__(self, hub: CloudHub) -> None:
        self.hub = hub

    async def _certified(self, context: Any, claimed: str) -> tuple[str, x509.Certificate]:
        """The certificate's node, if it may connect as the node it claims (if it claims one)
        and its certificates are not revoked; else abort."""
        assert self.hub.authority is not None
        node, cert = await certified_node(context)
        if claimed and claimed != node:
            await context.abort(
                grpc.StatusCode.PERMISSION_DENIED,
                f"the client certificate is for node {node!r}; it may not connect as {claimed!r}",
            )
        try:
            await self.hub.authority.check_not_revoked(node, cert, strict=False)
        except Refused as exc:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, exc.reason)
        return node, cert

    async def Connect(
        self, request_iterator: AsyncIterator[hub_pb2.ConnectRequest], context: Any
    ) -> None:
        claimed = dict(context.invocation_metadata() or ()).get(NODE_NAME_METADATA, "")
        cert: x509.Certificate | None = None
        if self.hub.authority is None:
            node = claimed
        else:
            node, cert = await self._certified(context, claimed)
        if not node:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"call metadata must name the edge node in {NODE_NAME_METADATA!r}",
            )
        if not valid_node_name(node):
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"node name {node!r} is not a valid Kubernetes node name",
            )
        session = self.hub.open_session(node, cert)
        try:
            await session.serve(context, self.hub.on_frame)
        finally:
            self.hub.close_session(session)
        if session.end_reason.startswith("certificate"):
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, session.end_reason)
        if session.end_reason.startswith("replaced"):
            await context.abort(grpc.StatusCode.ABORTED, session.end_reason)
        if session.end_reason.startswith("no message"):
            await context.abort(grpc.StatusCode.DEADLINE_EXCEEDED, session.end_reason)


async def certified_node(context: Any) -> tuple[str, x509.Certificate]:
    """The node the caller's client certificate names, and that certificate; or abort
    UNAUTHENTICATED."""
    auth = context.auth_context() or {}
    names = auth.get("x509_common_name") or []
    user = names[0].decode("utf-8", "replace") if names else ""
    pems = auth.get("x509_pem_cert") or []
    if not user.startswith(NODE_USER_PREFIX) or not pems:
        await context.abort(
            grpc.StatusCode.UNAUTHENTICATED,
            f"a node certificate (CN {NODE_USER_PREFIX}NAME) is required; got {user!r}",
        )
    return user.removeprefix(NODE_USER_PREFIX), certs.load_cert(pems[0])


class _Renewer(certificates_pb2_grpc.CertificateServiceServicer):  # type: ignore[misc]
    def __init__(self, authority: EdgeAuthority) -> None:
        self.authority = authority

    async def Renew(
        self, request: certificates_pb2.RenewRequest, context: Any
    ) -> certificates_pb2.RenewResponse:
        node, current = await certified_node(context)
        try:
            return await self.authority.renew(node, current, request.csr_der)
        except KubeAPIError as exc:
            await context.abort(grpc.StatusCode.UNAVAILABLE, f"cannot renew now: {exc}")
            raise  # abort raises; this line is never reached
        except Refused as exc:
            await _refuse(context, exc)
            raise


async def _refuse(context: Any, refused: Refused) -> None:
    """Abort the call: INVALID_ARGUMENT for a malformed request, else UNAUTHENTICATED."""
    malformed = grpc.StatusCode.INVALID_ARGUMENT
    await context.abort(
        malformed if refused.malformed else grpc.StatusCode.UNAUTHENTICATED, refused.reason
    )


class _Bootstrap(certificates_pb2_grpc.BootstrapServiceServicer):  # type: ignore[misc]
    def __init__(self, authority: EdgeAuthority) -> None:
        self.authority = authority

    async def Join(
        self, request: certificates_pb2.JoinRequest, context: Any
    ) -> certificates_pb2.JoinResponse:
        try:
            return await self.authority.join(request)
        except KubeAPIError as exc:
            log.error("cloudhub: join as %r failed: %s", request.node_name[:253], exc)
            await context.abort(grpc.StatusCode.UNAVAILABLE, f"cannot check the token: {exc}")
            raise
        except Refused as exc:
            log.warning("cloudhub: join as %r refused: %s", request.node_name[:253], exc.reason)
            await _refuse(context, exc)
            raise
