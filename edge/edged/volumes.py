"""Pod volumes on the node's disk: emptyDir, hostPath, configMap, secret (and projected).

Each pod gets DATA_DIR/pods/{uid}/volumes/{name}; configMap and secret volumes are written from
the objects metamanager holds and rewritten, atomically per file, when those objects change, so
a container sees new content without a restart (as the kubelet does). hostPath volumes are used
in place. Nothing else (PVCs, CSI) is supported: such a volume is reported as an error event.
"""

from __future__ import annotations

import base64
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

Lookup = Callable[[str, str, str], dict[str, Any] | None]  # (kind, namespace, name) -> object


class VolumeError(Exception):
    """A volume cannot be prepared (its source is missing or unsupported)."""


def pod_dir(root: Path, uid: str) -> Path:
    return root / "pods" / uid


def prepare(root: Path, pod: dict[str, Any], lookup: Lookup) -> dict[str, str]:
    """Create or refresh every volume of `pod`; returns volume name -> host path."""
    meta = pod["metadata"]
    base = pod_dir(root, meta["uid"]) / "volumes"
    paths: dict[str, str] = {}
    for vol in pod.get("spec", {}).get("volumes") or []:
        name = vol["name"]
        if "hostPath" in vol:
            path = Path(vol["hostPath"]["path"])
            if vol["hostPath"].get("type") in ("DirectoryOrCreate", None, ""):
                path.mkdir(parents=True, exist_ok=True)
            paths[name] = str(path)
            continue
        target = base / name
        target.mkdir(parents=True, exist_ok=True)
        if "emptyDir" in vol:
            pass
        elif "configMap" in vol or "secret" in vol or "projected" in vol:
            _write_files(target, _files(vol, meta.get("namespace", "default"), lookup))
        else:
            raise VolumeError(
                f"volume {name!r}: only emptyDir, hostPath, configMap, secret "
                "and projected volumes are supported"
            )
        paths[name] = str(target)
    return paths


def _files(vol: dict[str, Any], ns: str, lookup: Lookup) -> dict[str, bytes]:
    sources: list[tuple[str, dict[str, Any]]] = []
    if "configMap" in vol:
        sources.append(("configmap", vol["configMap"]))
    if "secret" in vol:
        src = dict(vol["secret"])
        src["name"] = src.get("secretName", "")
        sources.append(("secret", src))
    for proj in (vol.get("projected") or {}).get("sources") or []:
        if "configMap" in proj:
            sources.append(("configmap", proj["configMap"]))
        if "secret" in proj:
            sources.append(("secret", proj["secret"]))
    files: dict[str, bytes] = {}
    for kind, src in sources:
        files.update(_source_files(kind, src, ns, lookup))
    return files


def _source_files(kind: str, src: dict[str, Any], ns: str, lookup: Lookup) -> dict[str, bytes]:
    obj = lookup(kind, ns, src.get("name", ""))
    if obj is None:
        if src.get("optional"):
            return {}
        raise VolumeError(f"{kind} {ns}/{src.get('name')} not found")
    data = object_data(kind, obj)
    items = src.get("items")
    if not items:
        return data
    return {i["path"]: data[i["key"]] for i in items if i["key"] in data}


def object_data(kind: str, obj: dict[str, Any]) -> dict[str, bytes]:
    """A configmap's or secret's keys as bytes (secrets are base64 in `data`)."""
    out: dict[str, bytes] = {}
    if kind == "secret":
        for key, value in (obj.get("data") or {}).items():
            out[key] = base64.b64decode(value)
        for key, value in (obj.get("stringData") or {}).items():
            out[key] = str(value).encode()
        return out
    for key, value in (obj.get("data") or {}).items():
        out[key] = str(value).encode()
    for key, value in (obj.get("binaryData") or {}).items():
        out[key] = base64.b64decode(value)
    return out


def _write_files(target: Path, files: dict[str, bytes]) -> None:
    for rel, content in files.items():
        path = target / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists() and path.read_bytes() == content:
            continue
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        with os.fdopen(fd, "wb") as f:
            f.write(content)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)  # atomic: a reader sees the old or the new file, never half
    for path in target.rglob("*"):
        rel = str(path.relative_to(target))
        if path.is_file() and rel not in files and not path.name.startswith(".tmp-"):
            path.unlink()


def remove(root: Path, uid: str) -> None:
    shutil.rmtree(pod_dir(root, uid), ignore_errors=True)


def referenced(pod: dict[str, Any]) -> set[tuple[str, str]]:
    """(kind, name) of every configmap and secret the pod uses, so changes can be applied."""
    refs: set[tuple[str, str]] = set()
    spec = pod.get("spec", {})
    for vol in spec.get("volumes") or []:
        if "configMap" in vol:
            refs.add(("configmap", vol["configMap"].get("name", "")))
        if "secret" in vol:
            refs.add(("secret", vol["secret"].get("secretName", "")))
        for proj in (vol.get("projected") or {}).get("sources") or []:
            if "configMap" in proj:
                refs.add(("configmap", proj["configMap"].get("name", "")))
            if "secret" in proj:
                refs.add(("secret", proj["secret"].get("name", "")))
    for c in (spec.get("containers") or []) + (spec.get("initContainers") or []):
        for env in c.get("env") or []:
            ref = env.get("valueFrom") or {}
            if "configMapKeyRef" in ref:
                refs.add(("configmap", ref["configMapKeyRef"].get("name", "")))
            if "secretKeyRef" in ref:
                refs.add(("secret", ref["secretKeyRef"].get("name", "")))
        for src in c.get("envFrom") or []:
            if "configMapRef" in src:
                refs.add(("configmap", src["configMapRef"].get("name", "")))
            if "secretRef" in src:
                refs.add(("secret", src["secretRef"].get("name", "")))
    return refs
