"""Shared fixtures: every test fails if it leaks asyncio tasks."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import AsyncIterator

import pytest


@pytest.fixture(autouse=True)
async def no_leaked_tasks() -> AsyncIterator[None]:
    """Fail a test that leaves asyncio tasks running after it ends."""
    before = asyncio.all_tasks()
    yield
    gc.collect()  # unclosed sockets surface here, in the test that leaked them
    current = asyncio.current_task()
    for _ in range(20):
        leaked = [t for t in asyncio.all_tasks() - before if t is not current and not t.done()]
        if not leaked:
            return
        await asyncio.sleep(0.05)
    names = ", ".join(sorted(t.get_name() for t in leaked))
    for t in leaked:
        t.cancel()
    pytest.fail(f"test leaked asyncio tasks: {names}")
