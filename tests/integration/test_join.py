"""The join RPC and certificate renewal against a real cloudhub (mutual TLS, in this process)
and the real control plane holding the edge CA and the tokens: replays, a fuzzed bootstrap
RPC, renewal, and two cloudcores sharing one CA."""

from __future__ import annotations

import asyncio
import base64
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from kubeedge.hub.v1 import certificates_pb2 as pb
from kubeedge.hub.v1 import certificates_pb2_grpc as pb_grpc
from kubeedge.hub.v1 import hub_pb2, hub_pb2_grpc

from cloud.hub.authority import EdgeAuthority
from cloud.kube import Kube
from common import certs, join
from common.envelope import new_message
from common.names import Group, Operation
from edge.hub.identity import NodeIdentity
from edge.settings import EdgeSettings
from tests.support.cluster import new_token
from tests.support.controlplane import TestControlPlane
from tests.support.stack import CloudStack, start_cloud

NODE = "edge-j"
VALID_CSR = certs.new_csr(certs.new_key(), certs.name(join.node_user(NODE)))


@pytest.fixture
async def cloud(
    tmp_path: Path, kube: TestControlPlane, request: pytest.FixtureRequest
) -> AsyncIterator[CloudStack]:
    """cloudhub over mutual TLS in this process; `@pytest.mark.cloud(setting=value)` changes
    its settings."""
    marker = request.node.get_closest_marker("cloud")
    stack = await start_cloud(
        tmp_path / "cloud",
        kubeconfig=str(kube.cloudcore_kubeconfig),
        insecure_hub=False,
        bootstrap_listen="127.0.0.1:0",
        **(marker.kwargs if marker else {}),
    )
    yield stack
    await stack.stop()


def identity(cloud: CloudStack, data_dir: Path, token: str = "", node: str = NODE) -> NodeIdentity:
    return NodeIdentity(
        EdgeSettings(
            data_dir=data_dir,
            node_name=node,
            cloud=cloud.address,
            token=token,
            bootstrap=f"127.0.0.1:{cloud.hub.bootstrap_port}",
        )
    )


def join_request(token: str, node: str = NODE) -> pb.JoinRequest:
    parsed = join.JoinToken.parse(token)
    csr = certs.new_csr(certs.new_key(), certs.name(join.node_user(node)))
    proof = join.request_proof(parsed.secret, node, csr)
    return pb.JoinRequest(token_id=parsed.id, node_name=node, csr_der=csr, proof=proof)


async def call_join(cloud: CloudStack, request: pb.JoinRequest) -> pb.JoinResponse:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{cloud.hub.bootstrap_port}") as channel:
        reply: pb.JoinResponse = await pb_grpc.BootstrapServiceStub(channel).Join(request)
        return reply


def token_exists(kube: TestControlPlane, token: str) -> bool:
    name = join.TOKEN_SECRET_PREFIX + join.JoinToken.parse(token).id
    status, _ = kube.request("GET", f"/api/v1/namespaces/{join.NAMESPACE}/secrets/{name}")
    return status == 200


async def test_a_replayed_join_request_gets_no_second_certificate(
    cloud: CloudStack, kube: TestControlPlane
) -> None:
    """The same request (same proof, same CSR) sent twice: one certificate, then refused."""
    token = await asyncio.to_thread(new_token, kube.kubeconfig, NODE)
    request = join_request(token)
    reply = await call_join(cloud, request)
    cert = certs.load_cert(reply.certificate_pem)
    assert certs.common_name(cert) == join.node_user(NODE)
    assert not token_exists(kube, token), "a spent token must be gone"
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await call_join(cloud, request)
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "already used" in (refused.value.details() or "")


async def test_a_token_for_one_node_does_not_join_another(
    cloud: CloudStack, kube: TestControlPlane
) -> None:
    token = await asyncio.to_thread(new_token, kube.kubeconfig, "edge-x")
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await call_join(cloud, join_request(token, node="edge-y"))
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "edge-x" in (refused.value.details() or "")
    assert token_exists(kube, token), "a refused request must not spend the token"


_TOKEN_FOR_FUZZ: list[str] = []


@settings(
    max_examples=40,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    token_id=st.one_of(st.text(max_size=70), st.just("")),
    node=st.one_of(st.just(NODE), st.text(max_size=300)),
    csr=st.one_of(st.binary(max_size=400), st.just(b""), st.just(VALID_CSR)),
    proof=st.binary(max_size=40),
    use_real_id=st.booleans(),
)
@example(token_id="", node=NODE, csr=b"", proof=b"", use_real_id=True)
@example(token_id="../cloudcore-ca", node=NODE, csr=b"\x30\x00", proof=b"", use_real_id=False)
async def test_fuzzed_join_requests_are_refused_and_spend_nothing(
    cloud: CloudStack,
    kube: TestControlPlane,
    token_id: str,
    node: str,
    csr: bytes,
    proof: bytes,
    use_real_id: bool,
) -> None:
    """Arbitrary requests (often naming a real token, never with its proof) get
    UNAUTHENTICATED or INVALID_ARGUMENT, never a certificate; the token stays unspent."""
    if not _TOKEN_FOR_FUZZ or not token_exists(kube, _TOKEN_FOR_FUZZ[0]):
        _TOKEN_FOR_FUZZ[:] = [await asyncio.to_thread(new_token, kube.kubeconfig, NODE)]
    real = join.JoinToken.parse(_TOKEN_FOR_FUZZ[0])
    request = pb.JoinRequest(
        token_id=real.id if use_real_id else token_id, node_name=node, csr_der=csr, proof=proof
    )
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await call_join(cloud, request)
    assert refused.value.code() in (
        grpc.StatusCode.UNAUTHENTICATED,
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert refused.value.details()
    assert token_exists(kube, str(real)), "a refused request spent the token"


async def test_renewal_gives_a_new_key_and_certificate_for_the_same_node(
    cloud: CloudStack, kube: TestControlPlane, tmp_path: Path
) -> None:
    token = await asyncio.to_thread(new_token, kube.kubeconfig, NODE)
    node = identity(cloud, tmp_path / "node", token)
    first = await node.ensure()
    await node.renew()
    second = node.credentials()
    assert second.key_pem != first.key_pem
    assert second.cert.serial_number != first.cert.serial_number
    assert certs.common_name(second.cert) == join.node_user(NODE)
    assert node.pem_path.read_bytes() == second.key_pem + second.cert_pem
    # A restart reuses what is stored, with no token.
    again = identity(cloud, tmp_path / "node")
    assert (await again.ensure()).cert_pem == second.cert_pem


async def test_without_a_certificate_or_token_edgecore_says_how_to_join(
    cloud: CloudStack, tmp_path: Path
) -> None:
    from common.errors import ConfigError

    with pytest.raises(ConfigError, match="keadm gettoken"):
        await identity(cloud, tmp_path / "node").ensure()


async def test_two_cloudcores_share_one_ca(kube: TestControlPlane) -> None:
    """Several cloudcores starting at once all end up with the one CA in the Secret."""
    path = f"/api/v1/namespaces/{join.NAMESPACE}/secrets/{join.CA_SECRET}"
    assert kube.request("DELETE", path)[0] in (200, 404)  # so they race to create it
    kubes = [Kube(kube.cloudcore_kubeconfig, name=f"ca{i}") for i in range(3)]
    authorities = [EdgeAuthority(k, node_cert_lifetime=60, advertise=[]) for k in kubes]
    try:
        await asyncio.gather(*(a.load() for a in authorities))
        hashes = {certs.fingerprint(a.ca_cert) for a in authorities if a.ca_cert is not None}
        _, secret = kube.request("GET", path)
        stored = certs.load_cert(base64.b64decode(secret["data"]["tls.crt"]))
        assert hashes == {certs.fingerprint(stored)}
    finally:
        for k in kubes:
            await k.close()


async def test_racing_joins_with_one_token_give_one_certificate(
    cloud: CloudStack, kube: TestControlPlane
) -> None:
    """Two requests for the same token at once (each with its own key and a right proof):
    exactly one gets a certificate."""
    token = await asyncio.to_thread(new_token, kube.kubeconfig, NODE)
    results = await asyncio.gather(
        *(call_join(cloud, join_request(token)) for _ in range(4)), return_exceptions=True
    )
    won = [r for r in results if isinstance(r, pb.JoinResponse)]
    lost = [r for r in results if isinstance(r, grpc.aio.AioRpcError)]
    assert len(won) == 1 and len(lost) == 3, results
    assert all(e.code() == grpc.StatusCode.UNAUTHENTICATED for e in lost)


async def test_a_spare_token_does_not_take_over_a_registered_node(
    cloud: CloudStack, kube: TestControlPlane
) -> None:
    """A token made for no node joins new nodes only; an existing Node needs its own token."""
    status, _ = kube.request("POST", "/api/v1/nodes", {"metadata": {"name": "edge-taken"}})
    assert status == 201
    spare = await asyncio.to_thread(new_token, kube.kubeconfig)
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await call_join(cloud, join_request(spare, node="edge-taken"))
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "already exists" in (refused.value.details() or "")
    assert token_exists(kube, spare)
    await call_join(cloud, join_request(spare, node="edge-new"))  # a new node: fine
    bound = await asyncio.to_thread(new_token, kube.kubeconfig, "edge-taken")
    await call_join(cloud, join_request(bound, node="edge-taken"))  # its own token: fine


async def test_renewal_keeps_the_callers_identity_whatever_the_csr_says(
    cloud: CloudStack, kube: TestControlPlane, tmp_path: Path
) -> None:
    token = await asyncio.to_thread(new_token, kube.kubeconfig, NODE)
    creds = await identity(cloud, tmp_path / "node", token).ensure()
    csr = certs.new_csr(certs.new_key(), certs.name(join.node_user("edge-other")))
    async with grpc.aio.secure_channel(cloud.address, creds.channel()) as channel:
        reply = await pb_grpc.CertificateServiceStub(channel).Renew(pb.RenewRequest(csr_der=csr))
    assert certs.common_name(certs.load_cert(reply.certificate_pem)) == join.node_user(NODE)


async def open_stream(address: str, creds: grpc.ChannelCredentials) -> Any:
    """A Connect stream whose first keepalive was answered: (channel, call)."""
    channel = grpc.aio.secure_channel(address, creds)
    call = hub_pb2_grpc.HubServiceStub(channel).Connect()
    keepalive = new_message(source="test", group=Group.HUB, operation=Operation.KEEPALIVE)
    keepalive.keepalive.SetInParent()
    await call.write(hub_pb2.ConnectRequest(messages=[keepalive]))
    await call.read()
    return channel, call


async def ended_with(call: Any, timeout: float) -> tuple[grpc.StatusCode, str]:
    """Read until the stream ends; its status and details."""
    try:
        async with asyncio.timeout(timeout):
            while await call.read() is not grpc.aio.EOF:
                pass
    except grpc.aio.AioRpcError as exc:
        return exc.code(), exc.details() or ""
    return await call.code(), await call.details()


@pytest.mark.cloud(node_cert_lifetime=3, keepalive_timeout=30)
async def test_a_stream_ends_when_its_certificate_expires(
    cloud: CloudStack, kube: TestControlPlane, tmp_path: Path
) -> None:
    token = await asyncio.to_thread(new_token, kube.kubeconfig, NODE)
    creds = await identity(cloud, tmp_path / "node", token).ensure()
    channel, call = await open_stream(cloud.address, creds.channel())
    try:
        code, details = await ended_with(call, 10)
    finally:
        await channel.close()
    assert code == grpc.StatusCode.UNAUTHENTICATED and "certificate expired" in details


@pytest.mark.cloud(revocation_check_period=0.2, keepalive_timeout=30)
async def test_a_revoked_node_is_cut_off_and_can_join_again_with_a_new_token(
    cloud: CloudStack, kube: TestControlPlane, tmp_path: Path
) -> None:
    token = await asyncio.to_thread(new_token, kube.kubeconfig, NODE)
    node = identity(cloud, tmp_path / "node", token)
    creds = await node.ensure()
    channel, call = await open_stream(cloud.address, creds.channel())
    try:
        said = await keadm_node_revoke(kube.kubeconfig, NODE)
        code, details = await ended_with(call, 10)
    finally:
        await channel.close()
    assert code == grpc.StatusCode.UNAUTHENTICATED and "revoked" in details
    assert f"certificates of {NODE} issued up to" in said
    assert f"keadm gettoken --node-name {NODE}" in said
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await node.renew()
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    with pytest.raises(grpc.aio.AioRpcError):
        await open_stream(cloud.address, creds.channel())
    await asyncio.sleep(1.1)  # certificates carry whole seconds: join in a later one
    again = identity(
        cloud, tmp_path / "again", await asyncio.to_thread(new_token, kube.kubeconfig, NODE)
    )
    channel, call = await open_stream(cloud.address, (await again.ensure()).channel())
    call.cancel()
    await channel.close()


async def keadm_node_revoke(kubeconfig: Path, node: str) -> str:
    """`keadm node revoke NODE` as an operator runs it; what it said (it must succeed)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        *("-m", "keadm.main", "node", "revoke", node, "--kubeconfig", str(kubeconfig)),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, out.decode()
    return out.decode()


@pytest.mark.cloud(node_cert_lifetime=1)
async def test_a_certificate_that_expired_while_stopped_needs_a_new_token(
    cloud: CloudStack, kube: TestControlPlane, tmp_path: Path
) -> None:
    """An edgecore that was off longer than its certificate's life finds it expired at start:
    without a token it says how to join again; with a new one it does."""
    from common.errors import ConfigError

    token = await asyncio.to_thread(new_token, kube.kubeconfig, NODE)
    await identity(cloud, tmp_path / "node", token).ensure()
    await asyncio.sleep(1.2)
    with pytest.raises(ConfigError, match="no valid certificate"):
        await identity(cloud, tmp_path / "node").ensure()
    fresh = await asyncio.to_thread(new_token, kube.kubeconfig, NODE)
    assert (await identity(cloud, tmp_path / "node", fresh).ensure()).cert.not_valid_after_utc
