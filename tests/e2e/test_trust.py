"""Trust with real processes over loopback: nodes join with tokens from `keadm gettoken`, the
hub refuses every certificate that is not a current one of its CA for the node it claims, and
a node renews its certificate while its pod keeps serving."""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import json
import os
import stat
import sys
from pathlib import Path

import apsw
import grpc
import pytest
from cryptography import x509
from kubeedge.hub.v1 import hub_pb2, hub_pb2_grpc

from common import certs, join
from common.envelope import new_message
from common.names import NODE_NAME_METADATA, Group, Operation
from edge.hub.identity import Credentials, NodeIdentity
from edge.settings import EdgeSettings
from tests.support.cluster import Cluster, start_cluster
from tests.support.controlplane import TestControlPlane
from tests.support.edgenode import FAST_CLOUD, FAST_EDGE, Node, node_ready, start_node
from tests.support.procs import Proc, python
from tests.support.waiting import eventually, free_port, http_get

pytestmark = pytest.mark.e2e


async def keadm(cluster: Cluster, *args: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "keadm.main",
        *args,
        "--kubeconfig",
        str(cluster.kubeconfig),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode().strip()


def light_node(name: str, data_dir: Path, hub: str, *flags: str) -> Proc:
    """An edgecore without pods (no containerd): quick to start, enough for the hub."""
    return Proc(
        python(
            "edge.main",
            *("--data-dir", str(data_dir), "--node-name", name, "--cloud", hub),
            *("--no-edged", "--mqtt-listen", "127.0.0.1:0", *FAST_EDGE, *flags),
        ),
        name,
    )


def mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


async def test_join_with_a_keadm_token_makes_a_ready_node_with_private_keys(
    cloud: tuple[Cluster, str], tmp_path: Path, images: Path
) -> None:
    cluster, hub = cloud
    code, token = await keadm(cluster, "gettoken", "--ttl", "10m", "--node-name", "edge-j")
    assert code == 0, token
    joining = ["--token", token, "--bootstrap", cluster.bootstrap]
    node = await start_node("edge-j", tmp_path / "edge", hub, images, *joining)
    try:
        await eventually(lambda: node_ready(cluster, "edge-j"), 60, "edge-j Ready")
        pki = tmp_path / "edge" / "pki"
        assert mode(tmp_path / "edge") == 0o700 and mode(pki) == 0o700
        for name in ("node.pem", "ca.crt", "../edge.db"):
            assert mode(pki / name) == 0o600, name
        cert = certs.load_cert((pki / "node.pem").read_bytes())
        assert cert.subject.rfc4514_string() == "CN=system:node:edge-j,O=system:nodes"
        code, listing = await keadm(cluster, "token", "list")
        assert token.split(".")[0] not in listing, "the spent token is still listed"
        for path in (cluster.data_dir, *cluster.data_dir.iterdir()):
            assert mode(path) & 0o077 == 0, f"{path} is readable by others"
    finally:
        await node.stop_and_reset()


async def refused(name: str, data_dir: Path, hub: str, cluster: Cluster, token: str) -> str:
    """edgecore's output when it is given `token`: it must exit, without a certificate."""
    proc = light_node(name, data_dir, hub, "--token", token, "--bootstrap", cluster.bootstrap)
    await proc.start()
    code = await proc.wait(30)
    assert code == 2, f"edgecore exited {code}:\n{proc.output()}"
    assert not (data_dir / "pki" / "node.pem").exists()
    return proc.output()


async def test_wrong_expired_revoked_and_replayed_tokens_are_refused(
    cloud: tuple[Cluster, str], tmp_path: Path
) -> None:
    cluster, hub = cloud
    good = join.JoinToken.parse(await cluster.token())
    wrong = join.JoinToken(good.id, "x" * 16, good.ca_hash)
    out = await refused("edge-w", tmp_path / "w", hub, cluster, str(wrong))
    assert "refused to join" in out and "wrong secret" in out

    code, short = await keadm(cluster, "gettoken", "--ttl", "1s")
    assert code == 0, short
    await asyncio.sleep(1.2)
    out = await refused("edge-e", tmp_path / "e", hub, cluster, short)
    assert "expired" in out

    code, revoked = await keadm(cluster, "gettoken")
    assert code == 0
    code, said = await keadm(cluster, "token", "delete", revoked.split(".")[0])
    assert code == 0, said
    out = await refused("edge-r", tmp_path / "r", hub, cluster, revoked)
    assert "unknown, already used or revoked" in out

    # A token that already joined a node does not join another (nor the same one again).
    used = await cluster.token()
    first = await light_node(
        "edge-u", tmp_path / "u", hub, "--token", used, "--bootstrap", cluster.bootstrap
    ).start()
    try:
        await first.wait_line("connected to", 30)
    finally:
        await first.terminate()
    out = await refused("edge-v", tmp_path / "v", hub, cluster, used)
    assert "unknown, already used or revoked" in out
    # The token of `good` was never spent: the refusals above did not use it up.
    code, listing = await keadm(cluster, "token", "list")
    assert good.id in listing


# -- certificates the hub must refuse, with the real node undisturbed --------------------------


async def try_stream(hub: str, creds: grpc.ChannelCredentials, claim: str) -> grpc.StatusCode:
    """Open a Connect stream, send a keepalive, read: the status it fails with."""
    async with grpc.aio.secure_channel(hub, creds) as channel:
        call = hub_pb2_grpc.HubServiceStub(channel).Connect(
            metadata=((NODE_NAME_METADATA, claim),), timeout=10
        )
        keepalive = new_message(source="intruder", group=Group.HUB, operation=Operation.KEEPALIVE)
        keepalive.keepalive.SetInParent()
        reply: object = None
        try:
            await call.write(hub_pb2.ConnectRequest(messages=[keepalive]))
            reply = await call.read()
        except grpc.aio.AioRpcError:
            pass  # a write racing the server's refusal fails locally; the call's status is below
        if isinstance(reply, hub_pb2.ConnectResponse):
            call.cancel()
            raise AssertionError(f"the hub served a stream claiming {claim}")
        code: grpc.StatusCode = await call.code()
        return code


def edge_ca(cluster: Cluster) -> tuple[bytes, certs.PrivateKey]:
    """The real edge CA and its key, read as an admin (to forge an expired certificate)."""
    path = f"/api/v1/namespaces/{join.NAMESPACE}/secrets/{join.CA_SECRET}"
    _, secret = cluster.control_plane.request("GET", path)
    ca_pem = base64.b64decode(secret["data"]["tls.crt"])
    return ca_pem, certs.load_key(base64.b64decode(secret["data"]["tls.key"]))


def forged(
    trusted_pem: bytes, issuer: x509.Certificate, issuer_key: certs.PrivateKey, life: float
) -> Credentials:
    """A certificate for edge-b signed by `issuer`, held by a client that trusts our CA."""
    key = certs.new_key()
    template = certs.client_template(certs.name(join.node_user("edge-b"), join.NODES_GROUP))
    lifetime = dt.timedelta(seconds=life)
    cert = certs.issue(issuer, issuer_key, key.public_key(), template, lifetime, skew=False)
    return Credentials(certs.key_pem(key), certs.cert_pem(cert), trusted_pem)


def stored_pods(data_dir: Path) -> set[str]:
    conn = apsw.Connection(str(data_dir / "edge.db"), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        return {name for (name,) in conn.execute("SELECT name FROM meta WHERE type = 'pod'")}
    finally:
        conn.close()


async def test_foreign_expired_and_impostor_certificates_leave_the_real_node_alone(
    cloud: tuple[Cluster, str], tmp_path: Path, images: Path
) -> None:
    """While edge-b is away with a pod queued for it, a certificate from another CA, an
    expired one and edge-a's claiming edge-b are refused; when edge-b comes back the queued pod
    reaches it (nothing queued was taken or acked by an impostor) and every edge-b session
    cloudcore opened was edge-b's own."""
    cluster, hub = cloud
    node_b = await start_node(
        "edge-b", tmp_path / "b", hub, images, *await cluster.join_flags("edge-b")
    )
    try:
        await eventually(lambda: node_ready(cluster, "edge-b"), 60, "edge-b Ready")
        ca_pem, ca_key = edge_ca(cluster)
        other_ca, other_key = certs.new_ca("someone-else", dt.timedelta(days=1))
        outsider = forged(ca_pem, other_ca, other_key, 3600)
        expired = forged(ca_pem, certs.load_cert(ca_pem), ca_key, 1)
        a = NodeIdentity(
            EdgeSettings(
                data_dir=tmp_path / "a",
                node_name="edge-a",
                cloud=hub,
                token=await cluster.token("edge-a"),
                bootstrap=cluster.bootstrap,
            )
        )
        impostor = await a.ensure()

        # edge-b goes away; a pod for it waits in cloudcore's queue for edge-b.
        await node_b.proc.terminate()
        first_b_sessions = sum("edgehub: connected to" in ln for ln in node_b.proc.lines)
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "for-b", "namespace": "default"},
            "spec": {"nodeName": "edge-b", "containers": [{"name": "c", "image": "x"}]},
        }
        await cluster.kubectl("apply", "-f", "-", stdin=json.dumps(pod))

        await asyncio.sleep(1.5)  # `expired` is now past its end
        assert await try_stream(hub, outsider.channel(), "edge-b") == grpc.StatusCode.UNAVAILABLE
        assert await try_stream(hub, expired.channel(), "edge-b") == grpc.StatusCode.UNAVAILABLE
        code = await try_stream(hub, impostor.channel(), "edge-b")
        assert code == grpc.StatusCode.PERMISSION_DENIED

        await node_b.restart()
        await eventually(lambda: "for-b" in stored_pods(tmp_path / "b"), 30, "pod at edge-b")

        # Every edge-b session cloudcore opened was the real edge-b's (a keepalive timeout on
        # a loaded machine may have made it reconnect; an impostor session would be one more).
        def sessions() -> tuple[int, int]:
            opened = sum("cloudhub: node edge-b connected" in ln for ln in cluster.proc.lines)
            again = sum("edgehub: connected to" in ln for ln in node_b.proc.lines)
            return opened, first_b_sessions + again

        await eventually(lambda: len(set(sessions())) == 1, 10, "one session per connect")
        assert sessions()[0] >= 2
    finally:
        await node_b.stop_and_reset()


# -- credentials on disk -----------------------------------------------------------------------


async def test_a_killed_cloudcore_leaves_no_key_in_the_temp_dir(
    tmp_path: Path, kube: TestControlPlane, monkeypatch: pytest.MonkeyPatch
) -> None:
    """cloudcore's kubeconfig embeds its client key. The kubernetes client would write it to
    a temp file removed only at a clean exit; cloudcore keeps it in memory instead, so a
    SIGKILL (or an OOM kill) leaves nothing in TMPDIR."""
    scratch = tmp_path / "tmpdir"
    scratch.mkdir()
    monkeypatch.setenv("TMPDIR", str(scratch))
    cluster = await start_cluster(tmp_path / "cloud", kube)
    try:
        await cluster.token()  # waits for the edge CA cloudcore writes through the API
    finally:
        await cluster.proc.kill()
    assert sorted(p.name for p in scratch.iterdir()) == []


# -- rotation ----------------------------------------------------------------------------------


async def test_certificate_rotation_keeps_the_pod_serving(
    tmp_path: Path, kube: TestControlPlane, images: Path
) -> None:
    """Certificates live 8 s and are renewed at half-life: several renewals happen while a pod
    runs; it is never restarted and keeps answering, and the node stays Ready."""
    hub = f"127.0.0.1:{free_port()}"
    cluster = await start_cluster(
        tmp_path / "cloud", kube, "--hub-listen", hub, "--node-cert-lifetime", "8", *FAST_CLOUD
    )
    node: Node | None = None
    try:
        flags = [*await cluster.join_flags("edge-1"), "--cert-rotate-fraction", "0.5"]
        node = await start_node("edge-1", tmp_path / "edge", hub, images, *flags)
        await eventually(lambda: node_ready(cluster), 60, "edge-1 Ready")
        await cluster.kubectl("apply", "-f", "-", stdin=json.dumps(web_pod()))
        pod = await eventually(lambda: running(cluster), 60, "web Running")
        before = pod["status"]["containerStatuses"][0]["containerID"]
        ip = pod["status"]["podIP"]
        cert_path = tmp_path / "edge" / "pki" / "node.pem"
        serials = {certs.load_cert(cert_path.read_bytes()).serial_number}
        for _ in range(3):  # three renewals, the pod answering between each
            await eventually(
                lambda: certs.load_cert(cert_path.read_bytes()).serial_number not in serials,
                20,
                "a renewed certificate",
            )
            serials.add(certs.load_cert(cert_path.read_bytes()).serial_number)
            assert "web" in await asyncio.to_thread(http_get, f"http://{ip}:8080/id")
        assert await node_ready(cluster)
        pod = await running(cluster)
        assert pod is not None
        status = pod["status"]["containerStatuses"][0]
        assert status["containerID"] == before and status["restartCount"] == 0
        assert any("reconnecting with the renewed certificate" in line for line in node.proc.lines)
    finally:
        if node is not None:
            await node.stop_and_reset()
        await cluster.proc.terminate()


def web_pod() -> dict[str, object]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {
            "nodeName": "edge-1",
            "terminationGracePeriodSeconds": 1,
            "containers": [
                {
                    "name": "httpd",
                    "image": "kubeedge-py/busybox:latest",
                    "imagePullPolicy": "Never",
                    "command": ["sh", "-c", "echo web > /tmp/id; exec httpd -f -p 8080 -h /tmp"],
                }
            ],
        },
    }


async def running(cluster: Cluster) -> dict[str, object] | None:
    pod = await cluster.get_json("pod", "web")
    return pod if pod.get("status", {}).get("phase") == "Running" else None
