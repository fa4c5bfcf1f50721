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

`keadm gettoken` prints a single-use join token (`--node-name` binds it to one node; `--ttl`);
`keadm token list` / `keadm token delete ID` show and revoke unused ones; `keadm node revoke N`
cuts a node off. `keadm join --cloud HOST:PORT --token T --node-name N --data-dir DIR` starts,
supervised like `up`, an edgecore that joins that cloud (docs/security.md).

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
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common import certs
from keadm import pki, tokens
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
    # serve and serve-join (the background supervisors of up and join) stay out of --help.
    sub = p.add_subparsers(
        dest="command", required=True, metavar="{up,join,reset,gettoken,token,node}"
    )
    up = sub.add_parser(
        "up",
        help="start the control plane, cloudcore and an edgecore on this machine",
        description=__doc__.split("\n\n")[1] + " Arguments after `--` are passed to edgecore "
        "(e.g. -- --mqtt-listen 127.0.0.1:1884).",
    )
    _up_flags(up)
    up.add_argument("--foreground", action="store_true", help="stay attached; Ctrl-C stops all")
    serve = sub.add_parser("serve")
    _up_flags(serve)
    reset = sub.add_parser(
        "reset", help="stop everything `up` or `join` started and remove its data dir"
    )
    reset.add_argument("--data-dir", type=Path, required=True, help="the directory given to up")
    join_cmd = sub.add_parser(
        "join",
        help="start an edgecore that joins a cloudcore elsewhere with a join token",
        description="Start, supervised like `up` (logs in DATA_DIR/logs), an edgecore that "
        "spends --token for its client certificate on the cloud's bootstrap port and then "
        "connects to --cloud over mutual TLS. Arguments after `--` go to edgecore (e.g. its "
        "own --mqtt-listen, --cni-bridge and --pod-cidr for a second node on one machine).",
    )
    _join_flags(join_cmd)
    join_cmd.add_argument("--foreground", action="store_true", help="stay attached")
    _join_flags(sub.add_parser("serve-join"))
    gettoken = sub.add_parser(
        "gettoken",
        help="print a join token for `keadm join` / `edgecore --token`",
        description="Create a single-use join token (a Secret in namespace kubeedge) and print "
        "it. It carries the edge CA's hash, so the joining node can check it reached the real "
        "cloud. Needs an admin kubeconfig of the cluster cloudcore runs on.",
    )
    _kubeconfig_flags(gettoken)
    gettoken.add_argument("--ttl", default="24h", help="how long it stays valid (24h, 90m, ...)")
    gettoken.add_argument("--node-name", default="", help="only this node may join with it")
    token = sub.add_parser("token", help="list or delete (revoke) join tokens")
    token_sub = token.add_subparsers(dest="token_command", required=True)
    _kubeconfig_flags(token_sub.add_parser("list", help="tokens not yet used, with expiry"))
    delete = token_sub.add_parser("delete", help="revoke a token before it is used")
    _kubeconfig_flags(delete)
    delete.add_argument("token_id", help="the token's id (its first six characters) or all of it")
    node = sub.add_parser("node", help="cut a node off")
    node_sub = node.add_subparsers(dest="node_command", required=True)
    revoke = node_sub.add_parser(
        "revoke",
        help="refuse every certificate the node holds now (its stream ends within "
        "cloudcore's --revocation-check-period); it can join again with a new token",
    )
    _kubeconfig_flags(revoke)
    revoke.add_argument("node_name", help="the node to cut off")
    return p


def _kubeconfig_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--kubeconfig",
        type=Path,
        help="admin kubeconfig (default: $KUBECONFIG, or DATA_DIR/kubeconfig with --data-dir)",
    )
    p.add_argument("--data-dir", type=Path, help="the directory given to `keadm up`")


def _join_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--cloud", required=True, help="HOST:PORT of cloudcore's hub")
    p.add_argument("--token", required=True, help="a join token from `keadm gettoken`")
    p.add_argument("--node-name", required=True, help="this edge node's name")
    p.add_argument("--data-dir", type=Path, required=True, help="where all state goes")
    p.add_argument(
        "--bootstrap", default="", help="HOST:PORT of the bootstrap port (default: HOST:10002)"
    )
    p.add_argument("--timeout", type=float, default=180, help="seconds to wait to connect")
    p.add_argument("edge_args", nargs=argparse.REMAINDER, help="flags passed to edgecore")


def _up_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-dir", type=Path, required=True, help="where all state goes")
    p.add_argument("--node-name", default="edge-1", help="name of the edge node to start")
    p.add_argument(
        "--api-listen",
        default="127.0.0.1:6443",
        help="HOST:PORT kube-apiserver serves on (port 0: a free one, named in the kubeconfig)",
    )
    p.add_argument("--hub-listen", default="127.0.0.1:10000", help="cloudcore's hub address")
    p.add_argument(
        "--bootstrap-listen",
        default="127.0.0.1:10002",
        help="where cloudcore takes join tokens (BootstrapService)",
    )
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


@dataclass(frozen=True)
class Mode:
    """What `up` and `join` do differently; the supervisor around them is the same."""

    serve: str  # the hidden command the background supervisor runs
    forwarded: Callable[[argparse.Namespace], list[str]]
    start: Callable[[ProcessGroup, Path, argparse.Namespace], Awaitable[None]]
    next_steps: Callable[[Path, argparse.Namespace], str]


def _mode(args: argparse.Namespace) -> Mode:
    return MODES[{"serve": "up", "serve-join": "join"}.get(args.command, args.command)]


def main(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s keadm: %(message)s")
    try:
        if args.command in MODES:
            up(args)
        elif args.command in ("serve", "serve-join"):
            asyncio.run(serve(args))
        elif args.command in ("gettoken", "token", "node"):
            _tokens(args)
        else:
            reset(args.data_dir)
    except (KeadmError, ControlPlaneError, ProcessError, tokens.TokenError) as exc:
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
    """`keadm up` or `keadm join`: a supervisor in the background (or here, --foreground)."""
    mode = _mode(args)
    data: Path = args.data_dir.resolve()
    if mode is UP:
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
    argv = [sys.executable, "-m", "keadm.main", mode.serve, *mode.forwarded(args)]
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
    print(mode.next_steps(data, args), flush=True)


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


def _forwarded_join(args: argparse.Namespace) -> list[str]:
    out = ["--cloud", args.cloud, "--token", args.token, "--bootstrap", args.bootstrap]
    out += ["--node-name", args.node_name, "--data-dir", str(args.data_dir.resolve())]
    out += ["--timeout", str(args.timeout)]
    return [*out, "--", *[a for a in args.edge_args if a != "--"]]


def _forwarded_up(args: argparse.Namespace) -> list[str]:
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
        "--bootstrap-listen",
        args.bootstrap_listen,
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
            if line.rstrip().endswith((" is Ready", " is connected")):
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
    mode = _mode(args)
    await mode.start(group, data, args)
    if getattr(args, "foreground", False):  # `keadm up` prints them itself otherwise
        print(mode.next_steps(data, args), flush=True)


async def _start_up(group: ProcessGroup, data: Path, args: argparse.Namespace) -> None:
    kubeconfig = await _start_all(group, data, args)
    await _wait_node_ready(kubeconfig, args.node_name, args.timeout)
    log.info("%s is Ready", args.node_name)


async def _start_join(group: ProcessGroup, data: Path, args: argparse.Namespace) -> None:
    link = ["--cloud", args.cloud, "--token", args.token]
    if args.bootstrap:
        link += ["--bootstrap", args.bootstrap]
    await _start_edgecore(group, data, args, link)
    await _wait_connected(data / "logs" / f"{args.node_name}.log", args.timeout)
    log.info("%s is connected", args.node_name)


async def _start_all(group: ProcessGroup, data: Path, args: argparse.Namespace) -> Path:
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
                "--bootstrap-listen",
                args.bootstrap_listen,
                "--metrics-listen",
                args.metrics_listen,
                *tunnel,
            ],
            data / "logs" / "cloudcore.log",
        )
    )
    link = ["--cloud", args.hub_listen, "--bootstrap", args.bootstrap_listen]
    if not _has_certificate(data / args.node_name):  # not joined yet, or expired offline
        admin = args.kubeconfig.resolve() if args.kubeconfig else data / "kubeconfig"
        token = await asyncio.to_thread(_node_token, admin, args.node_name)
        link += ["--token", str(token)]
    await _start_edgecore(group, data, args, link)
    return args.kubeconfig.resolve() if args.kubeconfig else data / "kubeconfig"


def _has_certificate(node_dir: Path) -> bool:
    """Whether the node holds a certificate that is still valid (it renews it itself)."""
    path = node_dir / "pki" / "node.pem"  # key and certificate
    try:
        cert = certs.load_cert(path.read_bytes(), str(path))
    except (OSError, certs.CertError):
        return False
    return cert.not_valid_after_utc > certs.now()


def _node_token(admin: Path, node: str) -> str:
    """A short-lived token for `node` only, once cloudcore has made the edge CA."""
    core = tokens.core_api(admin)
    try:
        return str(tokens.create(core, tokens.parse_duration("1h"), node, wait=60))
    finally:
        core.api_client.close()


async def _start_edgecore(
    group: ProcessGroup, data: Path, args: argparse.Namespace, link: list[str]
) -> None:
    images = data / "images"
    if not (images / "busybox.tar").exists():
        log.info("building the demo images into %s", images)
        await asyncio.to_thread(
            subprocess.run,
            [sys.executable, str(ROOT / "scripts" / "build-image.py"), "--out", str(images)],
            check=True,
            stdout=subprocess.DEVNULL,
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
                *link,
                "--images-dir",
                str(images),
                *edge_args,
            ],
            data / "logs" / f"{args.node_name}.log",
        )
    )


async def _wait_connected(log_path: Path, timeout: float) -> None:
    """Until edgecore's log says its hub stream is up (or it exited: its log says why)."""
    try:
        async with asyncio.timeout(timeout):
            while True:
                text = await asyncio.to_thread(log_path.read_text, errors="replace")
                if "edgehub: connected to" in text:
                    return
                if "joined as" not in text and "refused to join" in text:
                    raise KeadmError(f"the cloud refused to join; see {log_path}")
                await asyncio.sleep(0.3)
    except TimeoutError:
        raise KeadmError(f"not connected after {timeout:.0f}s; see {log_path}") from None


async def _wait_node_ready(kubeconfig: Path, node: str, timeout: float) -> None:
    from kubernetes import client

    from common import kubeclient

    api = kubeclient.ApiClient(kubeconfig)
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


def _next_steps_join(data: Path, args: argparse.Namespace) -> str:
    return f"""
{args.node_name} joined {args.cloud} and is connected.
Its certificate and key: {data / args.node_name / "pki"}
On the cloud side: kubectl get node {args.node_name}
Logs: {data / "logs"}
Stop and remove this node: keadm reset --data-dir {data}
"""


def _next_steps_up(data: Path, args: argparse.Namespace) -> str:
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


def _tokens(args: argparse.Namespace) -> None:
    """gettoken, token list, token delete, node revoke."""
    kubeconfig = args.kubeconfig
    if kubeconfig is None and args.data_dir is not None:
        kubeconfig = args.data_dir / "kubeconfig"
    if kubeconfig is None and os.environ.get("KUBECONFIG"):
        kubeconfig = Path(os.environ["KUBECONFIG"].split(os.pathsep)[0])
    if kubeconfig is None:
        raise KeadmError("which cluster? give --kubeconfig, --data-dir or set KUBECONFIG")
    core = tokens.core_api(kubeconfig)
    try:
        if args.command == "gettoken":
            print(tokens.create(core, tokens.parse_duration(args.ttl), args.node_name))
        elif args.command == "node":
            when = tokens.revoke_node(core, args.node_name)
            _say(
                f"certificates of {args.node_name} issued up to {when:%Y-%m-%d %H:%M:%S} UTC "
                f"are refused; to let it back: keadm gettoken --node-name {args.node_name}"
            )
        elif args.token_command == "delete":
            tokens.delete(core, args.token_id)
            _say(f"token {args.token_id.split('.', 1)[0]} deleted: it can no longer join a node")
        else:
            print(f"{'ID':<8} {'EXPIRES':<22} {'NODE':<20} STATE")
            for t in tokens.list_tokens(core):
                state = "expired" if t.expired else "valid"
                print(f"{t.id:<8} {t.expires:<22} {t.node_name or '(any)':<20} {state}")
    finally:
        core.api_client.close()


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


UP = Mode("serve", _forwarded_up, _start_up, _next_steps_up)
MODES = {"up": UP, "join": Mode("serve-join", _forwarded_join, _start_join, _next_steps_join)}

if __name__ == "__main__":
    main()
