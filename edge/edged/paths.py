"""Paths a pod spec names on this node's disk, checked as the kubelet checks them.

Edged runs as root and acts on paths that come from the pod spec: file names inside configMap,
secret and projected volumes (`items[].path`, or the keys), `volumeMounts[].subPath` (and
`subPathExpr`), hostPath paths, and the names it joins into DATA_DIR (volume, container and pod
uid). The API server validates most of them, but edgecore also acts on what it stored while
offline and on whatever its hub delivers, so it checks again and never trusts the spec to stay
inside a folder:

- a file name or a subPath is relative, without `..` elements (a volume item must not even
  start with `..`, the kubelet's reserved prefix);
- a hostPath is absolute, without `..` elements; it may point anywhere (that is the pod
  author's intent), but a subPath inside it may not leave it;
- a name joined into DATA_DIR is a DNS label (volumes, containers) or one plain path element
  (uids);
- symlinks inside a volume are resolved and the result must stay inside the volume's real
  root; folders edged creates are made one element at a time with O_NOFOLLOW, so a link
  planted inside a volume cannot redirect the creation outside it.

A checked subPath is then held by a bind mount of the very inode checked (subpaths.py), so a
container racing to swap it for a symlink between the check and containerd's mount gains
nothing.
"""

from __future__ import annotations

import contextlib
import os
import re
from pathlib import Path, PurePosixPath

DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
DIR_MODE = 0o755  # folders edged makes inside a volume: the container's users must traverse them


class UnsafePath(Exception):
    """A path from a pod spec that is malformed or would reach outside its folder."""


def check_relative(path: str, what: str) -> None:
    """The kubelet's validateLocalDescendingPath: relative, no `..` element."""
    if not path:
        raise UnsafePath(f"{what} must not be empty")
    if "\0" in path:
        raise UnsafePath(f"{what} {path!r} must not contain a NUL byte")
    if path.startswith("/"):
        raise UnsafePath(f"{what} {path!r} must be a relative path")
    if ".." in PurePosixPath(path).parts:
        raise UnsafePath(f"{what} {path!r} must not contain '..'")


def check_item(path: str, what: str) -> None:
    """A file in a configMap/secret/projected volume: relative, no `..`, not starting `..`."""
    check_relative(path, what)
    if path.startswith(".."):
        raise UnsafePath(f"{what} {path!r} must not start with '..'")


def check_host_path(path: str) -> None:
    """hostPath: absolute and without `..` elements (it may point anywhere else)."""
    if not path.startswith("/"):
        raise UnsafePath(f"hostPath {path!r} must be an absolute path")
    if "\0" in path or ".." in PurePosixPath(path).parts:
        raise UnsafePath(f"hostPath {path!r} must not contain '..'")


def check_label(name: str, what: str) -> None:
    """Volume and container names, which edged joins into paths: DNS labels, as the API has them."""
    if not DNS_LABEL.match(name):
        raise UnsafePath(f"{what} {name!r} must be a DNS label (a-z, 0-9, '-'; at most 63)")


def check_element(name: str, what: str) -> None:
    """One plain path element (a pod uid): no separator, not `.` or `..`."""
    if not name or "/" in name or "\0" in name or name in (".", ".."):
        raise UnsafePath(f"{what} {name!r} must be one plain path element")


def inside(root: Path, rel: str, what: str) -> Path:
    """`root/rel` with symlinks resolved; refused unless it stays inside root's real path."""
    check_relative(rel, what)
    real_root = Path(os.path.realpath(root))
    real = Path(os.path.realpath(real_root / rel))
    if real != real_root and real_root not in real.parents:
        raise UnsafePath(f"{what} {rel!r} resolves to {real}, outside {root}")
    return real


def make_dirs(root: Path, rel: str, what: str) -> Path:
    """Create `root/rel` one element at a time, refusing any symlink or file on the way."""
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for part in PurePosixPath(rel).parts:
            with contextlib.suppress(FileExistsError):
                os.mkdir(part, DIR_MODE, dir_fd=fd)
            child = _open_dir(fd, part, f"{what} {rel!r}")
            os.close(fd)
            fd = child
    finally:
        os.close(fd)
    return root / rel


def _open_dir(fd: int, part: str, what: str) -> int:
    """Open the folder `part` under the folder `fd` without following a symlink."""
    try:
        return os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
    except OSError as exc:  # ELOOP: a symlink; ENOTDIR: a file
        raise UnsafePath(f"{what}: {part!r} is not a folder ({exc.strerror})") from exc


def subpath(root: Path, rel: str, what: str) -> Path:
    """The real host path of a subPath of the volume at `root`, created as a folder if missing
    (as the kubelet does); refused if it (or a link on the way) leaves the volume."""
    real = inside(root, rel, what)
    if not os.path.lexists(real):
        real_root = Path(os.path.realpath(root))
        make_dirs(real_root, str(real.relative_to(real_root)), what)
    return real
