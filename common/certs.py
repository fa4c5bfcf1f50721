"""X.509 pieces shared by keadm's control-plane PKI, cloudcore's edge CA and edgecore's
client identity: EC P-256 keys, a self-signed CA, leaf certificates signed by it, CSRs, and
files written whole and private.

Every certificate is backdated a little (CLOCK_SKEW, at most a tenth of its lifetime) so a peer
whose clock runs slightly behind still accepts it.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CLOCK_SKEW = dt.timedelta(minutes=5)

PrivateKey = ec.EllipticCurvePrivateKey
SanName = x509.DNSName | x509.IPAddress
Template = tuple[x509.Name, list[x509.ExtensionType]]


class CertError(Exception):
    """Bytes that should be a certificate, key or CSR are not one (or not a usable one)."""


def new_key() -> PrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def key_pem(key: PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def load_cert(data: bytes, what: str = "certificate") -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(data)
    except ValueError as exc:
        raise CertError(f"{what}: not a PEM certificate: {exc}") from exc


def load_key(data: bytes, what: str = "private key") -> PrivateKey:
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise CertError(f"{what}: not an unencrypted PEM private key: {exc}") from exc
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise CertError(f"{what}: expected an EC private key, found {type(key).__name__}")
    return key


def fingerprint(cert: x509.Certificate) -> str:
    """SHA-256 over the certificate's DER, in hex: how a join token names its CA."""
    return hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()


def name(common_name: str, organization: str | None = None) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    if organization:
        attrs.insert(0, x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization))
    return x509.Name(attrs)


def common_name(cert: x509.Certificate | x509.CertificateSigningRequest) -> str:
    found = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    value = found[0].value if found else ""
    return value if isinstance(value, str) else value.decode("utf-8", "replace")


def client_template(subject: x509.Name) -> Template:
    return subject, [x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH])]


def server_template(common: str, hosts: Iterable[str]) -> Template:
    return name(common), [
        x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]),
        x509.SubjectAlternativeName(san_names(hosts)),
    ]


def new_ca(common: str, lifetime: dt.timedelta) -> tuple[x509.Certificate, PrivateKey]:
    key = new_key()
    subject = name(common)
    start, end = _validity(lifetime)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(cert_sign=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert, key


def issue(
    ca_cert: x509.Certificate,
    ca_key: PrivateKey,
    public_key: ec.EllipticCurvePublicKey,
    template: Template,
    lifetime: dt.timedelta,
    *,
    skew: bool = True,
) -> x509.Certificate:
    """A leaf certificate for `public_key`, valid for `lifetime` (never past the CA's end).
    skew=False: valid from now, not backdated (for certificates only their issuer checks)."""
    subject, extensions = template
    start, end = _validity(lifetime) if skew else (now(), now() + lifetime)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca_cert.subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(min(end, ca_cert.not_valid_after_utc))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(cert_sign=False), critical=True)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
    )
    for ext in extensions:
        builder = builder.add_extension(ext, critical=False)
    return builder.sign(ca_key, hashes.SHA256())


def new_csr(key: PrivateKey, subject: x509.Name) -> bytes:
    """A PKCS#10 request for `subject`, signed by `key`, in DER."""
    csr = x509.CertificateSigningRequestBuilder().subject_name(subject).sign(key, hashes.SHA256())
    return csr.public_bytes(serialization.Encoding.DER)


def load_csr(der: bytes) -> x509.CertificateSigningRequest:
    """A CSR whose signature checks out and whose key is EC P-256 (what we issue for)."""
    try:
        csr = x509.load_der_x509_csr(der)
        valid = csr.is_signature_valid
        public_key = csr.public_key()
    except (ValueError, TypeError, x509.UnsupportedGeneralNameType) as exc:
        raise CertError(f"not a DER certificate signing request: {exc}") from exc
    if not valid:
        raise CertError("the certificate signing request's signature does not verify")
    if not isinstance(public_key, ec.EllipticCurvePublicKey) or public_key.curve.name != (
        "secp256r1"
    ):
        raise CertError("the certificate signing request must carry an EC P-256 public key")
    return csr


def signed_by(cert: x509.Certificate, ca_cert: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(ca_cert)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def renew_at(cert: x509.Certificate, fraction: float) -> dt.datetime:
    """The moment `fraction` of the certificate's lifetime has passed."""
    start, end = cert.not_valid_before_utc, cert.not_valid_after_utc
    return start + (end - start) * fraction


def san_names(hosts: Iterable[str]) -> list[SanName]:
    """IP addresses become IPAddress entries, anything else a DNSName; duplicates dropped."""
    names: list[SanName] = []
    for raw in hosts:
        host = raw.strip().removeprefix("[").removesuffix("]")
        if not host:
            continue
        entry: SanName
        try:
            entry = x509.IPAddress(ipaddress.ip_address(host))
        except ValueError:
            entry = x509.DNSName(host.lower())
        if entry not in names:
            names.append(entry)
    return names


def names_in(cert: x509.Certificate) -> Sequence[SanName]:
    try:
        return list(cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value)
    except x509.ExtensionNotFound:
        return []


def write_file(path: Path, data: bytes, mode: int) -> None:
    """Write through a temporary file and rename, so a crash never leaves half a file."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, mode)
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(fd, mode)  # the umask may have narrowed it; an old tmp file kept its own
            f.write(data)
            f.flush()
            os.fsync(fd)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _validity(lifetime: dt.timedelta) -> tuple[dt.datetime, dt.datetime]:
    start = now()
    return start - min(CLOCK_SKEW, lifetime / 10), start + lifetime


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
