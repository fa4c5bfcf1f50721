"""common.ports: a free port for listeners that cannot bind port 0 and report it."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from common import ports


def test_free_ports_are_bindable_and_below_the_ephemeral_range() -> None:
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    for _ in range(20):
        port = ports.free_port("127.0.0.1")
        assert 10_000 <= port < max(low, 10_001)
        with socket.socket() as s:
            s.bind(("127.0.0.1", port))


def test_a_port_in_use_is_not_offered(monkeypatch: pytest.MonkeyPatch) -> None:
    taken, other = ports.free_port("127.0.0.1"), ports.free_port("127.0.0.1")
    draws = iter([taken, taken, other])
    monkeypatch.setattr(ports.random, "randrange", lambda *_: next(draws))
    with socket.socket() as held:
        held.bind(("127.0.0.1", taken))
        held.listen()
        assert ports.free_port("127.0.0.1") == other
