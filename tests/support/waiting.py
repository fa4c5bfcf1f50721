"""Small helpers every test file shares: a free loopback port and a bounded poll."""

from __future__ import annotations

import asyncio
import urllib.request
from collections.abc import Callable
from typing import Any

import pytest

from common import ports


def free_port() -> int:
    """A loopback port nothing uses right now, below the kernel's ephemeral range."""
    return ports.free_port("127.0.0.1")


async def eventually(
    predicate: Callable[[], Any], timeout: float = 15.0, what: str = "condition"
) -> Any:
    """Poll `predicate` (sync or async) until it returns something true, and return that;
    fail the test after `timeout` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = predicate()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if loop.time() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.02)


def http_get(url: str) -> str:
    """The body at `url`, or "" when nothing answers (blocking: run it in a thread)."""
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return str(resp.read().decode())
    except OSError:
        return ""
