"""keadm as a user runs it: `keadm up` starts the real control plane, cloudcore and edge-1 under
a background supervisor that restarts what dies; `keadm gettoken` and `keadm join` add a node;
`keadm reset` stops all of it and removes the data dir."""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.cluster import KUBECTL
from tests.support.waiting import eventually, free_port

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]
COMPONENTS = {"kine", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "cloudcore"}


async def keadm(*args: str, timeout: float = 240) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "keadm.main",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), timeout)
    assert proc.returncode is not None
    return proc.returncode, out.decode()


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    return True


def exists(path: Path) -> bool:
    return path.exists()


def pids(data: Path) -> dict[str, int]:
    return dict(json.loads((data / "keadm.json").read_text())["pids"])


def reset_if_up(path: Path) -> None:
    if (path / "keadm.json").exists():
        subprocess.run(
            [sys.executable, "-m", "keadm.main", "reset", "--data-dir", str(path)],
            capture_output=True, check=False, timeout=300,
        )  # fmt: skip


@pytest.fixture
def data(tmp_path: Path) -> Iterator[Path]:
    """keadm's data dirs (`up`'s, and one for a node that joins); whatever the test leaves up
    there is reset, even on a timeout."""
    path = tmp_path / "kubeedge"
    yield path
    reset_if_up(tmp_path / "joined")
    reset_if_up(path)


def edge_flags() -> list[str]:
    """An edgecore's own MQTT port, bridge and subnet, so two run side by side."""
    suffix = random.randint(1000, 9999)
    return [
        "--mqtt-listen", "127.0.0.1:0", "--cni-bridge", f"kek{suffix}",
        "--pod-cidr", f"10.{200 + suffix % 50}.{suffix % 250}.0/24",
    ]  # fmt: skip


async def up(data: Path) -> tuple[str, str, str]:
    """keadm up on free ports; its output, and the hub's and bootstrap port's addresses."""
    hub, bootstrap = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    code, out = await keadm(
        "up", "--data-dir", str(data),
        "--api-listen", f"127.0.0.1:{free_port()}", "--hub-listen", hub,
        "--metrics-listen", f"127.0.0.1:{free_port()}", "--bootstrap-listen", bootstrap,
        "--", *edge_flags(),
    )  # fmt: skip
    assert code == 0, out
    return out, hub, bootstrap


async def node_ready(data: Path, name: str) -> bool:
    try:
        out = await kubectl(data, "get", "node", name, "-o", "json")
    except AssertionError:  # not registered yet
        return False
    conditions = json.loads(out).get("status", {}).get("conditions", [])
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


async def join_second_node(data: Path, hub: str, bootstrap: str) -> None:
    """keadm gettoken on the cloud side, keadm join of edge-2 elsewhere: Ready; then reset."""
    code, out = await keadm("gettoken", "--data-dir", str(data), "--node-name", "edge-2")
    assert code == 0, out
    token = out.strip().splitlines()[-1]
    joined = data.parent / "joined"
    code, out = await keadm(
        "join", "--cloud", hub, "--bootstrap", bootstrap, "--token", token,
        "--node-name", "edge-2", "--data-dir", str(joined), "--", *edge_flags(),
    )  # fmt: skip
    assert code == 0 and "edge-2 is connected" in out, out
    await eventually(lambda: node_ready(data, "edge-2"), 60, "edge-2 Ready")
    pki = joined / "edge-2" / "pki"
    assert {p.name: p.stat().st_mode & 0o777 for p in pki.iterdir()} == {
        "ca.crt": 0o600, "node.pem": 0o600,
    }  # fmt: skip
    code, out = await keadm("reset", "--data-dir", str(joined), timeout=180)
    assert code == 0, out
    assert not exists(joined)


async def test_up_supervises_the_control_plane_and_reset_removes_everything(data: Path) -> None:
    """up: every component runs, the node is Ready for kubectl; a killed scheduler is
    restarted; a second up is refused; reset stops every process and removes the dir."""
    out, hub, bootstrap = await up(data)
    assert "edge-1 is Ready" in out and "KUBECONFIG" in out
    started = pids(data)
    assert COMPONENTS | {"edge-1"} == set(started)
    assert all(alive(pid) for pid in started.values())
    for name in COMPONENTS:
        assert (data / "logs" / f"{name}.log").stat().st_size > 0
    nodes = await kubectl(data, "get", "nodes", "-o", "json")
    (node,) = json.loads(nodes)["items"]
    assert node["metadata"]["name"] == "edge-1"
    assert node["status"]["nodeInfo"]["kubeletVersion"].startswith("v1.37")
    await join_second_node(data, hub, bootstrap)

    os.kill(started["kube-scheduler"], signal.SIGKILL)

    def restarted() -> bool:
        now = pids(data).get("kube-scheduler")
        return bool(now and now != started["kube-scheduler"] and alive(now))

    await eventually(restarted, 30, "kube-scheduler restarted by the supervisor")
    code, out = await keadm("up", "--data-dir", str(data))
    assert code == 1 and "already up" in out
    running = pids(data)
    code, out = await keadm("reset", "--data-dir", str(data), timeout=180)
    assert code == 0, out
    assert not exists(data)
    assert not [name for name, pid in running.items() if alive(pid)]


async def test_no_component_outlives_a_killed_supervisor(data: Path) -> None:
    """SIGKILL of the supervisor takes every component down with it (nothing orphaned for
    a later up to collide with), and reset still cleans up."""
    await up(data)
    state = json.loads((data / "keadm.json").read_text())
    os.kill(state["supervisor"], signal.SIGKILL)

    def left() -> list[str]:
        return [name for name, pid in state["pids"].items() if alive(pid)]

    try:
        await eventually(lambda: not left(), 60, "every component to exit after its supervisor")
    except BaseException:
        for name in left():  # what it was doing: the end of its log
            log = (data / "logs" / f"{name}.log").read_text(errors="replace")
            print(f"--- {name} still running; its log ends:\n{log[-3000:]}")
        raise
    code, out = await keadm("reset", "--data-dir", str(data), timeout=180)
    assert code == 0, out
    assert not exists(data)


async def kubectl(data: Path, *args: str) -> str:
    proc = await asyncio.create_subprocess_exec(
        KUBECTL, "--kubeconfig", str(data / "kubeconfig"), *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()
    return out.decode()
