"""The node authorizer's rule table, on hand-made caches: what a node may send, what waits
for the caches, what is refused and how it is counted."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from cloud.hub.authorizer import Decision, Denied, NodeAuthorizer, Verdict
from cloud.metrics import CloudMetrics
from cloud.settings import CloudSettings
from common.envelope import Message, new_message
from common.names import Group, Operation
from common.settings import build_parser

N = "edge-a"


class Pods:
    """PodFacts: two pods, and the secret the first one references."""

    def __init__(self) -> None:
        self.synced = asyncio.Event()
        self.synced.set()
        self.pods = {
            ("ns", "mine"): {"metadata": {"uid": "u1"}, "spec": {"nodeName": N}},
            ("ns", "theirs"): {"metadata": {"uid": "u2"}, "spec": {"nodeName": "edge-b"}},
            ("ns", "pending"): {"metadata": {"uid": "u3"}, "spec": {}},
        }

    def pod(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self.pods.get((namespace, name))

    def referenced_on(self, node: str, type_: str, namespace: str, name: str) -> bool:
        return (node, type_, namespace, name) == (N, "secret", "ns", "mine-secret")


class Devices:
    """DeviceFacts: one device on each node, one on none."""

    def __init__(self) -> None:
        self.synced = asyncio.Event()
        self.synced.set()
        self.nodes = {("ns", "mine"): N, ("ns", "theirs"): "edge-b", ("ns", "loose"): ""}

    def device_node(self, namespace: str, name: str) -> str | None:
        return self.nodes.get((namespace, name))


def authorizer(**kwargs: Any) -> NodeAuthorizer:
    auth = NodeAuthorizer(**kwargs)
    auth.pods, auth.devices = Pods(), Devices()
    return auth


def msg(group: str, op: str, res: str, body: Callable[[Message], None]) -> Message:
    m = new_message(source="test", group=group, operation=op, resource=res)
    body(m)
    return m


def node_obj(m: Message) -> None:
    m.object.object_json = b"{}"


def node_status(named: str = "") -> Callable[[Message], None]:
    def fill(m: Message) -> None:
        m.node_status.node_name = named

    return fill


def lease(named: str = "") -> Callable[[Message], None]:
    def fill(m: Message) -> None:
        m.lease.node_name = named

    return fill


def pod_status(uid: str = "") -> Callable[[Message], None]:
    def fill(m: Message) -> None:
        m.pod_status.uid = uid

    return fill


def twin(m: Message) -> None:
    m.twin_update.timestamp_ms = 1


def query(**fields: str) -> Callable[[Message], None]:
    def fill(m: Message) -> None:
        m.query.SetInParent()
        for key, value in fields.items():
            setattr(m.query, key, value)

    return fill


def event(kind: str, name: str, namespace: str = "", uid: str = "", host: str = N) -> Any:
    about = {"kind": kind, "name": name, "namespace": namespace, "uid": uid}

    def fill(m: Message) -> None:
        m.object.object_json = json.dumps(
            {"involvedObject": about, "source": {"host": host}}
        ).encode()
        m.object.kind = "Event"

    return fill


def raw_event(data: Any) -> Callable[[Message], None]:
    """An Event body as given: JSON of `data`, or `data` itself when it is bytes."""

    def fill(m: Message) -> None:
        m.object.object_json = data if isinstance(data, bytes) else json.dumps(data).encode()

    return fill


PAIRS = [["kind", "Node"], ["name", N]]  # what dict() turns into an involvedObject
DEEP = b"[" * 100_000 + b"]" * 100_000  # deeper than the JSON parser's recursion goes


def upload(m: Message) -> None:
    m.opaque.data = b"x"


R, T, U = Group.RESOURCE, Group.TWIN, Operation.UPDATE
ALLOW, WAIT = Verdict.ALLOW, Verdict.WAIT


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        pytest.param(msg(R, "insert", f"null/node/{N}", node_obj), ALLOW, id="register-self"),
        pytest.param(msg(R, "insert", "null/node/edge-b", node_obj), "node", id="register-other"),
        pytest.param(msg(R, "delete", f"null/node/{N}", node_obj), "node", id="delete-own-node"),
        pytest.param(msg(R, U, f"null/nodestatus/{N}", node_status(N)), ALLOW, id="status-self"),
        pytest.param(
            msg(R, U, f"null/nodestatus/{N}", node_status("edge-b")),
            "nodestatus",
            id="status-body-names-other",
        ),
        pytest.param(msg(R, U, f"kube-node-lease/lease/{N}", lease()), ALLOW, id="lease-self"),
        pytest.param(msg(R, U, "kube-node-lease/lease/edge-b", lease()), "lease", id="lease-other"),
        pytest.param(msg(R, U, f"default/lease/{N}", lease()), "lease", id="lease-other-ns"),
        pytest.param(msg(R, U, "ns/podstatus/mine", pod_status("u1")), ALLOW, id="pod-own"),
        pytest.param(
            msg(R, U, "ns/podstatus/theirs", pod_status("u2")), "podstatus", id="pod-other"
        ),
        pytest.param(
            msg(R, U, "ns/podstatus/theirs", pod_status()), "podstatus", id="pod-other-no-uid"
        ),
        pytest.param(
            msg(R, U, "ns/podstatus/pending", pod_status()), "podstatus", id="pod-unbound"
        ),
        pytest.param(msg(R, U, "ns/podstatus/theirs", pod_status("old")), ALLOW, id="pod-stale"),
        pytest.param(msg(R, U, "ns/podstatus/gone", pod_status("u9")), ALLOW, id="pod-unknown"),
        pytest.param(msg(R, "delete", "ns/pod/mine", pod_status("u1")), ALLOW, id="pod-gone-own"),
        pytest.param(
            msg(R, "delete", "ns/pod/theirs", pod_status("u2")), "pod", id="pod-gone-other"
        ),
        pytest.param(msg(R, U, "ns/pod/mine", pod_status("u1")), "pod", id="pod-update"),
        pytest.param(msg(T, U, "ns/twin/mine", twin), ALLOW, id="device-own"),
        pytest.param(msg(T, U, "ns/twin/theirs", twin), "twin", id="device-other"),
        pytest.param(msg(T, U, "ns/twin/loose", twin), "twin", id="device-unbound"),
        pytest.param(msg(T, U, "ns/twin/unknown", twin), ALLOW, id="device-unknown"),
        pytest.param(msg(R, "query", "ns/secret/mine-secret", query()), ALLOW, id="read-own"),
        pytest.param(msg(R, "query", "ns/secret/other-secret", query()), "secret", id="read-other"),
        pytest.param(
            msg(R, "query", "ns/secret/mine-secret", query(name="other-secret")),
            "secret",
            id="read-body-names-other",
        ),
        pytest.param(
            msg(R, "query", "ns/secret/mine-secret", query(label_selector="a=b")),
            "secret",
            id="read-with-selector",
        ),
        pytest.param(msg(R, "query", "ns/pod/theirs", query()), "pod", id="read-pod"),
        pytest.param(msg(R, "insert", "default/event/e", event("Node", N)), ALLOW, id="ev-node"),
        pytest.param(
            msg(R, U, "ns/event/e", event("Pod", "mine", "ns", "u1")), ALLOW, id="ev-own-pod"
        ),
        pytest.param(
            msg(R, "insert", "ns/event/e", event("Pod", "gone", "ns", "u9")), ALLOW, id="ev-stale"
        ),
        pytest.param(
            msg(R, "insert", "default/event/e", event("Node", "edge-b")), "event", id="ev-node-b"
        ),
        pytest.param(
            msg(R, "insert", "ns/event/e", event("Node", N)), "event", id="ev-node-other-ns"
        ),
        pytest.param(
            msg(R, "insert", "ns/event/e", event("Pod", "theirs", "ns", "u2")),
            "event",
            id="ev-other-pod",
        ),
        pytest.param(
            msg(R, "insert", "other/event/e", event("Pod", "mine", "ns", "u1")),
            "event",
            id="ev-pod-other-ns",
        ),
        pytest.param(
            msg(R, "insert", "ns/event/e", event("Pod", "mine", "ns", "u1", host="edge-b")),
            "event",
            id="ev-other-host",
        ),
        pytest.param(
            msg(R, "insert", "ns/event/e", event("Secret", "mine-secret", "ns")),
            "event",
            id="ev-other-kind",
        ),
        pytest.param(msg(R, "insert", "ns/event/e", node_obj), "event", id="ev-no-object"),
        pytest.param(
            msg(R, "insert", "default/event/e", raw_event({"involvedObject": PAIRS})),
            "event",
            id="ev-involved-object-pairs",
        ),
        pytest.param(
            msg(
                R,
                "insert",
                "default/event/e",
                raw_event({"involvedObject": {"kind": "Node", "name": N}, "source": [["host", N]]}),
            ),
            "event",
            id="ev-source-pairs",
        ),
        pytest.param(
            msg(R, "insert", "default/event/e", raw_event([PAIRS])), "event", id="ev-list"
        ),
        pytest.param(msg(R, "insert", "default/event/e", raw_event(DEEP)), "event", id="ev-deep"),
        pytest.param(
            msg(R, "insert", "default/event/e", raw_event(b"{")), "event", id="ev-not-json"
        ),
        pytest.param(
            msg(R, "delete", "ns/event/e", event("Pod", "mine", "ns", "u1")), "event", id="ev-del"
        ),
        pytest.param(msg(Group.USER, "upload", "x", upload), ALLOW, id="user-data"),
        pytest.param(msg(Group.SYNC, U, f"null/node/{N}", node_obj), "node", id="group-sync"),
        pytest.param(msg(R, U, "no-resource", node_obj), "other", id="bad-resource"),
        pytest.param(msg(R, U, "ns/madeup/x", node_obj), "other", id="made-up-type"),
    ],
)
def test_decisions(message: Message, expected: Verdict | str) -> None:
    """Each message gets the decision NodeRestriction would give; a refusal is counted under
    its resource type ("other" for types no node may name)."""
    metrics = CloudMetrics()
    decision = authorizer(metrics=metrics).decide(N, message)
    if isinstance(expected, Verdict):
        assert decision is expected
        return
    assert isinstance(decision, Denied) and decision.reason
    sample = metrics.registry.get_sample_value(
        "kubeedge_cloudhub_denied_total", {"node": N, "kind": expected}
    )
    assert sample == 1


def test_rules_wait_for_their_caches() -> None:
    """Until a cache is listed, reports checked against it wait (no answer, resent later);
    reports about the node itself do not."""
    auth = authorizer()
    assert auth.pods is not None and auth.devices is not None
    auth.pods.synced.clear()
    auth.devices.synced.clear()
    assert auth.decide(N, msg(R, U, "ns/podstatus/mine", pod_status("u1"))) is WAIT
    assert auth.decide(N, msg(R, "query", "ns/secret/mine-secret", query())) is WAIT
    assert auth.decide(N, msg(T, U, "ns/twin/mine", twin)) is WAIT
    assert auth.decide(N, msg(R, U, f"kube-node-lease/lease/{N}", lease())) is ALLOW


def test_off_allows_everything() -> None:
    """--no-node-authorization: every message is let through and nothing is counted."""
    metrics = CloudMetrics()
    auth = authorizer(enabled=False, metrics=metrics)
    decision: Decision = auth.decide(N, msg(R, U, "kube-node-lease/lease/edge-b", lease()))
    assert decision is ALLOW
    assert metrics.registry.get_sample_value(
        "kubeedge_cloudhub_denied_total", {"node": N, "kind": "lease"}
    ) in (None, 0)


def test_reason_is_bounded() -> None:
    """A refusal's reason echoes names the node sent, cut short."""
    long_name = "x" * 5000
    decision = authorizer().decide(N, msg(R, "insert", f"null/node/{long_name}", node_obj))
    assert isinstance(decision, Denied) and len(decision.reason) <= 300


def test_on_by_default_with_a_flag_to_turn_it_off() -> None:
    """Node authorization is on unless --no-node-authorization is given; --help says so."""
    assert CloudSettings(data_dir=Path("x")).node_authorization is True
    parser = build_parser(CloudSettings, "cloudcore", "")
    assert vars(parser.parse_args(["--no-node-authorization"]))["node_authorization"] is False
    assert "--no-node-authorization" in parser.format_help()
