"""synccontroller's write rate limit: a burst passes at once, the rest at the set rate."""

from __future__ import annotations

import asyncio

import pytest

from cloud.synccontroller.ledger import RateLimit
from common.errors import ConfigError


async def test_burst_then_rate() -> None:
    """With burst 5 at 50/s, 5 takes are immediate and 15 more need at least 0.3 s."""
    limit = RateLimit(50.0, 5)
    loop = asyncio.get_running_loop()
    start = loop.time()
    for _ in range(5):
        await limit.take()
    assert loop.time() - start < 0.05
    for _ in range(15):
        await limit.take()
    assert loop.time() - start >= 15 / 50 * 0.95


def test_rate_must_be_positive() -> None:
    """A zero or negative --objectsync-qps is a configuration error, not a busy loop."""
    with pytest.raises(ConfigError, match="objectsync-qps"):
        RateLimit(0, 1)
