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

Served: /containerLogs only. Anything else (exec, attach, port-forward) gets 404 with a
Kubernetes Status saying so. The socket is created 0600: only root (the API server) connects.
Without --kubelet-tunnel-socket the module idles.
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
CONNECT_TIMEOUT = 10.0


class CloudStream:
    name: str = Module.CLOUDSTREAM
    group: str = Group.STREAM

    def __init__(self, bus: Bus, settings: CloudSettings) -> None:
        self.bus = bus
        self.path = settings.kubelet_tunnel_socket
        self.pods: PodLookup = lambda namespace, name: None  # edgecontroller's cache, wired in main
        self.log_streamer: LogStreamer | None = None
        self.tunnels = 0  # CONNECTs accepted (metrics, tests)
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
        """One HTTP CONNECT from the API server: answer 200, then serve HTTPS on it."""
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT):
                target = await _read_connect(loop, conn)
            await loop.sock_sendall(conn, b"HTTP/1.1 200 Connection established\r\n\r\n")
        except (TimeoutError, OSError, ValueError) as exc:
            log.warning("cloudstream: refused a tunnel: %s", exc)
            with contextlib.suppress(OSError):
                await loop.sock_sendall(conn, b"HTTP/1.1 400 Bad Request\r\n\r\n")
            conn.close()
            return
        self.tunnels += 1
        log.debug("cloudstream: tunnel to %s", target)
        assert self._runner is not None and self._runner.server is not None
        try:
            await loop.connect_accepted_socket(self._runner.server, conn, ssl=self._ssl)
        except (OSError, ssl.SSLError) as exc:
            log.warning("cloudstream: TLS on a tunnel failed: %s", exc)
            conn.close()

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
