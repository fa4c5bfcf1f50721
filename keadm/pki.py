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
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from common import certs

CA_COMMON_NAME = "kubeedge-py-ca"
CA_LIFETIME = dt.timedelta(days=3650)
LEAF_LIFETIME = dt.timedelta(days=365)
RENEW_BEFORE = dt.timedelta(days=30)
# The in-cluster names of the API server (its `kubernetes` Service) besides the listen host.
SERVING_NAMES = (
    "127.0.0.1",
    "localhost",
    "kubernetes",
    "kubernetes.default",
    "kubernetes.default.svc",
    "kubernetes.default.svc.cluster.local",
)


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
    hosts = [*SERVING_NAMES, *hosts]
    if not _fits(pki.serving_cert, pki.serving_key, ca_cert, certs.san_names(hosts)):
        template = certs.server_template("kube-apiserver", hosts)
        _issue(pki.serving_cert, pki.serving_key, ca_cert, ca_key, template)
    for who in CLIENTS:
        template = certs.client_template(certs.name(who.common_name, who.organization))
        if not _fits(pki.cert(who), pki.key(who), ca_cert, [], template[0]):
            _issue(pki.cert(who), pki.key(who), ca_cert, ca_key, template)
    if not pki.sa_key.exists() or not pki.sa_pub.exists():
        key = certs.new_key()
        pub = key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        certs.write_file(pki.sa_key, certs.key_pem(key), 0o600)
        certs.write_file(pki.sa_pub, pub, 0o644)
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
    certs.write_file(path, yaml.safe_dump(config, sort_keys=False).encode("utf-8"), 0o600)
    return path


# -- the pieces ----------------------------------------------------------------------------


def _ensure_ca(pki: Pki) -> tuple[x509.Certificate, certs.PrivateKey]:
    if pki.ca_cert.exists() and pki.ca_key.exists():
        return _load_cert(pki.ca_cert), _load_key(pki.ca_key)
    cert, key = certs.new_ca(CA_COMMON_NAME, CA_LIFETIME)
    certs.write_file(pki.ca_key, certs.key_pem(key), 0o600)
    certs.write_file(pki.ca_cert, certs.cert_pem(cert), 0o644)
    return cert, key


def _issue(
    cert_path: Path,
    key_path: Path,
    ca_cert: x509.Certificate,
    ca_key: certs.PrivateKey,
    template: certs.Template,
) -> None:
    key = certs.new_key()
    cert = certs.issue(ca_cert, ca_key, key.public_key(), template, LEAF_LIFETIME)
    certs.write_file(key_path, certs.key_pem(key), 0o600)
    certs.write_file(cert_path, certs.cert_pem(cert), 0o644)


def _fits(
    cert_path: Path,
    key_path: Path,
    ca_cert: x509.Certificate,
    names: list[certs.SanName],
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
    if not certs.signed_by(cert, ca_cert):
        return False
    if cert.not_valid_after_utc - RENEW_BEFORE < certs.now():
        return False
    have = certs.names_in(cert)
    return all(name in have for name in names)


def _load_cert(path: Path) -> x509.Certificate:
    try:
        return certs.load_cert(path.read_bytes(), str(path))
    except certs.CertError as exc:
        raise PkiError(str(exc)) from exc


def _load_key(path: Path) -> certs.PrivateKey:
    try:
        return certs.load_key(path.read_bytes(), str(path))
    except certs.CertError as exc:
        raise PkiError(str(exc)) from exc
