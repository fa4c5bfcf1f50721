"""common.kubeclient: a kubeconfig's embedded credentials live in memory, never in TMPDIR."""

from __future__ import annotations

import base64
import gc
import os
import tempfile
from pathlib import Path

import pytest
import yaml

from common import kubeclient
from common.errors import ConfigError

CA, CERT, KEY = b"ca bytes\n", b"cert bytes\n", b"-----BEGIN PRIVATE KEY-----\nkey\n"


def kubeconfig(path: Path, cluster: dict[str, str], user: dict[str, str]) -> Path:
    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:6443", **cluster}}],
        "users": [{"name": "u", "user": user}],
        "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
        "current-context": "x",
    }
    path.write_text(yaml.safe_dump(doc))
    return path


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.fixture
def scratch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The temp dir the kubernetes client would have written to."""
    path = tmp_path / "tmpdir"
    path.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(path))
    return path


def test_embedded_credentials_are_read_from_memory_and_released_with_the_client(
    tmp_path: Path, scratch: Path
) -> None:
    path = kubeconfig(
        tmp_path / "kubeconfig",
        {"certificate-authority-data": b64(CA)},
        {"client-certificate-data": b64(CERT), "client-key-data": b64(KEY)},
    )
    before = open_fds()
    api = kubeclient.ApiClient(path)
    cfg = api.configuration
    files = (cfg.ssl_ca_cert, cfg.cert_file, cfg.key_file)
    assert [Path(f).read_bytes() for f in files] == [CA, CERT, KEY]
    assert all(f.startswith("/proc/self/fd/") for f in files)
    assert list(scratch.iterdir()) == []
    api.close()  # a closed client still works, as the official one does
    assert [Path(f).read_bytes() for f in files] == [CA, CERT, KEY]
    del api, cfg
    gc.collect()
    assert open_fds() == before


def test_relative_credential_paths_are_read_next_to_the_kubeconfig(
    tmp_path: Path, scratch: Path
) -> None:
    (tmp_path / "pki").mkdir()
    for name, data in (("ca.crt", CA), ("client.crt", CERT), ("client.key", KEY)):
        (tmp_path / "pki" / name).write_bytes(data)
    path = kubeconfig(
        tmp_path / "kubeconfig",
        {"certificate-authority": "pki/ca.crt"},
        {"client-certificate": "pki/client.crt", "client-key": str(tmp_path / "pki/client.key")},
    )
    cfg, files = kubeclient.load(path)
    try:
        assert cfg.ssl_ca_cert == str(tmp_path / "pki/ca.crt")
        assert cfg.cert_file == str(tmp_path / "pki/client.crt")
        assert cfg.key_file == str(tmp_path / "pki/client.key")
    finally:
        files.close()


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("- just\n- a list\n", "not a kubeconfig document"),
        ("clusters: [\n", "while parsing"),
        (None, "No such file"),
    ],
)
def test_an_unusable_kubeconfig_is_a_config_error_naming_it(
    tmp_path: Path, text: str | None, says: str
) -> None:
    path = tmp_path / "kubeconfig"
    if text is not None:
        path.write_text(text)
    with pytest.raises(ConfigError, match=f"kubeconfig {path}: .*{says}"):
        kubeclient.load(path)


def test_bad_embedded_data_is_refused_and_nothing_stays_open(tmp_path: Path, scratch: Path) -> None:
    path = kubeconfig(
        tmp_path / "kubeconfig",
        {"certificate-authority-data": b64(CA)},
        {"client-certificate-data": b64(CERT), "client-key-data": "not*base64"},
    )
    before = open_fds()
    with pytest.raises(ConfigError, match="entry 'u': client-key-data"):
        kubeclient.load(path)
    assert open_fds() == before
    assert list(scratch.iterdir()) == []
