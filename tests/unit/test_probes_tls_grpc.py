"""Probes and volumes edged once refused (issue 10): httpGet over HTTPS without verifying the
certificate, grpc.health.v1 probes, and emptyDir medium Memory as a tmpfs on the volume's folder.
Each against the real thing: a TLS server, a grpc.aio server, the kernel's mount table."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from common import certs
from edge.edged import podspec, volumes
from edge.edged.probes import run_probe

UID = "0b1c2d3e-uid"


async def no_exec(command: list[str], timeout: float) -> int:
    raise AssertionError("no exec probe here")


# -- httpGet over HTTPS ---------------------------------------------------------------------


class TlsServer:
    """An HTTPS server on 127.0.0.1 whose certificate no client could verify (an unknown CA,
    a name that is not the address); it answers every request with `status`."""

    def __init__(self, tmp_path: Path) -> None:
        ca, ca_key = certs.new_ca("nobody's CA", dt.timedelta(days=1))
        key = certs.new_key()
        template = certs.server_template("pod", ["not-this-host.example"])
        cert = certs.issue(ca, ca_key, key.public_key(), template, dt.timedelta(days=1))
        (tmp_path / "tls.crt").write_bytes(certs.cert_pem(cert))
        (tmp_path / "tls.key").write_bytes(certs.key_pem(key))
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(tmp_path / "tls.crt", tmp_path / "tls.key")
        self.status = 200
        self.requests: list[bytes] = []

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            self.requests.append(await reader.readuntil(b"\r\n\r\n"))
            writer.write(f"HTTP/1.1 {self.status} X\r\nContent-Length: 0\r\n\r\n".encode())
            await writer.drain()
        finally:
            writer.close()


@pytest.fixture
async def https(tmp_path: Path) -> AsyncIterator[tuple[TlsServer, int]]:
    tls = TlsServer(tmp_path)
    server = await asyncio.start_server(tls.handle, "127.0.0.1", 0, ssl=tls.context)
    async with server:
        yield tls, server.sockets[0].getsockname()[1]


def http_get(port: int | str, **extra: Any) -> dict[str, Any]:
    return {"httpGet": {"port": port, "scheme": "HTTPS", **extra}, "timeoutSeconds": 2}


async def test_https_probe_passes_without_verifying_the_certificate(
    https: tuple[TlsServer, int],
) -> None:
    """A 200 over TLS passes though the certificate is trusted by no one; path and headers go."""
    tls, port = https
    spec = http_get(port, path="/healthz", httpHeaders=[{"name": "X-Probe", "value": "yes"}])
    assert await run_probe(spec, {"name": "app"}, "127.0.0.1", no_exec)
    assert tls.requests[0].startswith(b"GET /healthz HTTP/1.0\r\n")
    assert b"\r\nX-Probe: yes\r\n" in tls.requests[0]


@pytest.mark.parametrize(
    ("status", "ok"),
    [
        pytest.param(500, False, id="500-fails"),
        pytest.param(404, False, id="404-fails"),
        pytest.param(302, True, id="redirect-passes"),
    ],
)
async def test_https_probe_judges_the_status(
    https: tuple[TlsServer, int], status: int, ok: bool
) -> None:
    """The kubelet's rule over TLS too: 200 <= status < 400 passes, anything else fails."""
    tls, port = https
    tls.status = status
    assert await run_probe(http_get(port), {"name": "app"}, "127.0.0.1", no_exec) is ok


async def test_https_probe_finds_a_named_port(https: tuple[TlsServer, int]) -> None:
    """port by name: the container's port of that name."""
    _, port = https
    container = {"name": "app", "ports": [{"name": "tls", "containerPort": port}]}
    assert await run_probe(http_get("tls"), container, "127.0.0.1", no_exec)


async def test_plain_http_to_a_tls_server_fails(https: tuple[TlsServer, int]) -> None:
    """The scheme is what decides TLS: an HTTP probe of the same server does not pass."""
    _, port = https
    spec = {"httpGet": {"port": port}, "timeoutSeconds": 1}
    assert not await run_probe(spec, {"name": "app"}, "127.0.0.1", no_exec)


# -- grpc ------------------------------------------------------------------------------------


@pytest.fixture
async def grpc_port() -> AsyncIterator[int]:
    """A grpc.aio server with the health service: "" SERVING, "down" NOT_SERVING."""
    server = grpc.aio.server()
    servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    await servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    await servicer.set("down", health_pb2.HealthCheckResponse.NOT_SERVING)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    yield port
    await server.stop(None)


def grpc_probe(port: int, service: str | None = None) -> dict[str, Any]:
    probe: dict[str, Any] = {"port": port}
    if service is not None:
        probe["service"] = service
    return {"grpc": probe, "timeoutSeconds": 1}


@pytest.mark.parametrize(
    ("service", "ok"),
    [
        pytest.param(None, True, id="default-service-serving"),
        pytest.param("down", False, id="not-serving"),
        pytest.param("nobody", False, id="unknown-service"),
    ],
)
async def test_grpc_probe_passes_only_when_serving(
    grpc_port: int, service: str | None, ok: bool
) -> None:
    """Health/Check of `service` (default ""): SERVING passes; NOT_SERVING and NOT_FOUND fail."""
    spec = grpc_probe(grpc_port, service)
    assert await run_probe(spec, {"name": "app"}, "127.0.0.1", no_exec) is ok


async def test_grpc_probe_of_a_server_without_health_fails() -> None:
    """UNIMPLEMENTED (no health service registered) is a failure, not a pass."""
    server = grpc.aio.server()
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        assert not await run_probe(grpc_probe(port), {"name": "app"}, "127.0.0.1", no_exec)
    finally:
        await server.stop(None)


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


class SilentServer:
    """Accepts connections and never says a word: a grpc call there can only time out. The
    first connection the client hangs up is noted; any still open at the end are closed."""

    def __init__(self) -> None:
        self.hung_up = asyncio.Event()
        self.open: set[asyncio.StreamWriter] = set()

    async def hold(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.open.add(writer)
        try:
            await reader.read()
            self.hung_up.set()
        finally:
            self.open.discard(writer)
            writer.close()


async def test_grpc_probe_of_a_closed_port_fails_quickly() -> None:
    """Nothing listening: UNAVAILABLE, well within timeoutSeconds."""
    started = time.monotonic()
    assert not await run_probe(grpc_probe(closed_port()), {"name": "app"}, "127.0.0.1", no_exec)
    assert time.monotonic() - started < 3  # timeoutSeconds is 1; a loaded machine adds


async def test_grpc_probe_of_a_silent_server_fails_at_its_timeout_and_hangs_up() -> None:
    """A server that never answers: the probe fails at timeoutSeconds, and its connection ends
    right after (grpc alone would keep the handshake going for 20 s)."""
    silent = SilentServer()
    server = await asyncio.start_server(silent.hold, "127.0.0.1", 0)
    async with server:
        port = server.sockets[0].getsockname()[1]
        started = time.monotonic()
        try:
            assert not await run_probe(grpc_probe(port), {"name": "app"}, "127.0.0.1", no_exec)
            assert 0.9 <= time.monotonic() - started < 3  # at timeoutSeconds (1), not 20 s
            await asyncio.wait_for(silent.hung_up.wait(), 2)
        finally:
            for writer in list(silent.open):  # ends their handlers: no task left behind
                writer.close()
            await asyncio.sleep(0)


# -- emptyDir medium Memory ------------------------------------------------------------------


def memory_pod(**empty_dir: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": "p", "namespace": "default", "uid": UID},
        "spec": {
            "volumes": [{"name": "cache", "emptyDir": {"medium": "Memory", **empty_dir}}],
            "containers": [{"name": "app", "image": "busybox"}],
        },
    }


def no_objects(kind: str, namespace: str, name: str) -> dict[str, Any] | None:
    return None


def mounts_at(path: Path) -> list[tuple[str, str]]:
    """(fstype, super options) of each mount on `path`, from /proc/self/mountinfo."""
    found = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields, _, tail = line.partition(" - ")
        if fields.split(" ")[4] == str(path):
            fstype, _source, options = tail.split(" ")[:3]
            found.append((fstype, options))
    return found


needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root")


@needs_root
def test_a_memory_empty_dir_is_one_tmpfs_of_its_size_limit(tmp_path: Path) -> None:
    """prepare mounts a tmpfs of sizeLimit; preparing again (each sync, an edgecore restart)
    keeps that one, with what the pod wrote, and stacks no second."""
    found = volumes.prepare(tmp_path, memory_pod(sizeLimit="16Mi"), no_objects)
    cache = Path(found["cache"])
    try:
        assert mounts_at(cache) == [("tmpfs", mounts_at(cache)[0][1])]
        assert "size=16384k" in mounts_at(cache)[0][1].split(",")
        (cache / "kept").write_text("in memory")
        volumes.prepare(tmp_path, memory_pod(sizeLimit="16Mi"), no_objects)
        assert len(mounts_at(cache)) == 1
        assert (cache / "kept").read_text() == "in memory"
    finally:
        volumes.remove(tmp_path, UID)
    assert mounts_at(cache) == []
    assert not volumes.pod_dir(tmp_path, UID).exists()


@needs_root
def test_a_memory_empty_dir_without_a_limit_gets_tmpfs_default(tmp_path: Path) -> None:
    """No sizeLimit: still a tmpfs (half the node's memory), never an unlimited one."""
    cache = Path(volumes.prepare(tmp_path, memory_pod(), no_objects)["cache"])
    try:
        assert [fstype for fstype, _ in mounts_at(cache)] == ["tmpfs"]
        fs = os.statvfs(cache)  # an unlimited tmpfs would show no blocks at all
        half = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // 2
        assert 0 < fs.f_blocks * fs.f_frsize <= half
    finally:
        volumes.remove(tmp_path, UID)
    assert mounts_at(cache) == []


def test_a_bad_size_limit_is_a_volume_error(tmp_path: Path) -> None:
    """A sizeLimit that is no quantity (a tampered store) refuses the volume, naming it."""
    with pytest.raises(volumes.VolumeError, match=r"'cache'.*sizeLimit.*'lots'"):
        volumes.prepare(tmp_path, memory_pod(sizeLimit="lots"), no_objects)


UNSHARE = ["unshare", "--user", "--map-root-user", "--mount"]  # inherited mounts are locked
KEEP_LOCKED = """
import sys
from pathlib import Path
from edge.edged import volumes
try:
    volumes.remove(Path(sys.argv[1]), sys.argv[2])
except volumes.VolumeError as exc:
    print(exc)
    sys.exit(3)
"""


@needs_root
def test_a_tmpfs_that_will_not_unmount_keeps_the_folder(tmp_path: Path) -> None:
    """remove in a user namespace, where the tmpfs is locked and umount fails: a VolumeError
    names it, and the pod's folder (with what is in the tmpfs) stays."""
    cache = Path(volumes.prepare(tmp_path, memory_pod(), no_objects)["cache"])
    (cache / "kept").write_text("still here")
    try:
        run = subprocess.run(
            [*UNSHARE, sys.executable, "-c", KEEP_LOCKED, str(tmp_path), UID],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert run.returncode == 3, run.stderr
        assert "pod folder kept" in run.stdout and "stays mounted" in run.stdout
        assert (cache / "kept").read_text() == "still here"
    finally:
        volumes.remove(tmp_path, UID)
    assert mounts_at(cache) == []


# -- what is refused -------------------------------------------------------------------------


def pod_with(container: dict[str, Any], volume: dict[str, Any] | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"containers": [{"name": "app", "image": "busybox", **container}]}
    if volume is not None:
        spec["volumes"] = [{"name": "v", **volume}]
    return {"metadata": {"name": "p", "uid": UID}, "spec": spec}


@pytest.mark.parametrize(
    ("pod", "missing"),
    [
        pytest.param(
            pod_with({"livenessProbe": {"httpGet": {"port": 1, "scheme": "HTTPS"}}}),
            [],
            id="https-probe",
        ),
        pytest.param(
            pod_with({"startupProbe": {"grpc": {"port": 1, "service": "s"}}}), [], id="grpc-probe"
        ),
        pytest.param(pod_with({}, {"emptyDir": {"medium": "Memory"}}), [], id="memory"),
        pytest.param(
            pod_with({}, {"emptyDir": {"medium": "HugePages-2Mi"}}),
            ["emptyDir.medium HugePages-2Mi of volume v"],
            id="hugepages",
        ),
        pytest.param(
            pod_with({"readinessProbe": {"httpGet": {"port": 1, "scheme": "FTP"}}}),
            ["readinessProbe.httpGet.scheme FTP of container app"],
            id="unknown-scheme",
        ),
    ],
)
def test_what_edged_refuses_is_only_what_it_cannot_do(
    pod: dict[str, Any], missing: list[str]
) -> None:
    """HTTPS and grpc probes and Memory emptyDirs run; HugePages and odd schemes are named."""
    assert podspec.unsupported(pod) == missing
