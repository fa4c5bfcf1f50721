"""Supervised child processes: start in order, each waited for until ready; restart with
back-off when one exits; stop in reverse order (SIGTERM, then SIGKILL after a grace period).

A `ProcessGroup` is what `keadm up` and the tests use to run the control plane, cloudcore and
edgecore. Every child writes to its own log file (appended, so a restart keeps the history).
The group's watch loops run in one task group: if supervising itself fails, every child is
stopped, never left behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import signal
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

Ready = Callable[[], Awaitable[bool]]
PR_SET_PDEATHSIG = 1  # prctl(2)


class ProcessError(Exception):
    """A child did not start or did not become ready in time."""


@dataclass
class Backoff:
    """Seconds to wait before restart number n: initial, doubling, capped; a child that ran
    for `reset_after` seconds starts again from `initial`."""

    initial: float = 0.5
    maximum: float = 30.0
    reset_after: float = 60.0


@dataclass
class Spec:
    name: str
    argv: list[str]
    log_path: Path
    ready: Ready | None = None
    """Polled until it returns True after each (re)start; None means started is ready."""
    ready_timeout: float = 120.0
    env: dict[str, str] = field(default_factory=dict)
    stop_grace: float = 15.0
    death_signal: int = signal.SIGTERM
    """What the kernel sends the child if the supervisor dies (PR_SET_PDEATHSIG)."""


class Child:
    """One supervised process."""

    def __init__(
        self, spec: Spec, backoff: Backoff, on_start: Callable[[], None] | None = None
    ) -> None:
        self.spec = spec
        self.backoff = backoff
        self.on_start = on_start
        self.proc: asyncio.subprocess.Process | None = None
        self._stopping = False

    @property
    def pid(self) -> int | None:
        return None if self.proc is None else self.proc.pid

    async def start(self) -> None:
        """Start the process and wait until it is ready (or raise ProcessError)."""
        self.spec.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.spec.log_path.open("ab") as out:
            self.proc = await asyncio.create_subprocess_exec(
                *self.spec.argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=out,
                stderr=asyncio.subprocess.STDOUT,
                env={**os.environ, **self.spec.env},
                start_new_session=True,
                preexec_fn=_die_with_parent(os.getpid(), self.spec.death_signal),
            )
        if self._stopping:  # stop() ran while this process was being spawned
            await self._terminate(self.proc)
            raise ProcessError(f"{self.spec.name}: stopping")
        log.info("%s started (pid %d), log %s", self.spec.name, self.proc.pid, self.spec.log_path)
        if self.on_start is not None:
            self.on_start()
        await self._wait_ready()

    async def _wait_ready(self) -> None:
        if self.spec.ready is None:
            return
        deadline = time.monotonic() + self.spec.ready_timeout
        assert self.proc is not None
        while time.monotonic() < deadline:
            if self.proc.returncode is not None:
                raise ProcessError(
                    f"{self.spec.name} exited with {self.proc.returncode} before it was ready; "
                    f"see {self.spec.log_path}"
                )
            with contextlib.suppress(OSError, asyncio.TimeoutError):
                if await self.spec.ready():
                    return
            await asyncio.sleep(0.2)
        raise ProcessError(
            f"{self.spec.name} not ready after {self.spec.ready_timeout:.0f}s; "
            f"see {self.spec.log_path}"
        )

    async def watch(self) -> None:
        """Restart the process whenever it exits, until `stop`."""
        delay = self.backoff.initial
        while not self._stopping:
            assert self.proc is not None
            began = time.monotonic()
            code = await self.proc.wait()
            if self._stopping:
                return
            if time.monotonic() - began >= self.backoff.reset_after:
                delay = self.backoff.initial
            log.warning("%s exited with %s; restarting in %.1fs", self.spec.name, code, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.backoff.maximum)
            if self._stopping:
                return
            try:
                await self.start()
            except ProcessError as exc:
                if self._stopping:
                    return
                log.error("%s", exc)  # the next turn of the loop waits and tries again
                if self.proc is not None:
                    await self._terminate(self.proc)  # started but never ready: not kept

    async def stop(self) -> None:
        self._stopping = True
        if self.proc is not None:
            await self._terminate(self.proc)

    async def _terminate(self, proc: asyncio.subprocess.Process) -> None:
        if proc.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), self.spec.stop_grace)
        except TimeoutError:
            log.warning(
                "%s ignored SIGTERM for %.0fs; killing it", self.spec.name, self.spec.stop_grace
            )
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
        log.info("%s stopped", self.spec.name)


def _die_with_parent(parent: int, sig: int) -> Callable[[], None]:
    """Runs in the child before exec: the kernel sends it `sig` when the supervisor dies
    (even by SIGKILL), so no component outlives it and a later `keadm up` finds none."""

    def arm() -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, sig)
        if os.getppid() != parent:  # the supervisor died before prctl took effect
            os._exit(1)

    return arm


class ProcessGroup:
    """Children started in order, supervised together, stopped in reverse."""

    def __init__(
        self, backoff: Backoff | None = None, on_start: Callable[[], None] | None = None
    ) -> None:
        """`on_start` is called after any child (re)starts: keadm records the pids."""
        self.backoff = backoff or Backoff()
        self.on_start = on_start
        self.children: list[Child] = []  # started and ready, in start order
        self._starting: Child | None = None
        self._watchers: asyncio.Task[None] | None = None
        self._added = asyncio.Event()

    def pids(self) -> dict[str, int | None]:
        """Every child's current pid, the one being started included."""
        children = [*self.children, *([self._starting] if self._starting else [])]
        return {child.spec.name: child.pid for child in children}

    def get(self, name: str) -> Child:
        for child in self.children:
            if child.spec.name == name:
                return child
        raise KeyError(name)

    async def add(self, spec: Spec) -> Child:
        """Start `spec`, wait until ready, then keep it running. On failure nothing is left."""
        child = Child(spec, self.backoff, self.on_start)
        self._starting = child
        try:
            await child.start()
        except BaseException:
            await child.stop()
            raise
        finally:
            self._starting = None
        self.children.append(child)
        if self._watchers is None:
            self._watchers = asyncio.create_task(self._watch_all(), name="keadm-watch")
        self._added.set()
        return child

    async def _watch_all(self) -> None:
        watching: set[Child] = set()
        async with asyncio.TaskGroup() as group:
            while True:
                for child in self.children:
                    if child not in watching:
                        watching.add(child)
                        group.create_task(child.watch(), name=f"watch:{child.spec.name}")
                self._added.clear()
                await self._added.wait()

    async def wait(self) -> None:
        """Until the watch loops fail (they never end on their own)."""
        if self._watchers is not None:
            await self._watchers

    async def stop(self) -> None:
        starting = [self._starting] if self._starting is not None else []
        for child in [*self.children, *starting]:
            child._stopping = True
        for child in [*starting, *reversed(self.children)]:
            await child.stop()
        if self._watchers is not None:
            self._watchers.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watchers
            self._watchers = None
