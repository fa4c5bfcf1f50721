"""Module registration and the supervisor that runs every module as a named task.

A module is anything with a `name`, a `group`, `async run()` and `async close()`. The supervisor
registers each on the bus, runs `run()` as a task named after it, logs an unexpected exit or
failure, restarts it with exponential backoff, and on shutdown stops modules in the reverse of
their start order (so the hub, started last, stops first), each with a timeout, then closes them.
Modules raise; they never exit the process. A module with several loops runs them with
`together()`, so its loops live and die as one.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any, Protocol

from common.bus import Bus

log = logging.getLogger(__name__)


class Module(Protocol):
    name: str
    group: str

    async def run(self) -> None:
        """Serve until cancelled. Returning or raising counts as a failure and is restarted."""

    async def close(self) -> None:
        """Release what the module holds (servers, files); called once, after run stops."""


@dataclass
class Backoff:
    """Restart delays: `initial`, doubled after each failure up to `maximum`."""

    initial: float = 0.5
    maximum: float = 30.0


class Supervisor:
    def __init__(self, bus: Bus, backoff: Backoff | None = None, stop_timeout: float = 10.0):
        self.bus = bus
        self.backoff = backoff or Backoff()
        self.stop_timeout = stop_timeout
        self._modules: list[Module] = []
        self._tasks: dict[str, asyncio.Task[None]] = {}

    def add(self, module: Module) -> None:
        """Register a module; modules start in the order they are added."""
        self.bus.register(module.name, module.group)
        self._modules.append(module)

    def get(self, name: str) -> Module:
        """The registered module called `name`."""
        for module in self._modules:
            if module.name == name:
                return module
        raise KeyError(name)

    async def start(self) -> None:
        for module in self._modules:
            self._tasks[module.name] = asyncio.create_task(
                self._guard(module), name=f"module:{module.name}"
            )
            await asyncio.sleep(0)

    async def _guard(self, module: Module) -> None:
        delay = self.backoff.initial
        while True:
            try:
                await module.run()
                log.error("module %s returned; restarting in %.1fs", module.name, delay)
            except asyncio.CancelledError:
                log.debug("module %s cancelled", module.name)
                raise
            except Exception:
                log.exception("module %s failed; restarting in %.1fs", module.name, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.backoff.maximum)

    async def stop(self) -> None:
        """Stop modules in reverse start order, then close them in the same order."""
        for module in reversed(self._modules):
            task = self._tasks.pop(module.name, None)
            if task is None:
                continue
            task.cancel()
            done, _ = await asyncio.wait({task}, timeout=self.stop_timeout)
            if not done:
                log.error("module %s did not stop within %.1fs", module.name, self.stop_timeout)
        for module in reversed(self._modules):
            try:
                await asyncio.wait_for(module.close(), self.stop_timeout)
            except Exception:
                log.exception("closing module %s failed", module.name)


class LoopEnded(RuntimeError):
    """One of a module's loops returned; loops of a module run until cancelled."""


async def together(**loops: Coroutine[Any, Any, None]) -> None:
    """Run a module's loops (name=coroutine) as one task group, for a module's run(): when one
    fails — or returns, which a loop must not — the others are cancelled and this raises, so
    the supervisor's restart never leaves an old loop running beside the new ones."""

    async def guarded(name: str, loop: Coroutine[Any, Any, None]) -> None:
        await loop
        raise LoopEnded(f"loop {name} ended")

    async with asyncio.TaskGroup() as group:
        for name, loop in loops.items():
            group.create_task(guarded(name, loop), name=name)
