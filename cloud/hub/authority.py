"""The edge CA: who may join, and the certificates the hub trusts.

What it does:
- keeps the edge CA in the Secret kubeedge/cloudcore-ca (type kubernetes.io/tls), created by
  the first cloudcore that starts, so every cloudcore of a cluster (and `keadm gettoken`)
  shares it; a race between two first starts is settled by the API (409: read the winner's);
- issues the hub's serving certificate at start (for 127.0.0.1, localhost, this host's name
  and --hub-advertise-address);
- Join (BootstrapService): checks a join token's Secret (type, expiry, node binding, the
  HMAC proof over the node name and CSR), spends it by deleting the Secret with its uid and
  resourceVersion as preconditions (so a token works exactly once, even with several
  cloudcores), and only then signs a client certificate `system:node:NAME` (O system:nodes);
- Renew (CertificateService): signs a new certificate for the node the caller's current
  certificate names.

- a token made without a node name joins new nodes only (an existing Node needs a token made
  for it), so a spare token cannot take over a running node;
- revocation: `keadm node revoke N` records a time in Secret kubeedge/edge-node-revocations;
  N's certificates issued then or before are refused (stream, renewal).

What it does not: keep a list of issued certificates (a revocation is per node and time).
"""

from __future__ import annotations

import base64
import datetime as dt
import logging
import socket
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from kubeedge.hub.v1 import certificates_pb2 as pb
from kubernetes import client

from cloud.kube import Kube, Obj
from cloud.kubeerrors import Conflict, KubeAPIError, NotFound
from common import certs, join
from common.errors import ConfigError
from common.names import valid_node_name

log = logging.getLogger(__name__)

CA_COMMON_NAME = "kubeedge-py-edge-ca"
CA_LIFETIME = dt.timedelta(days=3650)
SERVING_LIFETIME = dt.timedelta(days=365)
TLS_SECRET_TYPE = "kubernetes.io/tls"


class Refused(Exception):
    """A join or renew request that gets no certificate; `reason` goes back to the caller."""

    def __init__(self, reason: str, *, malformed: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.malformed = malformed  # INVALID_ARGUMENT rather than UNAUTHENTICATED


@dataclass(frozen=True)
class ServingIdentity:
    key_pem: bytes
    cert_pem: bytes
    ca_pem: bytes


class EdgeAuthority:
    def __init__(self, kube: Kube, *, node_cert_lifetime: float, advertise: list[str]) -> None:
        if node_cert_lifetime <= 0:
            raise ConfigError("--node-cert-lifetime must be a positive number of seconds")
        self.kube = kube
        self.node_cert_lifetime = dt.timedelta(seconds=node_cert_lifetime)
        self.advertise = advertise
        self.ca_cert: x509.Certificate | None = None
        self._ca_key: certs.PrivateKey | None = None
        self.revoked: dict[str, dt.datetime] = {}  # as last read

    async def load(self) -> None:
        """Read the CA from its Secret, creating it if no cloudcore has yet."""
        await self.kube.connect()
        try:
            obj = await self.kube.read(
                self.kube.core.read_namespaced_secret, join.CA_SECRET, join.NAMESPACE
            )
        except NotFound:
            obj = await self._create_ca()
        self.ca_cert, self._ca_key = _ca_from_secret(obj)
        log.info("edge CA %s (sha256 %s)", join.CA_SECRET, certs.fingerprint(self.ca_cert))

    async def _create_ca(self) -> Obj:
        cert, key = certs.new_ca(CA_COMMON_NAME, CA_LIFETIME)
        body = {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": join.CA_SECRET, "namespace": join.NAMESPACE},
            "type": TLS_SECRET_TYPE,
            "data": {
                "tls.crt": base64.b64encode(certs.cert_pem(cert)).decode(),
                "tls.key": base64.b64encode(certs.key_pem(key)).decode(),
            },
        }
        try:
            await self.kube.call(self.kube.core.create_namespaced_secret, join.NAMESPACE, body)
            log.info("created the edge CA in Secret %s/%s", join.NAMESPACE, join.CA_SECRET)
            return body
        except Conflict:  # another cloudcore made it first: use theirs
            obj: Obj = await self.kube.read(
                self.kube.core.read_namespaced_secret, join.CA_SECRET, join.NAMESPACE
            )
            return obj

    def _ca(self) -> tuple[x509.Certificate, certs.PrivateKey]:
        if self.ca_cert is None or self._ca_key is None:
            raise RuntimeError("EdgeAuthority.load() has not run")
        return self.ca_cert, self._ca_key

    @property
    def ca_pem(self) -> bytes:
        return certs.cert_pem(self._ca()[0])

    def serving_identity(self, listen_host: str) -> ServingIdentity:
        ca_cert, ca_key = self._ca()
        hosts = ["127.0.0.1", "::1", "localhost", socket.gethostname(), *self.advertise]
        if listen_host not in ("0.0.0.0", "::", ""):
            hosts.append(listen_host)
        key = certs.new_key()
        template = certs.server_template("cloudcore", hosts)
        cert = certs.issue(ca_cert, ca_key, key.public_key(), template, SERVING_LIFETIME)
        return ServingIdentity(certs.key_pem(key), certs.cert_pem(cert), certs.cert_pem(ca_cert))

    # -- join and renew -------------------------------------------------------------------

    async def join(self, request: pb.JoinRequest) -> pb.JoinResponse:
        node = request.node_name
        if not valid_node_name(node):
            raise Refused(f"node name {node!r} is not a valid Kubernetes node name", malformed=True)
        csr = _csr(request.csr_der)
        secret = await self._token_secret(request.token_id)
        fields = join.secret_fields(secret)
        self._check_token(request, fields)
        if not fields.get("node-name"):
            await self._refuse_existing(node, request.token_id)
        cert_pem = self._sign(node, csr)  # before spending: nothing can fail after the spend
        await self._spend(secret)
        proof = join.response_proof(fields["token-secret"], cert_pem, self.ca_pem)
        log.info("node %s joined with token %s", node, request.token_id)
        return pb.JoinResponse(certificate_pem=cert_pem, ca_pem=self.ca_pem, proof=proof)

    async def renew(self, node: str, current: x509.Certificate, csr_der: bytes) -> pb.RenewResponse:
        await self.check_not_revoked(node, current, strict=True)
        cert_pem = self._sign(node, _csr(csr_der))
        log.info("renewed the certificate of node %s", node)
        return pb.RenewResponse(certificate_pem=cert_pem, ca_pem=self.ca_pem)

    async def _refuse_existing(self, node: str, token_id: str) -> None:
        """A token made for no node in particular joins new nodes only: taking over a
        registered node needs a token made for it (`keadm gettoken --node-name`)."""
        try:
            await self.kube.read(self.kube.core.read_node, node)
        except NotFound:
            return
        raise Refused(
            f"node {node!r} already exists; join token {token_id!r} is not for it (make one "
            f"with `keadm gettoken --node-name {node}` to join it again)"
        )

    # -- revocation -----------------------------------------------------------------------

    async def revocations(self) -> dict[str, dt.datetime]:
        """Node -> the time up to which its certificates are refused."""
        try:
            obj: Obj = await self.kube.read(
                self.kube.core.read_namespaced_secret, join.REVOCATION_SECRET, join.NAMESPACE
            )
        except NotFound:
            return {}
        out = {}
        for node, when in join.secret_fields(obj).items():
            try:
                out[node] = join.parse_expiry(when)
            except ValueError:
                log.warning("revocation of node %s has no valid time: %r", node, when)
        self.revoked = out
        return out

    @staticmethod
    def is_revoked(cert: x509.Certificate, before: dt.datetime | None) -> bool:
        return before is not None and cert.not_valid_before_utc <= before

    async def check_not_revoked(self, node: str, cert: x509.Certificate, *, strict: bool) -> None:
        """Refused if `node`'s certificates up to `cert`'s issue time were revoked. When the
        API cannot be read: `strict` refuses (renewal mints new credentials); otherwise the
        last revocations read decide (a stream; the periodic sweep ends it later if need be)."""
        try:
            revoked = await self.revocations()
        except KubeAPIError as exc:
            if strict:
                raise
            log.warning("cannot read revocations (%s); using the last ones read", exc)
            revoked = self.revoked
        before = revoked.get(node)
        if self.is_revoked(cert, before):
            raise Refused(f"the certificates of node {node!r} were revoked at {before}")

    async def _token_secret(self, token_id: str) -> Obj:
        unknown = f"join token {token_id!r} is unknown, already used or revoked"
        if not join.valid_token_id(token_id):
            raise Refused(unknown)
        try:
            obj: Obj = await self.kube.read(
                self.kube.core.read_namespaced_secret,
                join.TOKEN_SECRET_PREFIX + token_id,
                join.NAMESPACE,
            )
        except NotFound:
            raise Refused(unknown) from None
        if obj.get("type") != join.TOKEN_SECRET_TYPE:
            raise Refused(unknown)
        return obj

    def _check_token(self, request: pb.JoinRequest, fields: dict[str, str]) -> None:
        token_id = request.token_id
        if fields.get("usage") != "join" or "token-secret" not in fields:
            raise Refused(f"join token {token_id!r} is not a join token")
        try:
            expires = join.parse_expiry(fields.get("expiration", ""))
        except ValueError:
            raise Refused(f"join token {token_id!r} has no valid expiration") from None
        if expires <= certs.now():
            raise Refused(f"join token {token_id!r} expired at {fields['expiration']}")
        bound = fields.get("node-name", "")
        if bound and bound != request.node_name:
            raise Refused(f"join token {token_id!r} is for node {bound!r} only")
        expected = join.request_proof(fields["token-secret"], request.node_name, request.csr_der)
        if not join.proof_matches(expected, request.proof):
            raise Refused(f"wrong secret for join token {token_id!r}")

    async def _spend(self, secret: Obj) -> None:
        meta = secret.get("metadata") or {}
        options = client.V1DeleteOptions(
            preconditions=client.V1Preconditions(
                uid=meta.get("uid"), resource_version=meta.get("resourceVersion")
            )
        )
        try:
            await self.kube.call(
                self.kube.core.delete_namespaced_secret,
                meta.get("name"),
                join.NAMESPACE,
                body=options,
            )
        except (NotFound, Conflict):  # another join spent it between our read and delete
            raise Refused(f"join token {meta.get('name')!r} was already used") from None

    def _sign(self, node: str, csr: x509.CertificateSigningRequest) -> bytes:
        ca_cert, ca_key = self._ca()
        subject = certs.name(join.node_user(node), join.NODES_GROUP)
        public_key = csr.public_key()
        assert isinstance(public_key, ec.EllipticCurvePublicKey)  # load_csr checked
        cert = certs.issue(
            ca_cert,
            ca_key,
            public_key,
            certs.client_template(subject),
            self.node_cert_lifetime,
            skew=False,
        )
        return certs.cert_pem(cert)


def _csr(der: bytes) -> x509.CertificateSigningRequest:
    try:
        return certs.load_csr(der)
    except certs.CertError as exc:
        raise Refused(str(exc), malformed=True) from None


def _ca_from_secret(obj: Obj) -> tuple[x509.Certificate, certs.PrivateKey]:
    data = obj.get("data") or {}
    where = f"Secret {join.NAMESPACE}/{join.CA_SECRET}"
    try:
        cert_pem = base64.b64decode(data.get("tls.crt", ""), validate=True)
        key_pem = base64.b64decode(data.get("tls.key", ""), validate=True)
    except ValueError as exc:
        raise certs.CertError(f"{where}: not base64: {exc}") from exc
    cert = certs.load_cert(cert_pem, f"{where} tls.crt")
    key = certs.load_key(key_pem, f"{where} tls.key")
    if cert.public_key() != key.public_key():
        raise certs.CertError(f"{where}: tls.crt and tls.key do not belong together")
    return cert, key
