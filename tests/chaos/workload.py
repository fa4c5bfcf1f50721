"""The chaos workload: random changes a user makes, through the real API and real MQTT.

Everything lives in namespace `chaos`. Pods are `sleep` busyboxes with a ConfigMap volume and a
Secret env; Deployments pin their pods to one node; each node has one Device whose twin gets
reported values over the node's MQTT broker, the way a mapper reports them. The workload
remembers what it did, so the invariants can tell "should not have changed" from "changed".
"""

from __future__ import annotations

import asyncio
import json
import random
from dataclasses import dataclass, field
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from tests.chaos.world import NODES, World

NS = "chaos"
IMAGE = "kubeedge-py/busybox:latest"
CONFIGS = 2  # configmaps cfg-0.. and secrets sec-0..
MAX_PODS = 8  # bare pods and deployment replicas, all nodes together (2 cores)
MAX_DEPLOYMENTS = 2


def device_name(node: str) -> str:
    return f"sensor-{node}"


@dataclass
class Reports:
    """What was reported for one device: the highest value a mapper saw accepted, and every
    value sent (one may have been stored although its answer was lost)."""

    made: int = -1
    sent: set[int] = field(default_factory=set)
    accepted: int = 0


@dataclass
class Workload:
    world: World
    rng: random.Random
    counter: int = 0
    touched: set[str] = field(default_factory=set)  # pod names changed in this trial
    reports: dict[str, Reports] = field(default_factory=dict)
    ops: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.api = self.world.api()
        self.core = client.CoreV1Api(self.api)
        self.apps = client.AppsV1Api(self.api)
        self.custom = client.CustomObjectsApi(self.api)

    async def setup(self) -> None:
        await self._call(self.core.create_namespace, {"metadata": {"name": NS}})
        for k in range(CONFIGS):
            await self._call(self.core.create_namespaced_config_map, NS, _configmap(k, "v0"))
            await self._call(self.core.create_namespaced_secret, NS, _secret(k, "s0"))
        await self._call(
            self.custom.create_namespaced_custom_object,
            "devices.kubeedge.io", "v1beta1", NS, "devicemodels", _device_model(),
        )  # fmt: skip
        for node in NODES:
            await self._call(
                self.custom.create_namespaced_custom_object,
                "devices.kubeedge.io", "v1beta1", NS, "devices", _device(node),
            )  # fmt: skip
            self.reports[device_name(node)] = Reports()

    def close(self) -> None:
        self.api.close()

    async def step(self) -> str:
        """One random change; its name."""
        choices = [
            (self.create_pod, 4),
            (self.delete_pod, 2),
            (self.recreate_pod, 2),
            (self.update_config, 2),
            (self.deployment, 2),
            (self.report_twin, 4),
        ]
        op = self.rng.choices([c for c, _ in choices], weights=[w for _, w in choices])[0]
        name = op.__name__
        self.ops[name] = self.ops.get(name, 0) + 1
        await op()
        return name

    # -- pods ------------------------------------------------------------------------------

    async def pods(self) -> list[dict[str, Any]]:
        listing = await asyncio.to_thread(self.core.list_namespaced_pod, NS)
        return [self.api.sanitize_for_serialization(p) for p in listing.items]

    async def create_pod(self) -> None:
        if len(await self.pods()) >= MAX_PODS:
            return
        self.counter += 1
        name = f"p-{self.counter}"
        self.touched.add(name)
        await self._call(
            self.core.create_namespaced_pod, NS, _pod(name, self.rng.choice(NODES), self.rng)
        )

    async def delete_pod(self) -> None:
        bare = [p for p in await self.pods() if not p["metadata"].get("ownerReferences")]
        if bare:
            name = self.rng.choice(bare)["metadata"]["name"]
            self.touched.add(name)
            await self._call(self.core.delete_namespaced_pod, name, NS)

    async def recreate_pod(self) -> None:
        """Delete a pod and create one of the same name at once (a new uid, the same name)."""
        bare = [p for p in await self.pods() if not p["metadata"].get("ownerReferences")]
        if not bare:
            return
        old = self.rng.choice(bare)
        name = old["metadata"]["name"]
        self.touched.add(name)
        await self._call(self.core.delete_namespaced_pod, name, NS, grace_period_seconds=0)
        node = self.rng.choice(NODES)
        for _ in range(50):  # the name is free once the old pod is gone from the API
            try:
                await asyncio.to_thread(
                    self.core.create_namespaced_pod, NS, _pod(name, node, self.rng)
                )
                return
            except ApiException as exc:
                if exc.status != 409:
                    raise
            await asyncio.sleep(0.2)

    async def update_config(self) -> None:
        k = self.rng.randrange(CONFIGS)
        self.counter += 1
        body = {"data": {"value": f"v{self.counter}"}}
        await self._call(self.core.patch_namespaced_config_map, f"cfg-{k}", NS, body)

    async def deployment(self) -> None:
        listing = await asyncio.to_thread(self.apps.list_namespaced_deployment, NS)
        names = [d.metadata.name for d in listing.items]
        roll = self.rng.random()
        if names and roll < 0.3:
            await self._call(self.apps.delete_namespaced_deployment, self.rng.choice(names), NS)
        elif names and roll < 0.7:
            body = {"spec": {"replicas": self.rng.randint(0, 2)}}
            await self._call(
                self.apps.patch_namespaced_deployment, self.rng.choice(names), NS, body
            )
        elif len(names) < MAX_DEPLOYMENTS and len(await self.pods()) + 2 <= MAX_PODS:
            self.counter += 1
            body = _deployment(f"d-{self.counter}", self.rng.choice(NODES), self.rng)
            await self._call(self.apps.create_namespaced_deployment, NS, body)

    # -- devices ---------------------------------------------------------------------------

    async def report_twin(self) -> None:
        """Report a new value as a mapper does: publish twin/update and wait for its result."""
        node = self.rng.choice(NODES)
        edge = self.world.edges[node]
        if not edge.up:
            return  # no broker to talk to: nothing is reported
        self.counter += 1
        device = device_name(node)
        reports = self.reports[device]
        reports.sent.add(self.counter)
        if await _mqtt_request(edge.mqtt_port, f"{NS}/{device}", self.counter):
            reports.made = max(reports.made, self.counter)
            reports.accepted += 1

    async def _call(self, fn: Any, *args: Any, **kwargs: Any) -> None:
        """An API call whose "already there" / "already gone" answer is no news."""
        try:
            await asyncio.to_thread(fn, *args, **kwargs)
        except ApiException as exc:
            if exc.status not in (404, 409):
                raise


async def _mqtt_request(port: int, device_id: str, value: int) -> bool:
    """Publish a twin update and wait for its result, as a mapper does; True when accepted."""
    topic = f"$hw/events/device/{device_id}/twin/update"
    event_id = f"chaos-{value}"
    twin = {"value": {"actual": {"value": str(value)}}}
    procs: list[asyncio.subprocess.Process] = []
    try:
        sub = await _mosquitto(
            procs, "mosquitto_sub", port, "-t", f"{topic}/result", "-C", "1", "-W", "5", "-d"
        )
        await _subscribed(sub)  # before the request goes out, or its result is missed
        payload = json.dumps({"event_id": event_id, "twin": twin})
        pub = await _mosquitto(procs, "mosquitto_pub", port, "-q", "1", "-t", topic, "-m", payload)
        if await asyncio.wait_for(pub.wait(), 10) != 0:
            return False
        out, _ = await asyncio.wait_for(sub.communicate(), 10)
    except TimeoutError:
        return False  # no answer: not accepted, as far as a mapper can tell
    finally:
        for proc in procs:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
    # The one message: the line that is not one of -d's "Client ..." debug lines.
    messages = [ln for ln in (out or b"").splitlines() if ln.startswith(b"{")]
    try:
        result = json.loads(messages[-1])
    except (ValueError, IndexError):
        return False
    return bool(result.get("event_id") == event_id and "twin" in result and "code" not in result)


async def _subscribed(sub: asyncio.subprocess.Process) -> None:
    """Until mosquitto_sub -d says its subscription is in place (TimeoutError after 10 s)."""
    assert sub.stdout is not None
    async with asyncio.timeout(10):
        while line := await sub.stdout.readline():
            if line.startswith(b"Subscribed (mid"):
                return
    raise TimeoutError("mosquitto_sub ended before it subscribed")


async def _mosquitto(
    procs: list[asyncio.subprocess.Process], program: str, port: int, *args: str
) -> asyncio.subprocess.Process:
    proc = await asyncio.create_subprocess_exec(
        "stdbuf", "-oL", program, "-h", "127.0.0.1", "-p", str(port), *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    procs.append(proc)
    return proc


# -- object shapes -----------------------------------------------------------------------------


def _pod_spec(rng: random.Random) -> dict[str, Any]:
    k = rng.randrange(CONFIGS)
    return {
        "automountServiceAccountToken": False,
        "terminationGracePeriodSeconds": 1,
        "containers": [
            {
                "name": "c",
                "image": IMAGE,
                "imagePullPolicy": "Never",
                "command": ["sleep", "3600"],
                "env": [
                    {
                        "name": "SECRET",
                        "valueFrom": {"secretKeyRef": {"name": f"sec-{k}", "key": "value"}},
                    }
                ],
                "volumeMounts": [{"name": "cfg", "mountPath": "/cfg"}],
            }
        ],
        "volumes": [{"name": "cfg", "configMap": {"name": f"cfg-{k}"}}],
    }


def _pod(name: str, node: str, rng: random.Random) -> dict[str, Any]:
    spec = {"nodeName": node, **_pod_spec(rng)}
    return {"metadata": {"name": name, "namespace": NS}, "spec": spec}


def _deployment(name: str, node: str, rng: random.Random) -> dict[str, Any]:
    spec = {"nodeSelector": {"kubernetes.io/hostname": node}, **_pod_spec(rng)}
    return {
        "metadata": {"name": name, "namespace": NS},
        "spec": {
            "replicas": rng.randint(1, 2),
            "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}}, "spec": spec},
        },
    }


def _configmap(k: int, value: str) -> dict[str, Any]:
    return {"metadata": {"name": f"cfg-{k}", "namespace": NS}, "data": {"value": value}}


def _secret(k: int, value: str) -> dict[str, Any]:
    return {"metadata": {"name": f"sec-{k}", "namespace": NS}, "stringData": {"value": value}}


def _device_model() -> dict[str, Any]:
    return {
        "apiVersion": "devices.kubeedge.io/v1beta1",
        "kind": "DeviceModel",
        "metadata": {"name": "sensor", "namespace": NS},
        "spec": {"protocol": "modbus", "properties": [{"name": "value", "type": "INT"}]},
    }


def _device(node: str) -> dict[str, Any]:
    return {
        "apiVersion": "devices.kubeedge.io/v1beta1",
        "kind": "Device",
        "metadata": {"name": device_name(node), "namespace": NS},
        "spec": {
            "deviceModelRef": {"name": "sensor"},
            "nodeName": node,
            "protocol": {"protocolName": "modbus"},
            "properties": [{"name": "value", "reportToCloud": True}],
        },
    }
