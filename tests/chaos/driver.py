"""The chaos driver: seeded trials of workload and faults, each ended by healing and checking.

A trial: a few workload steps; one fault at a random point (SIGKILL cloudcore, an edgecore or
a node's containerd; cut or freeze a node's link; fill a node's disk) with more steps while it
lasts; heal everything; then wait (bounded) until every invariant holds — or report what still
does not. Trial N of seed S always makes the same choices, so a violation names the seed and
trial to replay (timing still differs from run to run: that is the point of running many).

    python -m tests.chaos.driver --trials 200 --seed 1 --report chaos-report.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import random
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tests.chaos import invariants
from tests.chaos.workload import Workload
from tests.chaos.world import NODES, World
from tests.support.edgenode import node_ready

log = logging.getLogger("chaos")

SETTLE = 90.0  # seconds the system gets to satisfy every invariant after healing
FAULTS = (
    "kill_cloudcore",
    "kill_edgecore",
    "kill_containerd",
    "cut_link",
    "freeze_link",
    "fill_disk",
)


@dataclass
class Report:
    seed: int
    trials: int = 0
    faults: dict[str, int] = field(default_factory=dict)
    ops: dict[str, int] = field(default_factory=dict)
    violations: list[dict[str, object]] = field(default_factory=list)
    settle_seconds: list[float] = field(default_factory=list)
    peak_rss_mib: dict[str, int] = field(default_factory=dict)
    peak_fds: dict[str, int] = field(default_factory=dict)
    pods_checked: int = 0
    twin_reports: dict[str, int] = field(default_factory=dict)  # sent, accepted
    seconds: float = 0.0

    def summary(self) -> str:
        settle = sorted(self.settle_seconds) or [0.0]
        lines = [
            f"chaos: seed {self.seed}: {self.trials} trials in {self.seconds:.0f}s, "
            f"{len(self.violations)} invariant violations",
            "faults: " + ", ".join(f"{k} {v}" for k, v in sorted(self.faults.items())),
            "workload: " + ", ".join(f"{k} {v}" for k, v in sorted(self.ops.items())),
            f"checked: {self.pods_checked} pod placements; twin reports sent "
            f"{self.twin_reports.get('sent', 0)}, accepted {self.twin_reports.get('accepted', 0)}",
            f"settle after healing: median {settle[len(settle) // 2]:.1f}s, max {settle[-1]:.1f}s",
            "peak RSS MiB: " + ", ".join(f"{k} {v}" for k, v in sorted(self.peak_rss_mib.items())),
            "peak fds: " + ", ".join(f"{k} {v}" for k, v in sorted(self.peak_fds.items())),
        ]
        for v in self.violations:
            lines.append(
                f"VIOLATION seed {v['seed']} trial {v['trial']} ({v['fault']}): {v['what']}"
            )
        return "\n".join(lines)


class Chaos:
    def __init__(self, world: World, seed: int) -> None:
        self.world = world
        self.seed = seed
        self.report = Report(seed)
        self.work = Workload(world, random.Random(seed))
        self.snap = invariants.Snapshot()

    async def run(self, trials: int) -> Report:
        started = time.monotonic()
        await self.work.setup()
        try:
            for trial in range(trials):
                await self.trial(trial)
        finally:
            self.work.close()
            self.report.ops = dict(self.work.ops)
            self.report.peak_rss_mib = {k: v >> 20 for k, v in self.snap.peak_rss.items()}
            self.report.peak_fds = dict(self.snap.peak_fds)
            self.report.pods_checked = self.snap.pods_checked
            reports = self.work.reports.values()
            self.report.twin_reports = {
                "sent": sum(len(r.sent) for r in reports),
                "accepted": sum(r.accepted for r in reports),
            }
            self.report.seconds = time.monotonic() - started
        return self.report

    async def trial(self, trial: int) -> None:
        rng = random.Random(f"{self.seed}/{trial}")
        self.work.rng = rng
        self.work.touched = set()
        fault = rng.choice(FAULTS)
        node = rng.choice(NODES)
        before = dict(self.snap.containers)
        log.info("chaos: trial %d: %s %s", trial, fault, node if "cloudcore" not in fault else "")
        # The fault lands at a random moment while the first steps are under way.
        breaking = asyncio.create_task(self._inject_after(rng.uniform(0, 1.5), fault, node))
        try:
            for _ in range(rng.randint(0, 2)):
                await self.work.step()
        finally:
            heal = await breaking
        for _ in range(rng.randint(1, 3)):
            await self.work.step()
            await asyncio.sleep(rng.uniform(0, 1.0))
        await asyncio.sleep(rng.uniform(0.5, 5.0))
        await heal()
        problems = await self.settle(trial, before)
        self.report.trials += 1
        self.report.faults[fault] = self.report.faults.get(fault, 0) + 1
        for what in problems:
            self.report.violations.append(
                {"seed": self.seed, "trial": trial, "fault": f"{fault} {node}", "what": what}
            )
            log.error("chaos: seed %d trial %d (%s %s): %s", self.seed, trial, fault, node, what)

    async def _inject_after(
        self, delay: float, fault: str, node: str
    ) -> Callable[[], Awaitable[None]]:
        await asyncio.sleep(delay)
        return await self.inject(fault, node)

    async def inject(self, fault: str, node: str) -> Callable[[], Awaitable[None]]:
        """Break something now; the coroutine function that heals it."""
        w = self.world
        edge = w.edges[node]
        if fault == "kill_cloudcore":
            await w.kill_cloudcore()
            return w.start_cloudcore
        if fault == "kill_edgecore":
            await w.kill_edgecore(node)
            return lambda: w.start_edgecore(node)
        if fault == "kill_containerd":
            w.kill_containerd(node)
            return _nothing  # edged starts it again: that is what is checked
        if fault == "cut_link":
            edge.proxy.block()

            async def unblock() -> None:
                edge.proxy.unblock()

            return unblock
        if fault == "freeze_link":
            edge.proxy.freeze()

            async def thaw() -> None:
                edge.proxy.cut()  # the frozen stream is dead to both ends; let them reconnect

            return thaw
        await asyncio.to_thread(w.fill_disk, node)

        async def free() -> None:
            w.free_disk(node)

        return free

    async def settle(self, trial: int, before: invariants.Containers) -> list[str]:
        """Wait until every invariant holds (at most SETTLE seconds); what still fails."""
        started = time.monotonic()
        crashed: list[str] = []  # a component that died on its own stays a violation
        problems: list[str] = []
        while time.monotonic() - started < SETTLE:
            crashed += await self._exited()
            try:
                problems = await self._not_ready()
                if not problems:
                    problems = await invariants.check(self.world, self.work, before, self.snap)
            except Exception as exc:  # a part not back yet (containerd, the API): look again
                problems = [f"check failed: {type(exc).__name__}: {exc}"]
            if not problems:
                break
            await asyncio.sleep(1.0)
        self.report.settle_seconds.append(time.monotonic() - started)
        return crashed + problems

    async def _exited(self) -> list[str]:
        """A component that died on its own is a violation; it is restarted to go on."""
        w = self.world
        problems = []
        if w.cloud_up and w.cluster.proc.exited:
            problems.append(f"cloudcore exited on its own: {w.cluster.proc.output()}")
            await w.start_cloudcore()
        for name, edge in w.edges.items():
            if edge.up and edge.node.proc.exited:
                problems.append(f"edgecore {name} exited on its own: {edge.node.proc.output()}")
                await w.start_edgecore(name)
        return problems

    async def _not_ready(self) -> list[str]:
        return [
            f"settled: node {n} not Ready"
            for n in NODES
            if not await node_ready(self.world.cluster, n)
        ]


async def _nothing() -> None:
    return None


async def run(root: Path, seed: int, trials: int) -> Report:
    world = await World.start(root)
    try:
        return await Chaos(world, seed).run(trials)
    finally:
        await world.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.chaos.driver",
        description="Run seeded chaos trials against a real control plane, cloudcore, two "
        "edgecores and their containerds; print and write a report.",
    )
    parser.add_argument("--trials", type=int, default=20, help="how many trials (default 20)")
    parser.add_argument("--seed", type=int, default=1, help="the seed of the first run (default 1)")
    parser.add_argument("--report", type=Path, help="write the report as JSON here")
    parser.add_argument("--work-dir", type=Path, help="where the world lives (default: a temp dir)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    with tempfile.TemporaryDirectory(dir=args.work_dir, prefix="chaos-") as tmp:
        report = asyncio.run(run(Path(tmp), args.seed, args.trials))
    print(report.summary())
    if args.report is not None:
        args.report.write_text(json.dumps(asdict(report), indent=2) + "\n")
        print(f"chaos: report written to {args.report}")
    return 1 if report.violations else 0


if __name__ == "__main__":
    sys.exit(main())
