"""What must hold once every fault is healed and the system has settled.

- store: each edge's SQLite store holds exactly the pods the API binds to that node (same
  uids), exactly the ConfigMaps/Secrets those pods use, at the API's resourceVersion, and
  exactly the Device bound to it;
- runtime: every pod the API has on a node runs exactly once in that node's containerd (one
  ready sandbox, one running container per spec container), and nothing else runs there
  (no orphan sandbox or container, no leftover stopped sandbox);
- kept: a container of a pod the workload did not touch is the same container as before (not
  recreated by a restart, a reconnect or an adoption);
- twins: each Device's reported value is the last one a mapper saw accepted, or a later one
  that was sent;
- settled: no pod stuck Terminating or given up (Succeeded/Failed), both nodes Ready, no
  component died on its own;
- bounded: cloudcore's, each edgecore's and each containerd's RSS and open fds stay under
  fixed ceilings and do not grow over a process's life.
Each check returns violations as text; none means it holds.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import apsw
from cri.runtime.v1 import api_pb2 as cri

from edge.edged import podspec
from tests.chaos.workload import NS, Workload, device_name
from tests.chaos.world import NODES, World

MAX_RSS = 600 << 20
MAX_FDS = 1000
RSS_GROWTH = 150 << 20  # over one process's life
FD_GROWTH = 64
Containers = dict[tuple[str, str], str]  # (pod uid, container name) -> container id


@dataclass
class Snapshot:
    """What the checks saw: the running containers, and the peak resource use."""

    containers: Containers = field(default_factory=dict)
    peak_rss: dict[str, int] = field(default_factory=dict)
    peak_fds: dict[str, int] = field(default_factory=dict)
    pods_checked: int = 0  # pods found running exactly once, over every check that passed
    baseline: dict[tuple[str, int], tuple[int, int]] = field(default_factory=dict)


async def check(world: World, work: Workload, before: Containers, snap: Snapshot) -> list[str]:
    pods = [p for p in await work.pods() if (p.get("spec") or {}).get("nodeName")]
    problems = _settled(pods)
    live = [p for p in pods if _should_run(p)]
    problems += await _twins(work)
    snap.containers = {}
    for node in NODES:
        mine = [p for p in pods if p["spec"]["nodeName"] == node]
        problems += await asyncio.to_thread(_store, world, work, node, mine)
        found, runtime_problems = await _runtime(world, node, [p for p in live if p in mine])
        problems += runtime_problems
        snap.containers.update(found)
    problems += _kept(before, snap.containers, live, work.touched)
    problems += _bounded(world, snap)
    if not problems:
        snap.pods_checked += len(live)
    return problems


def _should_run(pod: dict[str, Any]) -> bool:
    return not pod["metadata"].get("deletionTimestamp")


def _settled(pods: list[dict[str, Any]]) -> list[str]:
    """Nothing stuck Terminating, and nothing finished: every workload pod runs `sleep 3600`
    with restartPolicy Always, so Succeeded or Failed means the node gave up on it."""
    problems = []
    for p in pods:
        phase = (p.get("status") or {}).get("phase")
        if p["metadata"].get("deletionTimestamp"):
            problems.append(f"settled: pod {p['metadata']['name']} still Terminating")
        elif phase in ("Succeeded", "Failed"):
            problems.append(f"settled: pod {p['metadata']['name']} is {phase}")
    return problems


# -- the edge's store --------------------------------------------------------------------------


def _store(world: World, work: Workload, node: str, pods: list[dict[str, Any]]) -> list[str]:
    rows = _read_store(world.edges[node].data_dir / "edge.db")
    problems = []
    held = {(ns, name): uid for (kind, ns, name), (uid, _) in rows.items() if kind == "pod"}
    wanted = {(NS, p["metadata"]["name"]): p["metadata"]["uid"] for p in pods}
    held = {k: v for k, v in held.items() if k[0] == NS}
    if held != wanted:
        problems.append(
            f"store: {node} holds pods {sorted(held.items())}, API binds {sorted(wanted.items())}"
        )
    used = _used(pods)
    for kind, name in sorted(used):
        current = _api_version(work, kind, name)
        stored = rows.get((kind, NS, name))
        if current is not None and (stored is None or stored[1] != current):
            problems.append(f"store: {node} has {kind} {name} at {stored}, API at {current}")
    extra = {
        (kind, name)
        for (kind, ns, name) in rows
        if ns == NS and kind in ("configmap", "secret") and (kind, name) not in used
    }
    if extra:
        problems.append(f"store: {node} keeps {sorted(extra)}, which no pod of it uses")
    devices = _stored_devices(world.edges[node].data_dir / "edge.db")
    if devices != {f"{NS}/{device_name(node)}"}:
        problems.append(f"store: {node} holds devices {sorted(devices)}")
    return problems


def _stored_devices(path: Path) -> set[str]:
    conn = apsw.Connection(str(path), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        conn.set_busy_timeout(5000)
        return {str(row[0]) for row in conn.execute("SELECT id FROM device")}
    finally:
        conn.close()


def _read_store(path: Path) -> dict[tuple[str, str, str], tuple[str, str]]:
    conn = apsw.Connection(str(path), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        conn.set_busy_timeout(5000)
        query = "SELECT type, namespace, name, uid, resource_version FROM meta"
        return {(t, ns, n): (uid, rv) for t, ns, n, uid, rv in conn.execute(query)}
    finally:
        conn.close()


def _used(pods: list[dict[str, Any]]) -> set[tuple[str, str]]:
    used = set()
    for p in pods:
        for v in p["spec"].get("volumes") or []:
            if "configMap" in v:
                used.add(("configmap", v["configMap"]["name"]))
        for c in p["spec"]["containers"]:
            for e in c.get("env") or []:
                ref = (e.get("valueFrom") or {}).get("secretKeyRef")
                if ref:
                    used.add(("secret", ref["name"]))
    return used


def _api_version(work: Workload, kind: str, name: str) -> str | None:
    read = (
        work.core.read_namespaced_config_map
        if kind == "configmap"
        else work.core.read_namespaced_secret
    )
    try:
        return str(read(name, NS).metadata.resource_version)
    except Exception as exc:  # gone from the API: nothing to compare
        if getattr(exc, "status", None) == 404:
            return None
        raise


# -- the runtime -------------------------------------------------------------------------------


async def _runtime(
    world: World, node: str, pods: list[dict[str, Any]]
) -> tuple[Containers, list[str]]:
    runtime = await world.edges[node].node.cri()
    try:
        sandboxes = await runtime.list_pod_sandbox(cri.PodSandboxFilter())
        containers = await runtime.list_containers(cri.ContainerFilter())
    finally:
        await runtime.close()
    wanted = {p["metadata"]["uid"]: p for p in pods}
    problems = []
    for s in sandboxes:
        uid = s.labels.get(podspec.POD_UID, "")
        if uid not in wanted:
            problems.append(f"runtime: {node} has sandbox {s.id[:12]} of no pod here (uid {uid})")
        elif s.state != cri.SANDBOX_READY:
            problems.append(f"runtime: {node} keeps a stopped sandbox of {_name(wanted[uid])}")
    found: Containers = {}
    for uid, pod in wanted.items():
        ready = [
            s
            for s in sandboxes
            if s.labels.get(podspec.POD_UID) == uid and s.state == cri.SANDBOX_READY
        ]
        if len(ready) != 1:
            problems.append(f"runtime: {node} runs {len(ready)} sandboxes for {_name(pod)}")
        for spec in pod["spec"]["containers"]:
            running = [
                c for c in containers
                if c.labels.get(podspec.POD_UID) == uid
                and c.labels.get(podspec.CONTAINER_NAME) == spec["name"]
                and c.state == cri.CONTAINER_RUNNING
            ]  # fmt: skip
            if len(running) != 1:
                problems.append(
                    f"runtime: {node} runs {len(running)} of {_name(pod)}/{spec['name']}"
                )
            else:
                found[(uid, spec["name"])] = running[0].id
    for c in containers:
        if c.labels.get(podspec.POD_UID, "") not in wanted:
            problems.append(f"runtime: {node} has container {c.id[:12]} of no pod here")
    return found, problems


def _name(pod: dict[str, Any]) -> str:
    return f"{pod['metadata']['name']} ({pod['metadata']['uid'][:8]})"


def _kept(
    before: Containers, now: Containers, live: list[dict[str, Any]], touched: set[str]
) -> list[str]:
    names = {p["metadata"]["uid"]: p["metadata"]["name"] for p in live}
    return [
        f"kept: container {name} of pod {names[uid]} was recreated "
        f"({old[:12]} -> {now[(uid, name)][:12]})"
        for (uid, name), old in before.items()
        if uid in names and names[uid] not in touched and now.get((uid, name), old) != old
    ]


# -- twins and resources -----------------------------------------------------------------------


async def _twins(work: Workload) -> list[str]:
    problems = []
    for node in NODES:
        device = device_name(node)
        reports = work.reports[device]
        if reports.made < 0:
            continue
        obj = await asyncio.to_thread(
            work.custom.get_namespaced_custom_object,
            "devices.kubeedge.io", "v1beta1", NS, "devices", device,
        )  # fmt: skip
        value = _reported(obj)
        if (
            value is None
            or not value.isdigit()
            or int(value) < reports.made
            or int(value) not in reports.sent
        ):
            problems.append(
                f"twins: {device} reports {value!r}, the last accepted was {reports.made}"
            )
    return problems


def _reported(device: dict[str, Any]) -> str | None:
    for twin in (device.get("status") or {}).get("twins") or []:
        if twin.get("propertyName") == "value":
            return str((twin.get("reported") or {}).get("value"))
    return None


def _bounded(world: World, snap: Snapshot) -> list[str]:
    """Fixed ceilings, and no growth over a process's life past what its first settled check
    showed (a leak shows as growth long before it reaches a ceiling)."""
    problems = []
    for name, pid in _processes(world).items():
        rss, fds = _usage(pid)
        if not rss:
            continue
        snap.peak_rss[name] = max(snap.peak_rss.get(name, 0), rss)
        snap.peak_fds[name] = max(snap.peak_fds.get(name, 0), fds)
        base_rss, base_fds = snap.baseline.setdefault((name, pid), (rss, fds))
        if rss > MAX_RSS or fds > MAX_FDS:
            problems.append(f"bounded: {name} uses {rss >> 20} MiB and {fds} fds")
        if rss > base_rss + RSS_GROWTH or fds > base_fds + FD_GROWTH:
            problems.append(
                f"bounded: {name} (pid {pid}) grew from {base_rss >> 20} MiB/{base_fds} fds "
                f"to {rss >> 20} MiB/{fds} fds"
            )
    return problems


def _processes(world: World) -> dict[str, int]:
    found = {}
    if world.cluster.proc.pid is not None:
        found["cloudcore"] = world.cluster.proc.pid
    for name, edge in world.edges.items():
        if edge.node.proc.pid is not None:
            found[name] = edge.node.proc.pid
        with contextlib.suppress(OSError, ValueError):  # not written yet: measured next time
            found[f"{name}-containerd"] = world.containerd_pid(name)
    return found


def _usage(pid: int) -> tuple[int, int]:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        fds = len(os.listdir(f"/proc/{pid}/fd"))
    except FileNotFoundError:
        return 0, 0
    rss = next(
        (int(line.split()[1]) << 10 for line in status.splitlines() if line.startswith("VmRSS:")), 0
    )
    return rss, fds
