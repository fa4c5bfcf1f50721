"""cloudstream as kube-apiserver's egress sees it: HTTP CONNECT on a unix socket, then TLS,
then kubelet API requests. The log streamer is a fake standing where edgecontroller's
LogStreams plugs in (the whole path, through a real kube-apiserver and edge node, is
tests/e2e/test_pods.py); here the protocol edges and bad input are the point."""

from __future__ import annotations

import asyncio
import json
import os
import ssl
import stat
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from cloud.settings import CloudSettings
from cloud.stream.module import CloudStream
from common.bus import Bus

PODS = {("default", "web"): {"metadata": {"name": "web", "namespace": "default"}}}


async def fake_streamer(request: web.Request, pod: Any) -> web.StreamResponse:
    """Echoes what the streamer was asked for (container and tailLines) as the log body."""
    body = (
        f"{pod['metadata']['name']} {request.query['container']} {request.query.get('tailLines')}"
    )
    return web.Response(text=body)


@pytest.fixture
async def stream(tmp_path: Path) -> AsyncIterator[CloudStream]:
    socket = tmp_path / "tunnel.sock"
    cfg = CloudSettings(
        data_dir=tmp_path,
        kubelet_tunnel_socket=str(socket),
        kubeconfig="x",
        stream_max_tunnels=3,
        stream_connect_timeout=2.0,
    )
    module = CloudStream(Bus(), cfg)
    module.pods = lambda ns, name: PODS.get((ns, name))
    module.edge_addresses = lambda: {"10.0.0.5", "edge-host"}
    module.install(fake_streamer)
    task = asyncio.create_task(module.run(), name="cloudstream")
    for _ in range(100):
        if socket.exists():
            break
        await asyncio.sleep(0.02)
    yield module
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await module.close()


async def tunnel(
    path: str, head: bytes
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, bytes]:
    reader, writer = await asyncio.open_unix_connection(path)
    writer.write(head)
    await writer.drain()
    status = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    return reader, writer, status


async def get(stream: CloudStream, path: str) -> tuple[int, bytes]:
    """One kubelet API request through a fresh tunnel, as kube-apiserver makes it."""
    reader, writer, status = await tunnel(
        stream.path, b"CONNECT 10.0.0.5:10250 HTTP/1.1\r\nHost: 10.0.0.5:10250\r\n\r\n"
    )
    assert status.startswith(b"HTTP/1.1 200")
    ctx = ssl.create_default_context()
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE  # as the API server, by default
    await writer.start_tls(ctx)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: 10.0.0.5\r\nConnection: close\r\n\r\n".encode())
    await writer.drain()
    raw = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


async def test_container_logs_reach_the_streamer_with_container_from_the_path(
    stream: CloudStream,
) -> None:
    """GET /containerLogs/NS/POD/CONTAINER is answered by the log streamer, which sees the
    container (from the path) and the query as pods/log would."""
    code, body = await get(stream, "/containerLogs/default/web/httpd?tailLines=3")
    assert code == 200 and b"web httpd 3" in body


@pytest.mark.parametrize(
    ("path", "code", "words"),
    [
        pytest.param(
            "/containerLogs/default/ghost/c", 404, "not on an edge node", id="unknown-pod"
        ),
        pytest.param("/exec/default/web/c?command=sh", 404, "only /containerLogs", id="exec"),
        pytest.param("/pods", 404, "only /containerLogs", id="other"),
    ],
)
async def test_what_cannot_be_served_gets_a_status(
    stream: CloudStream, path: str, code: int, words: str
) -> None:
    """Unknown pods and unsupported kubelet endpoints get a Kubernetes Status with a reason."""
    got, body = await get(stream, path)
    status = json.loads(body)
    assert got == code and status["kind"] == "Status" and words in status["message"]


async def test_bad_tunnel_requests_are_refused_and_serving_goes_on(stream: CloudStream) -> None:
    """A request that is not CONNECT gets 400 and its connection closed; the next good
    request is served."""
    _, writer, status = await tunnel(stream.path, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert status.startswith(b"HTTP/1.1 400")
    writer.close()
    code, _ = await get(stream, "/containerLogs/default/web/httpd")
    assert code == 200


async def test_socket_is_private(stream: CloudStream) -> None:
    """Only root may connect: the socket is 0600."""
    assert stat.S_IMODE(os.stat(stream.path).st_mode) == 0o600


async def test_other_targets_are_piped_through(stream: CloudStream) -> None:
    """A CONNECT to what is not an edge node (a webhook, an aggregated API) is dialled and
    bytes flow both ways, as if there were no egress selector."""

    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(await reader.readexactly(5))
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(echo, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        reader, writer, status = await tunnel(
            stream.path, f"CONNECT 127.0.0.1:{port} HTTP/1.1\r\n\r\n".encode()
        )
        assert status.startswith(b"HTTP/1.1 200")
        writer.write(b"hello")
        assert await asyncio.wait_for(reader.read(), 5) == b"hello"
        writer.close()
    finally:
        server.close()
        await server.wait_closed()


async def test_unreachable_target_gets_502(stream: CloudStream) -> None:
    """A target nothing listens on is answered 502, not left hanging."""
    _, writer, status = await tunnel(stream.path, b"CONNECT 127.0.0.1:1 HTTP/1.1\r\n\r\n")
    assert status.startswith(b"HTTP/1.1 502")
    writer.close()


async def test_tunnels_are_bounded(stream: CloudStream) -> None:
    """Beyond --stream-max-tunnels open tunnels a new one is answered 503; when one closes,
    the next is served again."""
    held = []
    for _ in range(3):  # open and silent: each holds a slot until the CONNECT timeout
        held.append(await asyncio.open_unix_connection(stream.path))
    await asyncio.sleep(0.1)
    _, writer, status = await tunnel(stream.path, b"CONNECT 10.0.0.5:10250 HTTP/1.1\r\n\r\n")
    assert status.startswith(b"HTTP/1.1 503")
    writer.close()
    for _, w in held:
        w.close()
    await asyncio.sleep(0.1)
    code, _ = await get(stream, "/containerLogs/default/web/httpd")
    assert code == 200
