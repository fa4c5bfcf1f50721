"""edgecore's own state on disk: folders 0700 and files 0600, readable by root only.

DATA_DIR holds what must not leak to other local users: the SQLite store with every Secret the
node received, pod volumes with Secret files, containerd's state and logs, container logs.
Each folder and file edgecore makes for them is created with its mode (never a moment in a
looser one) and tightened when found looser, so a DATA_DIR left by an older edgecore is fixed
at the next start.

Not a process-wide umask: what edged makes *for a container* (the volume folders themselves,
folders inside them, hostPath folders) must stay usable by the container's own users; those
stay as they were, reachable only through the 0700 folders above them (or a container's mount).
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

DIR_MODE = 0o700
FILE_MODE = 0o600


def private_dir(path: Path) -> Path:
    """Create `path` 0700 (its missing parents as usual), or tighten it to 0700."""
    path.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    _tighten(path, DIR_MODE)
    return path


def private_tree(root: Path, *parts: str) -> Path:
    """root, root/a, root/a/b, ... each created or tightened to 0700; returns the last."""
    path = private_dir(root)
    for part in parts:
        path = private_dir(path / part)
    return path


def private_file(path: Path) -> None:
    """Tighten an existing file to 0600 (a missing one is left missing)."""
    with contextlib.suppress(FileNotFoundError):
        _tighten(path, FILE_MODE)


def open_append(path: Path) -> int:
    """A file descriptor appending to `path`, created 0600 (a log another process writes to)."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, FILE_MODE)
    os.fchmod(fd, FILE_MODE)
    return fd


def _tighten(path: Path, mode: int) -> None:
    if os.stat(path).st_mode & 0o777 != mode:
        os.chmod(path, mode)
