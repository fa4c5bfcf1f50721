"""Liveness, readiness and startup probes: exec, httpGet, tcpSocket and grpc, with the kubelet's
timing.

A Prober belongs to one container instance. `due()` says whether a probe should run now
(initialDelaySeconds, then every periodSeconds); `record()` counts consecutive results against
successThreshold / failureThreshold. Probing itself is `run_probe`, bounded by timeoutSeconds.

As the kubelet's: an HTTPS httpGet does not verify the server's certificate (a pod's serving
certificate is rarely issued for its IP); a grpc probe calls grpc.health.v1 Health/Check in
plaintext on the pod's IP, and only SERVING passes.
"""

from __future__ import annotations

import asyncio
import functools
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import grpc
from grpc_health.v1 import health_pb2

ExecFn = Callable[[list[str], float], Awaitable[int]]  # (command, timeout) -> exit code
USER_AGENT = "kube-probe/1.31"
GRACE = 0.5  # seconds a probe may run past timeoutSeconds before it counts as failed
_GRPC_OPTIONS: tuple[tuple[str, str | int], ...] = (
    ("grpc.primary_user_agent", USER_AGENT),
    ("grpc.enable_http_proxy", 0),  # the pod is dialled directly, whatever http_proxy says
    ("grpc.use_local_subchannel_pool", 1),  # a connection of its own, as each kubelet probe
)


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
        async with asyncio.timeout(timeout + GRACE):
            return await _probe(spec, container, pod_ip, exec_fn, timeout)
    # ssl.SSLError is an OSError; KeyError/TypeError: a probe missing a field it needs
    except (OSError, TimeoutError, ValueError, KeyError, TypeError, grpc.RpcError):
        return False


async def _probe(
    spec: dict[str, Any], container: dict[str, Any], pod_ip: str, exec_fn: ExecFn, timeout: float
) -> bool:
    if "exec" in spec:
        return await exec_fn(list(spec["exec"].get("command") or []), timeout) == 0
    if "httpGet" in spec:
        return await _http_get(spec["httpGet"], container, pod_ip)
    if "tcpSocket" in spec:
        host = spec["tcpSocket"].get("host") or pod_ip
        _, writer = await asyncio.open_connection(host, _port(spec["tcpSocket"]["port"], container))
        writer.close()
        return True
    if "grpc" in spec:
        return await _grpc(spec["grpc"], pod_ip, timeout)
    return False


async def _http_get(get: dict[str, Any], container: dict[str, Any], pod_ip: str) -> bool:
    host = get.get("host") or pod_ip
    port = _port(get.get("port", 80), container)
    path = get.get("path") or "/"
    headers = "".join(f"{h['name']}: {h['value']}\r\n" for h in get.get("httpHeaders") or [])
    tls = _insecure_tls() if str(get.get("scheme") or "HTTP").upper() == "HTTPS" else None
    reader, writer = await asyncio.open_connection(host, port, ssl=tls)
    try:
        writer.write(
            f"GET {path} HTTP/1.0\r\nHost: {host}:{port}\r\nUser-Agent: {USER_AGENT}\r\n"
            f"{headers}\r\n".encode()
        )
        await writer.drain()
        status_line = await reader.readline()
    finally:
        writer.close()
    parts = status_line.split()
    return len(parts) >= 2 and parts[1].isdigit() and 200 <= int(parts[1]) < 400


@functools.cache
def _insecure_tls() -> ssl.SSLContext:
    """TLS that accepts any server certificate: the kubelet's InsecureSkipVerify."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


async def _grpc(probe: dict[str, Any], pod_ip: str, timeout: float) -> bool:
    """grpc.health.v1 Health/Check of `service` on pod_ip:port. The channel is closed on every
    path (`async with`, a cancelled probe's too). Closing does not end a connection attempt,
    which grpc gives 20 s; here it gets GRACE past the deadline: the call always ends first,
    so there is no second attempt, and nothing outlives run_probe's own bound."""
    host = f"[{pod_ip}]" if ":" in pod_ip else pod_ip
    connect_ms = int((timeout + GRACE) * 1000)
    options = [*_GRPC_OPTIONS, ("grpc.min_reconnect_backoff_ms", connect_ms)]
    request = health_pb2.HealthCheckRequest(service=str(probe.get("service") or ""))
    async with grpc.aio.insecure_channel(f"{host}:{int(probe['port'])}", options) as channel:
        check = channel.unary_unary(  # HealthStub, typed: its stubs declare no methods
            "/grpc.health.v1.Health/Check",
            request_serializer=health_pb2.HealthCheckRequest.SerializeToString,
            response_deserializer=health_pb2.HealthCheckResponse.FromString,
        )
        reply = await check(request, timeout=timeout)
    return reply.status == health_pb2.HealthCheckResponse.SERVING
