"""This node as Kubernetes sees it: the Node object edged registers and the status it reports.

Capacity comes from the host (CPUs, memory, a pod limit), nodeInfo from the OS and the
container runtime, addresses from the host's primary IPv4 address. The Ready condition is True
while edgecore runs and the runtime answers; the cloud turns it Unknown when reports stop.
"""

from __future__ import annotations

import os
import platform
import socket
from datetime import UTC, datetime
from typing import Any

# The Kubernetes version whose kubelet behaviour edged follows (kubectl get nodes: VERSION).
KUBELET_VERSION = "v1.37.2-kubeedge-py"
EFFECTS = ("NoSchedule", "PreferNoSchedule", "NoExecute")
MAX_PODS = 110


def rfc3339(ts: datetime | None = None) -> str:
    return (ts or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%SZ")


def _memory_kib() -> int:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def _os_image() -> str:
    try:
        with open("/etc/os-release") as f:
            for line in f:
                if line.startswith("PRETTY_NAME="):
                    return line.split("=", 1)[1].strip().strip('"')
    except OSError:
        pass
    return platform.system()


def host_ip() -> str:
    """The address other hosts would reach this one at (no packet is sent)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("10.255.255.255", 1))  # routing lookup only; UDP connect sends nothing
            return str(s.getsockname()[0])
        except OSError:
            return "127.0.0.1"


def parse_taints(text: str) -> list[dict[str, str]]:
    """Taints in the kubelet's --register-with-taints form: `key[=value]:Effect,...`.
    Raises ValueError naming the bad entry."""
    taints = []
    for entry in filter(None, (e.strip() for e in text.split(","))):
        spec, _, effect = entry.rpartition(":")
        key, _, value = spec.partition("=")
        if not key or effect not in EFFECTS:
            raise ValueError(f"taint {entry!r}: want key[=value]:{'|'.join(EFFECTS)}")
        taint = {"key": key, "effect": effect}
        if value:
            taint["value"] = value
        taints.append(taint)
    return taints


def node_object(
    name: str, runtime_version: str, taints: list[dict[str, str]] | None = None
) -> dict[str, Any]:
    """The Node edged registers; labels mark it as an edge node (as KubeEdge's do), taints
    are the configured ones (applied at registration, as the kubelet does)."""
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "labels": {
                "node-role.kubernetes.io/edge": "",
                "node-role.kubernetes.io/agent": "",
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": _arch(),
            },
        },
        "spec": {"taints": taints} if taints else {},
        "status": node_status(runtime_version, ready=True),
    }


def _arch() -> str:
    machine = platform.machine()
    return {"x86_64": "amd64", "aarch64": "arm64"}.get(machine, machine)


def node_status(runtime_version: str, *, ready: bool, message: str = "") -> dict[str, Any]:
    cpus = str(os.cpu_count() or 1)
    memory = f"{_memory_kib()}Ki"
    resources = {"cpu": cpus, "memory": memory, "pods": str(MAX_PODS)}
    now = rfc3339()
    return {
        "capacity": resources,
        "allocatable": dict(resources),
        "addresses": [
            {"type": "InternalIP", "address": host_ip()},
            {"type": "Hostname", "address": socket.gethostname()},
        ],
        "conditions": [
            {
                "type": "Ready",
                "status": "True" if ready else "False",
                "reason": "EdgeReady" if ready else "RuntimeNotReady",
                "message": message or ("edgecore is posting ready status" if ready else ""),
                "lastHeartbeatTime": now,
                # No lastTransitionTime: cloudcore keeps the one in the API while the status
                # stays the same and sets it when the status changes (upstream._conditions).
            }
        ],
        "nodeInfo": {
            "kubeletVersion": KUBELET_VERSION,
            "kubeProxyVersion": "",
            "containerRuntimeVersion": runtime_version,
            "osImage": _os_image(),
            "kernelVersion": platform.release(),
            "operatingSystem": "linux",
            "architecture": _arch(),
            "machineID": "",
            "systemUUID": "",
            "bootID": "",
        },
    }
