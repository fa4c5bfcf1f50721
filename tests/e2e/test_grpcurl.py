"""grpcurl, a client no one here wrote, against a running cloudcore process: over mutual TLS
with a node certificate got by joining, as the README shows."""

from __future__ import annotations

import asyncio
import json
import shutil
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.cluster import new_token
from tests.support.controlplane import TestControlPlane
from tests.support.procs import Proc, python
from tests.support.waiting import free_port

GRPCURL = shutil.which("grpcurl") or str(Path(sys.executable).parent / "grpcurl")
NODE = "grpcurl-node"


@dataclass
class Hub:
    address: str
    tls: list[str]  # grpcurl's -cacert/-cert/-key for a certificate of NODE


@pytest.fixture
async def cloudcore(tmp_path: Path, kube: TestControlPlane) -> AsyncIterator[Hub]:
    port, bootstrap = free_port(), f"127.0.0.1:{free_port()}"
    proc = await Proc(
        python(
            "cloud.main",
            "--data-dir",
            str(tmp_path / "cloud"),
            "--hub-listen",
            f"127.0.0.1:{port}",
            "--bootstrap-listen",
            bootstrap,
            "--kubeconfig",
            str(kube.cloudcore_kubeconfig),
            "--metrics-listen",
            "127.0.0.1:0",
        ),
        "cloudcore",
    ).start()
    await proc.wait_line("serving HubService")
    # As the README does it: a token for NODE, then edgecore --join-only for its certificate.
    token = await asyncio.to_thread(new_token, kube.kubeconfig, NODE)
    pki = tmp_path / "node" / "pki"
    joining = Proc(
        python(
            "edge.main",
            *("--data-dir", str(tmp_path / "node"), "--node-name", NODE),
            *("--cloud", f"127.0.0.1:{port}", "--bootstrap", bootstrap),
            *("--token", token, "--join-only"),
        ),
        "join",
    )
    assert await (await joining.start()).wait(30) == 0, joining.output()
    tls = ["-cacert", str(pki / "ca.crt"), "-cert", str(pki / "node.pem")]
    tls += ["-key", str(pki / "node.pem")]  # key and certificate in one file, as the kubelet's
    yield Hub(f"127.0.0.1:{port}", tls)
    assert await proc.terminate() == 0, proc.output()


async def run_grpcurl(*args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        GRPCURL, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def grpcurl(hub: Hub, *args: str, flags: tuple[str, ...] = ()) -> str:
    """grpcurl with the node's certificate: FLAGS, the hub's address, then ARGS."""
    code, out, err = await run_grpcurl(*hub.tls, *flags, hub.address, *args)
    assert code == 0, err
    return out


@pytest.mark.e2e
async def test_list_shows_hub_health_and_reflection(cloudcore: Hub) -> None:
    """Server reflection lists HubService, the health service and reflection itself."""
    services = (await grpcurl(cloudcore, "list")).split()
    assert "kubeedge.hub.v1.HubService" in services
    assert "kubeedge.hub.v1.CertificateService" in services
    assert "grpc.health.v1.Health" in services
    assert any(s.startswith("grpc.reflection.") for s in services)


@pytest.mark.e2e
async def test_describe_shows_the_bidirectional_method(cloudcore: Hub) -> None:
    """describe shows Connect streaming both ways, with the batch message types."""
    text = await grpcurl(cloudcore, "describe", "kubeedge.hub.v1.HubService")
    assert (
        "rpc Connect ( stream .kubeedge.hub.v1.ConnectRequest ) "
        "returns ( stream .kubeedge.hub.v1.ConnectResponse )" in text
    )
    message = await grpcurl(cloudcore, "describe", "kubeedge.hub.v1.Message")
    assert "oneof body" in message and "ObjectEvent object" in message


@pytest.mark.e2e
async def test_health_check_reports_serving(cloudcore: Hub) -> None:
    """The standard health service says HubService is SERVING."""
    body = '{"service": "kubeedge.hub.v1.HubService"}'
    out = await grpcurl(cloudcore, "grpc.health.v1.Health/Check", flags=("-d", body))
    assert json.loads(out) == {"status": "SERVING"}


@pytest.mark.e2e
async def test_plaintext_and_certificateless_clients_are_refused(cloudcore: Hub) -> None:
    """The hub speaks mutual TLS only: plaintext fails, and TLS without a client certificate
    fails the handshake."""
    code, _, _ = await run_grpcurl("-plaintext", cloudcore.address, "list")
    assert code != 0, "a plaintext client was served"
    code, _, _ = await run_grpcurl(*cloudcore.tls[:2], cloudcore.address, "list")  # -cacert only
    assert code != 0, "a client without a certificate was served"


@pytest.mark.e2e
async def test_a_certificate_may_not_claim_another_node(cloudcore: Hub) -> None:
    """A stream whose node-name header disagrees with its certificate is refused, by name."""
    code, _, err = await run_grpcurl(
        *cloudcore.tls,
        *("-H", "node-name: edge-b", "-d", "{}"),
        cloudcore.address,
        "kubeedge.hub.v1.HubService/Connect",
    )
    assert code != 0
    assert "PermissionDenied" in err and NODE in err and "edge-b" in err


@pytest.mark.e2e
async def test_grpcurl_can_speak_the_stream(cloudcore: Hub) -> None:
    """With the header, grpcurl can send a keepalive in JSON and read the cloud's echo."""
    keepalive = {
        "messages": [
            {
                "header": {"id": "grpcurl-1"},
                "route": {"source": "grpcurl", "group": "hub", "operation": "keepalive"},
                "keepalive": {},
            }
        ]
    }
    proc = await asyncio.create_subprocess_exec(
        GRPCURL,
        *cloudcore.tls,
        "-H",
        f"node-name: {NODE}",
        "-d",
        json.dumps(keepalive),
        "-max-time",
        "20",
        cloudcore.address,
        "kubeedge.hub.v1.HubService/Connect",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    # The stream stays open: read until the first reply is whole, then end grpcurl.
    assert proc.stdout is not None
    out = b""
    try:
        async with asyncio.timeout(30):
            while b"\n}\n" not in out and (chunk := await proc.stdout.read(4096)):
                out += chunk
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.communicate()
    reply = json.loads(out.decode().split("\n}\n")[0] + "\n}")
    (message,) = reply["messages"]
    assert message["route"]["operation"] == "keepalive"
    assert message["header"]["parent_id"] == "grpcurl-1"
