"""Container logs as the CRI writes them, read for `kubectl logs`.

containerd writes each line as `<RFC3339Nano time> <stdout|stderr> <F|P> <text>`; P marks a
partial line continued by the next entry. `read_lines` turns a file into what kubectl shows
(optionally with timestamps), `tail` keeps the last N, `follow` yields new lines as they come
while `still_running()` says the container may write more. `rotate` keeps a running
container's log under a size, in a bounded number of files.
"""

from __future__ import annotations

import asyncio
import os
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TextIO


def parse(line: str) -> tuple[str, str, bool, str] | None:
    """(time, stream, complete, text) of one CRI log entry, or None when malformed."""
    parts = line.rstrip("\n").split(" ", 3)
    if len(parts) < 3:
        return None
    text = parts[3] if len(parts) == 4 else ""
    return parts[0], parts[1], parts[2] == "F", text


def render(entries: list[str], *, timestamps: bool, since: datetime | None = None) -> list[str]:
    """Join partial entries into lines; prefix each with its time when asked."""
    out: list[str] = []
    pending = ""
    for raw in entries:
        parsed = parse(raw)
        if parsed is None:
            continue
        ts, _, complete, text = parsed
        pending += text
        if not complete:
            continue
        if since is None or _time(ts) >= since:
            out.append(f"{ts} {pending}\n" if timestamps else f"{pending}\n")
        pending = ""
    return out


def _time(ts: str) -> datetime:
    try:
        return datetime.fromisoformat(ts[:26].rstrip("Z") + "+00:00")
    except ValueError:
        return datetime.now(UTC)


def since_time(since_seconds: int) -> datetime | None:
    return datetime.now(UTC) - timedelta(seconds=since_seconds) if since_seconds > 0 else None


def read(path: Path, *, tail_lines: int, timestamps: bool, since_seconds: int = 0) -> list[str]:
    try:
        entries = path.read_text(errors="replace").splitlines()
    except FileNotFoundError:
        return []
    lines = render(entries, timestamps=timestamps, since=since_time(since_seconds))
    if tail_lines > 0:
        return list(deque(lines, maxlen=tail_lines))
    return lines


async def follow(
    path: Path,
    offset: int,
    still_running: Callable[[], bool],
    *,
    timestamps: bool,
    poll: float = 0.2,
) -> AsyncIterator[list[str]]:
    """Lines appended to `path` after byte `offset`, until the container stops writing. A log
    rotated meanwhile (renamed, a new file at `path`) is read to its end, then the new one
    from its start."""
    buffer = ""
    f = None
    try:
        while True:
            if f is None:
                f = _open_at(path, offset)
            chunk = f.read() if f is not None else ""
            if f is not None and not chunk and _replaced(path, f):
                f.close()
                f = _open_at(path, 0)  # rotated: the new file, from its start
                continue
            if chunk:
                buffer += chunk
                complete, _, buffer = buffer.rpartition("\n")
                if complete:
                    yield render(complete.split("\n"), timestamps=timestamps)
            elif not still_running():
                return
            await asyncio.sleep(poll)
    finally:
        if f is not None:
            f.close()


def _open_at(path: Path, offset: int) -> TextIO | None:
    try:
        f = path.open(errors="replace")
    except FileNotFoundError:
        return None
    f.seek(offset)
    return f


def _replaced(path: Path, f: TextIO) -> bool:
    """Whether `path` now names another file than the one `f` reads (a rotation)."""
    try:
        return os.stat(path).st_ino != os.fstat(f.fileno()).st_ino
    except FileNotFoundError:
        return False


async def rotate(
    log_file: Path, reopen: Callable[[], Awaitable[None]], *, max_bytes: int, max_files: int
) -> bool:
    """Rotate a running container's log as the kubelet does (containerLogMaxSize/MaxFiles):
    once it holds `max_bytes`, rename it to `NAME.YYYYmmdd-HHMMSS.ffffff`, have the runtime
    reopen the log at NAME (`reopen`: CRI ReopenContainerLog), and delete the oldest rotated
    files so at most `max_files` files remain, the live one included. True if it rotated.
    When the runtime cannot reopen, the file is renamed back (nothing is lost)."""
    try:
        if os.stat(log_file).st_size < max_bytes:  # a stat and renames: no thread needed
            return False
    except FileNotFoundError:
        return False
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S.%f")
    rotated = log_file.with_name(f"{log_file.name}.{stamp}")
    os.rename(log_file, rotated)
    try:
        await reopen()
    except BaseException:
        os.rename(rotated, log_file)
        raise
    old = sorted(log_file.parent.glob(f"{log_file.name}.*"))
    for path in old[: max(0, len(old) - (max_files - 1))]:
        path.unlink(missing_ok=True)
    return True
