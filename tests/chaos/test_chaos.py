"""The short, fixed-seed chaos run of every `make test`: a fresh world (its own control plane,
cloudcore, two edgecores with containerd), a few trials, every invariant checked after each.
`make chaos N=200` runs the long version (tests/chaos/driver.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from cri.runtime.v1 import api_pb2 as cri

from edge.edged import podspec
from tests.chaos import invariants
from tests.chaos.driver import Chaos
from tests.chaos.workload import NS, device_name
from tests.chaos.world import World
from tests.support.waiting import eventually

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1200)]
SEED = 20261202
TRIALS = 6


async def test_a_short_seeded_chaos_run_breaks_no_invariant(tmp_path: Path) -> None:
    """Then the checks are shown able to fail: a sandbox no pod owns, and a twin report that
    never reached its Device, are both reported."""
    world = await World.start(tmp_path)
    chaos = Chaos(world, SEED)
    try:
        report = await chaos.run(TRIALS)
        print(report.summary())
        assert report.trials == TRIALS
        assert report.violations == [], report.summary()
        assert report.pods_checked > 0 and report.twin_reports["accepted"] > 0

        before = dict(chaos.snap.containers)
        chaos.work.touched = set()
        planted = await plant_orphan(world)
        chaos.work.reports[device_name("edge-2")].made = 10**9  # "accepted", never delivered
        killed = await kill_a_container(world, before)
        problems = await eventually(
            lambda: recreated(world, chaos, before, killed), 60, "the container recreated"
        )
        assert any(planted[:12] in p and "of no pod here" in p for p in problems), problems
        assert any(p.startswith("twins: sensor-edge-2") for p in problems), problems
    finally:
        chaos.work.close()
        await world.stop()


async def kill_a_container(world: World, running: invariants.Containers) -> str:
    """Stop one workload container behind edged's back (edged restarts it: a new container,
    which `kept` must report, since the workload did not touch its pod); its id."""
    assert running, "the chaos run left no container running"
    (uid, _), container_id = sorted(running.items())[0]
    for edge in world.edges.values():
        runtime = await edge.node.cri()
        try:
            found = await runtime.list_containers(cri.ContainerFilter(id=container_id))
            if found:
                await runtime.stop_container(container_id, 0)
                return container_id
        finally:
            await runtime.close()
    raise AssertionError(f"container {container_id} of pod {uid} is on no node")


async def recreated(
    world: World, chaos: Chaos, before: invariants.Containers, killed: str
) -> list[str]:
    """The checks' findings once the killed container has been replaced ([] until then)."""
    problems = await invariants.check(world, chaos.work, before, invariants.Snapshot())
    return problems if any(killed[:12] in p and p.startswith("kept:") for p in problems) else []


async def plant_orphan(world: World) -> str:
    """A sandbox made behind edged's back (as a crash between RunPodSandbox and recording it
    would leave one); its id."""
    pod = {"metadata": {"name": "planted", "namespace": NS, "uid": "planted-uid"}, "spec": {}}
    node = world.edges["edge-1"]
    config = podspec.sandbox_config(pod, node.data_dir / "planted-logs")
    config.linux.security_context.namespace_options.network = cri.NODE  # no CNI needed
    config.hostname = ""
    runtime = await node.node.cri()
    try:
        return await runtime.run_pod_sandbox(config)
    finally:
        await runtime.close()
