"""keadm's own pieces without processes: the control plane's PKI, and the pinned build."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
import yaml
from cryptography import x509

from keadm import pki


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_pki_is_made_once_and_keys_are_private(tmp_path: Path) -> None:
    """Every key is 0600 and the directory 0700; a second run reuses every file unchanged."""
    made = pki.ensure_pki(tmp_path / "pki", ["127.0.0.1"])
    keys = [made.ca_key, made.serving_key, made.sa_key, *(made.key(w) for w in pki.CLIENTS)]
    assert all(mode(k) == 0o600 for k in keys) and mode(made.dir) == 0o700
    before = {p.name: p.read_bytes() for p in made.dir.iterdir()}
    pki.ensure_pki(tmp_path / "pki", ["127.0.0.1"])
    assert {p.name: p.read_bytes() for p in made.dir.iterdir()} == before


def test_a_new_host_reissues_only_the_serving_certificate(tmp_path: Path) -> None:
    """Asking for another host re-issues the serving cert under the same CA, naming it;
    client certificates and the CA stay as they were."""
    made = pki.ensure_pki(tmp_path / "pki", ["127.0.0.1"])
    ca, admin = made.ca_cert.read_bytes(), made.cert(pki.ADMIN).read_bytes()
    pki.ensure_pki(tmp_path / "pki", ["127.0.0.1", "cloud.example"])
    cert = x509.load_pem_x509_certificate(made.serving_cert.read_bytes())
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "cloud.example" in names.get_values_for_type(x509.DNSName)
    assert made.ca_cert.read_bytes() == ca and made.cert(pki.ADMIN).read_bytes() == admin
    cert.verify_directly_issued_by(x509.load_pem_x509_certificate(ca))


def test_client_identities_follow_kubernetes_conventions(tmp_path: Path) -> None:
    """CN is the user and O the group: the admin is in system:masters, the scheduler is
    system:kube-scheduler (what the API server's bootstrap RBAC expects)."""
    made = pki.ensure_pki(tmp_path / "pki", [])

    def subject(who: pki.Identity) -> str:
        return x509.load_pem_x509_certificate(made.cert(who).read_bytes()).subject.rfc4514_string()

    assert subject(pki.ADMIN) == "CN=kubeedge-py-admin,O=system:masters"
    assert subject(pki.SCHEDULER) == "CN=system:kube-scheduler"
    assert subject(pki.CLOUDCORE) == "CN=system:kubeedge:cloudcore"  # not system:masters


def test_kubeconfig_is_private_and_complete(tmp_path: Path) -> None:
    """The kubeconfig is 0600 and carries the CA and the client certificate inline."""
    made = pki.ensure_pki(tmp_path / "pki", [])
    path = pki.write_kubeconfig(
        tmp_path / "kubeconfig", server="https://127.0.0.1:6443", pki=made, who=pki.ADMIN
    )
    assert mode(path) == 0o600
    cfg = yaml.safe_load(path.read_text())
    assert cfg["clusters"][0]["cluster"]["server"] == "https://127.0.0.1:6443"
    assert {"client-certificate-data", "client-key-data"} <= set(cfg["users"][0]["user"])


def test_a_corrupt_key_is_a_clear_error(tmp_path: Path) -> None:
    """A key file that is not a key names the file instead of failing somewhere deep."""
    made = pki.ensure_pki(tmp_path / "pki", [])
    made.ca_key.write_text("not a key")
    with pytest.raises(pki.PkiError, match=r"ca\.key"):
        pki.ensure_pki(tmp_path / "pki", [])


def test_the_build_is_pinned() -> None:
    """Each Go module pins exact versions with a committed go.sum, and the Kubernetes one
    points every staging module at the matching v0 version."""
    root = Path(__file__).parents[2] / "third_party"
    for module in ("kubernetes", "kine"):
        assert (root / module / "go.sum").stat().st_size > 0
    gomod = (root / "kubernetes" / "go.mod").read_text()
    assert "require k8s.io/kubernetes v1.37.2" in gomod
    replaces = [line.split() for line in gomod.splitlines() if "=>" in line]
    assert len(replaces) > 20
    assert all(r[0] == r[2] and r[3] == "v0.37.2" for r in replaces)


def test_a_changed_identity_is_reissued(tmp_path: Path) -> None:
    """A client certificate whose subject no longer matches its identity is issued again."""
    made = pki.ensure_pki(tmp_path / "pki", [])
    stale = made.cert(pki.SCHEDULER).read_bytes()
    made.cert(pki.SCHEDULER).write_bytes(made.cert(pki.ADMIN).read_bytes())
    made.key(pki.SCHEDULER).write_bytes(made.key(pki.ADMIN).read_bytes())
    pki.ensure_pki(tmp_path / "pki", [])
    cert = x509.load_pem_x509_certificate(made.cert(pki.SCHEDULER).read_bytes())
    assert cert.subject.rfc4514_string() == "CN=system:kube-scheduler"
    assert made.cert(pki.SCHEDULER).read_bytes() != stale
