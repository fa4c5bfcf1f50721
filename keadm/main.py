"""keadm: set up (and tear down) kubeedge-py on this machine: cloudcore plus one edgecore.

`keadm up --data-dir DIR` builds the demo images into DIR/images (once), starts cloudcore (state
in DIR, kubeconfig at DIR/kubeconfig) and an edgecore named edge-1 (state in DIR/edge-1, its
own containerd) as background processes, waits until edge-1 is Ready, and prints what to try.
With --foreground it stays attached and stops both on Ctrl-C (pods keep running, as they would
when a kubelet stops). `keadm reset --data-dir DIR` stops everything `up` started — the pods,
the node's containerd, both processes — and removes DIR.

It imports neither cloud/ nor edge/: it drives the installed commands, as a user would.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import ssl
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import yaml

NODE = "edge-1"
STATE_FILE = "keadm.json"
ROOT = Path(__file__).resolve().parents[1]


def _bin(name: str) -> str:
    here = Path(sys.executable).parent / name
    return str(here) if here.exists() else name


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="keadm", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    up = sub.add_parser(
        "up",
        help="start cloudcore and edgecore edge-1 on this machine",
        description="Start cloudcore and one edgecore (edge-1). Arguments after "
        "`--` are passed to edgecore (e.g. -- --mqtt-listen 127.0.0.1:1884).",
    )
    up.add_argument("--data-dir", type=Path, required=True, help="where all state goes")
    up.add_argument("--api-listen", default="127.0.0.1:6443", help="cloudcore's API server address")
    up.add_argument("--hub-listen", default="127.0.0.1:10000", help="cloudcore's hub address")
    up.add_argument("--timeout", type=float, default=120, help="seconds to wait for edge-1 Ready")
    up.add_argument("--foreground", action="store_true", help="stay attached; Ctrl-C stops both")
    up.add_argument("edge_args", nargs=argparse.REMAINDER, help="flags passed to edgecore")
    reset = sub.add_parser("reset", help="stop everything `up` started and remove its data dir")
    reset.add_argument("--data-dir", type=Path, required=True, help="the directory given to up")
    return p


def main(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    try:
        if args.command == "up":
            up(args)
        else:
            reset(args.data_dir)
    except KeadmError as exc:
        print(f"keadm: {exc}", file=sys.stderr)
        sys.exit(1)


class KeadmError(Exception):
    pass


def _say(text: str) -> None:
    print(f"keadm: {text}", flush=True)


def _start(cmd: list[str], log_path: Path) -> int:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    return proc.pid


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    return True


def up(args: argparse.Namespace) -> None:
    data: Path = args.data_dir.resolve()
    state_path = data / STATE_FILE
    if state_path.exists():
        state = json.loads(state_path.read_text())
        if any(_alive(p) for p in state.get("pids", {}).values()):
            raise KeadmError(f"already up in {data} (run `keadm reset --data-dir {data}` first)")
    images = data / "images"
    if not (images / "busybox.tar").exists():
        _say(f"building the demo images into {images}")
        subprocess.run(
            [sys.executable, str(ROOT / "scripts" / "build-image.py"), "--out", str(images)],
            check=True,
            stdout=subprocess.DEVNULL,
        )
    edge_args = [a for a in args.edge_args if a != "--"]
    cloud_cmd = [
        _bin("cloudcore"),
        "--data-dir",
        str(data),
        "--api-listen",
        args.api_listen,
        "--hub-listen",
        args.hub_listen,
    ]
    edge_cmd = [
        _bin("edgecore"),
        "--data-dir",
        str(data / NODE),
        "--node-name",
        NODE,
        "--cloud",
        args.hub_listen,
        "--images-dir",
        str(images),
        *edge_args,
    ]
    pids = {"cloudcore": _start(cloud_cmd, data / "logs" / "cloudcore.log")}
    _say(f"cloudcore started (pid {pids['cloudcore']}), log: {data / 'logs' / 'cloudcore.log'}")
    pids["edgecore"] = _start(edge_cmd, data / "logs" / f"{NODE}.log")
    _say(f"edgecore {NODE} started (pid {pids['edgecore']}), log: {data / 'logs' / f'{NODE}.log'}")
    state_path.write_text(json.dumps({"pids": pids, "node": NODE}))
    kubeconfig = data / "kubeconfig"
    _wait_ready(kubeconfig, pids, args.timeout)
    _say(f"{NODE} is Ready")
    print(_next_steps(kubeconfig), flush=True)
    if args.foreground:
        _stay(pids)


def _wait_ready(kubeconfig: Path, pids: dict[str, int], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        for name, pid in pids.items():
            if not _alive(pid):
                raise KeadmError(f"{name} exited; see its log under logs/")
        status = _node_ready(kubeconfig) if kubeconfig.exists() else "waiting for the API server"
        if status == "True":
            return
        if status != last:
            _say(status if status.startswith("waiting") else f"{NODE} Ready={status}; waiting")
            last = status
        time.sleep(0.5)
    raise KeadmError(f"{NODE} not Ready after {timeout:.0f}s; see the logs under logs/")


def _node_ready(kubeconfig: Path) -> str:
    node = _api_get(kubeconfig, f"/api/v1/nodes/{NODE}")
    if node is None:
        return f"waiting for {NODE} to register"
    for cond in node.get("status", {}).get("conditions", []):
        if cond.get("type") == "Ready":
            return str(cond.get("status"))
    return "Unknown"


def _api_get(kubeconfig: Path, path: str) -> dict[str, Any] | None:
    cfg = yaml.safe_load(kubeconfig.read_text())
    cluster = cfg["clusters"][0]["cluster"]
    import base64

    ctx = ssl.create_default_context(
        cadata=base64.b64decode(cluster["certificate-authority-data"]).decode()
    )
    req = urllib.request.Request(
        cluster["server"] + path,
        headers={"Authorization": f"Bearer {cfg['users'][0]['user']['token']}"},
    )
    try:
        with urllib.request.urlopen(req, context=ctx, timeout=5) as resp:
            return dict(json.loads(resp.read()))
    except (OSError, ValueError):
        return None


def _next_steps(kubeconfig: Path) -> str:
    kubectl = _bin("kubectl")
    return f"""
kubeedge-py is up. Try:
  export KUBECONFIG={kubeconfig}
  {kubectl} get nodes
  {kubectl} apply -f {ROOT / "examples"}/namespace.yaml -f {ROOT / "examples"}/configmap.yaml \\
      -f {ROOT / "examples"}/pod.yaml
  {kubectl} get pods -n demo -o wide -w
  {kubectl} logs -n demo web
Stop and remove everything: keadm reset --data-dir {kubeconfig.parent}
"""


def _stay(pids: dict[str, int]) -> None:
    _say("running in the foreground; Ctrl-C stops cloudcore and edgecore (pods keep running)")
    try:
        while all(_alive(p) for p in pids.values()):
            time.sleep(1)
    except KeyboardInterrupt:
        pass
    for pid in pids.values():
        _signal(pid, signal.SIGTERM)


def _signal(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


def _stop(pid: int, timeout: float = 15) -> None:
    _signal(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    if _alive(pid):
        _signal(pid, signal.SIGKILL)


def reset(data_dir: Path) -> None:
    data = data_dir.resolve()
    state_path = data / STATE_FILE
    if not state_path.exists():
        raise KeadmError(f"{data} was not set up by keadm up (no {STATE_FILE})")
    state = json.loads(state_path.read_text())
    for name in ("edgecore", "cloudcore"):
        pid = state.get("pids", {}).get(name)
        if pid and _alive(pid):
            _say(f"stopping {name} (pid {pid})")
            _stop(pid)
    node_dir = data / state.get("node", NODE)
    _remove_pods_and_runtime(node_dir)
    shutil.rmtree(data, ignore_errors=True)
    _say(f"removed {data}")


def _remove_pods_and_runtime(node_dir: Path) -> None:
    """Pods, the node's containerd and its bridge: edged's own reset knows how."""
    if not (node_dir / "containerd").exists():
        return
    _say("removing the node's pods and its containerd")
    subprocess.run(
        [sys.executable, "-m", "edge.edged.reset", "--data-dir", str(node_dir)], check=False
    )


if __name__ == "__main__":
    main()
