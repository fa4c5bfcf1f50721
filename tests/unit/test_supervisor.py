"""The supervisor: modules run as named tasks, are restarted when they fail, stop in order."""

from __future__ import annotations

import asyncio

import pytest

from common.bus import Bus
from common.supervisor import Backoff, Supervisor

FAST = Backoff(initial=0.01, maximum=0.05)


class Recorder:
    """A module that records run/cancel/close events in a shared list and serves until told."""

    def __init__(self, name: str, events: list[str], *, group: str = "test") -> None:
        self.name = name
        self.group = group
        self.events = events
        self.started = asyncio.Event()

    async def run(self) -> None:
        self.events.append(f"run {self.name}")
        self.started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.events.append(f"cancel {self.name}")
            raise

    async def close(self) -> None:
        self.events.append(f"close {self.name}")


class Flaky:
    """A module whose run() raises (or returns) at once; counts its runs."""

    def __init__(self, name: str, *, raises: bool, runs_wanted: int = 3) -> None:
        self.name = name
        self.group = "test"
        self.raises = raises
        self.runs = 0
        self.runs_wanted = runs_wanted
        self.enough = asyncio.Event()
        self.closed = 0

    async def run(self) -> None:
        self.runs += 1
        if self.runs >= self.runs_wanted:
            self.enough.set()
        if self.raises:
            raise RuntimeError(f"{self.name} broke (run {self.runs})")

    async def close(self) -> None:
        self.closed += 1


@pytest.mark.parametrize(
    "raises", [pytest.param(True, id="raises"), pytest.param(False, id="returns")]
)
async def test_a_module_that_stops_running_is_restarted(raises: bool) -> None:
    """A module whose run() raises or returns is run again (with backoff) until stopped."""
    sup = Supervisor(Bus(), FAST, stop_timeout=1)
    flaky = Flaky("flaky", raises=raises)
    sup.add(flaky)
    await sup.start()
    try:
        await asyncio.wait_for(flaky.enough.wait(), 2)
    finally:
        await sup.stop()
    assert flaky.runs >= 3
    assert flaky.closed == 1


async def test_a_failing_module_does_not_disturb_the_others() -> None:
    """While one module keeps failing, a healthy one keeps its single run."""
    events: list[str] = []
    sup = Supervisor(Bus(), FAST, stop_timeout=1)
    healthy = Recorder("healthy", events)
    flaky = Flaky("flaky", raises=True)
    sup.add(healthy)
    sup.add(flaky)
    await sup.start()
    try:
        await asyncio.wait_for(flaky.enough.wait(), 2)
    finally:
        await sup.stop()
    assert events.count("run healthy") == 1


async def test_restarts_back_off() -> None:
    """Restart delays grow from Backoff.initial: two restarts at 0.05 then 0.1 s take >= 0.15 s."""
    sup = Supervisor(Bus(), Backoff(initial=0.05, maximum=1.0), stop_timeout=1)
    flaky = Flaky("flaky", raises=True, runs_wanted=3)
    sup.add(flaky)
    loop = asyncio.get_running_loop()
    began = loop.time()
    await sup.start()
    try:
        await asyncio.wait_for(flaky.enough.wait(), 2)
    finally:
        await sup.stop()
    assert loop.time() - began >= 0.15 - 0.01
    assert flaky.runs == 3


async def test_modules_run_as_named_tasks_and_register_on_the_bus() -> None:
    """add registers each module on the bus in its group; start runs it as task module:<name>."""
    bus = Bus()
    events: list[str] = []
    sup = Supervisor(bus, FAST, stop_timeout=1)
    a, b = Recorder("a", events, group="g1"), Recorder("b", events, group="g2")
    sup.add(a)
    sup.add(b)
    assert bus.modules() == ["a", "b"]
    assert bus.has_group("g1")
    assert bus.has_group("g2")
    await sup.start()
    try:
        await asyncio.wait_for(asyncio.gather(a.started.wait(), b.started.wait()), 2)
        names = {t.get_name() for t in asyncio.all_tasks()}
        assert {"module:a", "module:b"} <= names
        assert events == ["run a", "run b"]
    finally:
        await sup.stop()


async def test_stop_cancels_then_closes_in_reverse_registration_order() -> None:
    """stop cancels every module's task, last added first, then closes them in that order."""
    events: list[str] = []
    sup = Supervisor(Bus(), FAST, stop_timeout=1)
    modules = [Recorder(n, events) for n in ("first", "second", "third")]
    for m in modules:
        sup.add(m)
    await sup.start()
    await asyncio.wait_for(asyncio.gather(*(m.started.wait() for m in modules)), 2)
    tasks = [t for t in asyncio.all_tasks() if t.get_name().startswith("module:")]
    assert len(tasks) == 3
    await sup.stop()
    assert events == [
        "run first",
        "run second",
        "run third",
        "cancel third",
        "cancel second",
        "cancel first",
        "close third",
        "close second",
        "close first",
    ]
    assert all(t.cancelled() for t in tasks)


async def test_a_close_that_fails_does_not_stop_the_others_closing() -> None:
    """When one module's close() raises, stop still closes the remaining modules."""
    events: list[str] = []

    class BadClose(Recorder):
        async def close(self) -> None:
            events.append(f"close {self.name}")
            raise OSError("cannot close")

    sup = Supervisor(Bus(), FAST, stop_timeout=1)
    sup.add(Recorder("a", events))
    sup.add(BadClose("b", events))
    await sup.start()
    await sup.stop()
    assert [e for e in events if e.startswith("close")] == ["close b", "close a"]


async def test_stop_gives_up_on_a_module_that_ignores_cancellation() -> None:
    """stop() returns within about stop_timeout even when a module swallows its cancellation,
    and still closes every module."""
    events: list[str] = []
    release = asyncio.Event()

    class Stubborn(Recorder):
        async def run(self) -> None:
            self.started.set()
            while True:
                try:
                    await asyncio.sleep(10)
                except asyncio.CancelledError:
                    if release.is_set():
                        raise
                    events.append("ignored cancel")

    sup = Supervisor(Bus(), FAST, stop_timeout=0.05)
    stubborn = Stubborn("stubborn", events)
    sup.add(Recorder("a", events))
    sup.add(stubborn)
    await sup.start()
    await asyncio.wait_for(stubborn.started.wait(), 2)
    guard = next(t for t in asyncio.all_tasks() if t.get_name() == "module:stubborn")
    stopping = asyncio.create_task(sup.stop())
    done, _ = await asyncio.wait({stopping}, timeout=0.5)
    events_by_then = list(events)
    # Let the stubborn module go so nothing is left running, whatever stop() did.
    release.set()
    guard.cancel()
    await asyncio.wait({guard}, timeout=1)
    await asyncio.wait_for(stopping, 2)
    assert "ignored cancel" in events_by_then
    assert stopping in done, "stop() was still waiting for the stubborn module after 0.5 s"
    assert "close stubborn" in events_by_then
    assert "close a" in events_by_then
