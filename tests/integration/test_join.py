"""The join RPC and certificate renewal against a real cloudhub (mutual TLS, in this process)
and the real control plane holding the edge CA and the tokens: replays, a fuzzed bootstrap
RPC, renewal, and two cloudcores sharing one CA."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from kubeedge.hub.v1 import certificates_pb2 as pb
from kubeedge.hub.v1 import certificates_pb2_grpc as pb_grpc

from cloud.hub.authority import EdgeAuthority
from cloud.kube import Kube
from common import certs, join
from edge.hub.identity import NodeIdentity
from edge.settings import EdgeSettings
from tests.support.cluster import new_token
from tests.support.controlplane import TestControlPlane
from tests.support.stack import CloudStack, start_cloud

NODE = "edge-j"


@pytest.fixture
async def cloud(tmp_path: Path, kube: TestControlPlane) -> AsyncIterator[CloudStack]:
    stack = await start_cloud(
        tmp_path / "cloud",
        kubeconfig=str(kube.cloudcore_kubeconfig),
        insecure_hub=False,
        bootstrap_listen="127.0.0.1:0",
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
    csr=st.one_of(st.binary(max_size=400), st.just(b"")),
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
    assert node.cert_path.read_bytes() == second.cert_pem
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
