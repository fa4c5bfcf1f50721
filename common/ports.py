"""Picking a free TCP port for a listener that cannot be told to take port 0 and report it."""

from __future__ import annotations

import random
import socket
from pathlib import Path


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing on `host` uses right now (the caller binds it soon after), picked below
    the kernel's ephemeral range: a port from that range may be taken, before the caller binds
    it, by the local end of any outgoing connection opened meanwhile."""
    low = _ephemeral_low()
    for _ in range(100):
        port = random.randrange(10_000, low)
        with socket.socket() as s:
            try:
                s.bind((host, port))
            except OSError:
                continue
            return port
    with socket.socket() as s:  # the range below is crowded: any free port will do
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _ephemeral_low() -> int:
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    return max(low, 10_001)
