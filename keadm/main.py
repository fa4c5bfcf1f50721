"""keadm: set up (and tear down) kubeedge-py on this machine — a real Kubernetes control plane,
cloudcore, and one edgecore.

`keadm up --data-dir DIR` starts, k3s-style and each supervised (restarted with back-off, logs
under DIR/logs/): kine on SQLite (DIR/db/), kube-apiserver (its own CA and certificates in
DIR/pki/, an admin kubeconfig at DIR/kubeconfig), kube-controller-manager and kube-scheduler
(the binaries `make setup` builds from third_party/), then cloudcore with `--kubeconfig`, then
an edgecore (default edge-1, state in DIR/NODE, its own containerd). It waits until the node is
Ready and prints what to try. With --kubeconfig FILE it uses that cluster instead and starts no
control plane. Without --foreground the supervisor keeps running in the background; with it,
Ctrl-C stops everything (pods keep running on the node, as when a kubelet stops).
`keadm reset --data-dir DIR` stops everything `up` started — pods, the node's containerd, every
process — and removes DIR.

It imports neither cloud/ nor edge/: it drives their commands, as a user would.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from keadm import pki
from keadm.controlplane import ControlPlane, ControlPlaneError, ControlPlaneSettings
from keadm.processes import ProcessError, ProcessGroup, Spec

STATE_FILE = "keadm.json"
ROOT = Path(__file__).resolve().parents[1]
log = logging.getLogger("keadm")


def _bin(name: str) -> str:
    here = Path(sys.executable).parent / name
    return str(here) if here.exists() else name


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="keadm", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    up = sub.add_parser(
        "up",
        help="start the control plane, cloudcore and an edgecore on this machine",
        description=__doc__.split("\n\n")[1] + " Arguments after `--` are passed to edgecore "
        "(e.g. -- --mqtt-listen 127.0.0.1:1884).",
    )
    _up_flags(up)
    up.add_argument("--foreground", action="store_true", help="stay attached; Ctrl-C stops all")
    serve = sub.add_parser("serve", help=argparse.SUPPRESS)  # the background supervisor of `up`
    _up_flags(serve)
    reset = sub.add_parser("reset", help="stop everything `up` started and remove its data dir")
    reset.add_argument("--data-dir", type=Path, required=True, help="the directory given to up")
    return p


def _up_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-dir", type=Path, required=True, help="where all state goes")
    p.add_argument("--node-name", default="edge-1", help="name of the edge node to start")
    p.add_argument(
        "--api-listen", default="127.0.0.1:6443", help="HOST:PORT kube-apiserver serves on"
    )
    p.add_argument("--hub-listen", default="127.0.0.1:10000", help="cloudcore's hub address")
    p.add_argument(
        "--metrics-listen", default="127.0.0.1:9091", help="cloudcore's Prometheus metrics address"
    )
    p.add_argument(
        "--kubeconfig",
        type=Path,
        help="use this cluster instead of starting the embedded control plane",
    )
    p.add_argument(
        "--offline-eviction",
        action="store_true",
        help="evict pods of unreachable nodes after the toleration (Kubernetes' default); "
        "without it an offline edge node keeps its pods",
    )
    p.add_argument("--timeout", type=float, default=180, help="seconds to wait for the node Ready")
    p.add_argument("edge_args", nargs=argparse.REMAINDER, help="flags passed to edgecore")


def main(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s keadm: %(message)s")
    try:
        if args.command == "up":
            up(args)
        elif args.command == "serve":
            asyncio.run(serve(args))
        else:
            reset(args.data_dir)
    except (KeadmError, ControlPlaneError, ProcessError) as exc:
        print(f"keadm: {exc}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)


class KeadmError(Exception):
    pass


def _say(text: str) -> None:
    print(f"keadm: {text}", flush=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    return True


def _state(data: Path) -> dict[str, Any]:
    path = data / STATE_FILE
    return dict(json.loads(path.read_text())) if path.exists() else {}


def _save_state(data: Path, **values: Any) -> None:
    state = {**_state(data), **values}
    tmp = data / f".{STATE_FILE}.tmp"
    tmp.write_text(json.dumps(state))
    tmp.replace(data / STATE_FILE)


def up(args: argparse.Namespace) -> None:
    data: Path = args.data_dir.resolve()
    _check_listen(args.api_listen, "--api-listen")
    running = _ours_alive(data)
    if running:
        raise KeadmError(
            f"already up in {data} ({', '.join(running)} running; "
            f"`keadm reset --data-dir {data}` stops them)"
        )
    data.mkdir(parents=True, exist_ok=True, mode=0o700)
    data.chmod(0o700)
    if args.foreground:
        asyncio.run(serve(args))
        return
    argv = [sys.executable, "-m", "keadm.main", "serve", *_forwarded(args)]
    log_path = data / "logs" / "keadm.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as out:
        proc = subprocess.Popen(
            argv,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    _save_state(data, supervisor=proc.pid, node=args.node_name)
    _say(f"supervisor started (pid {proc.pid}); progress in {log_path}")
    _follow_until_ready(data, proc, log_path, args)
    print(_next_steps(data, args), flush=True)


def _check_listen(value: str, flag: str) -> None:
    host, _, port = value.rpartition(":")
    try:
        ipaddress.ip_address(host)
        int(port)
    except ValueError:
        raise KeadmError(f"{flag} {value!r}: want IP:PORT, e.g. 127.0.0.1:6443") from None


def _ours_alive(data: Path) -> list[str]:
    """What keadm.json records for DATA_DIR that is still running (and really ours)."""
    state = _state(data)
    recorded = {"supervisor": state.get("supervisor"), **(state.get("pids") or {})}
    return [name for name, pid in recorded.items() if pid and _is_ours(pid, data)]


def _forwarded(args: argparse.Namespace) -> list[str]:
    out = [
        "--metrics-listen",
        args.metrics_listen,
        "--data-dir",
        str(args.data_dir.resolve()),
        "--node-name",
        args.node_name,
        "--api-listen",
        args.api_listen,
        "--hub-listen",
        args.hub_listen,
        "--timeout",
        str(args.timeout),
    ]
    if args.kubeconfig:
        out += ["--kubeconfig", str(args.kubeconfig.resolve())]
    if args.offline_eviction:
        out.append("--offline-eviction")
    return [*out, "--", *[a for a in args.edge_args if a != "--"]]


def _follow_until_ready(
    data: Path, proc: subprocess.Popen[bytes], log_path: Path, args: argparse.Namespace
) -> None:
    """Echo the supervisor's progress lines until it says the node is Ready."""
    deadline = time.monotonic() + args.timeout + 60
    with log_path.open("rb") as f:
        f.seek(0, os.SEEK_END)
        while time.monotonic() < deadline:
            line = f.readline().decode(errors="replace")
            if not line:
                if proc.poll() is not None:
                    raise KeadmError(f"the supervisor exited ({proc.returncode}); see {log_path}")
                time.sleep(0.2)
                continue
            print(line.rstrip(), flush=True)
            if "is Ready" in line:
                return
    raise KeadmError(f"{args.node_name} not Ready in time; see the logs under {data / 'logs'}")


async def serve(args: argparse.Namespace) -> None:
    """Start and supervise everything until SIGTERM/SIGINT; then stop it in reverse order."""
    data: Path = args.data_dir.resolve()
    group = ProcessGroup(on_start=lambda: _save_state(data, pids=group.pids()))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    _save_state(data, supervisor=os.getpid(), node=args.node_name)
    try:
        startup = asyncio.ensure_future(_start_and_wait(group, data, args))
        if not await _until_stop(startup, stop):
            return
        watching = asyncio.ensure_future(group.wait())
        if await _until_stop(watching, stop):
            watching.result()  # the watch loops never end on their own: this raises why
    finally:
        log.info("stopping everything (pods keep running on the node)")
        await group.stop()
        _save_state(data, supervisor=None, pids={})


async def _until_stop(work: asyncio.Future[Any], stop: asyncio.Event) -> bool:
    """Wait for `work` or a stop signal; True if `work` finished first (its errors raise)."""
    stopping = asyncio.ensure_future(stop.wait())
    await asyncio.wait([work, stopping], return_when=asyncio.FIRST_COMPLETED)
    stopping.cancel()
    if work.done():
        work.result()
        return True
    log.info("stop requested")
    work.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await work
    return False


async def _start_and_wait(group: ProcessGroup, data: Path, args: argparse.Namespace) -> None:
    kubeconfig = await _start_all(group, data, args)
    await _wait_node_ready(kubeconfig, args.node_name, args.timeout)
    log.info("%s is Ready", args.node_name)
    if getattr(args, "foreground", False):  # `keadm up` prints them itself otherwise
        print(_next_steps(data, args), flush=True)


async def _start_all(group: ProcessGroup, data: Path, args: argparse.Namespace) -> Path:
    images = data / "images"
    if not (images / "busybox.tar").exists():
        log.info("building the demo images into %s", images)
        await asyncio.to_thread(
            subprocess.run,
            [sys.executable, str(ROOT / "scripts" / "build-image.py"), "--out", str(images)],
            check=True,
            stdout=subprocess.DEVNULL,
        )
    tunnel: list[str] = []  # a user's cluster reaches kubelets its own way
    if args.kubeconfig:
        kubeconfig = args.kubeconfig.resolve()
    else:
        log.info(
            "starting the control plane: kine (SQLite), kube-apiserver, "
            "kube-controller-manager, kube-scheduler"
        )
        cp = ControlPlane(
            ControlPlaneSettings(data, args.api_listen, offline_eviction=args.offline_eviction),
            group,
        )
        await cp.start()
        log.info("control plane ready at %s; admin kubeconfig %s", cp.server, cp.kubeconfig)
        kubeconfig = cp.kubeconfig_for(pki.CLOUDCORE)
        tunnel = ["--kubelet-tunnel-socket", str(cp.kubelet_tunnel)]
    await group.add(
        Spec(
            "cloudcore",
            [
                _bin("cloudcore"),
                "--data-dir",
                str(data / "cloudcore"),
                "--kubeconfig",
                str(kubeconfig),
                "--hub-listen",
                args.hub_listen,
                "--metrics-listen",
                args.metrics_listen,
                *tunnel,
            ],
            data / "logs" / "cloudcore.log",
        )
    )
    edge_args = [a for a in args.edge_args if a != "--"]
    await group.add(
        Spec(
            args.node_name,
            [
                _bin("edgecore"),
                "--data-dir",
                str(data / args.node_name),
                "--node-name",
                args.node_name,
                "--cloud",
                args.hub_listen,
                "--images-dir",
                str(images),
                *edge_args,
            ],
            data / "logs" / f"{args.node_name}.log",
        )
    )
    return args.kubeconfig.resolve() if args.kubeconfig else data / "kubeconfig"


async def _wait_node_ready(kubeconfig: Path, node: str, timeout: float) -> None:
    from kubernetes import client, config

    api = config.new_client_from_config(config_file=str(kubeconfig))  # type: ignore[no-untyped-call]
    core = client.CoreV1Api(api)
    last = ""
    try:
        async with asyncio.timeout(timeout):
            while True:
                status = await asyncio.to_thread(_ready_status, core, node)
                if status == "True":
                    return
                if status != last:
                    log.info("%s: %s", node, status)
                    last = status
                await asyncio.sleep(0.5)
    except TimeoutError:
        raise KeadmError(f"{node} not Ready after {timeout:.0f}s; see the logs") from None
    finally:
        api.close()


def _ready_status(core: Any, node: str) -> str:
    from kubernetes.client.exceptions import ApiException

    try:
        obj = core.read_node(node)
    except ApiException as exc:
        return "waiting for it to register" if exc.status == 404 else f"API error {exc.status}"
    for cond in obj.status.conditions or []:
        if cond.type == "Ready":
            return "True" if cond.status == "True" else f"Ready={cond.status}; waiting"
    return "registered; waiting for Ready"


def _next_steps(data: Path, args: argparse.Namespace) -> str:
    kubeconfig = args.kubeconfig.resolve() if args.kubeconfig else data / "kubeconfig"
    kubectl = _bin("kubectl")
    ex = ROOT / "examples"
    return f"""
kubeedge-py is up. Try:
  export KUBECONFIG={kubeconfig}
  {kubectl} get nodes
  {kubectl} create deployment hello --image=kubeedge-py/busybox:latest --replicas=2 \\
      -- httpd -f -p 8080 -h /etc
  {kubectl} rollout status deployment/hello
  {kubectl} apply -f {ex}/namespace.yaml -f {ex}/configmap.yaml -f {ex}/pod.yaml
  {kubectl} get pods -A -o wide -w
Logs of every component: {data / "logs"}
Stop and remove everything: keadm reset --data-dir {data}
"""


def _signal(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


def _stop(pid: int, timeout: float) -> None:
    _signal(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    if _alive(pid):
        _signal(pid, signal.SIGKILL)


def reset(data_dir: Path) -> None:
    data = data_dir.resolve()
    if not (data / STATE_FILE).exists():
        raise KeadmError(f"{data} was not set up by keadm up (no {STATE_FILE})")
    state = _state(data)
    supervisor = state.get("supervisor")
    if supervisor and _is_ours(supervisor, data):
        _say(f"stopping the supervisor (pid {supervisor}) and everything it runs")
        _stop(supervisor, 90)
    # Whatever a killed supervisor left behind (pids it recorded, newest first).
    for name, pid in reversed(list((state.get("pids") or {}).items())):
        if pid and _alive(pid) and _is_ours(pid, data):
            _say(f"stopping {name} (pid {pid})")
            _stop(pid, 15)
    node_dir = data / state.get("node", "edge-1")
    _remove_pods_and_runtime(node_dir)
    shutil.rmtree(data)
    _say(f"removed {data}")


def _is_ours(pid: int, data: Path) -> bool:
    """A recorded pid may have been reused: only a live process whose command line holds
    DATA_DIR (or a path inside it) as a whole argument or flag value is ours."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return False
    root = str(data)
    for arg in raw.split("\0"):
        value = arg.split("=", 1)[-1]
        if value == root or value.startswith(root + "/"):
            return True
    return False


def _remove_pods_and_runtime(node_dir: Path) -> None:
    """Pods, the node's containerd and its bridge: edged's own reset knows how."""
    if not (node_dir / "containerd").exists():
        return
    _say("removing the node's pods and its containerd")
    done = subprocess.run(
        [sys.executable, "-m", "edge.edged.reset", "--data-dir", str(node_dir)], check=False
    )
    if done.returncode != 0:
        raise KeadmError(
            f"removing the node's pods failed (exit {done.returncode}); {node_dir} is kept "
            "so `keadm reset` can try again"
        )


if __name__ == "__main__":
    main()
