"""Device twins end to end: kubectl and the API on one side, mosquitto_pub/_sub on the other.

A cloud stack (cloudhub, devicecontroller, ... on the session's real control plane) and an
edge stack for node edge-1 (edgehub, metamanager, twin, eventbus) run in this process; the
mapper is Debian's
mosquitto_sub/mosquitto_pub. Every test runs twice: with edgecore's embedded amqtt broker, and
with an external mosquitto the test starts on a free loopback port.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from common.names import Module
from edge.eventbus.module import EventBus
from edge.twin import store
from tests.support.cluster import KUBECTL
from tests.support.controlplane import TestControlPlane
from tests.support.mqtt import Mosquitto, Subscriber, publish, start_mosquitto
from tests.support.stack import CloudStack, EdgeStack, start_cloud, start_edge
from tests.support.waiting import free_port

pytestmark = pytest.mark.e2e

EXAMPLES = Path(__file__).parents[2] / "examples"
NODE = "edge-1"
DEVICE = "demo/thermostat-1"
DEVICE_TOPIC = f"$hw/events/device/{DEVICE}"
TWIN_UPDATE = f"{DEVICE_TOPIC}/twin/update"
TWIN_GET = f"{DEVICE_TOPIC}/twin/get"
STATE_UPDATE = f"{DEVICE_TOPIC}/state/update"
MEMBERSHIP_GET = f"$hw/events/node/{NODE}/membership/get"


@dataclass
class World:
    tmp: Path
    cloud: CloudStack | None
    edge: EdgeStack
    mosquitto: Mosquitto | None
    mqtt_port: int
    mapper: Subscriber
    hub_port: int
    control_plane: TestControlPlane

    @property
    def kubeconfig(self) -> Path:
        return self.control_plane.kubeconfig

    async def kubectl(self, *args: str) -> str:
        proc = await asyncio.create_subprocess_exec(
            KUBECTL,
            "--kubeconfig",
            str(self.kubeconfig),
            *args,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(proc.communicate(), 60)
        assert proc.returncode == 0, f"kubectl {' '.join(args)}: {err.decode()}"
        return out.decode()

    async def apply_examples(self) -> None:
        for name in ("namespace", "devicemodel", "device"):
            await self.kubectl("apply", "-f", str(EXAMPLES / f"{name}.yaml"))

    async def device(self) -> Any:
        return json.loads(
            await self.kubectl("get", "device", "thermostat-1", "-n", "demo", "-o", "json")
        )

    async def status_until(
        self, check: Callable[[dict[str, Any]], bool], timeout: float = 20
    ) -> Any:
        """Poll `kubectl get device -o json` until its status passes `check`."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            status = (await self.device()).get("status") or {}
            if check(status):
                return status
            if loop.time() > deadline:
                raise AssertionError(f"Device status never matched; last: {status}")
            await asyncio.sleep(0.1)

    async def set_desired(self, value: str) -> None:
        props = [
            {"name": "setpoint", "desired": {"value": value}, "reportToCloud": True},
            {"name": "temperature", "reportToCloud": True},
        ]
        patch = json.dumps({"spec": {"properties": props}})
        await self.kubectl(
            "patch", "device", "thermostat-1", "-n", "demo", "--type", "merge", "-p", patch
        )

    async def start_cloud(self) -> None:
        self.cloud = await start_cloud(
            self.tmp / "cloud",
            hub_listen=f"127.0.0.1:{self.hub_port}",
            kubeconfig=str(self.control_plane.cloudcore_kubeconfig),
        )

    async def stop_cloud(self) -> None:
        if self.cloud is not None:
            await self.cloud.stop()
            self.cloud = None

    async def request(self, topic: str, body: Any, event_id: str) -> Any:
        """Publish a request and wait for its result (matched by event_id)."""
        if isinstance(body, dict):
            body = {"event_id": event_id, **body}
        await publish(self.mqtt_port, topic, body)
        return await self.mapper.wait_for(
            topic + "/result", lambda p: p.get("event_id") == event_id
        )

    async def twin_rows(self) -> list[Any]:
        return await self.edge.db.run(
            lambda c: list(c.execute("SELECT * FROM device_twin ORDER BY name"))
        )


def reported(status: dict[str, Any]) -> dict[str, str]:
    return {
        t["propertyName"]: t["reported"]["value"]
        for t in status.get("twins", [])
        if "reported" in t
    }


def observed(status: dict[str, Any]) -> dict[str, str]:
    return {
        t["propertyName"]: t["observedDesired"]["value"]
        for t in status.get("twins", [])
        if "observedDesired" in t
    }


def values(**props: str) -> dict[str, Any]:
    return {"twin": {name: {"actual": {"value": v}} for name, v in props.items()}}


@pytest.fixture(params=["embedded", "mosquitto"])
async def world(
    request: pytest.FixtureRequest, tmp_path: Path, kube: TestControlPlane
) -> AsyncIterator[World]:
    async with contextlib.AsyncExitStack() as stack:
        mosquitto = None
        if request.param == "mosquitto":
            mosquitto = await start_mosquitto(tmp_path / "mosquitto")
            stack.push_async_callback(mosquitto.stop)
        w = World(tmp_path, None, None, mosquitto, 0, None, free_port(), kube)  # type: ignore[arg-type]
        await w.start_cloud()
        stack.push_async_callback(w.stop_cloud)
        if mosquitto is None:
            mqtt: dict[str, Any] = {"mqtt_listen": "127.0.0.1:0"}
        else:
            mqtt = {"mqtt_mode": "external", "mqtt_broker": mosquitto.url}
        w.edge = await start_edge(tmp_path / "edge", NODE, f"127.0.0.1:{w.hub_port}", **mqtt)
        stack.push_async_callback(w.edge.stop)
        eventbus = w.edge.supervisor.get(Module.EVENTBUS)
        assert isinstance(eventbus, EventBus)
        await asyncio.wait_for(eventbus.connected.wait(), 10)
        if mosquitto is not None:
            w.mqtt_port = mosquitto.port
        elif eventbus.broker is not None:
            w.mqtt_port = eventbus.broker.port
        w.mapper = Subscriber(w.mqtt_port, "$hw/events/#")
        stack.push_async_callback(w.mapper.stop)
        await w.mapper.start()
        yield w


async def test_desired_and_reported_values_round_trip(world: World) -> None:
    """A Device applied with kubectl reaches the mapper (membership, delta); reported values
    reach its status; a desired change makes a new delta; twin/get returns the document; a
    device moved off the node is announced removed and its twin rows are gone."""
    await world.apply_examples()
    await world.mapper.wait_for(
        "/membership/updated", lambda p: [d["id"] for d in p["added_devices"]] == [DEVICE]
    )
    await world.mapper.wait_for("/twin/update/delta", lambda p: p["delta"] == {"setpoint": "20"})

    result = await world.request(TWIN_UPDATE, values(setpoint="19", temperature="21"), "r1")
    assert result["twin"]["temperature"]["actual"]["value"] == "21"
    status = await world.status_until(
        lambda s: reported(s) == {"setpoint": "19", "temperature": "21"}
    )
    assert observed(status) == {"setpoint": "20"}
    assert status["twins"][0]["reported"]["metadata"]["type"] == "int"

    await world.set_desired("22")
    await world.mapper.wait_for("/twin/update/delta", lambda p: p["delta"] == {"setpoint": "22"})
    doc = await world.request(TWIN_GET, {}, "g1")
    assert doc["twin"]["setpoint"]["expected"]["value"] == "22"
    assert doc["twin"]["setpoint"]["actual"]["value"] == "19"
    await world.status_until(lambda s: observed(s) == {"setpoint": "22"})

    state = await world.request(STATE_UPDATE, {"state": "online"}, "s1")
    assert state["device"]["state"] == "online"
    status = await world.status_until(lambda s: s.get("state") == "online")
    assert status["lastOnlineTime"].endswith("Z")

    patch = json.dumps({"spec": {"nodeName": "edge-2"}})
    await world.kubectl(
        "patch", "device", "thermostat-1", "-n", "demo", "--type", "merge", "-p", patch
    )
    await world.mapper.wait_for(
        "/membership/updated", lambda p: [d["id"] for d in p["removed_devices"]] == [DEVICE]
    )
    assert await world.twin_rows() == []
    assert await world.edge.db.run(lambda c: store.get_device(c, DEVICE)) is None
    gone = await world.request(TWIN_GET, {}, "g2")
    assert gone["code"] == 404


async def test_offline_edge_keeps_its_twin_and_status_catches_up(world: World) -> None:
    """With cloudcore stopped, reported values still update the local twin and answer twin/get;
    when cloudcore is back, Device status shows the newest value of every property."""
    await world.apply_examples()
    await world.mapper.wait_for("/twin/update/delta", lambda p: p["delta"] == {"setpoint": "20"})
    await world.stop_cloud()
    for i, temperature in enumerate(("30", "31", "32")):
        result = await world.request(TWIN_UPDATE, values(temperature=temperature), f"off-{i}")
        assert result["twin"]["temperature"]["actual"]["value"] == temperature
    await world.request(TWIN_UPDATE, values(setpoint="18"), "off-sp")
    doc = await world.request(TWIN_GET, {}, "off-get")
    assert doc["twin"]["temperature"]["actual"]["value"] == "32"
    assert doc["twin"]["setpoint"]["actual"]["value"] == "18"

    await world.start_cloud()
    status = await world.status_until(
        lambda s: reported(s) == {"setpoint": "18", "temperature": "32"}
    )
    assert observed(status) == {"setpoint": "20"}


BAD_INPUT = [
    (TWIN_UPDATE, "not json at all", 400),
    (TWIN_UPDATE, {"event_id": "no-twin"}, 400),
    (TWIN_UPDATE, {"event_id": "long-key", "twin": {"k" * 129: {"actual": {"value": "1"}}}}, 400),
    (TWIN_UPDATE, {"event_id": "long-value", **values(setpoint="v" * 513)}, 400),
    (
        TWIN_UPDATE,
        {"event_id": "expected", "twin": {"setpoint": {"expected": {"value": "1"}}}},
        409,
    ),
    (
        TWIN_UPDATE,
        {
            "event_id": "stale",
            "twin": {
                "setpoint": {"actual": {"value": "1"}, "actual_version": {"cloud": 0, "edge": 0}}
            },
        },
        409,
    ),
    ("$hw/events/device/demo/nope/twin/update", {"event_id": "unknown", **values(a="1")}, 404),
    ("$hw/events/device/thermostat-1/twin/update", {"event_id": "one-level", **values(a="1")}, 400),
    (TWIN_GET, "{broken", 400),
    ("$hw/events/device/demo/nope/twin/get", {"event_id": "get-unknown"}, 404),
    (STATE_UPDATE, {"event_id": "bad-state", "state": "sleepy"}, 400),
    (STATE_UPDATE, "[]", 400),
    (MEMBERSHIP_GET, "nope", 400),
]


async def test_bad_input_on_every_topic_is_answered_and_changes_nothing(world: World) -> None:
    """Each bad request gets a result with its code and reason on the matching result topic;
    the stored twin and the Device status do not change; broker and edgecore keep serving."""
    await world.apply_examples()
    await world.mapper.wait_for("/twin/update/delta", lambda p: p["delta"] == {"setpoint": "20"})
    await world.request(TWIN_UPDATE, values(setpoint="19"), "good-1")
    await world.status_until(lambda s: reported(s) == {"setpoint": "19"})
    rows = await world.twin_rows()
    for topic, body, code in BAD_INPUT:
        await publish(world.mqtt_port, topic, body)
        result = await world.mapper.wait_for(
            topic + "/result", lambda p, c=code: p.get("code") == c and bool(p.get("reason"))
        )
        if isinstance(body, dict):
            assert result["event_id"] == body["event_id"]
        world.mapper.proc.lines.clear()  # the next case must find its own result
    assert await world.twin_rows() == rows
    assert reported((await world.device())["status"]) == {"setpoint": "19"}
    members = await world.request(MEMBERSHIP_GET, {}, "members")
    assert [d["id"] for d in members["devices"]] == [DEVICE]
    await world.request(TWIN_UPDATE, values(setpoint="20"), "good-2")
    await world.status_until(lambda s: reported(s) == {"setpoint": "20"})


async def test_upload_topics_reach_the_cloud(world: World) -> None:
    """Application data on $hw/events/upload/# goes up to the cloud's `user` group untouched."""
    assert world.cloud is not None
    await publish(world.mqtt_port, "$hw/events/upload/meter-7", "kwh=12")
    await world.cloud.recorder.wait_for(1, 10)
    msg = world.cloud.recorder.messages[0]
    assert msg.opaque.data == b"kwh=12"
    assert msg.route.resource == "node/edge-1/null/upload/$hw/events/upload/meter-7"
