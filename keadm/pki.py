"""The embedded control plane's PKI: one CA, the API server's serving certificate, a client
certificate per component, the service-account signing key, and kubeconfigs.

`ensure_pki` makes all of it once in a directory and reuses it on every later start, so a
kubeconfig handed out earlier keeps working. A certificate is issued again only when it is
missing, no longer signed by the CA, close to expiry, or (the serving one) does not name every
host clients use. Keys are written 0600 through a temporary file and a rename, so a crash
never leaves half a key behind.

This is not a general certificate authority: no CSR signing, no revocation, no CA rotation.
Certificates (365 days) are checked and renewed at each start, 30 days before they expire;
a control plane left running for eleven months must be restarted to renew them.
Identities follow Kubernetes' conventions — `system:masters` for the admin,
`system:kube-controller-manager` and `system:kube-scheduler` for those two — so the API
server's built-in RBAC bootstrap policy grants each what it needs.
"""

from __future__ import annotations

import base64
import datetime as dt
import ipaddress
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_COMMON_NAME = "kubeedge-py-ca"
CA_LIFETIME = dt.timedelta(days=3650)
LEAF_LIFETIME = dt.timedelta(days=365)
RENEW_BEFORE = dt.timedelta(days=30)
# Backdate notBefore so a peer whose clock runs a little behind still accepts the cert.
CLOCK_SKEW = dt.timedelta(minutes=5)
# The in-cluster names of the API server (its `kubernetes` Service) besides the listen host.
SERVING_NAMES = (
    "127.0.0.1",
    "localhost",
    "kubernetes",
    "kubernetes.default",
    "kubernetes.default.svc",
    "kubernetes.default.svc.cluster.local",
)

SanName = x509.DNSName | x509.IPAddress


class PkiError(Exception):
    """A file in the PKI directory cannot be read as what it should be."""


@dataclass(frozen=True)
class Identity:
    """Who a client certificate says its holder is (CN: the user; O: its group)."""

    file: str
    common_name: str
    organization: str | None = None


ADMIN = Identity("admin", "kubeedge-py-admin", "system:masters")
CONTROLLER_MANAGER = Identity("controller-manager", "system:kube-controller-manager")
SCHEDULER = Identity("scheduler", "system:kube-scheduler")
# Bound to the ClusterRole of deploy/cloudcore-rbac.yaml: what cloudcore needs, not admin.
CLOUDCORE = Identity("cloudcore", "system:kubeedge:cloudcore")
KUBELET_CLIENT = Identity("apiserver-kubelet-client", "kube-apiserver-kubelet-client")
CLIENTS = (ADMIN, CONTROLLER_MANAGER, SCHEDULER, CLOUDCORE, KUBELET_CLIENT)


@dataclass(frozen=True)
class Pki:
    """Paths of everything `ensure_pki` keeps in one directory."""

    dir: Path

    @property
    def ca_cert(self) -> Path:
        return self.dir / "ca.crt"

    @property
    def ca_key(self) -> Path:
        return self.dir / "ca.key"

    @property
    def serving_cert(self) -> Path:
        return self.dir / "apiserver.crt"

    @property
    def serving_key(self) -> Path:
        return self.dir / "apiserver.key"

    @property
    def sa_key(self) -> Path:
        """Private key that signs service-account tokens (its public half is sa.pub)."""
        return self.dir / "sa.key"

    @property
    def sa_pub(self) -> Path:
        return self.dir / "sa.pub"

    def cert(self, who: Identity) -> Path:
        return self.dir / f"{who.file}.crt"

    def key(self, who: Identity) -> Path:
        return self.dir / f"{who.file}.key"


def ensure_pki(pki_dir: Path, hosts: Iterable[str]) -> Pki:
    """Create (or reuse) the CA, the serving certificate for `hosts` plus the in-cluster names,
    a client certificate per identity in CLIENTS, and the service-account key pair."""
    pki_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(pki_dir, 0o700)
    pki = Pki(pki_dir)
    ca_cert, ca_key = _ensure_ca(pki)
    names = _san_names([*SERVING_NAMES, *hosts])
    if not _fits(pki.serving_cert, pki.serving_key, ca_cert, names):
        _issue(pki.serving_cert, pki.serving_key, ca_cert, ca_key, _serving(names))
    for who in CLIENTS:
        template = _client(who)
        if not _fits(pki.cert(who), pki.key(who), ca_cert, [], template[0]):
            _issue(pki.cert(who), pki.key(who), ca_cert, ca_key, template)
    if not pki.sa_key.exists() or not pki.sa_pub.exists():
        key = ec.generate_private_key(ec.SECP256R1())
        pub = key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        _write(pki.sa_key, _key_pem(key), 0o600)
        _write(pki.sa_pub, pub, 0o644)
    return pki


def write_kubeconfig(path: Path, *, server: str, pki: Pki, who: Identity) -> Path:
    """A kubeconfig (mode 0600) that reaches `server` as `who`, certificates inlined."""

    def b64(p: Path) -> str:
        return base64.b64encode(p.read_bytes()).decode("ascii")

    cluster, user = "kubeedge-py", who.file
    config: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": cluster,
                "cluster": {"server": server, "certificate-authority-data": b64(pki.ca_cert)},
            }
        ],
        "users": [
            {
                "name": user,
                "user": {
                    "client-certificate-data": b64(pki.cert(who)),
                    "client-key-data": b64(pki.key(who)),
                },
            }
        ],
        "contexts": [{"name": f"{user}@{cluster}", "context": {"cluster": cluster, "user": user}}],
        "current-context": f"{user}@{cluster}",
        "preferences": {},
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    _write(path, yaml.safe_dump(config, sort_keys=False).encode("utf-8"), 0o600)
    return path


# -- the pieces ----------------------------------------------------------------------------

Template = tuple[x509.Name, list[x509.ExtensionType]]


def _ensure_ca(pki: Pki) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    if pki.ca_cert.exists() and pki.ca_key.exists():
        return _load_cert(pki.ca_cert), _load_key(pki.ca_key)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, CA_COMMON_NAME)])
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(now + CA_LIFETIME)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(cert_sign=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    _write(pki.ca_key, _key_pem(key), 0o600)
    _write(pki.ca_cert, cert.public_bytes(serialization.Encoding.PEM), 0o644)
    return cert, key


def _serving(names: list[SanName]) -> Template:
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kube-apiserver")])
    return subject, [
        x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]),
        x509.SubjectAlternativeName(names),
    ]


def _client(who: Identity) -> Template:
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, who.common_name)]
    if who.organization:
        attrs.insert(0, x509.NameAttribute(NameOID.ORGANIZATION_NAME, who.organization))
    return x509.Name(attrs), [x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH])]


def _issue(
    cert_path: Path,
    key_path: Path,
    ca_cert: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    template: Template,
) -> None:
    subject, extensions = template
    key = ec.generate_private_key(ec.SECP256R1())
    now = _now()
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(min(now + LEAF_LIFETIME, ca_cert.not_valid_after_utc))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(cert_sign=False), critical=True)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
    )
    for ext in extensions:
        builder = builder.add_extension(ext, critical=False)
    cert = builder.sign(ca_key, hashes.SHA256())
    _write(key_path, _key_pem(key), 0o600)
    _write(cert_path, cert.public_bytes(serialization.Encoding.PEM), 0o644)


def _key_usage(*, cert_sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )


def _fits(
    cert_path: Path,
    key_path: Path,
    ca_cert: x509.Certificate,
    names: list[SanName],
    subject: x509.Name | None = None,
) -> bool:
    """Whether the cert on disk matches its key, is signed by this CA, is current, names
    every wanted host, and (for a client) still says who it should."""
    if not cert_path.exists() or not key_path.exists():
        return False
    cert = _load_cert(cert_path)
    if subject is not None and cert.subject != subject:
        return False
    if cert.public_key() != _load_key(key_path).public_key():
        return False  # a crash between writing a new key and its certificate
    try:
        cert.verify_directly_issued_by(ca_cert)
    except (ValueError, TypeError, InvalidSignature):
        return False
    if cert.not_valid_after_utc - RENEW_BEFORE < _now():
        return False
    if not names:
        return True
    try:
        have = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return False
    return all(name in have for name in names)


def _san_names(hosts: Iterable[str]) -> list[SanName]:
    """IP addresses become IPAddress entries, anything else a DNSName; duplicates dropped."""
    names: list[SanName] = []
    for raw in hosts:
        host = raw.strip().removeprefix("[").removesuffix("]")
        if not host:
            continue
        name: SanName
        try:
            name = x509.IPAddress(ipaddress.ip_address(host))
        except ValueError:
            name = x509.DNSName(host.lower())
        if name not in names:
            names.append(name)
    return names


def _load_cert(path: Path) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(path.read_bytes())
    except ValueError as exc:
        raise PkiError(f"{path}: not a PEM certificate: {exc}") from exc


def _load_key(path: Path) -> ec.EllipticCurvePrivateKey:
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (ValueError, TypeError) as exc:
        raise PkiError(f"{path}: not an unencrypted PEM private key: {exc}") from exc
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise PkiError(f"{path}: expected an EC private key, found {type(key).__name__}")
    return key


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _write(path: Path, data: bytes, mode: int) -> None:
    """Write through a temporary file and rename, so a crash never leaves half a file."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as f:
        os.fchmod(fd, mode)  # the umask may have narrowed it, and an old tmp file kept its own
        f.write(data)
        f.flush()
        os.fsync(fd)
    os.replace(tmp, path)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)
