"""Start cloudcore/edgecore (or a test entry point) as a real subprocess and read its output."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import Sequence

# The longest output line read (asyncio's default, 64 KiB, ends the reader on a long traceback
# or a dumped object, and the child then blocks on a full pipe).
LINE_LIMIT = 16 * 1024 * 1024
# The output lines kept: past this the older half is dropped (chaos trials run processes for
# many minutes; the newest lines are the ones a test or a failure report reads).
MAX_LINES = 100_000


class Proc:
    def __init__(self, args: Sequence[str], name: str) -> None:
        self.args = list(args)
        self.name = name
        self.lines: list[str] = []
        """The newest output lines (at most MAX_LINES)."""
        self.dropped = 0
        """How many older lines were dropped from `lines`."""
        self._proc: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None
        self._new_line = asyncio.Event()

    async def start(self) -> Proc:
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self._proc = await asyncio.create_subprocess_exec(
            *self.args,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env=env,
            limit=LINE_LIMIT,
        )
        self._reader = asyncio.create_task(self._read(), name=f"proc-output:{self.name}")
        return self

    async def _read(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        while line := await self._proc.stdout.readline():
            self.lines.append(line.decode(errors="replace").rstrip())
            if len(self.lines) > MAX_LINES:
                drop = len(self.lines) - MAX_LINES // 2
                del self.lines[:drop]
                self.dropped += drop
            self._new_line.set()

    async def wait_line(self, needle: str, timeout: float = 20.0) -> str:
        """The first output line containing `needle` (waiting for it)."""
        async with asyncio.timeout(timeout):
            seen = 0  # counted from the first line ever read
            while True:
                for line in self.lines[max(0, seen - self.dropped) :]:
                    if needle in line:
                        return line
                seen = self.dropped + len(self.lines)
                if self._proc is not None and self._proc.returncode is not None:
                    raise AssertionError(f"{self.name} exited: {self.output()}")
                self._new_line.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._new_line.wait(), 0.5)

    async def wait(self, timeout: float) -> int:
        """Until the process exits on its own; its exit code."""
        assert self._proc is not None
        code = await asyncio.wait_for(self._proc.wait(), timeout)
        if self._reader is not None:
            await asyncio.wait_for(self._reader, 5)
        return code

    @property
    def pid(self) -> int | None:
        """The process id while it runs."""
        if self._proc is None or self._proc.returncode is not None:
            return None
        return self._proc.pid

    @property
    def exited(self) -> bool:
        return self._proc is not None and self._proc.returncode is not None

    def output(self) -> str:
        return "\n".join(self.lines[-40:])

    async def kill(self) -> None:
        """SIGKILL: no shutdown code runs."""
        await self._stop(signal.SIGKILL)

    async def terminate(self) -> int:
        return await self._stop(signal.SIGTERM)

    async def _stop(self, sig: int) -> int:
        assert self._proc is not None
        if self._proc.returncode is None:
            self._proc.send_signal(sig)
        code = await asyncio.wait_for(self._proc.wait(), 20)
        if self._reader is not None:
            await asyncio.wait_for(self._reader, 5)
        return code


def python(module: str, *args: str) -> list[str]:
    return [sys.executable, "-m", module, *args]
