"""Pod volumes on the node's disk: emptyDir, hostPath, configMap, secret (and projected).

Each pod gets DATA_DIR/pods/{uid}/volumes/{name}; configMap and secret volumes are written from
the objects metamanager holds and rewritten, atomically per file, when those objects change, so
a container sees new content without a restart (as the kubelet does). hostPath volumes are used
in place. An emptyDir with `medium: Memory` is a tmpfs mounted on its folder (size from
`sizeLimit`, else tmpfs's own default of half the node's memory), mounted once and kept across
edgecore restarts, and unmounted before the pod's folder is removed. Nothing else (PVCs, CSI,
HugePages) is supported: such a volume is reported as an error event.

Every path from the spec is checked first (edged/paths.py): a volume item or key that is
absolute or has `..`, a hostPath that is relative, a volume name that is not a DNS label are
refused (`UnsafeVolume`), and files are written without following a symlink. The folders that
hold a pod's volumes and logs are 0700 (they hold Secrets); the volume folders themselves keep
the usual modes, for the container's users.
"""

from __future__ import annotations

import base64
import contextlib
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edge.edged import paths, subpaths
from edge.edged.quantity import BadQuantity, memory_bytes
from edge.private import private_dir, private_tree

Lookup = Callable[[str, str, str], dict[str, Any] | None]  # (kind, namespace, name) -> object


API_DATA = ("configMap", "secret", "projected")  # edged writes these; containers only read them


class VolumeError(Exception):
    """A volume cannot be prepared (its source is missing or unsupported)."""


class UnsafeVolume(VolumeError):
    """A volume's spec names a path that could reach outside it: the pod is refused."""


def pod_dir(root: Path, uid: str) -> Path:
    return root / "pods" / uid


def private_pod_dirs(root: Path) -> None:
    """Tighten what earlier runs left: DATA_DIR/pods, each pod's folder, its volumes and logs."""
    pods = private_dir(root / "pods")
    for pod in pods.iterdir():
        if pod.is_dir() and not pod.is_symlink():
            private_dir(pod)
            for sub in ("volumes", "logs"):
                if (pod / sub).is_dir():
                    private_dir(pod / sub)


def prepare(root: Path, pod: dict[str, Any], lookup: Lookup) -> dict[str, str]:
    """Create or refresh every volume of `pod`; returns volume name -> host path."""
    meta = pod["metadata"]
    found: dict[str, str] = {}
    for vol in pod.get("spec", {}).get("volumes") or []:
        try:
            found[vol["name"]] = str(_prepare_one(root, meta, vol, lookup))
        except paths.UnsafePath as exc:
            raise UnsafeVolume(f"volume {vol['name']!r}: {exc}") from exc
        except (OSError, ValueError, KeyError, TypeError) as exc:  # bad base64, a full disk
            raise VolumeError(f"volume {vol.get('name')!r}: {type(exc).__name__}: {exc}") from exc
    return found


def _prepare_one(root: Path, meta: dict[str, Any], vol: dict[str, Any], lookup: Lookup) -> Path:
    name = str(vol["name"])
    paths.check_label(name, "volume name")
    if "hostPath" in vol:
        return _host_path(vol["hostPath"])
    if not any(kind in vol for kind in ("emptyDir", *API_DATA)):
        raise VolumeError(
            f"volume {name!r}: only emptyDir, hostPath, configMap, secret "
            "and projected volumes are supported"
        )
    paths.check_element(meta["uid"], "pod uid")
    target = private_tree(root, "pods", meta["uid"], "volumes") / name
    target.mkdir(exist_ok=True)
    if "emptyDir" in vol:
        _empty_dir(target, vol["emptyDir"] or {})
    else:
        _write_files(target, _files(vol, meta.get("namespace", "default"), lookup))
    return target


def _empty_dir(target: Path, source: dict[str, Any]) -> None:
    """medium Memory: a tmpfs on the volume's folder, with the folder's mode. One already
    mounted there is kept: a restarted edgecore adopts the pod and what it wrote."""
    real = Path(os.path.realpath(target))  # as /proc/self/mountinfo names it
    if source.get("medium") != "Memory" or subpaths.is_mounted(real):
        return
    options = f"size={_tmpfs_size(source)},mode={real.stat().st_mode & 0o7777:o}"
    subpaths.mount_tmpfs(real, options)  # subpaths owns edged's mount(2)/umount2(2) calls


def _tmpfs_size(source: dict[str, Any]) -> str:
    """emptyDir.sizeLimit in bytes; unset or zero is tmpfs's own default, half the memory (the
    kubelet would take the pod's memory limit, else all the node's allocatable memory)."""
    try:
        size = memory_bytes(source["sizeLimit"]) if source.get("sizeLimit") else 0
    except BadQuantity as exc:
        raise ValueError(f"emptyDir.sizeLimit: {exc}") from exc
    return str(size) if size > 0 else "50%"


def _host_path(source: dict[str, Any]) -> Path:
    """The pod author's folder, used in place (created for DirectoryOrCreate, as the kubelet)."""
    path = str(source.get("path", ""))
    paths.check_host_path(path)
    if source.get("type") in ("DirectoryOrCreate", None, ""):
        os.makedirs(path, exist_ok=True)
    return Path(path)


Files = dict[str, tuple[bytes, int]]  # relative path -> (content, mode)
DEFAULT_MODE = 0o644  # the API's default for configMap/secret/projected volumes


def _files(vol: dict[str, Any], ns: str, lookup: Lookup) -> Files:
    sources: list[tuple[str, dict[str, Any], int]] = []
    if "configMap" in vol:
        src = vol["configMap"]
        sources.append(("configmap", src, int(src.get("defaultMode", DEFAULT_MODE))))
    if "secret" in vol:
        src = dict(vol["secret"])
        src["name"] = src.get("secretName", "")
        sources.append(("secret", src, int(src.get("defaultMode", DEFAULT_MODE))))
    projected = vol.get("projected") or {}
    mode = int(projected.get("defaultMode", DEFAULT_MODE))
    for proj in projected.get("sources") or []:
        if "configMap" in proj:
            sources.append(("configmap", proj["configMap"], mode))
        if "secret" in proj:
            sources.append(("secret", proj["secret"], mode))
    files: Files = {}
    for kind, src, default_mode in sources:
        files.update(_source_files(kind, src, ns, lookup, default_mode))
    return files


def _source_files(
    kind: str, src: dict[str, Any], ns: str, lookup: Lookup, default_mode: int
) -> Files:
    """The files of one source, each with its mode: the item's `mode`, else `defaultMode`."""
    obj = lookup(kind, ns, src.get("name", ""))
    if obj is None:
        if src.get("optional"):
            return {}
        raise VolumeError(f"{kind} {ns}/{src.get('name')} not found")
    data = object_data(kind, obj)
    items = src.get("items")
    if not items:
        return {key: (value, default_mode) for key, value in data.items()}
    return {
        i["path"]: (data[i["key"]], int(i.get("mode", default_mode)))
        for i in items
        if i["key"] in data
    }


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


def _write_files(target: Path, files: Files) -> None:
    """Write each file under `target` (names checked first, so a bad one writes nothing);
    remove what is no longer there."""
    for rel in files:
        paths.check_item(rel, "item path")
    for rel, (content, mode) in files.items():
        _write_file(target, rel, content, mode & 0o777)
    _remove_stale(target, {str(Path(rel)) for rel in files})


def _write_file(target: Path, rel: str, content: bytes, mode: int) -> None:
    parent = paths.make_dirs(target, str(Path(rel).parent), "item path")  # no symlink followed
    path = parent / Path(rel).name
    if (
        path.is_file()
        and not path.is_symlink()
        and path.stat().st_mode & 0o777 == mode
        and path.read_bytes() == content
    ):
        return
    fd, tmp = tempfile.mkstemp(dir=parent, prefix=".tmp-")
    with os.fdopen(fd, "wb") as f:
        f.write(content)
    os.chmod(tmp, mode)
    os.replace(tmp, path)  # atomic, and replaces a symlink rather than writing through it


def _remove_stale(target: Path, keep: set[str]) -> None:
    """Unlink files and links not in `keep`; os.walk does not descend into symlinks."""
    for folder, dirs, names in os.walk(target):
        here = Path(folder)
        stale_links = [d for d in dirs if (here / d).is_symlink()]
        for name in names + stale_links:
            rel = str((here / name).relative_to(target))
            if rel not in keep and not name.startswith(".tmp-"):
                (here / name).unlink()


def remove(root: Path, uid: str) -> None:
    """Remove a pod's folder, after its subPath bind mounts and its volumes' tmpfs (never
    through a mount: a folder with a mount that will not go is kept, and the error says so)."""
    with contextlib.suppress(paths.UnsafePath):  # such a pod never got a folder (see prepare)
        paths.check_element(uid, "pod uid")
        try:
            subpaths.release(pod_dir(root, uid))
        except subpaths.SubpathBusy as exc:
            raise VolumeError(f"pod folder kept: {exc}") from exc
        _unmount_volumes(pod_dir(root, uid))
        failures: list[str] = []

        def failed(_fn: Any, path: str, exc_info: Any) -> None:
            if not isinstance(exc_info[1], FileNotFoundError):
                failures.append(f"{path}: {exc_info[1]}")

        shutil.rmtree(pod_dir(root, uid), onerror=failed)
        if failures:
            raise VolumeError(f"pod folder not fully removed: {'; '.join(failures[:3])}")


def _unmount_volumes(pod: Path) -> None:
    """Unmount what is mounted on the pod's volume folders (a Memory emptyDir's tmpfs), after
    its subPath bind mounts, which may hold a folder inside one."""
    volumes = pod / "volumes"
    if not volumes.is_dir():
        return
    for target in volumes.iterdir():
        if target.is_symlink():  # edged makes folders here; a link's target is none of its own
            continue
        try:
            subpaths.unmount(Path(os.path.realpath(target)))
        except OSError as exc:
            raise VolumeError(f"pod folder kept: {target} stays mounted: {exc.strerror}") from exc


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
