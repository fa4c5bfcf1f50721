"""The API server's own PKI: a self-signed CA, a serving certificate, an admin token, a kubeconfig.

`ensure_pki` makes these once in a directory and reuses them on every later start, so a
kubeconfig written earlier keeps working. When the server is asked to answer on a host its
serving certificate does not name (the listen address changed), only the serving certificate
is issued again, by the same CA, so clients that trust the CA need nothing new.

This is not a general certificate authority: there are no client certificates, no rotation of
the CA and no revocation. Clients prove who they are with the admin bearer token alone.
"""

from __future__ import annotations

import base64
import datetime as dt
import hmac
import ipaddress
import logging
import os
import secrets
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

from common.errors import ConfigError

log = logging.getLogger(__name__)

CA_COMMON_NAME = "kubeedge-py-ca"
SERVING_COMMON_NAME = "kubeedge-py-apiserver"
DEFAULT_HOSTS = ("127.0.0.1", "localhost")
CA_LIFETIME = dt.timedelta(days=3650)
SERVING_LIFETIME = dt.timedelta(days=365)
# Issue the serving certificate again this long before it expires.
RENEW_BEFORE = dt.timedelta(days=30)
# Backdate notBefore so a client whose clock runs a little behind still accepts the cert.
CLOCK_SKEW = dt.timedelta(minutes=5)

CA_CERT_FILE = "ca.crt"
CA_KEY_FILE = "ca.key"
SERVING_CERT_FILE = "apiserver.crt"
SERVING_KEY_FILE = "apiserver.key"
TOKEN_FILE = "admin.token"

SanName = x509.DNSName | x509.IPAddress


@dataclass(frozen=True)
class Pki:
    """Where the server's PKI lives, and the admin token itself."""

    ca_cert: Path
    """PEM certificate of the self-signed CA that clients trust."""
    ca_key: Path
    """PEM private key of the CA (mode 0600)."""
    serving_cert: Path
    """PEM serving certificate, signed by the CA, naming every requested host."""
    serving_key: Path
    """PEM private key of the serving certificate (mode 0600)."""
    admin_token: str
    """Bearer token that grants full access (stored in a 0600 file)."""


def ensure_pki(pki_dir: Path, hosts: Iterable[str]) -> Pki:
    """Create the CA, serving certificate and admin token in `pki_dir`, or reuse them.

    `hosts` are the names and addresses clients use to reach the server; 127.0.0.1 and
    localhost are always added. Raises ConfigError when existing files cannot be read.
    """
    pki_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    pki = Pki(
        ca_cert=pki_dir / CA_CERT_FILE,
        ca_key=pki_dir / CA_KEY_FILE,
        serving_cert=pki_dir / SERVING_CERT_FILE,
        serving_key=pki_dir / SERVING_KEY_FILE,
        admin_token=_ensure_token(pki_dir / TOKEN_FILE),
    )
    ca_cert, ca_key = _ensure_ca(pki)
    wanted = _san_names([*DEFAULT_HOSTS, *hosts])
    if _serving_cert_fits(pki.serving_cert, ca_cert, wanted):
        return pki
    log.info("issuing serving certificate for %s", ", ".join(str(n.value) for n in wanted))
    cert, key = _issue_serving(ca_cert, ca_key, wanted)
    _write(pki.serving_key, _key_pem(key), 0o600)
    _write(pki.serving_cert, cert.public_bytes(serialization.Encoding.PEM), 0o644)
    return pki


def write_kubeconfig(
    path: Path,
    *,
    server: str,
    ca_cert_pem: bytes,
    token: str,
    cluster: str = "kubeedge-py",
    user: str = "admin",
) -> None:
    """Write a kubeconfig (mode 0600) that reaches `server` as `user` with a bearer token."""
    context = f"{user}@{cluster}"
    config: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": cluster,
                "cluster": {
                    "server": server,
                    "certificate-authority-data": base64.b64encode(ca_cert_pem).decode("ascii"),
                },
            }
        ],
        "users": [{"name": user, "user": {"token": token}}],
        "contexts": [{"name": context, "context": {"cluster": cluster, "user": user}}],
        "current-context": context,
        "preferences": {},
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    _write(path, yaml.safe_dump(config, sort_keys=False).encode("utf-8"), 0o600)


def token_matches(header: str | None, token: str) -> bool:
    """Whether an Authorization header value carries `Bearer <token>`, compared in constant time."""
    if not header or not token:
        return False
    scheme, _, credentials = header.strip().partition(" ")
    # The scheme is case-insensitive (RFC 9110); only the credentials need a constant-time compare.
    if scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(credentials.strip().encode("utf-8"), token.encode("utf-8"))


# -- the pieces ----------------------------------------------------------------------------


def _ensure_token(path: Path) -> str:
    if path.exists():
        token = path.read_text(encoding="utf-8").strip()
        if token:
            return token
    token = secrets.token_urlsafe(32)
    _write(path, token.encode("ascii") + b"\n", 0o600)
    return token


def _ensure_ca(pki: Pki) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    if pki.ca_cert.exists() and pki.ca_key.exists():
        return _load_cert(pki.ca_cert), _load_key(pki.ca_key)
    log.info("creating certificate authority in %s", pki.ca_cert.parent)
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
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    _write(pki.ca_key, _key_pem(key), 0o600)
    _write(pki.ca_cert, cert.public_bytes(serialization.Encoding.PEM), 0o644)
    # A serving certificate left from an earlier CA can no longer be trusted by its clients.
    pki.serving_cert.unlink(missing_ok=True)
    return cert, key


def _issue_serving(
    ca_cert: x509.Certificate, ca_key: ec.EllipticCurvePrivateKey, names: list[SanName]
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, SERVING_COMMON_NAME)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(min(now + SERVING_LIFETIME, ca_cert.not_valid_after_utc))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(_authority_key_id(ca_cert), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return cert, key


def _authority_key_id(ca_cert: x509.Certificate) -> x509.AuthorityKeyIdentifier:
    try:
        ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    except x509.ExtensionNotFound:
        # A CA put here by hand may lack the extension; derive the id from its key instead.
        public_key = ca_cert.public_key()
        if not isinstance(public_key, ec.EllipticCurvePublicKey):
            raise ConfigError("the CA certificate does not hold an EC public key") from None
        return x509.AuthorityKeyIdentifier.from_issuer_public_key(public_key)
    return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)


def _serving_cert_fits(path: Path, ca_cert: x509.Certificate, wanted: list[SanName]) -> bool:
    """Whether the serving cert on disk is signed by this CA, current, and names every host."""
    key_path = path.with_name(SERVING_KEY_FILE)
    if not path.exists() or not key_path.exists():
        return False
    cert = _load_cert(path)
    if cert.public_key() != _load_key(key_path).public_key():
        return False  # a crash between writing the new key and its certificate
    try:
        cert.verify_directly_issued_by(ca_cert)
    except (ValueError, TypeError, InvalidSignature):
        return False
    if cert.not_valid_after_utc - RENEW_BEFORE < _now():
        return False
    try:
        have = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return False
    return all(name in have for name in wanted)


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
        raise ConfigError(f"{path}: not a PEM certificate: {exc}") from exc


def _load_key(path: Path) -> ec.EllipticCurvePrivateKey:
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{path}: not an unencrypted PEM private key: {exc}") from exc
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ConfigError(f"{path}: expected an EC private key, found {type(key).__name__}")
    return key


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _write(path: Path, data: bytes, mode: int) -> None:
    """Write through a temporary file and rename, so a crash never leaves half a key behind."""
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
