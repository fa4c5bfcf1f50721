"""Which resources are served right now: the built-in kinds plus every established CRD."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from cloud.apiserver.resources import BUILTIN, ResourceInfo, from_crd

CRD_DIR = Path(__file__).parent / "crds"


def kubeedge_crds() -> list[dict[str, Any]]:
    """The CRDs the embedded server installs at start (devices, reliablesyncs)."""
    out: list[dict[str, Any]] = []
    for path in sorted(CRD_DIR.glob("*.yaml")):
        out += [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
    return out


class Registry:
    def __init__(self) -> None:
        self._by_path: dict[tuple[str, str, str], ResourceInfo] = {}
        for info in BUILTIN:
            self._add(info)

    def _add(self, info: ResourceInfo) -> None:
        self._by_path[(info.group, info.version, info.plural)] = info

    def add_crd(self, crd: dict[str, Any]) -> list[ResourceInfo]:
        self.remove_crd(crd["metadata"]["name"])
        infos = from_crd(crd)
        for info in infos:
            self._add(info)
        return infos

    def remove_crd(self, crd_name: str) -> None:
        for key, info in list(self._by_path.items()):
            if info.crd_name == crd_name:
                del self._by_path[key]

    def lookup(self, group: str, version: str, plural: str) -> ResourceInfo | None:
        return self._by_path.get((group, version, plural))

    def by_kind(self, group: str, version: str, kind: str) -> ResourceInfo | None:
        for info in self._by_path.values():
            if (info.group, info.version, info.kind) == (group, version, kind):
                return info
        return None

    def all(self) -> list[ResourceInfo]:
        return list(self._by_path.values())

    def group_versions(self) -> set[tuple[str, str]]:
        return {(i.group, i.version) for i in self._by_path.values()}


def storage_key(info: ResourceInfo) -> str:
    """Objects of a resource are stored under group/plural, whatever version served them."""
    return f"{info.group}/{info.plural}"
