"""What the twin module does with each message, run on the database thread inside a transaction.

Two kinds of input:
- MQTT requests from mappers and apps (twin/update, twin/get, state/update, membership/get),
  handed over by eventbus with the topic as the resource;
- the cloud's messages (group twin): Device and DeviceModel objects, and membership snapshots.

Each message is handled in its own savepoint and yields Effects: MQTT publishes (results,
deltas, documents, membership/updated), reports for the cloud (a full snapshot of a device's
twin, or its state) and, for the cloud's messages, the ack or error reply. The module carries
the effects out only after the transaction commits, so nothing is acknowledged, announced or
reported that is not stored. A refused request rolls its savepoint back and yields only its
error result (code and reason), so nothing stored changes.

Membership snapshots: the cloud sends `null/membership/{node}` listing every device on the node
as of header.resource_version; a stored device missing from it whose resourceVersion is not
newer than the snapshot's is removed (a device added after the snapshot was made survives a
snapshot that arrives late).
"""

from __future__ import annotations

import json
import logging
import uuid
from dataclasses import dataclass, field, replace
from typing import Any

import apsw
from kubeedge.twin.v1 import twin_pb2

from common.envelope import Message, make_ack, make_error, parse_resource, rv_older
from common.errors import BadMessage
from common.names import Module, Operation, ResourceType
from edge.eventbus import topics
from edge.twin import model, store
from edge.twin.model import BAD_REQUEST, INTERNAL, Twin, TwinError
from edge.twin.store import Attr, DeviceRow

log = logging.getLogger(__name__)

SOURCE = Module.DEVICETWIN


@dataclass
class Effects:
    """What to do once the transaction has committed, in this order."""

    replies: list[Message] = field(default_factory=list)  # acks / errors for the cloud
    publish: list[tuple[str, dict[str, Any]]] = field(default_factory=list)  # (topic, payload)
    twin_reports: dict[str, twin_pb2.TwinUpdate] = field(default_factory=dict)
    state_reports: dict[str, twin_pb2.DeviceState] = field(default_factory=dict)

    def merge(self, other: Effects) -> None:
        self.replies += other.replies
        self.publish += other.publish
        self.twin_reports.update(other.twin_reports)
        self.state_reports.update(other.state_reports)


def new_event_id() -> str:
    return str(uuid.uuid4())


def process(conn: apsw.Connection, node: str, batch: list[Message], now: int) -> Effects:
    """Handle a batch (inside the caller's transaction); returns the effects of all of it."""
    effects = Effects()
    for msg in batch:
        if msg.route.operation == Operation.PUBLISH and msg.WhichOneof("body") == "opaque":
            effects.merge(handle_mqtt(conn, node, msg.route.resource, msg.opaque.data, now))
        else:
            effects.merge(handle_cloud(conn, node, msg, now))
    return effects


# -- MQTT requests ---------------------------------------------------------------------------


def handle_mqtt(conn: apsw.Connection, node: str, topic: str, payload: bytes, now: int) -> Effects:
    request = topics.parse_request(topic)
    if request is None:
        log.debug("twin: ignoring a message on %s", topic)
        return Effects()
    fx = Effects()
    try:
        with conn:  # a savepoint: a refused request changes nothing
            _serve(conn, node, request, payload, now, fx)
    except TwinError as err:
        fx = Effects(publish=[(request.result_topic, error_payload(payload, now, err))])
    except Exception:
        log.exception("twin: request on %s failed", topic)
        internal = TwinError(INTERNAL, "internal error")
        fx = Effects(publish=[(request.result_topic, error_payload(payload, now, internal))])
    return fx


def error_payload(payload: bytes, now: int, err: TwinError) -> dict[str, Any]:
    return {
        "event_id": model.event_id_of(payload),
        "timestamp": now,
        "code": err.code,
        "reason": err.reason,
    }


def _serve(
    conn: apsw.Connection,
    node: str,
    request: topics.Request,
    payload: bytes,
    now: int,
    fx: Effects,
) -> None:
    if request.action == topics.Action.MEMBERSHIP_GET:
        req = model.parse_request(payload)
        if request.node != node:
            raise TwinError(model.NOT_FOUND, f"this is node {node!r}, not {request.node!r}")
        devices = [_device_json(conn, row) for row in store.list_devices(conn)]
        fx.publish.append(
            (request.result_topic, {"event_id": req.event_id, "timestamp": now, "devices": devices})
        )
        return
    model.split_device_id(request.device_id)
    req = model.parse_request(payload)
    row = store.get_device(conn, request.device_id)
    if row is None:
        raise TwinError(model.NOT_FOUND, f"device {request.device_id} is not on node {node}")
    if request.action == topics.Action.TWIN_UPDATE:
        _twin_update(conn, row, request, req, now, fx)
    elif request.action == topics.Action.TWIN_GET:
        twins = store.get_twins(conn, row.id)
        fx.publish.append(
            (
                request.result_topic,
                {"event_id": req.event_id, "timestamp": now, "twin": model.twins_json(twins)},
            )
        )
    else:
        _state_update(conn, row, request, req, now, fx)


def _twin_update(
    conn: apsw.Connection,
    row: DeviceRow,
    request: topics.Request,
    req: model.Request,
    now: int,
    fx: Effects,
) -> None:
    writes = model.parse_twin_update(req, now)
    twins = store.get_twins(conn, row.id)
    updated = {w.name: model.apply_actual(twins.get(w.name), w) for w in writes}
    store.put_twins(conn, row.id, updated.values())
    event = {"event_id": req.event_id, "timestamp": now}
    fx.publish.append((request.result_topic, {**event, "twin": model.twins_json(updated)}))
    document = {
        name: {"last": twins[name].to_json() if name in twins else None, "current": t.to_json()}
        for name, t in sorted(updated.items())
    }
    fx.publish.append((topics.twin_document(row.id), {**event, "twin": document}))
    twins.update(updated)
    _delta(row.id, twins, now, fx, event_id=req.event_id)
    _report_twin(row.id, twins, now, fx)


def _state_update(
    conn: apsw.Connection,
    row: DeviceRow,
    request: topics.Request,
    req: model.Request,
    now: int,
    fx: Effects,
) -> None:
    state = model.parse_state(req)
    last_online = now if state in model.ONLINE_STATES else row.last_online
    store.set_state(conn, row.id, state, last_online)
    device = {
        "id": row.id,
        "name": row.name,
        "namespace": row.namespace,
        "state": state,
        "last_online": last_online,
    }
    fx.publish.append(
        (request.result_topic, {"event_id": req.event_id, "timestamp": now, "device": device})
    )
    fx.state_reports[row.id] = twin_pb2.DeviceState(
        device_id=row.id,
        event_id=new_event_id(),
        timestamp_ms=now,
        state=state,
        last_online_ms=last_online,
    )


def _delta(device_id: str, twins: dict[str, Twin], now: int, fx: Effects, event_id: str) -> None:
    """Publish the delta when some desired value is not what the device reports."""
    delta = model.delta_of(twins)
    if delta:
        payload = {
            "event_id": event_id or new_event_id(),
            "timestamp": now,
            "twin": model.twins_json(twins),
            "delta": delta,
        }
        fx.publish.append((topics.twin_delta(device_id), payload))


def _report_twin(device_id: str, twins: dict[str, Twin], now: int, fx: Effects) -> None:
    """A full snapshot for the cloud: the outbox keeps only the newest per device, so a
    snapshot (not a change) is what makes that collapse lose nothing."""
    report = twin_pb2.TwinUpdate(device_id=device_id, event_id=new_event_id(), timestamp_ms=now)
    for name, twin in twins.items():
        report.twin[name].CopyFrom(twin.to_proto())
    fx.twin_reports[device_id] = report


def snapshot_all(conn: apsw.Connection, now: int) -> Effects:
    """A report of every device that holds reported values: what a crash (or a shutdown that
    stopped edgehub first) may have kept from the cloud after the twin had committed it. The
    cloud applies snapshots idempotently, so repeating one that arrived changes nothing."""
    fx = Effects()
    for row in store.list_devices(conn):
        twins = store.get_twins(conn, row.id)
        if any(t.actual is not None for t in twins.values()):
            _report_twin(row.id, twins, now, fx)
    return fx


def _device_json(conn: apsw.Connection, row: DeviceRow) -> dict[str, Any]:
    return {
        "id": row.id,
        "name": row.name,
        "namespace": row.namespace,
        "description": row.description,
        "model": row.model,
        "state": row.state,
        "last_online": row.last_online,
        "attributes": {a.name: a.to_json() for a in store.get_attrs(conn, row.id)},
        "twin": model.twins_json(store.get_twins(conn, row.id)),
    }


# -- the cloud's messages --------------------------------------------------------------------


def handle_cloud(conn: apsw.Connection, node: str, msg: Message, now: int) -> Effects:
    fx = Effects()
    try:
        with conn:
            _apply_cloud(conn, node, msg, now, fx)
    except (TwinError, BadMessage) as exc:
        code = exc.code
        log.warning("twin: rejecting %s %s: %s", msg.route.operation, msg.route.resource, exc)
        fx = Effects()
        fx.replies.append(make_error(msg, source=SOURCE, code=code, reason=str(exc)))
        return fx
    except Exception:
        log.exception("twin: applying %s %s failed", msg.route.operation, msg.route.resource)
        fx = Effects()
        fx.replies.append(make_error(msg, source=SOURCE, code=INTERNAL, reason="internal error"))
        return fx
    fx.replies.insert(0, make_ack(msg, source=SOURCE))
    return fx


def _apply_cloud(conn: apsw.Connection, node: str, msg: Message, now: int, fx: Effects) -> None:
    res = parse_resource(msg.route.resource)
    body = msg.WhichOneof("body")
    device_id = f"{res.namespace}/{res.name}"
    if res.type == ResourceType.MEMBERSHIP and body == "membership":
        _membership(conn, node, msg, fx, now)
    elif res.type == ResourceType.DEVICE and body == "object":
        if msg.route.operation == Operation.DELETE:
            _delete_device(conn, node, msg, device_id, fx, now)
        else:
            _upsert_device(conn, node, msg, device_id, fx, now)
    elif res.type == ResourceType.DEVICE_MODEL and body == "object":
        _apply_model(conn, msg, f"{res.namespace}/{res.name}")
    else:
        raise TwinError(BAD_REQUEST, f"twin cannot handle a {body} for {msg.route.resource}")


def _rv(msg: Message) -> str:
    return msg.header.resource_version or msg.object.resource_version


def _object(msg: Message) -> dict[str, Any]:
    try:
        obj = json.loads(msg.object.object_json)
    except (UnicodeDecodeError, ValueError) as exc:
        raise TwinError(BAD_REQUEST, f"object of {msg.route.resource} is not JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise TwinError(BAD_REQUEST, f"object of {msg.route.resource} is not a JSON object")
    return obj


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list[dict[str, Any]]:
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []


def _model_properties(
    conn: apsw.Connection, namespace: str, name: str
) -> dict[str, dict[str, Any]]:
    stored = store.get_model(conn, f"{namespace}/{name}") if name else None
    spec = _dict(stored[1].get("spec")) if stored else {}
    return {p["name"]: p for p in _list(spec.get("properties")) if isinstance(p.get("name"), str)}


def _attrs_and_types(
    spec: dict[str, Any], model_props: dict[str, dict[str, Any]]
) -> tuple[list[Attr], dict[str, str]]:
    """Each property's static description (an attribute) and its type (lower case)."""
    attrs, types = [], {}
    for prop in _list(spec.get("properties")):
        name = prop.get("name")
        if not isinstance(name, str) or not name:
            continue
        described = {k: v for k, v in model_props.get(name, {}).items() if k != "name"}
        described.update({k: v for k, v in prop.items() if k not in ("name", "desired")})
        type_ = str(model_props.get(name, {}).get("type", "")).lower()
        types[name] = type_
        attrs.append(Attr(name, json.dumps(described, sort_keys=True), type_))
    return attrs, types


def _desired(prop: dict[str, Any], now: int) -> tuple[str | None, int]:
    desired = prop.get("desired")
    if not isinstance(desired, dict) or "value" not in desired:
        return None, now
    ts = _dict(desired.get("metadata")).get("timestamp")
    try:
        stamp = int(ts) if ts is not None else now
    except (TypeError, ValueError):
        stamp = now
    return str(desired["value"]), stamp


def _upsert_device(
    conn: apsw.Connection, node: str, msg: Message, device_id: str, fx: Effects, now: int
) -> None:
    rv = _rv(msg)
    current = store.get_device(conn, device_id)
    if current is not None and (
        current.resource_version == rv or rv_older(rv, current.resource_version)
    ):
        return  # a resend, or older than what is stored
    obj = _object(msg)
    spec = _dict(obj.get("spec"))
    namespace, name = device_id.split("/", 1)
    model_name = str(_dict(spec.get("deviceModelRef")).get("name", ""))
    attrs, types = _attrs_and_types(spec, _model_properties(conn, namespace, model_name))
    row = DeviceRow(
        id=device_id,
        namespace=namespace,
        name=name,
        model=model_name,
        state=current.state if current else "unknown",
        last_online=current.last_online if current else 0,
        uid=msg.object.uid,
        resource_version=rv,
    )
    store.put_device(conn, row, msg.object.object_json)
    store.replace_attrs(conn, device_id, attrs)
    twins = store.get_twins(conn, device_id)
    changed = _apply_desired(twins, spec, types, now)
    store.put_twins(conn, device_id, changed.values())
    before = dict(twins)
    twins.update(changed)
    if current is None:
        added = _device_json(conn, row)
        fx.publish.append((topics.membership_updated(node), _membership_event(now, [added], [])))
    desired_changed = {n: t for n, t in changed.items() if _expected(before.get(n)) != _expected(t)}
    if desired_changed:
        document = {
            n: {"last": before[n].to_json() if n in before else None, "current": t.to_json()}
            for n, t in sorted(desired_changed.items())
        }
        event_id = new_event_id()
        event = {"event_id": event_id, "timestamp": now}
        fx.publish.append((topics.twin_document(device_id), {**event, "twin": document}))
        _delta(device_id, twins, now, fx, event_id=event_id)
        _report_twin(device_id, twins, now, fx)


def _expected(twin: Twin | None) -> str | None:
    return twin.expected.value if twin is not None and twin.expected is not None else None


def _apply_desired(
    twins: dict[str, Twin], spec: dict[str, Any], types: dict[str, str], now: int
) -> dict[str, Twin]:
    """The properties whose desired value or type the device spec changes."""
    changed: dict[str, Twin] = {}
    declared = set()
    for prop in _list(spec.get("properties")):
        name = prop.get("name")
        if not isinstance(name, str) or not name:
            continue
        declared.add(name)
        value, stamp = _desired(prop, now)
        twin = twins.get(name) or Twin(name)
        new = twin
        if _expected(twin) != value:
            new = new.with_expected(value, stamp)
        if types.get(name) and new.type != types[name]:
            new = replace(new, type=types[name])
        if new != twin or name not in twins:
            changed[name] = new
    for name, twin in twins.items():
        if name not in declared and twin.expected is not None:
            changed[name] = twin.with_expected(None, now)  # the cloud no longer desires it
    return changed


def _membership_event(
    now: int, added: list[dict[str, Any]], removed: list[dict[str, Any]]
) -> dict[str, Any]:
    return {
        "event_id": new_event_id(),
        "timestamp": now,
        "added_devices": added,
        "removed_devices": removed,
    }


def _removed_json(row: DeviceRow) -> dict[str, Any]:
    return {"id": row.id, "name": row.name, "namespace": row.namespace}


def _delete_device(
    conn: apsw.Connection, node: str, msg: Message, device_id: str, fx: Effects, now: int
) -> None:
    current = store.get_device(conn, device_id)
    if current is None or rv_older(_rv(msg), current.resource_version):
        return  # already gone, or a stale delete overtaken by a newer version
    store.delete_device(conn, device_id)
    fx.publish.append(
        (topics.membership_updated(node), _membership_event(now, [], [_removed_json(current)]))
    )


def _membership(conn: apsw.Connection, node: str, msg: Message, fx: Effects, now: int) -> None:
    """Remove the devices a membership snapshot no longer lists (and that it is not older than)."""
    snapshot_rv = msg.header.resource_version
    listed = {d.id or f"{d.namespace}/{d.name}" for d in msg.membership.added_devices}
    listed.difference_update(
        d.id or f"{d.namespace}/{d.name}" for d in msg.membership.removed_devices
    )
    removed = []
    for row in store.list_devices(conn):
        if row.id in listed or rv_older(snapshot_rv, row.resource_version):
            continue
        store.delete_device(conn, row.id)
        removed.append(_removed_json(row))
    if removed:
        fx.publish.append((topics.membership_updated(node), _membership_event(now, [], removed)))


def _apply_model(conn: apsw.Connection, msg: Message, model_id: str) -> None:
    """Store (or forget) a DeviceModel and refresh the types and attributes of its devices."""
    rv = _rv(msg)
    current = store.get_model(conn, model_id)
    if msg.route.operation == Operation.DELETE:
        if current is not None and not rv_older(rv, current[0]):
            store.delete_model(conn, model_id)
        return
    if current is not None and (current[0] == rv or rv_older(rv, current[0])):
        return
    _object(msg)  # refuse what is not a JSON object before storing it
    store.put_model(conn, model_id, rv, msg.object.object_json)
    namespace, name = model_id.split("/", 1)
    model_props = _model_properties(conn, namespace, name)
    for device_id in store.devices_of_model(conn, namespace, name):
        spec = _dict(store.get_device_object(conn, device_id).get("spec"))
        attrs, types = _attrs_and_types(spec, model_props)
        store.replace_attrs(conn, device_id, attrs)
        twins = store.get_twins(conn, device_id)
        retyped = [
            replace(t, type=types[n])
            for n, t in twins.items()
            if types.get(n) and t.type != types[n]
        ]
        store.put_twins(conn, device_id, retyped)
