"""grpcurl, a client no one here wrote, against a running cloudcore process."""

from __future__ import annotations

import asyncio
import json
import shutil
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.support.controlplane import TestControlPlane
from tests.support.procs import Proc, python
from tests.support.waiting import free_port

GRPCURL = shutil.which("grpcurl") or str(Path(sys.executable).parent / "grpcurl")


@pytest.fixture
async def cloudcore(tmp_path: Path, kube: TestControlPlane) -> AsyncIterator[str]:
    port = free_port()
    proc = await Proc(
        python(
            "cloud.main",
            "--data-dir",
            str(tmp_path),
            "--hub-listen",
            f"127.0.0.1:{port}",
            "--kubeconfig",
            str(kube.cloudcore_kubeconfig),
            "--metrics-listen",
            "127.0.0.1:0",
        ),
        "cloudcore",
    ).start()
    await proc.wait_line("serving HubService")
    yield f"127.0.0.1:{port}"
    assert await proc.terminate() == 0, proc.output()


async def grpcurl(*args: str) -> str:
    proc = await asyncio.create_subprocess_exec(
        GRPCURL,
        "-plaintext",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0, err.decode()
    return out.decode()


@pytest.mark.e2e
async def test_list_shows_hub_health_and_reflection(cloudcore: str) -> None:
    """Server reflection lists HubService, the health service and reflection itself."""
    services = (await grpcurl(cloudcore, "list")).split()
    assert "kubeedge.hub.v1.HubService" in services
    assert "grpc.health.v1.Health" in services
    assert any(s.startswith("grpc.reflection.") for s in services)


@pytest.mark.e2e
async def test_describe_shows_the_bidirectional_method(cloudcore: str) -> None:
    """describe shows Connect streaming both ways, with the batch message types."""
    text = await grpcurl(cloudcore, "describe", "kubeedge.hub.v1.HubService")
    assert (
        "rpc Connect ( stream .kubeedge.hub.v1.ConnectRequest ) "
        "returns ( stream .kubeedge.hub.v1.ConnectResponse )" in text
    )
    message = await grpcurl(cloudcore, "describe", "kubeedge.hub.v1.Message")
    assert "oneof body" in message and "ObjectEvent object" in message


@pytest.mark.e2e
async def test_health_check_reports_serving(cloudcore: str) -> None:
    """The standard health service says HubService is SERVING."""
    out = await grpcurl(
        "-d", '{"service": "kubeedge.hub.v1.HubService"}', cloudcore, "grpc.health.v1.Health/Check"
    )
    assert json.loads(out) == {"status": "SERVING"}


@pytest.mark.e2e
async def test_grpcurl_stream_without_node_name_gets_clear_error(cloudcore: str) -> None:
    """A grpcurl user who forgets the node-name header is told what is missing."""
    proc = await asyncio.create_subprocess_exec(
        GRPCURL,
        "-plaintext",
        "-d",
        "{}",
        cloudcore,
        "kubeedge.hub.v1.HubService/Connect",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode != 0
    assert "InvalidArgument" in err.decode() and "node-name" in err.decode()


@pytest.mark.e2e
async def test_grpcurl_can_speak_the_stream(cloudcore: str) -> None:
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
        "-plaintext",
        "-H",
        "node-name: grpcurl-node",
        "-d",
        json.dumps(keepalive),
        "-max-time",
        "2",
        cloudcore,
        "kubeedge.hub.v1.HubService/Connect",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 30)
    reply = json.loads(out.decode().split("\n}\n")[0] + "\n}")
    (message,) = reply["messages"]
    assert message["route"]["operation"] == "keepalive"
    assert message["header"]["parent_id"] == "grpcurl-1"
