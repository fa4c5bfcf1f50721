"""The twin module's tables in the node's SQLite file (KubeEdge's device, device_attr and
device_twin tables, plus the device models the cloud sent).

Functions take an apsw connection and run on the database's one thread, inside the caller's
transaction: the twin module applies a whole batch of requests in one transaction, each in its
own savepoint, so a refused request changes nothing and the others still commit.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import apsw

from edge.twin.model import Twin, Value, Version

SCHEMA = """
CREATE TABLE IF NOT EXISTS device (
    id TEXT PRIMARY KEY,                    -- {namespace}/{name}
    namespace TEXT NOT NULL,
    name TEXT NOT NULL,
    description TEXT NOT NULL DEFAULT '',
    model TEXT NOT NULL DEFAULT '',
    state TEXT NOT NULL DEFAULT 'unknown',
    last_online INTEGER NOT NULL DEFAULT 0, -- ms
    uid TEXT NOT NULL DEFAULT '',
    resource_version TEXT NOT NULL DEFAULT '',
    object BLOB NOT NULL                    -- the Device as the cloud sent it (JSON)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS device_attr (
    deviceid TEXT NOT NULL,
    name TEXT NOT NULL,
    value TEXT NOT NULL,
    optional INTEGER NOT NULL DEFAULT 0,
    attr_type TEXT NOT NULL DEFAULT '',
    metadata TEXT NOT NULL DEFAULT '{}',
    PRIMARY KEY (deviceid, name)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS device_twin (
    deviceid TEXT NOT NULL,
    name TEXT NOT NULL,
    expected TEXT,                          -- NULL: no desired value
    actual TEXT,                            -- NULL: nothing reported yet
    expected_meta TEXT NOT NULL DEFAULT '{}',
    actual_meta TEXT NOT NULL DEFAULT '{}',
    expected_version TEXT NOT NULL DEFAULT '{}',
    actual_version TEXT NOT NULL DEFAULT '{}',
    optional INTEGER NOT NULL DEFAULT 0,
    attr_type TEXT NOT NULL DEFAULT '',
    metadata TEXT NOT NULL DEFAULT '{}',
    PRIMARY KEY (deviceid, name)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS device_model (
    id TEXT PRIMARY KEY,                    -- {namespace}/{name}
    namespace TEXT NOT NULL,
    name TEXT NOT NULL,
    resource_version TEXT NOT NULL,
    object BLOB NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS device_by_model ON device (namespace, model);
"""

_DEVICE_COLUMNS = (
    "id, namespace, name, description, model, state, last_online, uid, resource_version"
)


@dataclass(frozen=True, slots=True)
class DeviceRow:
    id: str
    namespace: str
    name: str
    description: str = ""
    model: str = ""
    state: str = "unknown"
    last_online: int = 0
    uid: str = ""
    resource_version: str = ""


@dataclass(frozen=True, slots=True)
class Attr:
    """A device attribute: static facts about one property (type, unit, access, visitors)."""

    name: str
    value: str
    type: str = ""
    optional: bool = False

    def to_json(self) -> dict[str, Any]:
        return {"value": self.value, "optional": self.optional, "metadata": {"type": self.type}}


def create(conn: apsw.Connection) -> None:
    conn.execute(SCHEMA)


# -- devices ---------------------------------------------------------------------------------


def get_device(conn: apsw.Connection, device_id: str) -> DeviceRow | None:
    rows = list(conn.execute(f"SELECT {_DEVICE_COLUMNS} FROM device WHERE id = ?", (device_id,)))
    return DeviceRow(*rows[0]) if rows else None


def get_device_object(conn: apsw.Connection, device_id: str) -> dict[str, Any]:
    """The Device object the cloud sent ({} when unknown)."""
    rows = list(conn.execute("SELECT object FROM device WHERE id = ?", (device_id,)))
    obj = json.loads(rows[0][0]) if rows else {}
    return obj if isinstance(obj, dict) else {}


def list_devices(conn: apsw.Connection) -> list[DeviceRow]:
    return [
        DeviceRow(*r) for r in conn.execute(f"SELECT {_DEVICE_COLUMNS} FROM device ORDER BY id")
    ]


def devices_of_model(conn: apsw.Connection, namespace: str, model: str) -> list[str]:
    sql = "SELECT id FROM device WHERE namespace = ? AND model = ?"
    return [r[0] for r in conn.execute(sql, (namespace, model))]


def put_device(conn: apsw.Connection, row: DeviceRow, object_json: bytes) -> None:
    conn.execute(
        f"INSERT INTO device ({_DEVICE_COLUMNS}, object) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
        "ON CONFLICT (id) DO UPDATE SET description = excluded.description, "
        "model = excluded.model, state = excluded.state, last_online = excluded.last_online, "
        "uid = excluded.uid, resource_version = excluded.resource_version, "
        "object = excluded.object",
        (
            row.id,
            row.namespace,
            row.name,
            row.description,
            row.model,
            row.state,
            row.last_online,
            row.uid,
            row.resource_version,
            object_json,
        ),
    )


def set_state(conn: apsw.Connection, device_id: str, state: str, last_online: int) -> None:
    conn.execute(
        "UPDATE device SET state = ?, last_online = ? WHERE id = ?", (state, last_online, device_id)
    )


def delete_device(conn: apsw.Connection, device_id: str) -> None:
    for table, column in (
        ("device_twin", "deviceid"),
        ("device_attr", "deviceid"),
        ("device", "id"),
    ):
        conn.execute(f"DELETE FROM {table} WHERE {column} = ?", (device_id,))


# -- attributes ------------------------------------------------------------------------------


def get_attrs(conn: apsw.Connection, device_id: str) -> list[Attr]:
    sql = (
        "SELECT name, value, attr_type, optional FROM device_attr WHERE deviceid = ? ORDER BY name"
    )
    return [Attr(n, v, t, bool(o)) for n, v, t, o in conn.execute(sql, (device_id,))]


def replace_attrs(conn: apsw.Connection, device_id: str, attrs: Iterable[Attr]) -> None:
    conn.execute("DELETE FROM device_attr WHERE deviceid = ?", (device_id,))
    conn.executemany(
        "INSERT INTO device_attr (deviceid, name, value, optional, attr_type, metadata) "
        "VALUES (?, ?, ?, ?, ?, ?)",
        (
            (device_id, a.name, a.value, int(a.optional), a.type, json.dumps({"type": a.type}))
            for a in attrs
        ),
    )


# -- twins -----------------------------------------------------------------------------------


def _value(value: str | None, meta: str) -> Value | None:
    if value is None:
        return None
    return Value(value, int(json.loads(meta).get("timestamp", 0)))


def _meta(value: Value | None) -> str:
    return json.dumps({"timestamp": value.timestamp}) if value is not None else "{}"


def get_twins(conn: apsw.Connection, device_id: str) -> dict[str, Twin]:
    sql = (
        "SELECT name, expected, actual, expected_meta, actual_meta, expected_version, "
        "actual_version, optional, attr_type FROM device_twin WHERE deviceid = ?"
    )
    twins = {}
    for name, exp, act, exp_meta, act_meta, exp_ver, act_ver, optional, type_ in conn.execute(
        sql, (device_id,)
    ):
        twins[name] = Twin(
            name=name,
            expected=_value(exp, exp_meta),
            actual=_value(act, act_meta),
            expected_version=Version.from_json(json.loads(exp_ver)),
            actual_version=Version.from_json(json.loads(act_ver)),
            optional=bool(optional),
            type=type_,
        )
    return twins


def put_twins(conn: apsw.Connection, device_id: str, twins: Iterable[Twin]) -> None:
    conn.executemany(
        "INSERT INTO device_twin (deviceid, name, expected, actual, expected_meta, actual_meta, "
        "expected_version, actual_version, optional, attr_type, metadata) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (deviceid, name) DO UPDATE SET "
        "expected = excluded.expected, actual = excluded.actual, "
        "expected_meta = excluded.expected_meta, actual_meta = excluded.actual_meta, "
        "expected_version = excluded.expected_version, "
        "actual_version = excluded.actual_version, optional = excluded.optional, "
        "attr_type = excluded.attr_type, metadata = excluded.metadata",
        (
            (
                device_id,
                t.name,
                t.expected.value if t.expected else None,
                t.actual.value if t.actual else None,
                _meta(t.expected),
                _meta(t.actual),
                json.dumps(t.expected_version.to_json()),
                json.dumps(t.actual_version.to_json()),
                int(t.optional),
                t.type,
                json.dumps({"type": t.type}),
            )
            for t in twins
        ),
    )


# -- device models ---------------------------------------------------------------------------


def get_model(conn: apsw.Connection, model_id: str) -> tuple[str, dict[str, Any]] | None:
    """(resourceVersion, DeviceModel object) or None."""
    rows = list(
        conn.execute("SELECT resource_version, object FROM device_model WHERE id = ?", (model_id,))
    )
    if not rows:
        return None
    rv, blob = rows[0]
    obj = json.loads(blob)
    return rv, obj if isinstance(obj, dict) else {}


def put_model(conn: apsw.Connection, model_id: str, rv: str, object_json: bytes) -> None:
    namespace, _, name = model_id.partition("/")
    conn.execute(
        "INSERT INTO device_model (id, namespace, name, resource_version, object) "
        "VALUES (?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET "
        "resource_version = excluded.resource_version, object = excluded.object",
        (model_id, namespace, name, rv, object_json),
    )


def delete_model(conn: apsw.Connection, model_id: str) -> None:
    conn.execute("DELETE FROM device_model WHERE id = ?", (model_id,))
