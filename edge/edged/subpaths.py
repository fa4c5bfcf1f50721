"""subPath mounts the container cannot redirect, as the kubelet makes them.

A checked subPath is only safe if what gets mounted is what was checked: a container that
shares the volume could swap a checked folder for a symlink out of the volume in the instant
before the runtime mounts it. So edged does not hand the runtime the path. It opens the subPath
from the volume's root one element at a time without following a symlink (each step relative
to the folder opened before), and bind-mounts that open file — /proc/self/fd/N, the very
inode it checked — onto DATA_DIR/pods/UID/volume-subpaths/VOLUME/CONTAINER/INDEX; the runtime
mounts that. A link planted later changes nothing: the bind mount holds the inode.

`release(pod_dir)` unmounts them all before the pod's folder is removed, so removing it never
descends into a volume (or a hostPath) through a bind mount; a mount that will not go keeps the
folder in place and is reported.
"""

from __future__ import annotations

import ctypes
import errno
import os
import re
import stat
from pathlib import Path, PurePosixPath

from edge.edged import paths

MS_BIND = 0x1000
MNT_DETACH = 0x2
_libc = ctypes.CDLL(None, use_errno=True)


class SubpathBusy(OSError):
    """A subPath bind mount could not be removed; the pod's folder is kept."""


def pin(volume: Path, rel: str, target: Path) -> Path:
    """Bind-mount the subPath `rel` of `volume` (created as a folder if missing) onto `target`;
    returns `target`. Refused (UnsafePath) if it leaves the volume, or if an element of its
    resolved path turns out to be a symlink when it is opened (one was swapped in)."""
    # Checked (links inside the volume resolved), and created as a folder if missing, as the
    # kubelet does; then opened again, element by element, with no link followed at all.
    real = paths.subpath(volume, rel, "subPath")
    root = Path(os.path.realpath(volume))
    fd = _open_beneath(root, str(real.relative_to(root)))
    try:
        is_dir = stat.S_ISDIR(os.fstat(fd).st_mode)
        unmount(target)  # a restarted container: mount the current subPath afresh
        target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        if is_dir:
            target.mkdir(exist_ok=True)
        else:
            target.touch(exist_ok=True)
        result = _libc.mount(f"/proc/self/fd/{fd}".encode(), bytes(target), None, MS_BIND, None)
        if result and ctypes.get_errno() == errno.ENOENT and target.exists():
            # What was opened was removed since (a container sharing the volume).
            raise OSError(errno.ENOENT, f"subPath {rel!r} was removed while it was being mounted")
        _call(result, target)
    finally:
        os.close(fd)
    return target


def release(pod_dir: Path) -> None:
    """Unmount every subPath bind mount of a pod (deepest first)."""
    root = pod_dir / "volume-subpaths"
    if not root.is_dir():
        return
    for target in sorted(root.glob("*/*/*"), key=lambda p: len(p.parts), reverse=True):
        try:
            unmount(target)
        except OSError as exc:
            raise SubpathBusy(exc.errno, f"subPath mount {target} stays: {exc.strerror}") from exc


def _open_beneath(root: Path, rel: str) -> int:
    """An O_PATH descriptor of root/rel, reached without following any symlink."""
    fd = os.open(root, os.O_PATH | os.O_DIRECTORY)
    try:
        for part in PurePosixPath(rel).parts if rel != "." else ():
            try:
                child = os.open(part, os.O_PATH | os.O_NOFOLLOW, dir_fd=fd)
            except OSError as exc:
                raise paths.UnsafePath(f"subPath {rel!r}: {part!r}: {exc.strerror}") from exc
            os.close(fd)
            fd = child
            if stat.S_ISLNK(os.fstat(fd).st_mode):  # O_PATH|O_NOFOLLOW opens the link itself
                raise paths.UnsafePath(f"subPath {rel!r}: {part!r} is a symlink")
        return fd
    except BaseException:
        os.close(fd)
        raise


def is_mounted(target: Path) -> bool:
    """Whether something is mounted on `target` (os.path.ismount misses a bind mount from the
    same filesystem)."""
    return str(target) in _mount_points()


def _mount_points() -> set[str]:
    points = set()
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        field = line.split(" ")[4]  # the mount point, with \040-style escapes
        points.add(re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field))
    return points


def mount_tmpfs(target: Path, options: str) -> None:
    """Mount a tmpfs on `target` with mount options `options` (e.g. "size=1m,mode=755")."""
    _call(_libc.mount(b"tmpfs", bytes(target), b"tmpfs", 0, options.encode()), target)


def unmount(target: Path) -> None:
    """Unmount everything mounted on `target` (nothing mounted: nothing to do)."""
    while is_mounted(target):  # a stacked mount (from an older edgecore) comes off one by one
        _call(_libc.umount2(bytes(target), MNT_DETACH), target)


def _call(result: int, target: Path) -> None:
    if result != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), str(target))
