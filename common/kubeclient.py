"""A kubernetes client built from a kubeconfig whose keys never reach the disk.

The official client writes a kubeconfig's embedded `*-data` credentials (the client key
among them) to files in the system temp dir and removes them at interpreter exit, so a
process that is SIGKILLed, OOM-killed or crashes leaves its private key in /tmp. Here the
embedded credentials go into anonymous memory files (memfd) instead, named to the client by
`/proc/self/fd/N`; they vanish with the process however it ends, or with the client object.

Used by cloudcore (cloud/kube.py), keadm and the tests: every process of the project that
talks to a cluster loads its kubeconfig here.
"""

from __future__ import annotations

import base64
import binascii
import os
import weakref
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client, config
from kubernetes.config.config_exception import ConfigException

from common.errors import ConfigError

# (section, entry key, embedded field, file field) for every credential a kubeconfig embeds
EMBEDDED = (
    ("clusters", "cluster", "certificate-authority-data", "certificate-authority"),
    ("users", "user", "client-certificate-data", "client-certificate"),
    ("users", "user", "client-key-data", "client-key"),
)


class MemoryFiles:
    """Anonymous in-memory files, each readable by path while this object is open."""

    def __init__(self) -> None:
        self._fds: list[int] = []

    def add(self, name: str, data: bytes) -> str:
        fd = os.memfd_create(name, os.MFD_CLOEXEC)
        self._fds.append(fd)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        return f"/proc/self/fd/{fd}"

    def close(self) -> None:
        fds, self._fds = self._fds, []
        for fd in fds:
            os.close(fd)


def load(kubeconfig: Path) -> tuple[client.Configuration, MemoryFiles]:
    """The client configuration `kubeconfig` describes, and the memory files it reads.

    Raises ConfigError naming the file when it cannot be read or used."""
    try:
        doc = yaml.safe_load(kubeconfig.read_text())
    except (OSError, yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot use kubeconfig {kubeconfig}: {exc}") from exc
    if not isinstance(doc, dict):
        raise ConfigError(f"cannot use kubeconfig {kubeconfig}: not a kubeconfig document")
    files = MemoryFiles()
    try:
        _move_credentials(doc, kubeconfig.parent, files)
        cfg = client.Configuration()
        config.load_kube_config_from_dict(  # type: ignore[no-untyped-call]
            config_dict=doc, client_configuration=cfg, persist_config=False
        )
    except (ConfigException, OSError, ValueError, TypeError, AttributeError) as exc:
        files.close()
        raise ConfigError(f"cannot use kubeconfig {kubeconfig}: {exc}") from exc
    return cfg, files


def _move_credentials(doc: dict[str, Any], base: Path, files: MemoryFiles) -> None:
    """Embedded credentials into memory files; relative file paths made absolute
    (kubectl reads them relative to the kubeconfig's own directory)."""
    for section, key, embedded, file_field in EMBEDDED:
        for entry in doc.get(section) or []:
            body = entry.get(key) if isinstance(entry, dict) else None
            if not isinstance(body, dict):
                continue
            if body.get(embedded):
                try:
                    data = base64.standard_b64decode(body.pop(embedded))
                except (binascii.Error, TypeError) as exc:
                    where = f"{section} entry {entry.get('name')!r}: {embedded}"
                    raise ValueError(f"{where}: {exc}") from exc
                body[file_field] = files.add(file_field, data)
            elif isinstance(body.get(file_field), str):
                body[file_field] = str(base / body[file_field])


class ApiClient(client.ApiClient):
    """client.ApiClient for `kubeconfig`, owning its in-memory credentials.

    They are released with the client object, not at `close()`: like the official client, a
    closed one still works (its connection pool reconnects), and its fds must not be reused
    under it by another file while a caller still holds it."""

    def __init__(self, kubeconfig: Path, *, pool_size: int | None = None) -> None:
        cfg, files = load(kubeconfig)
        if pool_size is not None:
            cfg.connection_pool_maxsize = pool_size
        super().__init__(cfg)
        weakref.finalize(self, files.close)

    def close(self) -> None:
        """Close the connection pool (credentials stay until the object goes)."""
        super().close()  # type: ignore[no-untyped-call]
