"""The envelope helpers: constructors, replies, validation, resource strings, RV ordering."""

from __future__ import annotations

import uuid
from collections.abc import Callable

import pytest

from common.envelope import (
    Message,
    Resource,
    is_ack,
    make_ack,
    make_error,
    new_message,
    now_ms,
    object_key,
    parse_resource,
    resource,
    rv_older,
    split_node,
    validate,
    with_node,
)
from common.errors import BadMessage
from common.names import Group, Module, Operation


def _request(resource_version: str = "7") -> Message:
    msg = new_message(
        source=Module.EDGECONTROLLER,
        group=Group.RESOURCE,
        operation=Operation.UPDATE,
        resource="default/configmap/cm",
        destination=Module.METAMANAGER,
        resource_version=resource_version,
    )
    msg.object.name = "cm"
    return msg


# -- constructors and replies -------------------------------------------------------------


def test_new_message_fills_id_timestamp_and_route() -> None:
    """new_message gives each message a fresh UUID id, a current timestamp and the route."""
    before = now_ms()
    a = _request()
    b = _request()
    after = now_ms()
    assert a.header.id != b.header.id
    assert str(uuid.UUID(a.header.id)) == a.header.id
    assert before <= a.header.timestamp_ms <= after
    assert a.header.resource_version == "7"
    assert a.header.parent_id == ""
    assert (a.route.source, a.route.destination, a.route.group) == (
        "edgecontroller",
        "metamanager",
        "resource",
    )
    assert (a.route.operation, a.route.resource) == ("update", "default/configmap/cm")


def test_make_ack_answers_the_request() -> None:
    """An ack is a response addressed to the request's source, parent id = request id."""
    req = _request()
    ack = make_ack(req, source=Module.METAMANAGER)
    assert ack.header.parent_id == req.header.id
    assert ack.header.id not in ("", req.header.id)
    assert ack.route.operation == "response"
    assert ack.route.destination == "edgecontroller"
    assert ack.route.source == "metamanager"
    assert ack.route.group == req.route.group
    assert ack.route.resource == req.route.resource
    assert ack.WhichOneof("body") == "ack"
    assert ack.ack.resource_version == "7"
    assert is_ack(ack)
    assert not is_ack(req)


def test_make_ack_prefers_an_explicit_resource_version() -> None:
    """make_ack reports the RV the receiver names over the request's own."""
    ack = make_ack(_request("7"), source=Module.METAMANAGER, resource_version="9")
    assert ack.ack.resource_version == "9"


def test_make_error_carries_code_and_reason() -> None:
    """An error reply has operation error, parent id = request id, the code and the reason."""
    req = _request()
    err = make_error(req, source=Module.METAMANAGER, code=409, reason="conflict")
    assert err.header.parent_id == req.header.id
    assert err.route.operation == "error"
    assert err.route.destination == "edgecontroller"
    assert err.WhichOneof("body") == "error"
    assert (err.error.code, err.error.message) == (409, "conflict")
    assert not is_ack(err)


# -- validation ---------------------------------------------------------------------------


def _without_id() -> Message:
    msg = _request()
    msg.header.id = ""
    return msg


def _without_body() -> Message:
    return new_message(source="x", group="meta", operation=Operation.UPDATE, resource="a/b/c")


def _unknown_operation() -> Message:
    msg = _request()
    msg.route.operation = "explode"
    return msg


def _empty_operation() -> Message:
    msg = _request()
    msg.route.operation = ""
    return msg


@pytest.mark.parametrize(
    ("make", "words"),
    [
        pytest.param(_without_id, "no header.id", id="no-id"),
        pytest.param(_without_body, "no body", id="no-body"),
        pytest.param(_unknown_operation, "unknown operation 'explode'", id="unknown-operation"),
        pytest.param(_empty_operation, "unknown operation ''", id="empty-operation"),
    ],
)
def test_validate_rejects_unusable_envelopes(make: Callable[[], Message], words: str) -> None:
    """validate raises BadMessage with code 400 and a reason naming the problem."""
    with pytest.raises(BadMessage) as info:
        validate(make())
    assert info.value.code == 400
    assert words in info.value.reason


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(_request, id="object-update"),
        pytest.param(lambda: make_ack(_request(), source="x"), id="ack"),
        pytest.param(lambda: make_error(_request(), source="x", code=500, reason="r"), id="error"),
    ],
)
def test_validate_accepts_good_envelopes(make: Callable[[], Message]) -> None:
    """validate returns quietly for envelopes with an id, a body and a known operation."""
    validate(make())


def test_validate_accepts_every_known_operation() -> None:
    """Every Operation name passes validation when the message has an id and a body."""
    for op in Operation:
        msg = _request()
        msg.route.operation = op
        validate(msg)


# -- resource strings ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("namespace", "type_", "name", "expected"),
    [
        pytest.param("default", "pod", "web", "default/pod/web", id="namespaced"),
        pytest.param(None, "node", "n1", "null/node/n1", id="cluster-none"),
        pytest.param("", "node", "n1", "null/node/n1", id="cluster-empty"),
        pytest.param("ns", "device", "a/b", "ns/device/a/b", id="name-with-slash"),
    ],
)
def test_resource_round_trips(namespace: str | None, type_: str, name: str, expected: str) -> None:
    """resource() builds namespace/type/name and parse_resource() reads the same parts back."""
    value = resource(namespace, type_, name)
    assert value == expected
    parsed = parse_resource(value)
    assert parsed == Resource(namespace or "null", type_, name)
    assert str(parsed) == value


@pytest.mark.parametrize(
    "value",
    [
        pytest.param("", id="empty"),
        pytest.param("default/pod", id="two-parts"),
        pytest.param("default", id="one-part"),
        pytest.param("/pod/web", id="empty-namespace"),
        pytest.param("default//web", id="empty-type"),
        pytest.param("default/pod/", id="empty-name"),
    ],
)
def test_parse_resource_rejects_malformed(value: str) -> None:
    """parse_resource raises BadMessage (400) for anything but three non-empty parts."""
    with pytest.raises(BadMessage) as info:
        parse_resource(value)
    assert info.value.code == 400
    assert repr(value) in info.value.reason


@pytest.mark.parametrize(
    ("node", "res"),
    [
        pytest.param("edge-1", "default/pod/web", id="namespaced"),
        pytest.param("edge-2", "null/node/edge-2", id="cluster-scoped"),
        pytest.param("n", "ns/device/a/b", id="name-with-slash"),
    ],
)
def test_with_node_and_split_node_round_trip(node: str, res: str) -> None:
    """with_node prefixes node/{node}/ and split_node returns exactly (node, resource)."""
    internal = with_node(node, res)
    assert internal == f"node/{node}/{res}"
    assert split_node(internal) == (node, res)


@pytest.mark.parametrize(
    "value",
    [
        pytest.param("default/pod/web", id="no-prefix"),
        pytest.param("nodes/n1/default/pod/web", id="wrong-prefix"),
        pytest.param("node//default/pod/web", id="empty-node"),
        pytest.param("node/n1", id="no-resource"),
        pytest.param("node/n1/", id="empty-resource"),
        pytest.param("node/", id="prefix-only"),
    ],
)
def test_split_node_rejects_malformed(value: str) -> None:
    """split_node raises BadMessage when the string does not name a node and a resource."""
    with pytest.raises(BadMessage) as info:
        split_node(value)
    assert info.value.code == 400


# -- resourceVersion ordering and collapse keys -------------------------------------------


@pytest.mark.parametrize(
    ("candidate", "current", "older"),
    [
        pytest.param("1", "2", True, id="smaller"),
        pytest.param("2", "1", False, id="larger"),
        pytest.param("5", "5", False, id="equal"),
        pytest.param("9", "10", True, id="numeric-not-lexical"),
        pytest.param("10", "9", False, id="numeric-not-lexical-reverse"),
        pytest.param("", "5", False, id="empty-candidate"),
        pytest.param("5", "", False, id="empty-current"),
        pytest.param("", "", False, id="both-empty"),
        pytest.param("abc", "5", False, id="non-integer-candidate"),
        pytest.param("1", "abc", False, id="non-integer-current"),
        pytest.param("a1", "b2", False, id="both-non-integer"),
    ],
)
def test_rv_older(candidate: str, current: str, older: bool) -> None:
    """rv_older orders integer RVs numerically and calls unorderable or empty ones not older."""
    assert rv_older(candidate, current) is older


@pytest.mark.parametrize(
    ("operation", "res", "key"),
    [
        pytest.param(Operation.INSERT, "ns/pod/a", "ns/pod/a", id="insert"),
        pytest.param(Operation.UPDATE, "ns/pod/a", "ns/pod/a", id="update"),
        pytest.param(Operation.PATCH, "ns/pod/a", "ns/pod/a", id="patch"),
        pytest.param(Operation.DELETE, "ns/pod/a", "ns/pod/a", id="delete"),
        pytest.param(Operation.UPDATE, "", None, id="update-without-resource"),
        pytest.param(Operation.QUERY, "ns/pod/a", None, id="query"),
        pytest.param(Operation.RESPONSE, "ns/pod/a", None, id="response"),
        pytest.param(Operation.ERROR, "ns/pod/a", None, id="error"),
        pytest.param(Operation.KEEPALIVE, "", None, id="keepalive"),
        pytest.param(Operation.UPLOAD, "ns/upload/a", None, id="upload"),
    ],
)
def test_object_key(operation: str, res: str, key: str | None) -> None:
    """Object operations collapse under their resource; every other operation never collapses."""
    msg = new_message(source="x", group="meta", operation=operation, resource=res)
    assert object_key(msg) == key
