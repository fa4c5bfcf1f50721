"""Container log rotation (edged/logs.py rotate), on real files; the runtime's reopen is a
callback that does what containerd's ReopenContainerLog does: start a new file at the path."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from edge.edged import logs


def put(path: Path, data: bytes) -> None:
    path.write_bytes(data)


def listing(folder: Path) -> dict[str, int]:
    """File name -> size."""
    return {p.name: p.stat().st_size for p in folder.iterdir()}


def reopener(path: Path, fail: bool = False) -> Callable[[], Awaitable[None]]:
    async def reopen() -> None:
        if fail:
            raise OSError("the container is not running")
        put(path, b"")  # the runtime's new file

    return reopen


async def test_a_log_past_its_size_is_rotated_and_old_files_pruned(tmp_path: Path) -> None:
    live = tmp_path / "0.log"
    rotations = 0
    for round_ in range(5):
        put(live, b"x" * (100 + round_))
        rotations += await logs.rotate(live, reopener(live), max_bytes=100, max_files=3)
    assert rotations == 5
    files = listing(tmp_path)
    assert files.pop("0.log") == 0  # the live one, newly opened
    assert sorted(files.values()) == [103, 104]  # the two newest rotated ones


async def test_a_small_log_is_left_alone_and_a_failed_reopen_loses_nothing(
    tmp_path: Path,
) -> None:
    live = tmp_path / "1.log"
    put(live, b"short")
    assert not await logs.rotate(live, reopener(live), max_bytes=100, max_files=2)
    put(live, b"y" * 200)
    with pytest.raises(OSError, match="not running"):
        await logs.rotate(live, reopener(live, fail=True), max_bytes=100, max_files=2)
    assert listing(tmp_path) == {"1.log": 200}


def entry(text: str) -> bytes:
    return f"2026-12-02T10:00:00.000000000Z stdout F {text}\n".encode()


def append(path: Path, data: bytes) -> None:
    with path.open("ab") as f:
        f.write(data)


def rename(src: Path, dst: Path) -> None:
    src.rename(dst)


async def test_following_a_log_goes_on_across_a_rotation(tmp_path: Path) -> None:
    """`kubectl logs -f` (logs.follow) reads the rotated file to its end, then the new file
    from its start (it went silent after the first rotation)."""
    live = tmp_path / "0.log"
    put(live, entry("one"))
    running = True
    got: list[str] = []

    async def consume() -> None:
        async for lines in logs.follow(live, 0, lambda: running, timestamps=False, poll=0.01):
            got.extend(lines)

    task = asyncio.create_task(consume())
    await asyncio.sleep(0.05)
    append(live, entry("two"))
    rename(live, tmp_path / "0.log.20261202-100000.000000")
    put(live, entry("three"))
    await asyncio.sleep(0.05)
    append(live, entry("four"))
    await asyncio.sleep(0.05)
    running = False
    await asyncio.wait_for(task, 2)
    assert got == ["one\n", "two\n", "three\n", "four\n"]
