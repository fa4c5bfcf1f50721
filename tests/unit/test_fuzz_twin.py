"""Fuzzing the MQTT twin requests: payload parsing and the handlers on a real SQLite file
(profile "deterministic", tests/conftest.py)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from common.sqlite import Database
from edge.eventbus import topics
from edge.twin import handlers, model, store
from edge.twin.model import TwinError
from tests.unit.test_twin import DEVICE, NODE, NOW, cloud_msg, device_obj, mqtt, published, run
from tests.unit.test_twin import snapshot as read_all

REFUSED = (400, 404, 409)
DEEP = b"[" * 60_000  # under the 64 KiB payload limit, far past the JSON parser's recursion
SURROGATE_KEY = b'{"twin": {"\\ud800": {"actual": {"value": "1"}}}}'

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False)
    | st.text(max_size=20)
    | st.sampled_from(["", "x" * 129, "é" * 257, "\ud800", "ok", "online"]),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=20,
)
keys = st.one_of(st.text(max_size=20), st.sampled_from(["", "k" * 129, "\ud800", "temperature"]))
values = st.one_of(json_values, st.text(min_size=500, max_size=600))
properties = st.fixed_dictionaries(
    {},
    optional={
        "actual": st.one_of(
            json_values,
            st.fixed_dictionaries({"value": values}, optional={"metadata": json_values}),
        ),
        "expected": json_values,
        "actual_version": st.one_of(
            json_values, st.fixed_dictionaries({"cloud": st.integers(), "edge": st.integers()})
        ),
        "metadata": st.one_of(json_values, st.fixed_dictionaries({"type": json_values})),
        "optional": json_values,
    },
)
bodies = st.fixed_dictionaries(
    {},
    optional={
        "event_id": json_values,
        "timestamp": st.one_of(st.integers(), json_values),
        "twin": st.one_of(json_values, st.dictionaries(keys, properties, max_size=3)),
        "state": st.one_of(st.sampled_from(model.DEVICE_STATES), json_values),
    },
)
payloads = st.one_of(
    bodies.map(lambda b: json.dumps(b).encode()),
    json_values.map(lambda v: json.dumps(v).encode()),
    st.binary(max_size=200),
    st.just(b"x" * (model.MAX_PAYLOAD_BYTES + 1)),
)


def assert_refusal(err: TwinError) -> None:
    assert err.code in REFUSED and err.reason


@settings(max_examples=400)
@given(payloads)
@example(DEEP)  # found a crash: RecursionError escaped parse_request and event_id_of
@example(b"\xff\xfe{}")  # not UTF-8
@example(SURROGATE_KEY)
def test_request_parsing_is_total(payload: bytes) -> None:
    """Any payload parses to a valid request and writes, or is refused with 400/409 and a reason."""
    assert isinstance(model.event_id_of(payload), str)
    try:
        req = model.parse_request(payload)
        writes = model.parse_twin_update(req, NOW)
    except TwinError as err:
        assert_refusal(err)
        return
    for w in writes:
        assert 0 < len(w.name.encode()) <= model.MAX_KEY_BYTES
        assert len(w.value.encode()) <= model.MAX_VALUE_BYTES


@settings(max_examples=300)
@given(bodies)
@example({"twin": {"\ud800": {"actual": {"value": "1"}}}})  # found: UnicodeEncodeError, not 400
@example({"twin": {"t": {"actual": {"value": "\udfff"}}}})
def test_state_and_device_id_parsing_are_total(body: dict[str, Any]) -> None:
    """parse_state, parse_twin_update and split_device_id accept, or refuse with a reason."""
    for parse in (model.parse_state, lambda r: model.parse_twin_update(r, NOW)):
        try:
            parse(model.parse_request(json.dumps(body).encode()))
        except TwinError as err:
            assert_refusal(err)
    for device_id in (body.get("event_id"), DEVICE, "a/b/c", "/x", "x/"):
        try:
            model.split_device_id(device_id if isinstance(device_id, str) else "")
        except TwinError as err:
            assert err.code == 400 and err.reason


# -- the handlers on a real SQLite file ------------------------------------------------------


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    """An edge twin database holding one device with two properties."""
    database = Database(tmp_path / "edge.db", "SELECT 1")
    database.run_blocking(store.create)
    database.run_blocking(
        lambda c: handlers.process(
            c,
            NODE,
            [
                cloud_msg(
                    "device", "thermostat-1", 10, device_obj({"setpoint": "20", "temperature": ""})
                )
            ],
            NOW,
        )
    )
    yield database
    database.close()


request_topics = st.one_of(
    st.sampled_from(
        [
            f"$hw/events/device/{DEVICE}/twin/update",
            f"$hw/events/device/{DEVICE}/twin/get",
            f"$hw/events/device/{DEVICE}/state/update",
            "$hw/events/device/demo/missing/twin/update",
            "$hw/events/device/no-namespace/twin/update",
            f"$hw/events/node/{NODE}/membership/get",
            "$hw/events/node/other-node/membership/get",
        ]
    ),
    st.text(max_size=30).map(lambda t: f"$hw/events/device/{t}/twin/update"),
)


@settings(max_examples=200, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(request_topics, payloads)
@example(f"$hw/events/device/{DEVICE}/twin/update", DEEP)  # found: the error result itself crashed
@example(f"$hw/events/device/{DEVICE}/twin/update", SURROGATE_KEY)  # found: 500, not 400
@example(
    f"$hw/events/device/{DEVICE}/twin/update",
    b'{"twin": {"t": {"actual": {"value": "1", "metadata": {"timestamp": 99999999999999999999}}}}}',
)
@example(
    f"$hw/events/device/{DEVICE}/twin/update",
    b'{"timestamp": -99999999999999999999, "twin": {"t": {"actual": {"value": "1"}}}}',
)
@example(
    f"$hw/events/device/{DEVICE}/twin/update",
    b'{"twin": {"t": {"actual": {"value": "1"}, "metadata": {"type": "\\udc80"}}}}',
)
@example(
    f"$hw/events/device/{DEVICE}/twin/update",
    b'{"twin": {"t": {"actual": {"value": "1"}, "actual_version": {"cloud": 0, "edge": 1e400}}}}',
)
@example(
    f"$hw/events/device/{DEVICE}/twin/update",
    b'{"twin": {"t": {"actual": {"value": "1"}, "actual_version": {"edge": %d}}}}' % 2**64,
)
async def test_a_refused_mqtt_request_changes_nothing_stored(
    db: Database, topic: str, payload: bytes
) -> None:
    """Every request gets one result; a refusal is 400/404/409 with a reason and stores nothing."""
    before = await read_all(db)
    fx = await run(db, mqtt(topic, payload))
    request = topics.parse_request(topic)
    if request is None:
        assert fx.publish == []
        return
    results = published(fx, "/result")
    assert len(results) == 1
    result = results[0]
    if "code" in result:
        assert result["code"] in REFUSED and result["reason"], result
        assert len(fx.publish) == 1 and not fx.twin_reports and not fx.state_reports
        assert await read_all(db) == before
    json.dumps(fx.publish)  # every effect can be published as JSON


@settings(max_examples=5, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.sampled_from([DEEP, b'{"a":' * 12_000 + b"1" + b"}" * 12_000, b"1" * 70_000]))
async def test_a_huge_or_deep_payload_is_refused_without_growing_the_store(
    db: Database, payload: bytes
) -> None:
    """A deeply nested or oversized payload gets a 400 result and leaves the database as it was."""
    before = await read_all(db)
    fx = await run(db, mqtt(f"$hw/events/device/{DEVICE}/twin/update", payload))
    [result] = published(fx, "/twin/update/result")
    assert result["code"] == 400 and result["reason"]
    assert await read_all(db) == before
