"""Liveness, readiness and startup probes: exec, httpGet and tcpSocket, with the kubelet's timing.

A Prober belongs to one container instance. `due()` says whether a probe should run now
(initialDelaySeconds, then every periodSeconds); `record()` counts consecutive results against
successThreshold / failureThreshold. Probing itself is `run_probe`, bounded by timeoutSeconds.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

ExecFn = Callable[[list[str], float], Awaitable[int]]  # (command, timeout) -> exit code


@dataclass
class Prober:
    spec: dict[str, Any]
    started: float = field(default_factory=time.monotonic)
    last_run: float = 0.0
    successes: int = 0
    failures: int = 0
    passed: bool = False  # has reached successThreshold (readiness/startup)
    failed: bool = False  # has reached failureThreshold

    @property
    def period(self) -> float:
        return float(self.spec.get("periodSeconds", 10))

    @property
    def timeout(self) -> float:
        return float(self.spec.get("timeoutSeconds", 1))

    def due(self, now: float | None = None) -> bool:
        now = time.monotonic() if now is None else now
        if now - self.started < float(self.spec.get("initialDelaySeconds", 0)):
            return False
        return self.last_run == 0.0 or now - self.last_run >= self.period

    def record(self, ok: bool, now: float | None = None) -> None:
        self.last_run = time.monotonic() if now is None else now
        if ok:
            self.successes += 1
            self.failures = 0
            if self.successes >= int(self.spec.get("successThreshold", 1)):
                self.passed, self.failed = True, False
        else:
            self.failures += 1
            self.successes = 0
            if self.failures >= int(self.spec.get("failureThreshold", 3)):
                self.passed, self.failed = False, True


def _port(value: Any, container: dict[str, Any]) -> int:
    if isinstance(value, int) or str(value).isdigit():
        return int(value)
    for port in container.get("ports") or []:
        if port.get("name") == value:
            return int(port["containerPort"])
    raise ValueError(f"no container port named {value!r}")


async def run_probe(
    spec: dict[str, Any], container: dict[str, Any], pod_ip: str, exec_fn: ExecFn
) -> bool:
    """Run one probe; True on success. Errors and timeouts count as failures."""
    timeout = float(spec.get("timeoutSeconds", 1))
    try:
        async with asyncio.timeout(timeout + 0.5):
            if "exec" in spec:
                return await exec_fn(list(spec["exec"].get("command") or []), timeout) == 0
            if "httpGet" in spec:
                return await _http_get(spec["httpGet"], container, pod_ip)
            if "tcpSocket" in spec:
                host = spec["tcpSocket"].get("host") or pod_ip
                _, writer = await asyncio.open_connection(
                    host, _port(spec["tcpSocket"]["port"], container)
                )
                writer.close()
                return True
    except (OSError, TimeoutError, ValueError):
        return False
    return False


async def _http_get(get: dict[str, Any], container: dict[str, Any], pod_ip: str) -> bool:
    host = get.get("host") or pod_ip
    port = _port(get.get("port", 80), container)
    path = get.get("path") or "/"
    headers = "".join(f"{h['name']}: {h['value']}\r\n" for h in get.get("httpHeaders") or [])
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(
            f"GET {path} HTTP/1.0\r\nHost: {host}:{port}\r\nUser-Agent: kube-probe/1.31\r\n"
            f"{headers}\r\n".encode()
        )
        await writer.drain()
        status_line = await reader.readline()
    finally:
        writer.close()
    parts = status_line.split()
    return len(parts) >= 2 and parts[1].isdigit() and 200 <= int(parts[1]) < 400
