"""Hub throughput: downstream object events per second, cloudhub -> edgehub, over mutual TLS
and in plaintext, against bare gRPC.

One run measures three things, every side in its own process (spawned with subprocess, never
forked), over 127.0.0.1 on ports picked by the kernel:

hub   a cloud process runs the real CloudHub (cloud.main.register_modules, --kubeconfig of a
      real control plane — kine, kube-apiserver, controller-manager, scheduler — that this
      process starts first and stops before `bare`) plus a producer that enqueues N distinct
      configmap ObjectEvents through `CloudHub.send_to_nodes` (the durable outbox); an edge
      process runs the real edgecore modules (edge.main.register_modules: metamanager commits
      each event to SQLite, then edgehub sends its ack). The clock stops when the node's
      outbox is empty: every event committed at the edge and acked. This runs twice: over
      mutual TLS (the default; the edge joins with a token first, not timed) and with
      --insecure-hub on both sides (plaintext), in the same run on the same control plane.
bare  a minimal grpc.aio server that answers each HubService stream message with an echo (the
      echo is the ack), and a client sending ONE envelope of the same size per stream message
      while keeping the same window of un-answered messages: per-message gRPC, no SQLite.

It prints the rates, the CPU each process used while the clock ran (the control plane's is
not counted), a line `ratio tls/plaintext: <r>` (what mutual TLS costs the hub: 1 - r) and
last a line `ratio: <hub/bare>` (the TLS hub against bare plaintext gRPC). What it does not:
assert anything (tests assert behaviour, not speed). Figures go to docs/benchmarks.md by
hand; `--json FILE` also writes them to a file.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import signal
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import grpc
from kubeedge.hub.v1 import hub_pb2

from cloud.main import register_modules as register_cloud
from cloud.settings import CloudSettings
from common import logs
from common.bus import Bus
from common.envelope import Message
from common.names import Module
from common.supervisor import Supervisor
from edge.main import node_identity, open_database
from edge.main import register_modules as register_edge
from edge.meta.module import MetaManager
from edge.settings import EdgeSettings
from keadm import pki
from keadm.controlplane import ControlPlane, ControlPlaneSettings
from keadm.processes import ProcessGroup
from tests.support.cluster import new_token
from tests.support.modules import object_event

NODE = "bench-node"
SERVICE = "kubeedge.hub.v1.HubService"
METHOD = f"/{SERVICE}/Connect"
POLL = 0.002  # seconds between looks at the outbox; the error it adds is far below the spread
CHILD_TIMEOUT = 120.0
REPO = Path(__file__).resolve().parent.parent


# -- what is sent ---------------------------------------------------------------------------


def object_json(name: str, rv: int, size: int) -> bytes:
    """A ConfigMap as JSON, padded to exactly `size` bytes (when `size` allows)."""
    doc = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": "default", "resourceVersion": str(rv)},
        "data": {"pad": ""},
    }
    head = json.dumps(doc, separators=(",", ":"))
    pad = "x" * max(0, size - len(head))
    return head.replace('"pad":""', f'"pad":"{pad}"').encode()


def make_events(count: int, payload: int, node: str | None) -> list[Message]:
    """`count` events of distinct objects, so nothing collapses in the outbox."""
    events = []
    for i in range(count):
        name = f"bench-{i}"
        events.append(object_event(node, name, i + 1, data=object_json(name, i + 1, payload)))
    return events


def emit(*fields: object) -> None:
    """One line of the parent/child protocol on stdout."""
    print("bench", *fields, flush=True)


async def until_signal() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()


async def poll_until(cond: Callable[[], bool]) -> None:
    # Polling, not an Event: the bench only looks at the hub's state and changes none of its code.
    while not cond():  # noqa: ASYNC110
        await asyncio.sleep(POLL)


# -- child: cloudcore + producer -------------------------------------------------------------


async def cloud_child(args: argparse.Namespace) -> None:
    cfg = CloudSettings(
        data_dir=Path(args.data_dir),
        hub_listen="127.0.0.1:0",
        kubeconfig=args.kubeconfig,
        metrics_listen="127.0.0.1:0",
        max_inflight=args.window,
        insecure_hub=not args.tls,
        bootstrap_listen="127.0.0.1:0",
    )
    supervisor = Supervisor(Bus())
    hub = register_cloud(supervisor, cfg)
    await supervisor.start()
    await hub.started.wait()
    events = make_events(args.count, args.payload, NODE)
    chunks = [events[i : i + args.enqueue_batch] for i in range(0, len(events), args.enqueue_batch)]

    async def enqueue() -> float:
        start = time.perf_counter()
        for chunk in chunks:
            await hub.send_to_nodes(chunk)
        return time.perf_counter() - start

    emit("port", hub.port, hub.bootstrap_port)
    if args.preload:
        enqueue_s = await enqueue()
        emit("enqueued", f"{enqueue_s:.6f}")
        await poll_until(lambda: NODE in hub.sessions)
        t0 = time.perf_counter()
        emit("start")
    else:
        await poll_until(lambda: NODE in hub.sessions and hub.sessions[NODE].frames_in > 0)
        t0 = time.perf_counter()
        emit("start")
        enqueue_s = await enqueue()
    await poll_until(lambda: hub.outbox.pending(NODE) == 0)
    elapsed = time.perf_counter() - t0
    session = hub.sessions[NODE]
    emit("done", f"{elapsed:.6f}", f"{enqueue_s:.6f}", session.frames_out, session.frames_in)
    await until_signal()
    await supervisor.stop()


# -- child: edgecore ---------------------------------------------------------------------------


async def edge_child(args: argparse.Namespace) -> None:
    cfg = EdgeSettings(
        data_dir=Path(args.data_dir),
        node_name=NODE,
        cloud=args.cloud,
        reconnect_initial=0.05,
        edged=False,  # the hub and the store are measured, not pods
        mqtt_listen="127.0.0.1:0",
        insecure_hub=not args.token,
        token=args.token or "",
        bootstrap=args.bootstrap or "",
    )
    identity = await node_identity(cfg)
    db = open_database(cfg)
    supervisor = Supervisor(Bus())
    register_edge(supervisor, cfg, db, identity)
    meta = supervisor.get(Module.METAMANAGER)
    assert isinstance(meta, MetaManager)
    await supervisor.start()
    await until_signal()
    await supervisor.stop()
    rows = db.run_blocking(lambda c: list(c.execute("SELECT count(*) FROM meta")))
    emit("applied", meta.applied, rows[0][0])
    db.close()


# -- children: bare gRPC echo ------------------------------------------------------------------


async def echo(
    requests: AsyncIterator[hub_pb2.ConnectRequest], context: Any
) -> AsyncIterator[hub_pb2.ConnectResponse]:
    async for request in requests:
        yield hub_pb2.ConnectResponse(messages=request.messages)


async def echo_server_child(args: argparse.Namespace) -> None:
    handler = grpc.method_handlers_generic_handler(
        SERVICE,
        {
            "Connect": grpc.stream_stream_rpc_method_handler(
                echo,
                request_deserializer=hub_pb2.ConnectRequest.FromString,
                response_serializer=hub_pb2.ConnectResponse.SerializeToString,
            )
        },
    )
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    emit("port", port)
    await until_signal()
    await server.stop(0.2)


async def echo_client_child(args: argparse.Namespace) -> None:
    requests = [
        hub_pb2.ConnectRequest(messages=[ev]) for ev in make_events(args.count, args.payload, None)
    ]
    async with grpc.aio.insecure_channel(f"127.0.0.1:{args.port}") as channel:
        connect = channel.stream_stream(
            METHOD,
            request_serializer=hub_pb2.ConnectRequest.SerializeToString,
            response_deserializer=hub_pb2.ConnectResponse.FromString,
        )
        call = connect()
        await call.write(requests[0])  # warm-up round trip, like the hub's first keepalive
        await call.read()
        window = asyncio.Semaphore(args.window)

        async def write() -> None:
            for request in requests:
                await window.acquire()
                await call.write(request)
            await call.done_writing()

        emit("start")
        t0 = time.perf_counter()
        writer = asyncio.create_task(write(), name="echo-writer")
        for _ in requests:
            await call.read()
            window.release()
        elapsed = time.perf_counter() - t0
        await writer
        emit("done", f"{elapsed:.6f}")


CHILDREN = {
    "cloud": cloud_child,
    "edge": edge_child,
    "echo-server": echo_server_child,
    "echo-client": echo_client_child,
}


# -- the parent --------------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process so far, all its threads (Linux /proc)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Child:
    """A spawned role of this file; its stdout carries `bench ...` lines, its stderr a log."""

    def __init__(self, role: str, log_dir: Path) -> None:
        self.role = role
        self.log_path = log_dir / f"{role}.log"
        self.log = self.log_path.open("wb")
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self, *args: str) -> Child:
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable,
            __file__,
            "--role",
            self.role,
            *args,
            stdout=asyncio.subprocess.PIPE,
            stderr=self.log,
            cwd=REPO,
        )
        self.log.close()  # the child holds its own copy
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    async def line(self, key: str) -> list[str]:
        """The fields after `bench KEY` on the next such line."""
        assert self.proc is not None and self.proc.stdout is not None
        async with asyncio.timeout(CHILD_TIMEOUT):
            while raw := await self.proc.stdout.readline():
                fields = raw.decode().split()
                if fields[:2] == ["bench", key]:
                    return fields[2:]
        raise RuntimeError(f"{self.role} exited before `{key}`; log:\n{self.log_tail()}")

    def log_tail(self) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-30:])

    def cpu(self) -> float:
        return cpu_seconds(self.pid)

    async def stop(self) -> None:
        """SIGTERM this child (by its pid) and wait; SIGKILL it if it does not go."""
        self.log.close()
        if self.proc is None or self.proc.returncode is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(self.proc.wait(), 15)
        except TimeoutError:
            self.proc.kill()
            await self.proc.wait()


@dataclass
class HubRun:
    seconds: float = 0.0
    events_per_s: float = 0.0
    enqueue_seconds: float = 0.0
    frames_down: int = 0
    frames_up: int = 0
    cpu_cloud_s: float = 0.0
    cpu_edge_s: float = 0.0


@dataclass
class Figures:
    count: int
    payload_bytes: int
    window: int
    mode: str
    hub_tls: HubRun = field(default_factory=HubRun)
    hub_plaintext: HubRun = field(default_factory=HubRun)
    bare_count: int = 0
    bare_seconds: float = 0.0
    bare_msgs_per_s: float = 0.0
    bare_cpu_server_s: float = 0.0
    bare_cpu_client_s: float = 0.0
    ratio_tls_plaintext: float = 0.0
    ratio: float = 0.0


async def run_hub(args: argparse.Namespace, tmp: Path, fig: Figures) -> None:
    group = ProcessGroup()
    cp = ControlPlane(ControlPlaneSettings(tmp / "cp", "127.0.0.1:0"), group)
    try:
        await cp.start()
        cloudcore = cp.kubeconfig_for(pki.CLOUDCORE)
        for tls, run in ((True, fig.hub_tls), (False, fig.hub_plaintext)):
            await hub_on(cloudcore, cp.kubeconfig if tls else None, args, tmp, run)
    finally:
        await group.stop()


async def hub_on(
    kubeconfig: Path, admin: Path | None, args: argparse.Namespace, tmp: Path, fig: HubRun
) -> None:
    """One hub run: over mutual TLS when `admin` is given (to make the join token)."""
    mode = "tls" if admin else "plaintext"
    tmp = tmp / mode
    tmp.mkdir()
    common = ["--count", str(args.count), "--payload", str(args.payload)]
    cloud = await Child("cloud", tmp).start(
        *common,
        *(["--tls"] if admin else []),
        "--kubeconfig",
        str(kubeconfig),
        "--window",
        str(args.window),
        "--enqueue-batch",
        str(args.enqueue_batch),
        "--data-dir",
        str(tmp / "cloud"),
        *(["--preload"] if args.preload else []),
    )
    edge = Child("edge", tmp)
    try:
        port, bootstrap_port = await cloud.line("port")
        if args.preload:
            (enqueue_s,) = await cloud.line("enqueued")
            fig.enqueue_seconds = float(enqueue_s)
        join: list[str] = []
        if admin is not None:
            token = await asyncio.to_thread(new_token, admin, NODE)
            join = ["--token", token, "--bootstrap", f"127.0.0.1:{bootstrap_port}"]
        await edge.start("--cloud", f"127.0.0.1:{port}", "--data-dir", str(tmp / "edge"), *join)
        await cloud.line("start")
        cpu0 = cloud.cpu(), edge.cpu()
        elapsed, enqueue_s, frames_down, frames_up = await cloud.line("done")
        fig.cpu_cloud_s = cloud.cpu() - cpu0[0]
        fig.cpu_edge_s = edge.cpu() - cpu0[1]
        fig.seconds = float(elapsed)
        if not args.preload:
            fig.enqueue_seconds = float(enqueue_s)
        fig.frames_down, fig.frames_up = int(frames_down), int(frames_up)
        fig.events_per_s = args.count / fig.seconds
        await edge.stop()
        applied, rows = map(int, await edge.line("applied"))
        if rows != args.count:
            raise RuntimeError(
                f"the edge stored {rows} objects (applied {applied}), not {args.count}"
            )
    finally:
        await edge.stop()
        await cloud.stop()


async def run_bare(args: argparse.Namespace, tmp: Path, fig: Figures) -> None:
    server = await Child("echo-server", tmp).start()
    client = Child("echo-client", tmp)
    try:
        (port,) = await server.line("port")
        await client.start(
            "--port", port, "--count", str(fig.bare_count), "--payload", str(args.payload),
            "--window", str(args.window),
        )  # fmt: skip
        await client.line("start")
        cpu0 = server.cpu(), client.cpu()
        (elapsed,) = await client.line("done")
        fig.bare_cpu_server_s = server.cpu() - cpu0[0]
        fig.bare_cpu_client_s = client.cpu() - cpu0[1]
        fig.bare_seconds = float(elapsed)
        fig.bare_msgs_per_s = fig.bare_count / fig.bare_seconds
    finally:
        await client.stop()
        await server.stop()


def report(fig: Figures) -> None:
    cores = os.cpu_count() or 1
    bare_cpu = fig.bare_cpu_server_s + fig.bare_cpu_client_s
    clock = {
        "live": "from the first enqueue (edge already connected; the producer enqueues while "
        "the hub delivers)",
        "preload": "from the edge's connect (all events enqueued before, not timed)",
    }[fig.mode]
    print(
        f"machine: {cores} cores, {platform.machine()}, Python {platform.python_version()}, "
        f"grpcio {grpc.__version__}, loopback"
    )
    print(
        f"setup: {fig.count} events, object_json {fig.payload_bytes} B, window {fig.window} "
        f"un-acked, hub batch_size {CloudSettings.batch_size} envelopes per stream message"
    )
    print(f"hub clock: {clock} until the outbox is empty (all committed at the edge and acked)")
    for name, run in (("hub (mutual TLS)", fig.hub_tls), ("hub (plaintext)", fig.hub_plaintext)):
        cpu = run.cpu_cloud_s + run.cpu_edge_s
        print(
            f"{name}: {fig.count} events in {run.seconds:.3f} s = {run.events_per_s:,.0f} "
            f"events/s (enqueue {run.enqueue_seconds:.3f} s; stream messages "
            f"{run.frames_down} down, {run.frames_up} up); CPU cloud "
            f"{run.cpu_cloud_s:.2f} s + edge {run.cpu_edge_s:.2f} s = "
            f"{cpu / run.seconds / cores:.0%} of {cores} cores, "
            f"{cpu / fig.count * 1e6:.0f} us CPU per event"
        )
    print(
        f"bare: {fig.bare_count} msgs in {fig.bare_seconds:.3f} s = {fig.bare_msgs_per_s:,.0f} "
        f"msgs/s (plaintext, one envelope per stream message, echoed); CPU server "
        f"{fig.bare_cpu_server_s:.2f} s + client {fig.bare_cpu_client_s:.2f} s = "
        f"{bare_cpu / fig.bare_seconds / cores:.0%} of {cores} cores, "
        f"{bare_cpu / fig.bare_count * 1e6:.0f} us CPU per msg"
    )
    print(
        f"ratio tls/plaintext: {fig.ratio_tls_plaintext:.2f} "
        f"(mutual TLS costs the hub {1 - fig.ratio_tls_plaintext:.0%} of its rate)"
    )
    print(f"ratio: {fig.ratio:.2f}")


def dump_logs(tmp: Path) -> None:
    for log in sorted([*tmp.glob("**/*.log")]):
        print(f"--- {log.name}\n{log.read_text(errors='replace')[-3000:]}", file=sys.stderr)


async def parent(args: argparse.Namespace) -> Figures:
    fig = Figures(
        count=args.count,
        payload_bytes=args.payload,
        window=args.window,
        mode="preload" if args.preload else "live",
        bare_count=args.bare_count or args.count,
    )
    with tempfile.TemporaryDirectory(prefix="hub-bench-") as tmp:
        try:
            await run_hub(args, Path(tmp), fig)
            await run_bare(args, Path(tmp), fig)
        except BaseException:
            dump_logs(Path(tmp))
            raise
    fig.ratio_tls_plaintext = fig.hub_tls.events_per_s / fig.hub_plaintext.events_per_s
    fig.ratio = fig.hub_tls.events_per_s / fig.bare_msgs_per_s
    return fig


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=(__doc__ or "").split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--count", type=int, default=50_000, help="object events to deliver")
    parser.add_argument("--payload", type=int, default=200, help="bytes of object_json per event")
    parser.add_argument(
        "--window",
        type=int,
        default=CloudSettings.max_inflight,
        help="un-acked messages in flight (the hub's max_inflight; the bare client's window)",
    )
    parser.add_argument(
        "--bare-count", type=int, default=0, help="messages for the bare baseline (0: --count)"
    )
    parser.add_argument(
        "--preload",
        action="store_true",
        help="enqueue everything before the edge connects and time delivery only "
        "(default: edge connected first, time enqueue + delivery)",
    )
    parser.add_argument(
        "--enqueue-batch", type=int, default=1000, help="events per send_to_nodes call"
    )
    parser.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    # Internal: which child role this process plays, and the arguments only children take.
    parser.add_argument("--role", choices=sorted(CHILDREN), help=argparse.SUPPRESS)
    parser.add_argument("--data-dir", help=argparse.SUPPRESS)
    parser.add_argument("--cloud", help=argparse.SUPPRESS)
    parser.add_argument("--port", help=argparse.SUPPRESS)
    parser.add_argument("--kubeconfig", help=argparse.SUPPRESS)
    parser.add_argument("--tls", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--token", help=argparse.SUPPRESS)
    parser.add_argument("--bootstrap", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.role:
        logs.setup("WARNING", args.role)
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(CHILDREN[args.role](args))
        return
    fig = asyncio.run(parent(args))
    report(fig)
    if args.json:
        args.json.write_text(json.dumps(asdict(fig), indent=2) + "\n")


if __name__ == "__main__":
    main()
