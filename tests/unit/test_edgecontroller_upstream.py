"""edgecontroller's upstream queues are bounded: a report waits to be queued (backpressure
onto cloudhub) instead of piling up in memory while the API is slow or the caches list."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from cloud.edgecontroller.upstream import Upstream
from cloud.kube import Kube
from common.envelope import Message
from tests.support.controllers import report


async def test_a_full_shard_makes_submit_wait(tmp_path: Path) -> None:
    """Regression (issue 10 review): the per-shard queues were unbounded. With the workers
    not taking (caches still listing), the shard of one resource takes `queue_size` reports;
    the next submit waits until there is room."""
    kube = Kube(tmp_path / "no-kubeconfig")
    upstream = Upstream(
        kube, lambda name: None, lambda ns, name: None, asyncio.Event(), queue_size=3
    )
    reports: list[Message] = [report("default/podstatus/web") for _ in range(4)]
    try:
        for msg in reports[:3]:
            await asyncio.wait_for(upstream.submit(msg), 1)
        waiting = asyncio.create_task(upstream.submit(reports[3]))
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(asyncio.shield(waiting), 0.2)
        shard = next(q for q in upstream._shards if q.qsize())
        assert shard.get_nowait() is reports[0]  # room for one: the waiting report goes in
        await asyncio.wait_for(waiting, 1)
        assert [shard.get_nowait() for _ in range(3)] == reports[1:]
    finally:
        await kube.close()
