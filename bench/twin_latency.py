"""Device twin latency, both ways, and the embedded MQTT broker's rate against mosquitto's.

One run (about a minute) starts real processes on 127.0.0.1 ports the kernel picks: the real
control plane (kine, kube-apiserver, controller-manager, scheduler: keadm.controlplane), cloudcore
on it (--kubeconfig; cloudhub, devicecontroller, ...), edgecore for node edge-1 (edgehub,
metamanager, twin, eventbus with its embedded amqtt broker; no edged) and a mosquitto. This
process plays the user (the official kubernetes client) and the mapper (edgecore's own small
MQTT client) and measures:

reported  a mapper's MQTT publish of an actual value on `$hw/.../twin/update` -> the value in
          the Device's status.twins[].reported, seen by a watch on Devices (one at a time);
desired   a merge patch of the Device's desired value through the API -> the delta on
          `$hw/.../twin/update/delta` received by the mapper (one at a time);
broker    publish -> deliver rate at QoS 0 through edgecore's embedded broker and through
          mosquitto, the same Python client publishing and subscribing on each; last line
          `ratio: <embedded/mosquitto>`.

Latencies are reported as p50/p99 (targets: p50 <= 50 ms, p99 <= 200 ms). What it does not:
assert anything (tests assert behaviour, not speed). Figures go to docs/benchmarks.md by hand;
`--json FILE` also writes them to a file.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import platform
import re
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from kubernetes import client, watch

from common import kubeclient
from edge.eventbus.mqtt import MQTTClient, Received
from keadm import pki
from keadm.controlplane import ControlPlane, ControlPlaneSettings
from keadm.processes import ProcessGroup
from tests.support.cluster import new_token
from tests.support.mqtt import start_mosquitto
from tests.support.procs import Proc, python

GROUP, VERSION = "devices.kubeedge.io", "v1beta1"
NS, DEVICE = "bench", "meter-1"
NODE = "edge-1"
TOPIC = f"$hw/events/device/{NS}/{DEVICE}/twin"


@dataclass
class Figures:
    machine: str = ""
    reported_ms: dict[str, float] = field(default_factory=dict)
    desired_ms: dict[str, float] = field(default_factory=dict)
    embedded_msgs_per_s: float = 0.0
    mosquitto_msgs_per_s: float = 0.0
    ratio: float = 0.0


def percentiles(samples: list[float]) -> dict[str, float]:
    ms = sorted(s * 1000 for s in samples)
    cuts = statistics.quantiles(ms, n=100, method="inclusive")
    return {
        "n": len(ms),
        "p50": round(cuts[49], 2),
        "p99": round(cuts[98], 2),
        "max": round(ms[-1], 2),
        "mean": round(statistics.fmean(ms), 2),
    }


# -- the processes ---------------------------------------------------------------------------


async def port_from(proc: Proc, needle: str, pattern: str) -> int:
    line = await proc.wait_line(needle, 60)
    found = re.search(pattern, line)
    if found is None:
        raise RuntimeError(f"no port in {line!r}")
    return int(found.group(1))


@contextlib.asynccontextmanager
async def cluster(tmp: Path, args: argparse.Namespace) -> AsyncIterator[tuple[Path, int]]:
    """The control plane, cloudcore and edgecore running; yields (admin kubeconfig, edge MQTT
    port)."""
    group = ProcessGroup()
    cp = ControlPlane(ControlPlaneSettings(tmp / "cp", "127.0.0.1:0"), group)
    cloud: Proc | None = None
    edge: Proc | None = None
    try:
        await cp.start()
        cloud = await Proc(
            python(
                "cloud.main",
                "--data-dir",
                str(tmp / "cloud"),
                "--kubeconfig",
                str(cp.kubeconfig_for(pki.CLOUDCORE)),
                "--hub-listen",
                "127.0.0.1:0",
                "--bootstrap-listen",
                "127.0.0.1:0",
                "--metrics-listen",
                "127.0.0.1:0",
                "--device-status-batch",
                str(args.status_batch),
            ),
            "cloudcore",
        ).start()
        hub = await port_from(cloud, "cloudhub serving HubService", r":(\d+) \(")
        bootstrap = await port_from(cloud, "cloudhub serving BootstrapService", r":(\d+)$")
        token = await asyncio.to_thread(new_token, cp.kubeconfig, NODE)
        edge = await Proc(
            python(
                "edge.main",
                "--data-dir",
                str(tmp / "edge"),
                "--node-name",
                NODE,
                "--cloud",
                f"127.0.0.1:{hub}",
                "--token",
                token,
                "--bootstrap",
                f"127.0.0.1:{bootstrap}",
                "--mqtt-listen",
                "127.0.0.1:0",
                "--no-edged",
            ),
            "edgecore",
        ).start()
        mqtt_port = await port_from(edge, "embedded broker listening on", r":(\d+)$")
        await edge.wait_line("eventbus: connected", 30)
        await edge.wait_line("edgehub: connected", 30)
        yield cp.kubeconfig, mqtt_port
    finally:
        if edge is not None:
            await edge.terminate()
        if cloud is not None:
            await cloud.terminate()
        await group.stop()


# -- the user and the mapper -----------------------------------------------------------------


def device(desired: str) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "Device",
        "metadata": {"name": DEVICE, "namespace": NS},
        "spec": {
            "deviceModelRef": {"name": "meter"},
            "nodeName": NODE,
            "properties": [
                {"name": "setpoint", "desired": {"value": desired}},
                {"name": "reading"},
            ],
        },
    }


def model() -> dict[str, Any]:
    props = [{"name": "setpoint", "type": "INT"}, {"name": "reading", "type": "INT"}]
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "DeviceModel",
        "metadata": {"name": "meter", "namespace": NS},
        "spec": {"properties": props},
    }


class StatusWatch:
    """A daemon thread watching the Device; records when each reported `reading` appears."""

    def __init__(self, custom: client.CustomObjectsApi, loop: asyncio.AbstractEventLoop) -> None:
        self.custom, self.loop = custom, loop
        self.seen: dict[str, float] = {}
        self.changed = asyncio.Event()
        self._watch = watch.Watch()  # type: ignore[no-untyped-call]
        threading.Thread(target=self._run, name="status-watch", daemon=True).start()

    def _run(self) -> None:
        with contextlib.suppress(Exception):  # the control plane stopping at the end of the run
            self._follow()

    def _follow(self) -> None:
        stream = self._watch.stream(  # type: ignore[no-untyped-call]
            self.custom.list_namespaced_custom_object, GROUP, VERSION, NS, "devices"
        )
        for event in stream:
            for twin in (event["object"].get("status") or {}).get("twins", []):
                value = (twin.get("reported") or {}).get("value")
                if twin.get("propertyName") == "reading" and value not in self.seen:
                    self.seen[value] = time.perf_counter()
                    self.loop.call_soon_threadsafe(self.changed.set)

    async def wait(self, value: str, timeout: float = 10.0) -> float:
        async with asyncio.timeout(timeout):
            while value not in self.seen:
                self.changed.clear()
                await self.changed.wait()
        return self.seen[value]

    def stop(self) -> None:
        """End the watch request: kube-apiserver waits for open watches when it stops."""
        self._watch.stop()  # type: ignore[no-untyped-call]


class Mapper:
    """The device side: publishes reported values, records when each delta arrives."""

    def __init__(self, port: int) -> None:
        self.deltas: dict[str, float] = {}
        self.changed = asyncio.Event()
        self.client = MQTTClient("127.0.0.1", port, client_id="bench-mapper", on_message=self._on)
        self._reader: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.client.connect()
        self._reader = asyncio.create_task(self.client.run(), name="bench-mapper")
        await self.client.subscribe([f"{TOPIC}/update/delta"])

    async def _on(self, msg: Received) -> None:
        value = json.loads(msg.payload).get("delta", {}).get("setpoint")
        if value is not None and value not in self.deltas:
            self.deltas[value] = time.perf_counter()
            self.changed.set()

    async def wait_delta(self, value: str, timeout: float = 10.0) -> float:
        async with asyncio.timeout(timeout):
            while value not in self.deltas:
                self.changed.clear()
                await self.changed.wait()
        return self.deltas[value]

    async def report(self, value: str) -> None:
        twin = {"reading": {"actual": {"value": value}}}
        await self.client.publish(f"{TOPIC}/update", json.dumps({"twin": twin}).encode())

    async def stop(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(BaseException):
                await self._reader
        await self.client.close()


async def in_thread(fn: Any, *args: Any, **kwargs: Any) -> Any:
    return await asyncio.get_running_loop().run_in_executor(None, lambda: fn(*args, **kwargs))


async def measure_latencies(
    kubeconfig: Path, mqtt_port: int, args: argparse.Namespace, fig: Figures
) -> None:
    api = kubeclient.ApiClient(kubeconfig)
    core, custom = client.CoreV1Api(api), client.CustomObjectsApi(api)
    mapper = Mapper(mqtt_port)
    await mapper.start()
    status: StatusWatch | None = None
    try:
        await in_thread(core.create_namespace, {"metadata": {"name": NS}})
        await in_thread(
            custom.create_namespaced_custom_object, GROUP, VERSION, NS, "devicemodels", model()
        )
        await in_thread(
            custom.create_namespaced_custom_object, GROUP, VERSION, NS, "devices", device("0")
        )
        await mapper.wait_delta("0", 30)  # the device reached the edge
        status = StatusWatch(custom, asyncio.get_running_loop())

        reported = []
        for i in range(args.count + args.warmup):
            value = str(100_000 + i)
            started = time.perf_counter()
            await mapper.report(value)
            if i >= args.warmup:
                reported.append(await status.wait(value) - started)
            else:
                await status.wait(value)
        fig.reported_ms = percentiles(reported)
        print(f"reported (MQTT -> Device status): {fig.reported_ms}", flush=True)

        desired = []
        for i in range(args.count + args.warmup):
            value = str(i + 1)
            patch = {"spec": device(value)["spec"]}
            started = time.perf_counter()
            await in_thread(
                custom.patch_namespaced_custom_object, GROUP, VERSION, NS, "devices", DEVICE, patch
            )
            arrived = await mapper.wait_delta(value)
            if i >= args.warmup:
                desired.append(arrived - started)
        fig.desired_ms = percentiles(desired)
        print(f"desired (API -> MQTT delta): {fig.desired_ms}", flush=True)
    finally:
        if status is not None:
            status.stop()
        await mapper.stop()
        api.close()  # type: ignore[no-untyped-call]


# -- broker rate -----------------------------------------------------------------------------


async def broker_rate(port: int, count: int, payload: int) -> float:
    """Messages per second from one publisher to one subscriber, QoS 0, publish -> last deliver.
    Messages lost (QoS 0 may lose) are reported; the rate counts those delivered."""
    done = asyncio.Event()
    received = 0
    last = 0.0

    async def on_message(_: Received) -> None:
        nonlocal received, last
        received += 1
        last = time.perf_counter()
        if received == count:
            done.set()

    sub = MQTTClient("127.0.0.1", port, client_id="bench-sub", on_message=on_message)
    pub = MQTTClient("127.0.0.1", port, client_id="bench-pub")
    await sub.connect()
    await pub.connect()
    tasks = [asyncio.create_task(c.run(), name=f"bench-{c.client_id}") for c in (sub, pub)]
    try:
        await sub.subscribe(["bench/rate"])
        data = b"x" * payload
        started = time.perf_counter()
        for _ in range(count):
            await pub.publish("bench/rate", data)
        while not done.is_set():  # until all arrived, or nothing more for a second
            seen = received
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(done.wait(), 1.0)
            if received == seen:
                print(f"port {port}: {count - received} of {count} messages lost", flush=True)
                break
        return received / (last - started)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await sub.close()
        await pub.close()


async def measure_brokers(
    tmp: Path, mqtt_port: int, args: argparse.Namespace, fig: Figures
) -> None:
    mosquitto = await start_mosquitto(tmp / "mosquitto")
    try:
        for _ in range(2):  # alternate, so neither gets the warmer machine
            fig.embedded_msgs_per_s = max(
                fig.embedded_msgs_per_s, await broker_rate(mqtt_port, args.messages, args.payload)
            )
            fig.mosquitto_msgs_per_s = max(
                fig.mosquitto_msgs_per_s,
                await broker_rate(mosquitto.port, args.messages, args.payload),
            )
    finally:
        await mosquitto.stop()
    fig.ratio = round(fig.embedded_msgs_per_s / fig.mosquitto_msgs_per_s, 2)
    print(f"embedded amqtt broker: {fig.embedded_msgs_per_s:,.0f} msgs/s", flush=True)
    print(f"mosquitto:             {fig.mosquitto_msgs_per_s:,.0f} msgs/s", flush=True)


async def main(args: argparse.Namespace) -> Figures:
    fig = Figures(machine=f"{platform.machine()} {platform.python_version()}")
    with tempfile.TemporaryDirectory(prefix="twin-bench-") as tmp_name:
        tmp = Path(tmp_name)
        async with cluster(tmp, args) as (kubeconfig, mqtt_port):
            await measure_latencies(kubeconfig, mqtt_port, args, fig)
            await measure_brokers(tmp, mqtt_port, args, fig)
    return fig


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0] if __doc__ else None,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--count", type=int, default=1000, help="measured round trips each way")
    parser.add_argument("--warmup", type=int, default=50, help="unmeasured round trips first")
    parser.add_argument("--messages", type=int, default=40_000, help="messages per broker rate run")
    parser.add_argument("--payload", type=int, default=100, help="bytes per rate-run message")
    parser.add_argument(
        "--status-batch", type=float, default=0.01, help="cloudcore --device-status-batch (s)"
    )
    parser.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    return parser.parse_args(argv)


if __name__ == "__main__":
    arguments = parse_args(sys.argv[1:])
    figures = asyncio.run(main(arguments))
    if arguments.json:
        arguments.json.write_text(json.dumps(asdict(figures), indent=2))
    print(f"ratio: {figures.ratio}")
