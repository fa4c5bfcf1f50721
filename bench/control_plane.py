"""Control plane: start time and idle memory of the real Kubernetes control plane, against the
Python API server it replaced.

One run (about two and a half minutes with the defaults) measures, on this machine, --runs times
each (real and python alternate, so neither gets the warmer machine), and reports the medians:

real      keadm.controlplane.ControlPlane — kine (SQLite), kube-apiserver,
          kube-controller-manager and kube-scheduler, the binaries in .k8s/bin — on
          127.0.0.1 (a free port). Cold start: a fresh data dir (PKI made, CRDs installed),
          from the call of ControlPlane.start() until it returns (/readyz answered, kubeedge's
          CRDs Established, the `default` service account made). Warm start: stopped, then
          started again on the same data dir. Idle RSS: VmRSS (/proc/PID/status) of the 4
          processes, each and summed, --idle seconds after the warm start. Then a cloudcore
          (this tree's, --kubeconfig of the control plane) on it: its VmRSS --idle seconds
          after its "serving HubService" line.
python    the baseline: cloudcore as of commit --baseline (2cab42c, the last one with
          cloud/apiserver, its embedded API server on SQLite), checked out into a temporary git
          worktree (removed at the end) and run with this venv's python and dependencies
          (`python -m cloud.main --api-listen ...`, cwd and PYTHONPATH the worktree). Cold
          start: a fresh data dir, from spawn until its line "apiserver serving on" (store
          opened, CRDs and namespaces made, PKI made, HTTPS listening). Warm start: stopped
          (SIGTERM), then started again on the same data dir. Idle RSS: its VmRSS --idle
          seconds after the warm start. That one process is API server and cloudcore together.

It prints each run as it ends, then the medians and `ratio:` lines (real / python) for cold
start, warm start and idle RSS — the control plane alone, and the control plane plus cloudcore
(like for like: the old process was both). What it does not: assert anything; measure stop
times, CPU, or anything under load; compare what the servers can do (the Python one served a
subset of the API). The two "ready" points are each side's own: the Python time includes the
interpreter's start and imports, the real one the controller-manager making the service
account. VmRSS counts shared pages (libraries) in every process that maps them. Figures go to
docs/benchmarks.md by hand; `--json FILE` also writes them to a file.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from keadm import pki
from keadm.controlplane import BINARIES, ControlPlane, ControlPlaneSettings
from keadm.processes import ProcessGroup
from tests.support.waiting import free_port

ROOT = Path(__file__).resolve().parents[1]
BASELINE = "2cab42c"
MiB = 1024.0


def rss_mib(pid: int) -> float:
    """VmRSS of a process, in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / MiB, 1)
    raise RuntimeError(f"no VmRSS for pid {pid}")


def median(samples: list[float]) -> float:
    return round(statistics.median(samples), 3)


class Server:
    """A Python server process: its output goes to a log file, and the moment a line containing
    `needle` comes is when it is ready."""

    def __init__(self, name: str, argv: list[str], log_path: Path, **kw: Any) -> None:
        self.name, self.argv, self.log_path, self.kw = name, argv, log_path, kw
        self.proc: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()
        self.ready_at = 0.0

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    async def start(self, needle: str, timeout: float = 120.0) -> float:
        """Spawn it; the seconds until the `needle` line."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        began = time.monotonic()
        self.proc = await asyncio.create_subprocess_exec(
            *self.argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            **self.kw,
        )
        self._reader = asyncio.create_task(self._read(needle), name=f"output:{self.name}")
        try:
            async with asyncio.timeout(timeout):
                await self._ready.wait()
        except TimeoutError:
            raise RuntimeError(f"{self.name}: no {needle!r} in {timeout:.0f}s") from None
        if not self.ready_at:
            tail = "\n".join(self.log_path.read_text(errors="replace").splitlines()[-20:])
            raise RuntimeError(f"{self.name} exited before {needle!r}:\n{tail}")
        return self.ready_at - began

    async def _read(self, needle: str) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        with self.log_path.open("ab") as log:
            while raw := await self.proc.stdout.readline():
                if not self.ready_at and needle.encode() in raw:
                    self.ready_at = time.monotonic()
                    self._ready.set()
                log.write(raw)
                log.flush()
        self._ready.set()  # it exited: start() sees ready_at still 0

    async def stop(self) -> None:
        """SIGTERM (by its pid) and wait; SIGKILL if it does not go."""
        if self.proc is not None and self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.proc.wait(), 20)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        if self._reader is not None:
            await self._reader


# -- the real control plane ------------------------------------------------------------------


async def start_control_plane(data: Path) -> tuple[ControlPlane, ProcessGroup, float]:
    began = time.monotonic()
    group = ProcessGroup()
    cp = ControlPlane(ControlPlaneSettings(data, "127.0.0.1:0"), group)
    try:
        await cp.start()
    except BaseException:
        await group.stop()
        raise
    return cp, group, time.monotonic() - began


async def measure_real(tmp: Path, idle: float) -> dict[str, Any]:
    data = tmp / "cp"
    _, group, cold = await start_control_plane(data)
    await group.stop()
    cp, group, warm = await start_control_plane(data)
    cloudcore = Server(
        "cloudcore",
        [
            sys.executable,
            "-m",
            "cloud.main",
            "--data-dir",
            str(tmp / "cloudcore"),
            "--kubeconfig",
            str(cp.kubeconfig_for(pki.CLOUDCORE)),
            "--kubelet-tunnel-socket",
            str(cp.kubelet_tunnel),
            "--hub-listen",
            "127.0.0.1:0",
            "--bootstrap-listen",
            "127.0.0.1:0",
            "--metrics-listen",
            "127.0.0.1:0",
        ],
        tmp / "cloudcore.log",
        cwd=ROOT,
    )
    try:
        await asyncio.sleep(idle)
        each = {name: rss_mib(pid) for name, pid in group.pids().items() if pid is not None}
        if sorted(each) != sorted(BINARIES):
            raise RuntimeError(f"control plane processes: {sorted(each)}")
        await cloudcore.start("serving HubService")
        await asyncio.sleep(idle)
        cloudcore_rss = rss_mib(cloudcore.pid)
    finally:
        await cloudcore.stop()
        await group.stop()
    return {
        "cold_s": round(cold, 3),
        "warm_s": round(warm, 3),
        "idle_rss_mib": round(sum(each.values()), 1),
        "idle_rss_mib_each": each,
        "cloudcore_rss_mib": cloudcore_rss,
    }


# -- the Python API server, as of the baseline commit -----------------------------------------


def python_server(worktree: Path, data: Path, log_path: Path) -> Server:
    argv = [
        sys.executable,
        "-m",
        "cloud.main",
        "--data-dir",
        str(data),
        "--api-listen",
        f"127.0.0.1:{free_port()}",
        "--hub-listen",
        "127.0.0.1:0",
        "--metrics-listen",
        "127.0.0.1:0",
    ]
    env = dict(os.environ, PYTHONPATH=f"{worktree}{os.pathsep}{worktree / 'gen'}")
    return Server("python cloudcore", argv, log_path, cwd=worktree, env=env)


async def measure_python(worktree: Path, tmp: Path, idle: float) -> dict[str, Any]:
    data, log_path = tmp / "cloud", tmp / "cloud.log"
    server = python_server(worktree, data, log_path)
    try:
        cold = await server.start("apiserver serving on")
    finally:
        await server.stop()
    server = python_server(worktree, data, log_path)
    try:
        warm = await server.start("apiserver serving on")
        await asyncio.sleep(idle)
        rss = rss_mib(server.pid)
    finally:
        await server.stop()
    return {"cold_s": round(cold, 3), "warm_s": round(warm, 3), "idle_rss_mib": rss}


@contextlib.contextmanager
def worktree_at(commit: str, path: Path) -> Any:
    """A detached git worktree of ROOT at `commit`, removed at the end."""
    git = ["git", "-C", str(ROOT), "worktree"]
    subprocess.run([*git, "add", "--detach", str(path), commit], check=True, capture_output=True)
    try:
        yield path
    finally:
        subprocess.run([*git, "remove", "--force", str(path)], check=False, capture_output=True)


@contextlib.contextmanager
def logs_on_error(tmp: Path) -> Any:
    """On failure, the end of every log (ours and the control plane's) on stderr."""
    try:
        yield
    except BaseException:
        for log in sorted([*tmp.glob("*/*.log"), *tmp.glob("*/cp/logs/*.log")]):
            tail = log.read_text(errors="replace")[-3000:]
            print(f"--- {log.relative_to(tmp)}\n{tail}", file=sys.stderr)
        raise


# -- the report ---------------------------------------------------------------------------


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {
        key: median([r[key] for r in runs])
        for key in runs[0]
        if isinstance(runs[0][key], int | float)
    }
    if "idle_rss_mib_each" in runs[0]:
        out["idle_rss_mib_each"] = {
            name: median([r["idle_rss_mib_each"][name] for r in runs])
            for name in runs[0]["idle_rss_mib_each"]
        }
    out["runs"] = runs
    return out


def each_rss(each: dict[str, float]) -> str:
    return ", ".join(f"{name} {mib:.1f}" for name, mib in each.items())


async def main(args: argparse.Namespace) -> None:
    print(
        f"machine: {platform.node()} {platform.machine()}, cpus={os.cpu_count()}, "
        f"Python {platform.python_version()}",
        flush=True,
    )
    real_runs: list[dict[str, Any]] = []
    python_runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="cp-bench-") as raw:
        tmp = Path(raw)
        with worktree_at(args.baseline, tmp / "baseline") as worktree, logs_on_error(tmp):
            for i in range(1, args.runs + 1):
                real = await measure_real(tmp / f"real-{i}", args.idle)
                real_runs.append(real)
                print(
                    f"real run {i}: cold {real['cold_s']:.2f} s, warm {real['warm_s']:.2f} s, "
                    f"idle RSS {real['idle_rss_mib']:.1f} MiB "
                    f"({each_rss(real['idle_rss_mib_each'])}), "
                    f"cloudcore {real['cloudcore_rss_mib']:.1f} MiB",
                    flush=True,
                )
                old = await measure_python(worktree, tmp / f"python-{i}", args.idle)
                python_runs.append(old)
                print(
                    f"python run {i}: cold {old['cold_s']:.2f} s, warm {old['warm_s']:.2f} s, "
                    f"idle RSS {old['idle_rss_mib']:.1f} MiB",
                    flush=True,
                )
    real, old = summarize(real_runs), summarize(python_runs)
    n = f"median of {args.runs}"
    print(
        f"real control plane ({n}): cold start {real['cold_s']:.2f} s, warm start "
        f"{real['warm_s']:.2f} s, idle RSS {real['idle_rss_mib']:.1f} MiB "
        f"({each_rss(real['idle_rss_mib_each'])})",
        flush=True,
    )
    print(f"cloudcore on it ({n}): idle RSS {real['cloudcore_rss_mib']:.1f} MiB", flush=True)
    print(
        f"python API server + cloudcore at {args.baseline} ({n}): cold start "
        f"{old['cold_s']:.2f} s, warm start {old['warm_s']:.2f} s, idle RSS "
        f"{old['idle_rss_mib']:.1f} MiB",
        flush=True,
    )
    both = real["idle_rss_mib"] + real["cloudcore_rss_mib"]
    ratios = {
        "cold_start": round(real["cold_s"] / old["cold_s"], 2),
        "warm_start": round(real["warm_s"] / old["warm_s"], 2),
        "idle_rss": round(real["idle_rss_mib"] / old["idle_rss_mib"], 2),
        "idle_rss_with_cloudcore": round(both / old["idle_rss_mib"], 2),
    }
    print(f"ratio: cold start real/python = {ratios['cold_start']}", flush=True)
    print(f"ratio: warm start real/python = {ratios['warm_start']}", flush=True)
    print(f"ratio: idle RSS real/python = {ratios['idle_rss']} (control plane alone)", flush=True)
    print(
        f"ratio: idle RSS real+cloudcore/python = {ratios['idle_rss_with_cloudcore']} "
        "(like for like: the old process was API server and cloudcore)",
        flush=True,
    )
    if args.json:
        figures = {
            "baseline": args.baseline,
            "idle_s": args.idle,
            "real": real,
            "python": old,
            "ratio": ratios,
        }
        await asyncio.to_thread(Path(args.json).write_text, json.dumps(figures, indent=2))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--runs", type=int, default=3, help="repetitions of each side (median)")
    parser.add_argument(
        "--idle", type=float, default=10.0, help="seconds idle before each RSS reading"
    )
    parser.add_argument(
        "--baseline", default=BASELINE, help="commit with the Python API server (cloud/apiserver)"
    )
    parser.add_argument("--json", help="also write the figures to this file")
    asyncio.run(main(parser.parse_args()))
