"""The node's identity on the hub: a client certificate `system:node:NAME`, got with a join
token and renewed before it expires.

Files, in DATA_DIR/pki (0700), each 0600 and written whole (temporary file + rename):
node.pem (the private key, which never leaves the node, and its certificate in one file, as
the kubelet's kubelet-client-current.pem: a crash can never leave a key with another key's
certificate), ca.crt (the edge CA, checked against the hash in the join token when it was
first fetched).

- `ensure()` (before edgecore's modules start): reuses the files when they belong together,
  name this node and are still valid; otherwise spends --token on the cloud's bootstrap port
  (BootstrapService.Join, plaintext: the request and response are bound to the token's secret
  by an HMAC, and the CA by its hash). A refused token is fatal (JoinRefused, with the cloud's
  reason); an unreachable cloud is retried with backoff.
- `rotate_loop()` (in edgehub): at --cert-rotate-fraction of the certificate's lifetime, asks
  for a new one over the hub's mutual TLS (CertificateService.Renew) with a fresh key, stores
  it, and tells edgehub to reconnect with it. Pods and the store are not touched. A failed
  renewal is retried every reconnect_max seconds; once the certificate has expired the hub
  refuses it, and the log says the node needs a new token.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import grpc
from cryptography import x509
from kubeedge.hub.v1 import certificates_pb2 as pb
from kubeedge.hub.v1 import certificates_pb2_grpc as pb_grpc

from common import certs, join
from common.errors import ConfigError
from common.settings import split_host_port
from edge.private import private_tree
from edge.settings import EdgeSettings

log = logging.getLogger(__name__)

BOOTSTRAP_PORT = 10002
CALL_TIMEOUT = 15.0


class JoinRefused(ConfigError):
    """The cloud refused the join token (or answered with something that fails the checks)."""


@dataclass(frozen=True)
class Credentials:
    key_pem: bytes
    cert_pem: bytes
    ca_pem: bytes

    @property
    def cert(self) -> x509.Certificate:
        return certs.load_cert(self.cert_pem)

    def channel(self) -> grpc.ChannelCredentials:
        return grpc.ssl_channel_credentials(self.ca_pem, self.key_pem, self.cert_pem)


class NodeIdentity:
    def __init__(self, settings: EdgeSettings) -> None:
        if not 0.1 <= settings.cert_rotate_fraction <= 0.95:
            raise ConfigError("--cert-rotate-fraction must be between 0.1 and 0.95")
        self.settings = settings
        self.dir = Path(settings.data_dir) / "pki"
        self.current: Credentials | None = None

    @property
    def pem_path(self) -> Path:
        """The node's private key and certificate, in one file."""
        return self.dir / "node.pem"

    @property
    def ca_path(self) -> Path:
        return self.dir / "ca.crt"

    def credentials(self) -> Credentials:
        if self.current is None:
            raise RuntimeError("NodeIdentity.ensure() has not run")
        return self.current

    # -- first certificate ----------------------------------------------------------------

    async def ensure(self) -> Credentials:
        private_tree(Path(self.settings.data_dir), "pki")
        stored = self._load()
        if stored is not None:
            self.current = stored
            return stored
        if not self.settings.token:
            raise ConfigError(
                f"node {self.settings.node_name} has no valid certificate in {self.dir} and no "
                "--token to join with: run `keadm gettoken` where the cluster's kubeconfig is, "
                "then give its output to --token"
            )
        try:
            token = join.JoinToken.parse(self.settings.token)
        except join.TokenError as exc:
            raise ConfigError(f"--token: {exc}") from None
        creds = await self._join_retrying(token)
        self._store(creds)
        log.info(
            "joined as %s; certificate in %s", join.node_user(self.settings.node_name), self.dir
        )
        return creds

    def _load(self) -> Credentials | None:
        """The stored credentials when they are whole, ours, and not expired."""
        if not self.pem_path.exists() or not self.ca_path.exists():
            return None
        try:
            pem, ca_pem = self.pem_path.read_bytes(), self.ca_path.read_bytes()
            key, cert = certs.load_key(pem, str(self.pem_path)), certs.load_cert(pem)
            creds = Credentials(certs.key_pem(key), certs.cert_pem(cert), ca_pem)
            ca = certs.load_cert(ca_pem, str(self.ca_path))
        except (OSError, certs.CertError) as exc:
            log.warning("stored certificate unusable (%s); joining again", exc)
            return None
        if cert.public_key() != key.public_key() or not certs.signed_by(cert, ca):
            log.warning("stored certificate does not match its key or CA; joining again")
            return None
        if certs.common_name(cert) != join.node_user(self.settings.node_name):
            log.warning("stored certificate is for %s; joining again", certs.common_name(cert))
            return None
        if cert.not_valid_after_utc <= certs.now():
            log.warning("stored certificate expired at %s; joining again", cert.not_valid_after_utc)
            return None
        return creds

    def _store(self, creds: Credentials) -> None:
        private_tree(Path(self.settings.data_dir), "pki")
        certs.write_file(self.ca_path, creds.ca_pem, 0o600)
        certs.write_file(self.pem_path, creds.key_pem + creds.cert_pem, 0o600)
        self.current = creds

    def bootstrap_address(self) -> str:
        if self.settings.bootstrap:
            return self.settings.bootstrap
        host, _ = split_host_port(self.settings.cloud, "--cloud")
        host = f"[{host}]" if ":" in host else host
        return f"{host}:{BOOTSTRAP_PORT}"

    async def _join_retrying(self, token: join.JoinToken) -> Credentials:
        delay = self.settings.reconnect_initial
        target = self.bootstrap_address()
        while True:
            try:
                return await self._join(token, target)
            except grpc.aio.AioRpcError as exc:
                if exc.code() in (
                    grpc.StatusCode.UNAUTHENTICATED,
                    grpc.StatusCode.INVALID_ARGUMENT,
                ):
                    raise JoinRefused(f"the cloud refused to join: {exc.details()}") from None
                log.warning(
                    "joining through %s failed: %s %s; retrying",
                    target,
                    exc.code().name,
                    exc.details(),
                )
            await asyncio.sleep(random.uniform(delay / 2, delay))
            delay = min(delay * 2, self.settings.reconnect_max)

    async def _join(self, token: join.JoinToken, target: str) -> Credentials:
        node = self.settings.node_name
        key, csr = self._new_csr()
        request = pb.JoinRequest(
            token_id=token.id,
            node_name=node,
            csr_der=csr,
            proof=join.request_proof(token.secret, node, csr),
        )
        log.info("joining the cluster through %s as node %s", target, node)
        async with grpc.aio.insecure_channel(target) as channel:
            reply = await pb_grpc.BootstrapServiceStub(channel).Join(request, timeout=CALL_TIMEOUT)
        expected = join.response_proof(token.secret, reply.certificate_pem, reply.ca_pem)
        if not join.proof_matches(expected, reply.proof):
            raise JoinRefused(f"the answer from {target} is not signed with the token's secret")
        creds = Credentials(certs.key_pem(key), reply.certificate_pem, reply.ca_pem)
        _check_issued(creds, key, token.ca_hash)
        return creds

    # -- rotation -------------------------------------------------------------------------

    async def rotate_loop(self, on_rotated: Callable[[], None]) -> None:
        """Renew the certificate at its rotation point, forever."""
        while True:
            cert = self.credentials().cert
            due = certs.renew_at(cert, self.settings.cert_rotate_fraction)
            wait = (due - certs.now()).total_seconds()
            if wait > 0:
                await asyncio.sleep(wait)
                continue
            try:
                await self.renew()
            except (grpc.aio.AioRpcError, certs.CertError, JoinRefused, OSError) as exc:
                self._renewal_failed(cert, exc)
                await asyncio.sleep(self.settings.reconnect_max)
                continue
            on_rotated()

    def _renewal_failed(self, cert: x509.Certificate, exc: Exception) -> None:
        reason = exc.details() if isinstance(exc, grpc.aio.AioRpcError) else str(exc)
        if cert.not_valid_after_utc > certs.now():
            log.warning(
                "renewing the node certificate (valid until %s) failed: %s; retrying",
                cert.not_valid_after_utc,
                reason,
            )
            return
        log.error(
            "the node certificate expired at %s and could not be renewed (%s): the hub will "
            "refuse this node until it joins again; restart edgecore with a new --token "
            "(`keadm gettoken --node-name %s`). Pods keep running meanwhile.",
            cert.not_valid_after_utc,
            reason,
            self.settings.node_name,
        )

    def _new_csr(self) -> tuple[certs.PrivateKey, bytes]:
        key = certs.new_key()
        subject = certs.name(join.node_user(self.settings.node_name), join.NODES_GROUP)
        return key, certs.new_csr(key, subject)

    async def renew(self) -> None:
        old = self.credentials()
        key, csr = self._new_csr()
        async with grpc.aio.secure_channel(self.settings.cloud, old.channel()) as channel:
            reply = await pb_grpc.CertificateServiceStub(channel).Renew(
                pb.RenewRequest(csr_der=csr), timeout=CALL_TIMEOUT
            )
        creds = Credentials(certs.key_pem(key), reply.certificate_pem, reply.ca_pem)
        _check_issued(creds, key, certs.fingerprint(certs.load_cert(old.ca_pem)))
        self._store(creds)
        log.info("node certificate renewed; valid until %s", creds.cert.not_valid_after_utc)


def _check_issued(creds: Credentials, key: certs.PrivateKey, ca_hash: str) -> None:
    """The CA is the one we trust, and the certificate is for our key, signed by that CA."""
    try:
        ca = certs.load_cert(creds.ca_pem, "the CA the cloud sent")
        cert = certs.load_cert(creds.cert_pem, "the certificate the cloud sent")
    except certs.CertError as exc:
        raise JoinRefused(str(exc)) from None
    if certs.fingerprint(ca) != ca_hash:
        raise JoinRefused(
            f"the cloud's CA has hash {certs.fingerprint(ca)}, the token expects {ca_hash}: "
            "wrong cloud, or someone in between"
        )
    if cert.public_key() != key.public_key() or not certs.signed_by(cert, ca):
        raise JoinRefused("the certificate the cloud sent is not for this node's key and CA")
