"""The supervisor: modules run as named tasks, are restarted when they fail, stop in order."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from common.bus import Bus
from common.envelope import new_message
from common.names import Group, Module, Operation
from common.sqlite import Database
from common.supervisor import Backoff, LoopEnded, Supervisor, together
from edge.hub.module import EdgeHub
from edge.settings import EdgeSettings

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


# -- a module's loops live and die together ------------------------------------------------------


async def test_together_cancels_the_other_loops_when_one_fails_or_returns() -> None:
    cancelled: list[str] = []

    async def forever(name: str) -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.append(name)
            raise

    async def breaks() -> None:
        await asyncio.sleep(0.01)
        raise OSError(28, "No space left on device")

    async def returns() -> None:
        await asyncio.sleep(0.01)

    with pytest.raises(ExceptionGroup) as failed:
        await together(a=forever("a"), b=forever("b"), broken=breaks())
    assert failed.value.subgroup(OSError) is not None
    assert sorted(cancelled) == ["a", "b"]
    with pytest.raises(ExceptionGroup) as ended:
        await together(c=forever("c"), quiet=returns())
    assert ended.value.subgroup(LoopEnded) is not None and "c" in cancelled


async def test_a_full_disk_restarting_edgehub_never_leaves_a_second_link_loop(
    tmp_path: Path,
) -> None:
    """Regression (issue 10): edgehub's outbox put fails (a full disk); the supervisor restarts
    edgehub each time. With a bare gather the link loop of every failed run kept running (one
    more stream per restart); with the loops run together there is only ever one."""
    settings = EdgeSettings(
        data_dir=tmp_path, node_name="edge-1", cloud="127.0.0.1:1", insecure_hub=True,
        reconnect_initial=0.05, reconnect_max=0.1,
    )  # fmt: skip
    db = Database(tmp_path / "edge.db", "SELECT 1")
    supervisor = Supervisor(Bus(), FAST, stop_timeout=2)
    hub = EdgeHub(supervisor.bus, settings, db, None)
    supervisor.add(hub)

    async def disk_full(target: str, msgs: list[Any]) -> None:
        raise OSError(28, "No space left on device")

    hub.outbox.put = disk_full  # type: ignore[method-assign]

    def link_loops() -> int:
        return sum(1 for t in asyncio.all_tasks() if t.get_name() == "edgehub_link")

    await supervisor.start()
    try:
        for _ in range(4):  # four failures, four restarts
            report = new_message(source="twin", group=Group.TWIN, operation=Operation.UPDATE)
            await supervisor.bus.send(Module.EDGEHUB, report)
            await asyncio.sleep(0.1)
            assert link_loops() == 1
    finally:
        await supervisor.stop()
        db.close()
    await asyncio.sleep(0)
    assert link_loops() == 0
