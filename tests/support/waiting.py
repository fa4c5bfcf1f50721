"""Small helpers every test file shares: a free loopback port and a bounded poll."""

from __future__ import annotations

import asyncio
import random
import socket
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest


def free_port() -> int:
    """A loopback port nothing uses right now (the caller binds it soon after), picked below
    the kernel's ephemeral range: a port from that range may be taken, before the caller binds
    it, by the local end of any connection a test's processes open meanwhile."""
    low = _ephemeral_low()
    for _ in range(100):
        port = random.randrange(10_000, low)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    with socket.socket() as s:  # the range below is crowded: any free port will do
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _ephemeral_low() -> int:
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    return max(low, 10_001)


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
