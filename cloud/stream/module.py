"""cloudstream: the kubelet API of edge nodes, where kube-apiserver looks for it.

kube-apiserver serves `kubectl logs` by calling the pod's node:
`GET https://NODE:PORT/containerLogs/NS/POD/CONTAINER?follow=...&tailLines=...`. An edge node is
not reachable from the cloud — it dials the hub, not the other way round — so the control
plane's egress selector sends that traffic ("cluster" egress, HTTPConnect over a unix socket)
to cloudcore instead. cloudstream accepts the CONNECT, terminates TLS with a certificate of its
own (the API server verifies kubelet certificates only when given
--kubelet-certificate-authority), and answers from the pod's node over the hub: the request
goes to edgecontroller's log streamer, which relays the node's frames. KubeEdge's cloudstream
does the same job through iptables rules and a tunnel port; a unix socket needs neither.

The egress selector's "cluster" traffic is more than kubelet calls: webhooks, aggregated API
servers, pods/services proxy. cloudstream is a plain CONNECT proxy for all of that — it dials
the target and copies bytes both ways, as if there were no egress selector — and intercepts
only targets that are an edge node's address (the kubelet the API server believes is there).

Served for edge nodes: /containerLogs only. Anything else (exec, attach, port-forward, stats)
gets 404 with a Kubernetes Status saying so. The socket is created 0600: only its owner (the
user cloudcore runs as — root, like the API server) can connect. At most
--stream-max-tunnels tunnels are open at once; more are answered 503. Without
--kubelet-tunnel-socket the module idles.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import os
import socket
import ssl
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path

from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from cloud.edgecontroller.logs import status_response
from cloud.kube import Obj
from cloud.settings import CloudSettings
from common.bus import Bus
from common.names import Group, Module

log = logging.getLogger(__name__)

LogStreamer = Callable[[web.Request, Obj], Awaitable[web.StreamResponse]]
PodLookup = Callable[[str, str], Obj | None]
MAX_CONNECT_BYTES = 8192  # a CONNECT request head is a few hundred bytes


class CloudStream:
    name: str = Module.CLOUDSTREAM
    group: str = Group.STREAM

    def __init__(self, bus: Bus, settings: CloudSettings) -> None:
        self.bus = bus
        self.path = settings.kubelet_tunnel_socket
        self.timeout = settings.stream_connect_timeout
        self.pods: PodLookup = lambda namespace, name: None  # edgecontroller's cache, wired in main
        self.edge_addresses: Callable[[], set[str]] = set  # likewise: where edge kubelets "are"
        self._slots = asyncio.Semaphore(settings.stream_max_tunnels)
        self.log_streamer: LogStreamer | None = None
        self.max_tunnels = settings.stream_max_tunnels
        self._runner: web.AppRunner | None = None
        self._listener: socket.socket | None = None
        self._ssl = _self_signed_context()

    def install(self, streamer: LogStreamer) -> None:
        """Where edgecontroller plugs in its pods/log streamer."""
        self.log_streamer = streamer

    async def run(self) -> None:
        if not self.path:
            await asyncio.Event().wait()  # not configured: nothing to serve
        if self._runner is None:
            await self._start()
        assert self._listener is not None
        loop = asyncio.get_running_loop()
        async with asyncio.TaskGroup() as tunnels:
            while True:
                conn, _ = await loop.sock_accept(self._listener)
                if self._slots.locked():
                    log.warning("cloudstream: %d tunnels open; refusing one more", self.max_tunnels)
                    await _answer(loop, conn, b"503 Service Unavailable")
                    continue
                tunnels.create_task(self._tunnel(conn), name="cloudstream-tunnel")

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_get("/containerLogs/{namespace}/{pod}/{container}", self._logs)
        app.router.add_route("*", "/{tail:.*}", self._unsupported)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        self._runner = runner
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)  # left by a cloudcore that was killed
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(self.path)
        os.chmod(self.path, 0o600)  # before listen(): nobody can connect in between
        listener.listen(64)
        listener.setblocking(False)
        self._listener = listener
        log.info("cloudstream: kubelet API of edge nodes on unix://%s", self.path)

    async def _tunnel(self, conn: socket.socket) -> None:
        """One HTTP CONNECT from the API server: an edge node's kubelet is answered here (HTTPS
        on the tunnel); any other target is dialled and piped."""
        loop = asyncio.get_running_loop()
        async with self._slots:
            try:
                async with asyncio.timeout(self.timeout):
                    target = await _read_connect(loop, conn)
            except (TimeoutError, OSError, ValueError) as exc:
                log.warning("cloudstream: refused a tunnel: %s", exc)
                await _answer(loop, conn, b"400 Bad Request")
                return
            host = target.rsplit(":", 1)[0].strip("[]")
            try:
                if host in self.edge_addresses():
                    await self._serve_kubelet(loop, conn, target)
                else:
                    await self._pipe(loop, conn, target)
            except OSError as exc:  # one broken tunnel must not end the others
                log.warning("cloudstream: tunnel to %s failed: %s", target, exc)
                conn.close()

    async def _serve_kubelet(
        self, loop: asyncio.AbstractEventLoop, conn: socket.socket, target: str
    ) -> None:
        await loop.sock_sendall(conn, b"HTTP/1.1 200 Connection established\r\n\r\n")
        log.debug("cloudstream: kubelet tunnel to %s", target)
        assert self._runner is not None and self._runner.server is not None
        try:
            transport, _ = await loop.connect_accepted_socket(
                self._runner.server, conn, ssl=self._ssl
            )
        except (OSError, ssl.SSLError) as exc:
            log.warning("cloudstream: TLS on a tunnel to %s failed: %s", target, exc)
            conn.close()
            return
        # Hold the slot while the connection lives (aiohttp's protocol has no close event).
        while True:
            if transport.is_closing():
                return
            await asyncio.sleep(1.0)

    async def _pipe(
        self, loop: asyncio.AbstractEventLoop, conn: socket.socket, target: str
    ) -> None:
        host, _, port = target.rpartition(":")
        try:
            async with asyncio.timeout(self.timeout):
                far_reader, far_writer = await asyncio.open_connection(host.strip("[]"), int(port))
        except (TimeoutError, OSError, ValueError) as exc:
            log.info("cloudstream: cannot reach %s for the API server: %s", target, exc)
            await _answer(loop, conn, b"502 Bad Gateway")
            return
        await loop.sock_sendall(conn, b"HTTP/1.1 200 Connection established\r\n\r\n")
        near_reader, near_writer = await asyncio.open_connection(sock=conn)
        async with asyncio.TaskGroup() as both:
            both.create_task(_copy(near_reader, far_writer))
            both.create_task(_copy(far_reader, near_writer))

    async def _logs(self, request: web.Request) -> web.StreamResponse:
        ns, name = request.match_info["namespace"], request.match_info["pod"]
        pod = self.pods(ns, name)
        if pod is None:
            return status_response(404, f"pod {ns}/{name} is not on an edge node cloudcore knows")
        if self.log_streamer is None:
            return status_response(503, "cloudcore is still starting")
        # The kubelet takes the container from the path; the streamer reads it as pods/log does.
        query = {**request.query, "container": request.match_info["container"]}
        as_pods_log = request.clone(rel_url=request.rel_url.with_query(query))
        return await self.log_streamer(as_pods_log, pod)

    async def _unsupported(self, request: web.Request) -> web.Response:
        return status_response(
            404, f"{request.path}: edge nodes serve only /containerLogs through cloudcore"
        )

    async def close(self) -> None:
        if self._listener is not None:
            self._listener.close()
            self._listener = None
            with contextlib.suppress(OSError):
                os.unlink(self.path)
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


async def _read_connect(loop: asyncio.AbstractEventLoop, conn: socket.socket) -> str:
    """Read the CONNECT request head (nothing follows it until we answer); its target."""
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = await loop.sock_recv(conn, 1024)
        if not chunk:
            raise ValueError("closed before the CONNECT request ended")
        head += chunk
        if len(head) > MAX_CONNECT_BYTES:
            raise ValueError("CONNECT request head too large")
    method, target, _ = (head.split(b"\r\n", 1)[0].decode("latin-1") + "  ").split(" ", 2)
    if method != "CONNECT" or not target:
        raise ValueError(f"expected CONNECT, got {method!r}")
    return target


async def _answer(loop: asyncio.AbstractEventLoop, conn: socket.socket, status: bytes) -> None:
    """Answer a CONNECT with an error status and close the connection."""
    with contextlib.suppress(OSError):
        await loop.sock_sendall(conn, b"HTTP/1.1 " + status + b"\r\n\r\n")
    conn.close()


async def _copy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Bytes from one side to the other until EOF or an error on either; then close."""
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except OSError as exc:
        log.debug("cloudstream: a piped connection ended: %s", exc)
    finally:
        writer.close()


def _self_signed_context() -> ssl.SSLContext:
    """A server context with a fresh self-signed certificate (kept in memory only)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kubeedge-py-cloudstream")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=3650))
        .sign(key, hashes.SHA256())
    )
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    # load_cert_chain reads files only: write both to a private temporary directory.
    with tempfile.TemporaryDirectory() as tmp:
        cert_path, key_path = Path(tmp, "tls.crt"), Path(tmp, "tls.key")
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        fd = os.open(key_path, os.O_WRONLY | os.O_CREAT, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(
                key.private_bytes(
                    serialization.Encoding.PEM,
                    serialization.PrivateFormat.PKCS8,
                    serialization.NoEncryption(),
                )
            )
        ctx.load_cert_chain(cert_path, key_path)
    return ctx
