"""SIGKILL either side mid-flow: afterwards every message is applied exactly once.

Duplicates on the wire are allowed (resends after a crash); duplicates in the receiver's state
are not, and nothing the sender had committed to its queue may be lost.
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import pytest

from tests.support.controlplane import TestControlPlane
from tests.support.procs import Proc, python
from tests.support.proxy import FaultProxy
from tests.support.stack import FAST_CLOUD, FAST_EDGE, flags, start_cloud, start_edge
from tests.support.waiting import eventually, free_port


def committed(proc: Proc) -> int:
    counts = [int(m.group(1)) for line in proc.lines if (m := re.search(r"committed (\d+)", line))]
    return max(counts, default=0)


async def test_edgecore_killed_with_upstream_queued(tmp_path: Path, kube: TestControlPlane) -> None:
    """edgecore dies by SIGKILL with reports queued, some delivered and some in flight; after a
    restart the cloud module receives every committed report exactly once."""
    cloud = await start_cloud(tmp_path / "cloud", kubeconfig=str(kube.cloudcore_kubeconfig))
    proxy = await FaultProxy(cloud.hub.port).start()
    proxy.block()  # let the producer fill the outbox before anything moves
    edge_flags = flags(
        {"data_dir": tmp_path / "edge", "node_name": "edge-1", "cloud": proxy.address, **FAST_EDGE}
    )
    producer = await Proc(
        python("tests.support.edge_producer", "600", "--", *edge_flags), "edge+producer"
    ).start()
    try:
        await producer.wait_line("producer done")
        proxy.unblock()
        await cloud.recorder.wait_for(40, 20)
        await producer.kill()
        delivered_before_kill = len(cloud.recorder.messages)
        assert delivered_before_kill < 600, "the kill came too late to test anything"
        restarted = await Proc(python("edge.main", *edge_flags), "edgecore").start()
        try:
            try:
                await cloud.recorder.wait_for(600, 30)
            except TimeoutError:
                pytest.fail(
                    f"got {len(cloud.recorder.messages)} of 600; edgecore said:\n"
                    f"{restarted.output()}"
                )
            await asyncio.sleep(1.0)  # a resend window: duplicates would show up now
            payloads = cloud.recorder.payloads()
            assert max(payloads.values()) == 1, "a report was applied twice"
            assert {int(p) for p in payloads} == set(range(600))
        finally:
            await restarted.terminate()
    finally:
        await producer.kill()
        await proxy.close()
        await cloud.stop()


async def test_cloudcore_killed_with_downstream_unacked(
    tmp_path: Path, kube: TestControlPlane
) -> None:
    """cloudcore dies by SIGKILL while objects are queued and un-acked; after a restart the
    edge holds the newest committed version of each object, each version applied once, and
    never an older version after a newer one."""
    port = free_port()
    cloud_flags = flags(
        {
            "data_dir": tmp_path / "cloud",
            "kubeconfig": kube.cloudcore_kubeconfig,
            **FAST_CLOUD,
            "hub_listen": f"127.0.0.1:{port}",
        }
    )
    producer = await Proc(
        python("tests.support.cloud_producer", "edge-1", "600", "30", "--", *cloud_flags),
        "cloud+producer",
    ).start()
    edge = await start_edge(tmp_path / "edge", "edge-1", f"127.0.0.1:{port}")
    try:
        await edge.recorder.wait_for(40, 20)
        await producer.kill()
        before = committed(producer)
        restarted = await Proc(python("cloud.main", *cloud_flags), "cloudcore").start()
        try:
            newest = {f"cm-{(rv - 1) % 30}": rv for rv in range(1, before + 1)}

            def caught_up() -> bool:
                rows = edge.db.conn.execute("SELECT name, resource_version FROM meta")
                held = {name: int(rv) for name, rv in rows}
                return all(held.get(name, 0) >= rv for name, rv in newest.items())

            await eventually(caught_up, 30, "edge caught up with committed versions")
            await asyncio.sleep(1.0)  # a resend window
            applied = [
                (m.route.resource, int(m.header.resource_version)) for m in edge.recorder.messages
            ]
            assert len(applied) == len(set(applied)), "a version was applied twice"
            last: dict[str, int] = {}
            for key, rv in applied:
                assert rv > last.get(key, 0), f"{key}: version {rv} applied after {last[key]}"
                last[key] = rv
        finally:
            await restarted.terminate()
    finally:
        await producer.kill()
        await edge.stop()
