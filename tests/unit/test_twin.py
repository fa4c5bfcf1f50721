"""Device twin rules: versions, deltas, limits, and the twin handlers on a real SQLite file."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from common.bus import Bus
from common.envelope import Message, new_message
from common.names import Group, Module, Operation
from common.sqlite import Database
from edge.eventbus import topics
from edge.settings import EdgeSettings
from edge.twin import handlers, model, store
from edge.twin.handlers import Effects
from edge.twin.model import Twin, TwinError, Value, Version
from edge.twin.module import DeviceTwin

NODE = "edge-1"
NOW = 1_700_000_000_000
DEVICE = "demo/thermostat-1"
TWIN_UPDATE = f"$hw/events/device/{DEVICE}/twin/update"


def request(body: dict[str, Any]) -> model.Request:
    return model.parse_request(json.dumps(body).encode())


def write(name: str, value: str, **extra: Any) -> model.ActualWrite:
    prop = {"actual": {"value": value}, **extra}
    return model.parse_twin_update(request({"twin": {name: prop}}), NOW)[0]


# -- versions --------------------------------------------------------------------------------


def test_a_write_without_version_is_accepted_and_counts_up() -> None:
    """Mappers send no version: each write is applied and the edge's count goes up."""
    twin = model.apply_actual(None, write("t", "1"))
    twin = model.apply_actual(twin, write("t", "2"))
    assert twin.actual == Value("2", NOW)
    assert twin.actual_version == Version(0, 2)


def test_a_write_naming_an_older_version_is_rejected() -> None:
    """A writer that names a version older than the stored one gets 409; nothing is applied."""
    twin = model.apply_actual(None, write("t", "1"))
    twin = model.apply_actual(twin, write("t", "2"))
    stale = write("t", "3", actual_version={"cloud": 0, "edge": 1})
    with pytest.raises(TwinError) as err:
        model.apply_actual(twin, stale)
    assert err.value.code == 409
    assert "older" in err.value.reason


def test_a_write_naming_the_current_version_is_accepted() -> None:
    """Naming the version one read (optimistic concurrency) succeeds and moves past it."""
    twin = model.apply_actual(None, write("t", "1"))
    fresh = write("t", "2", actual_version=twin.actual_version.to_json())
    assert model.apply_actual(twin, fresh).actual_version == Version(0, 2)


def test_an_edge_write_of_expected_is_a_conflict() -> None:
    """Desired values belong to the cloud: an edge write naming `expected` gets 409."""
    body = {"twin": {"t": {"expected": {"value": "1"}, "actual": {"value": "1"}}}}
    with pytest.raises(TwinError) as err:
        model.parse_twin_update(request(body), NOW)
    assert err.value.code == 409


def test_the_cloud_setting_desired_counts_the_cloud_version() -> None:
    """A desired value from the cloud counts expected_version.cloud up, also when cleared."""
    twin = Twin("t").with_expected("5", NOW).with_expected(None, NOW)
    assert twin.expected is None
    assert twin.expected_version == Version(2, 0)


# -- delta -----------------------------------------------------------------------------------


def test_delta_lists_only_properties_whose_expected_differs() -> None:
    """Expected ≠ actual (or nothing reported) is in the delta; equal or undesired is not."""
    twins = {
        "differs": Twin("differs", expected=Value("1", 0), actual=Value("2", 0)),
        "unreported": Twin("unreported", expected=Value("3", 0)),
        "equal": Twin("equal", expected=Value("4", 0), actual=Value("4", 0)),
        "undesired": Twin("undesired", actual=Value("5", 0)),
    }
    assert model.delta_of(twins) == {"differs": "1", "unreported": "3"}


# -- limits and shapes -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "code"),
    [
        pytest.param({"twin": {"k" * 128: {"actual": {"value": "1"}}}}, 0, id="key-128-ok"),
        pytest.param({"twin": {"k" * 129: {"actual": {"value": "1"}}}}, 400, id="key-129"),
        pytest.param({"twin": {"é" * 65: {"actual": {"value": "1"}}}}, 400, id="key-130-bytes"),
        pytest.param({"twin": {"k": {"actual": {"value": "v" * 512}}}}, 0, id="value-512-ok"),
        pytest.param({"twin": {"k": {"actual": {"value": "v" * 513}}}}, 400, id="value-513"),
        pytest.param({"twin": {}}, 400, id="no-properties"),
        pytest.param({}, 400, id="no-twin"),
        pytest.param({"twin": {"k": "1"}}, 400, id="property-not-object"),
        pytest.param({"twin": {"k": {"actual": {"value": 1}}}}, 400, id="value-not-string"),
        pytest.param({"twin": {"k": {"actual": {}}}}, 400, id="no-value"),
        pytest.param(
            {"twin": {"k": {"actual": {"value": "1"}, "actual_version": 3}}}, 400, id="bad-version"
        ),
        pytest.param(
            {"twin": {"k": {"actual": {"value": "1"}, "metadata": {"type": 1}}}}, 400, id="bad-type"
        ),
        pytest.param(
            {"twin": {"k": {"actual": {"value": "1"}, "optional": "yes"}}}, 400, id="bad-optional"
        ),
    ],
)
def test_twin_update_limits_and_shapes(body: dict[str, Any], code: int) -> None:
    """Twin keys up to 128 bytes and values up to 512 bytes pass; malformed writes get 400."""
    if code == 0:
        assert model.parse_twin_update(request(body), NOW)
        return
    with pytest.raises(TwinError) as err:
        model.parse_twin_update(request(body), NOW)
    assert err.value.code == code and err.value.reason


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param(b"not json", id="not-json"),
        pytest.param(b"[1, 2]", id="not-object"),
        pytest.param(b'{"event_id": 7}', id="event-id-not-string"),
        pytest.param(b'{"timestamp": "now"}', id="timestamp-not-int"),
        pytest.param(b"\xff\xfe", id="not-utf8"),
        pytest.param(b'{"x": "' + b"a" * model.MAX_PAYLOAD_BYTES + b'"}', id="too-large"),
    ],
)
def test_request_envelope_errors_are_bad_requests(payload: bytes) -> None:
    """Every request must be a JSON object with a string event_id and an integer timestamp."""
    with pytest.raises(TwinError) as err:
        model.parse_request(payload)
    assert err.value.code == 400


def test_device_ids_are_namespace_and_name() -> None:
    """A device id is exactly two levels: namespace/name."""
    assert model.split_device_id("demo/t1") == ("demo", "t1")
    for bad in ("t1", "demo/", "/t1", "a/b/c"):
        with pytest.raises(TwinError):
            model.split_device_id(bad)


def test_request_topics_parse_and_name_their_result() -> None:
    """Request topics are recognised and answered on `<topic>/result`; results are not requests."""
    req = topics.parse_request(TWIN_UPDATE)
    assert req is not None and req.device_id == DEVICE
    assert req.result_topic == TWIN_UPDATE + "/result"
    member = topics.parse_request("$hw/events/node/edge-1/membership/get")
    assert member is not None and member.node == "edge-1"
    assert topics.parse_request(TWIN_UPDATE + "/result") is None
    assert topics.parse_request(f"$hw/events/device/{DEVICE}/twin/update/delta") is None


# -- handlers on SQLite ----------------------------------------------------------------------


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    database = Database(tmp_path / "edge.db", "SELECT 1")
    database.run_blocking(store.create)
    yield database
    database.close()


def device_obj(desired: dict[str, str], name: str = "thermostat-1") -> dict[str, Any]:
    props: list[dict[str, Any]] = [
        {"name": p, "desired": {"value": v}} if v else {"name": p} for p, v in desired.items()
    ]
    return {
        "apiVersion": "devices.kubeedge.io/v1beta1",
        "kind": "Device",
        "metadata": {"name": name, "namespace": "demo", "uid": f"uid-{name}"},
        "spec": {"deviceModelRef": {"name": "thermostat"}, "nodeName": NODE, "properties": props},
    }


def model_obj() -> dict[str, Any]:
    props = [{"name": "setpoint", "type": "INT"}, {"name": "temperature", "type": "FLOAT"}]
    return {"metadata": {"name": "thermostat", "namespace": "demo"}, "spec": {"properties": props}}


def cloud_msg(
    type_: str, name: str, rv: int, obj: dict[str, Any], op: str = Operation.UPDATE
) -> Message:
    msg = new_message(
        source=Module.DEVICECONTROLLER,
        group=Group.TWIN,
        operation=op,
        resource=f"demo/{type_}/{name}",
        resource_version=str(rv),
    )
    msg.object.name, msg.object.namespace, msg.object.resource_version = name, "demo", str(rv)
    msg.object.object_json = json.dumps(obj).encode()
    return msg


def membership(rv: int, *device_ids: str) -> Message:
    msg = new_message(
        source=Module.DEVICECONTROLLER,
        group=Group.TWIN,
        operation=Operation.UPDATE,
        resource=f"null/membership/{NODE}",
        resource_version=str(rv),
    )
    for device_id in device_ids:
        msg.membership.added_devices.add().id = device_id
    return msg


def mqtt(topic: str, body: Any) -> Message:
    payload = body if isinstance(body, bytes) else json.dumps(body).encode()
    return topics.mqtt_message(Module.EVENTBUS, topic, payload)


async def run(db: Database, *msgs: Message) -> Effects:
    return await db.transaction(lambda c: handlers.process(c, NODE, list(msgs), NOW))


def published(fx: Effects, suffix: str) -> list[dict[str, Any]]:
    return [p for t, p in fx.publish if t.endswith(suffix)]


async def snapshot(db: Database) -> list[Any]:
    """Every row of the twin tables, to prove a refused request changed nothing."""

    def read(conn: Any) -> list[Any]:
        tables = ("device", "device_attr", "device_twin", "device_model")
        return [list(conn.execute(f"SELECT * FROM {t} ORDER BY 1, 2")) for t in tables]

    return await db.run(read)


async def test_a_new_device_is_announced_with_its_delta_after_the_ack(db: Database) -> None:
    """A Device from the cloud is stored and acked; mappers get membership/updated and a delta."""
    msg = cloud_msg("device", "thermostat-1", 10, device_obj({"setpoint": "20", "temperature": ""}))
    fx = await run(db, msg)
    assert [r.header.parent_id for r in fx.replies] == [msg.header.id]
    assert fx.replies[0].WhichOneof("body") == "ack"
    added = published(fx, "/membership/updated")[0]["added_devices"]
    assert [d["id"] for d in added] == [DEVICE]
    assert published(fx, "/twin/update/delta")[0]["delta"] == {"setpoint": "20"}
    report = fx.twin_reports[DEVICE]
    assert report.twin["setpoint"].expected.value == "20"


async def test_resends_and_older_versions_change_nothing(db: Database) -> None:
    """The same or an older resourceVersion is acked again but neither stored nor announced."""
    await run(db, cloud_msg("device", "thermostat-1", 10, device_obj({"setpoint": "20"})))
    before = await snapshot(db)
    for rv, value in ((10, "20"), (9, "99")):
        fx = await run(db, cloud_msg("device", "thermostat-1", rv, device_obj({"setpoint": value})))
        assert fx.replies[0].WhichOneof("body") == "ack"
        assert fx.publish == [] and fx.twin_reports == {}
    assert await snapshot(db) == before


async def test_a_desired_change_publishes_a_new_delta(db: Database) -> None:
    """Changing the desired value bumps the cloud version and publishes the new delta."""
    await run(db, cloud_msg("device", "thermostat-1", 10, device_obj({"setpoint": "20"})))
    fx = await run(db, cloud_msg("device", "thermostat-1", 11, device_obj({"setpoint": "22"})))
    delta = published(fx, "/twin/update/delta")[0]
    assert delta["delta"] == {"setpoint": "22"}
    assert delta["twin"]["setpoint"]["expected_version"] == {"cloud": 2, "edge": 0}
    doc = published(fx, "/twin/update/document")[0]["twin"]["setpoint"]
    assert doc["last"]["expected"]["value"] == "20" and doc["current"]["expected"]["value"] == "22"
    assert published(fx, "/membership/updated") == []


async def test_reported_values_answer_with_result_document_and_snapshot(db: Database) -> None:
    """A mapper's twin/update is stored, answered, documented, and reported as a full snapshot."""
    await run(
        db,
        cloud_msg("device", "thermostat-1", 10, device_obj({"setpoint": "20", "temperature": ""})),
    )
    body = {"event_id": "e1", "twin": {"temperature": {"actual": {"value": "21"}}}}
    fx = await run(db, mqtt(TWIN_UPDATE, body))
    result = published(fx, "/twin/update/result")[0]
    assert result["event_id"] == "e1" and result["twin"]["temperature"]["actual"]["value"] == "21"
    doc = published(fx, "/twin/update/document")[0]["twin"]["temperature"]
    assert "actual" not in doc["last"] and doc["current"]["actual"]["value"] == "21"
    assert published(fx, "/twin/update/delta")[0]["delta"] == {"setpoint": "20"}
    report = fx.twin_reports[DEVICE]
    assert set(report.twin) == {"setpoint", "temperature"}  # a snapshot, not just the change
    assert report.twin["temperature"].actual.value == "21"
    matched = {"event_id": "e2", "twin": {"setpoint": {"actual": {"value": "20"}}}}
    fx = await run(db, mqtt(TWIN_UPDATE, matched))
    assert published(fx, "/twin/update/delta") == []  # expected == actual everywhere now


async def test_twin_get_returns_the_document(db: Database) -> None:
    """twin/get answers with every property, expected and actual, with versions."""
    await run(db, cloud_msg("device", "thermostat-1", 10, device_obj({"setpoint": "20"})))
    await run(db, mqtt(TWIN_UPDATE, {"twin": {"setpoint": {"actual": {"value": "19"}}}}))
    fx = await run(db, mqtt(f"$hw/events/device/{DEVICE}/twin/get", {"event_id": "g"}))
    twin = published(fx, "/twin/get/result")[0]["twin"]["setpoint"]
    assert twin["expected"]["value"] == "20" and twin["actual"]["value"] == "19"
    assert twin["actual_version"] == {"cloud": 0, "edge": 1}


async def test_state_update_is_stored_and_reported(db: Database) -> None:
    """state/update stores the state (last online when online) and reports it upstream."""
    await run(db, cloud_msg("device", "thermostat-1", 10, device_obj({"setpoint": "20"})))
    fx = await run(db, mqtt(f"$hw/events/device/{DEVICE}/state/update", {"state": "online"}))
    assert published(fx, "/state/update/result")[0]["device"]["state"] == "online"
    assert fx.state_reports[DEVICE].state == "online"
    assert fx.state_reports[DEVICE].last_online_ms == NOW


BAD_REQUESTS = [
    pytest.param(TWIN_UPDATE, b"{not json", 400, id="twin-update-not-json"),
    pytest.param(TWIN_UPDATE, {"event_id": "x"}, 400, id="twin-update-no-twin"),
    pytest.param(
        TWIN_UPDATE, {"twin": {"k" * 129: {"actual": {"value": "1"}}}}, 400, id="long-key"
    ),
    pytest.param(
        TWIN_UPDATE, {"twin": {"setpoint": {"actual": {"value": "v" * 513}}}}, 400, id="long-value"
    ),
    pytest.param(
        TWIN_UPDATE,
        {"twin": {"setpoint": {"expected": {"value": "1"}}}},
        409,
        id="edge-writes-expected",
    ),
    pytest.param(
        TWIN_UPDATE,
        {
            "twin": {
                "setpoint": {"actual": {"value": "1"}, "actual_version": {"cloud": 0, "edge": 0}}
            }
        },
        409,
        id="stale-version",
    ),
    pytest.param(
        TWIN_UPDATE,
        {
            "twin": {
                "temperature": {"actual": {"value": "7"}},
                "setpoint": {"expected": {"value": "1"}},
            }
        },
        409,
        id="one-bad-property-refuses-all",
    ),
    pytest.param(
        "$hw/events/device/demo/nope/twin/update",
        {"twin": {"a": {"actual": {"value": "1"}}}},
        404,
        id="unknown-device",
    ),
    pytest.param(
        "$hw/events/device/nope/twin/update",
        {"twin": {"a": {"actual": {"value": "1"}}}},
        400,
        id="one-level-id",
    ),
    pytest.param(f"$hw/events/device/{DEVICE}/twin/get", b"[]", 400, id="twin-get-not-object"),
    pytest.param("$hw/events/device/demo/nope/twin/get", {}, 404, id="twin-get-unknown"),
    pytest.param(
        f"$hw/events/device/{DEVICE}/state/update", {"state": "sleepy"}, 400, id="bad-state"
    ),
    pytest.param(f"$hw/events/device/{DEVICE}/state/update", {}, 400, id="no-state"),
    pytest.param(f"$hw/events/node/{NODE}/membership/get", b"nope", 400, id="membership-not-json"),
    pytest.param("$hw/events/node/other/membership/get", {}, 404, id="membership-other-node"),
]


@pytest.mark.parametrize(("topic", "body", "code"), BAD_REQUESTS)
async def test_bad_requests_get_a_coded_result_and_change_nothing(
    db: Database, topic: str, body: Any, code: int
) -> None:
    """Each bad request is answered on its result topic with code and reason; no row changes."""
    await run(
        db,
        cloud_msg("device", "thermostat-1", 10, device_obj({"setpoint": "20", "temperature": ""})),
    )
    await run(db, mqtt(TWIN_UPDATE, {"twin": {"setpoint": {"actual": {"value": "19"}}}}))
    before = await snapshot(db)
    fx = await run(db, mqtt(topic, body))
    assert fx.publish == [(topic + "/result", fx.publish[0][1])]
    result = fx.publish[0][1]
    assert result["code"] == code and result["reason"]
    assert fx.twin_reports == {} and fx.state_reports == {}
    assert await snapshot(db) == before


async def test_membership_snapshot_removes_only_what_it_is_not_older_than(db: Database) -> None:
    """A snapshot removes unlisted devices it postdates; a device newer than it survives."""
    await run(db, cloud_msg("device", "old", 10, device_obj({"setpoint": "1"}, "old")))
    await run(db, cloud_msg("device", "kept", 11, device_obj({"setpoint": "1"}, "kept")))
    await run(db, cloud_msg("device", "newer", 30, device_obj({"setpoint": "1"}, "newer")))
    fx = await run(db, membership(20, "demo/kept"))
    removed = published(fx, "/membership/updated")[0]["removed_devices"]
    assert [d["id"] for d in removed] == ["demo/old"]
    rows = await db.run(lambda c: [r.id for r in store.list_devices(c)])
    assert rows == ["demo/kept", "demo/newer"]
    twins = await db.run(lambda c: store.get_twins(c, "demo/old"))
    assert twins == {}


async def test_a_deleted_device_leaves_no_rows(db: Database) -> None:
    """Deleting a device removes its device, attribute and twin rows and announces it."""
    await run(db, cloud_msg("devicemodel", "thermostat", 5, model_obj()))
    await run(db, cloud_msg("device", "thermostat-1", 10, device_obj({"setpoint": "20"})))
    fx = await run(db, cloud_msg("device", "thermostat-1", 12, device_obj({}), Operation.DELETE))
    assert published(fx, "/membership/updated")[0]["removed_devices"][0]["id"] == DEVICE

    def count(conn: Any) -> list[int]:
        tables = ("device", "device_attr", "device_twin")
        return [next(iter(conn.execute(f"SELECT count(*) FROM {t}")))[0] for t in tables]

    assert await db.run(count) == [0, 0, 0]


async def test_a_late_model_types_the_twins(db: Database) -> None:
    """A DeviceModel arriving after its Device gives the twins their types and attributes."""
    await run(db, cloud_msg("device", "thermostat-1", 10, device_obj({"setpoint": "20"})))
    await run(db, cloud_msg("devicemodel", "thermostat", 11, model_obj()))
    twins = await db.run(lambda c: store.get_twins(c, DEVICE))
    attrs = await db.run(lambda c: store.get_attrs(c, DEVICE))
    assert twins["setpoint"].type == "int"
    assert [(a.name, a.type) for a in attrs] == [("setpoint", "int")]


async def test_membership_get_lists_the_devices(db: Database) -> None:
    """membership/get answers with every device on the node, with attributes and twins."""
    await run(db, cloud_msg("devicemodel", "thermostat", 5, model_obj()))
    await run(db, cloud_msg("device", "thermostat-1", 10, device_obj({"setpoint": "20"})))
    fx = await run(db, mqtt(f"$hw/events/node/{NODE}/membership/get", {"event_id": "m"}))
    result = published(fx, "/membership/get/result")[0]
    assert result["event_id"] == "m"
    device = result["devices"][0]
    assert device["id"] == DEVICE and device["twin"]["setpoint"]["expected"]["value"] == "20"
    assert device["attributes"]["setpoint"]["metadata"]["type"] == "int"


async def test_a_bad_cloud_message_gets_an_error_reply(db: Database) -> None:
    """A device object that is not JSON is refused with an error reply, not an ack."""
    msg = cloud_msg("device", "thermostat-1", 10, {})
    msg.object.object_json = b"{broken"
    fx = await run(db, msg)
    assert fx.replies[0].WhichOneof("body") == "error" and fx.replies[0].error.code == 400
    assert await db.run(store.list_devices) == []


async def test_a_report_committed_but_never_handed_on_reaches_edgehub_at_the_next_start(
    db: Database, tmp_path: Path
) -> None:
    """Regression (issue 10): a reported value committed by the twin, then lost on its way to
    edgehub's outbox (a SIGKILL in between, or a shutdown that stopped edgehub first), never
    reached the cloud. At its next start the twin reports every device again."""
    await run(db, cloud_msg("device", "thermostat-1", 10, device_obj({"setpoint": "20"})))
    body = {"event_id": "e1", "twin": {"temperature": {"actual": {"value": "21"}}}}
    await run(db, mqtt(TWIN_UPDATE, body))  # committed; the process "dies" before handing on
    bus = Bus()
    bus.register(Module.EDGEHUB, Group.HUB)
    twin = DeviceTwin(bus, EdgeSettings(data_dir=tmp_path, node_name=NODE), db)
    bus.register(twin.name, twin.group)
    task = asyncio.create_task(twin.run())
    try:
        sent = await asyncio.wait_for(bus.receive_batch(Module.EDGEHUB, 10), 5)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    (report,) = [m for m in sent if m.WhichOneof("body") == "twin_update"]
    assert report.route.resource == "demo/twin/thermostat-1"
    assert report.twin_update.twin["temperature"].actual.value == "21"
