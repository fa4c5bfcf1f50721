"""What edgecontroller derives from objects: references, digests, downstream messages; and
how the Ledger maps cloudhub's ack notices to ObjectSync records."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from cloud.edgecontroller.objects import CONFIGMAP, NODE, POD, digest, object_message, references
from cloud.kube import Kube
from cloud.synccontroller.ledger import Ledger, ObjectRef, Record
from common.envelope import make_ack, with_node
from common.names import Group, Module, Operation


def pod(spec: dict[str, Any]) -> dict[str, Any]:
    return {"metadata": {"name": "p", "namespace": "ns"}, "spec": spec}


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        pytest.param(
            {"volumes": [{"name": "v", "configMap": {"name": "cm"}}]},
            {("ConfigMap", "ns", "cm")},
            id="configmap-volume",
        ),
        pytest.param(
            {"volumes": [{"name": "v", "secret": {"secretName": "s"}}]},
            {("Secret", "ns", "s")},
            id="secret-volume",
        ),
        pytest.param(
            {
                "volumes": [
                    {
                        "name": "v",
                        "projected": {
                            "sources": [{"configMap": {"name": "a"}}, {"secret": {"name": "b"}}]
                        },
                    }
                ]
            },
            {("ConfigMap", "ns", "a"), ("Secret", "ns", "b")},
            id="projected",
        ),
        pytest.param(
            {
                "containers": [
                    {
                        "name": "c",
                        "env": [
                            {"name": "A", "valueFrom": {"configMapKeyRef": {"name": "a"}}},
                            {"name": "B", "valueFrom": {"secretKeyRef": {"name": "b"}}},
                            {"name": "C", "value": "plain"},
                        ],
                    }
                ],
                "initContainers": [{"name": "i", "envFrom": [{"secretRef": {"name": "c"}}]}],
            },
            {("ConfigMap", "ns", "a"), ("Secret", "ns", "b"), ("Secret", "ns", "c")},
            id="env-and-envFrom",
        ),
        pytest.param(
            {"imagePullSecrets": [{"name": "reg"}]}, {("Secret", "ns", "reg")}, id="pull-secret"
        ),
        pytest.param({"containers": [{"name": "c"}]}, set(), id="nothing"),
    ],
)
def test_references(spec: dict[str, Any], expected: set[tuple[str, str, str]]) -> None:
    """Every way a pod can name a configmap or secret is found, in the pod's namespace."""
    assert references(pod(spec)) == expected


def test_kubeedges_own_secrets_are_never_referenced() -> None:
    """A pod in namespace kubeedge naming the edge CA, a join token or the revocations gets
    none of them sent to its node; its other secrets still go."""
    spec = {
        "volumes": [
            {"name": "a", "secret": {"secretName": "cloudcore-ca"}},
            {"name": "b", "secret": {"secretName": "edge-join-token-abc123"}},
            {"name": "c", "secret": {"secretName": "edge-node-revocations"}},
            {"name": "d", "secret": {"secretName": "app"}},
        ]
    }
    obj = pod(spec)
    obj["metadata"]["namespace"] = "kubeedge"
    assert references(obj) == {("Secret", "kubeedge", "app")}
    obj["metadata"]["namespace"] = "other"  # the same names elsewhere are ordinary secrets
    assert len(references(obj)) == 4


def test_digest_ignores_status_and_volatile_metadata() -> None:
    """Status, resourceVersion, managedFields and generation do not change the digest; a
    label or a deletionTimestamp does."""
    base = {
        "metadata": {"name": "p", "resourceVersion": "5", "generation": 1},
        "spec": {"nodeName": "n"},
        "status": {"phase": "Pending"},
    }
    moved = json.loads(json.dumps(base))
    moved["metadata"].update(resourceVersion="9", generation=2, managedFields=[{"x": 1}])
    moved["status"] = {"phase": "Running"}
    assert digest(moved) == digest(base)
    labelled = json.loads(json.dumps(base))
    labelled["metadata"]["labels"] = {"a": "b"}
    assert digest(labelled) != digest(base)
    deleting = json.loads(json.dumps(base))
    deleting["metadata"]["deletionTimestamp"] = "2024-01-01T00:00:00Z"
    assert digest(deleting) != digest(base)


def test_object_message_follows_the_protocol() -> None:
    """group meta, node-prefixed resource, header RV and an ObjectEvent with the JSON."""
    obj = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "cm", "namespace": "ns", "uid": "u1", "resourceVersion": "7"},
        "data": {"k": "v"},
    }
    msg = object_message("edge-1", Operation.UPDATE, CONFIGMAP, obj)
    assert (msg.route.group, msg.route.operation) == (Group.META, Operation.UPDATE)
    assert msg.route.source == Module.EDGECONTROLLER
    assert msg.route.resource == "node/edge-1/ns/configmap/cm"
    assert msg.header.resource_version == "7"
    event = msg.object
    assert (event.api_version, event.kind, event.namespace, event.name) == (
        "v1",
        "ConfigMap",
        "ns",
        "cm",
    )
    assert (event.uid, event.resource_version) == ("u1", "7")
    assert json.loads(event.object_json) == obj


def test_cluster_scoped_objects_use_the_null_namespace() -> None:
    """The node's own Node travels as null/node/{name} with an empty namespace."""
    node = {"metadata": {"name": "edge-1", "uid": "n1", "resourceVersion": "3"}}
    msg = object_message("edge-1", Operation.INSERT, NODE, node)
    assert msg.route.resource == "node/edge-1/null/node/edge-1"
    assert msg.object.namespace == "" and msg.object.kind == "Node"


# -- the ledger's bookkeeping (no API writes happen before flush) ----------------------------


def ledger_with(*records: Record) -> Ledger:
    ledger = Ledger(Kube(Path("/nonexistent/kubeconfig")))
    for record in records:
        ledger._add(record)
    return ledger


def pod_ref(uid: str) -> ObjectRef:
    return ObjectRef("v1", "Pod", "ns", "web", uid)


def notice(node: str, res: str, op: str, rv: str, parent: Any) -> Any:
    """cloudhub's ack notice for message `parent` (as CloudHub._acked builds it)."""
    msg = make_ack(parent, source=Module.CLOUDHUB)
    msg.route.group = Group.SYNC
    msg.route.resource = with_node(node, res)
    msg.route.operation = op
    msg.ack.resource_version = rv
    return msg


def pod_message(rv: str, op: str = Operation.UPDATE) -> Any:
    obj = {"metadata": {"name": "web", "namespace": "ns", "uid": "u1", "resourceVersion": rv}}
    return object_message("edge-1", op, POD, obj)


def test_ack_of_the_last_sent_message_moves_the_record() -> None:
    """The ack of the newest message sent moves version and digest; until then, holding()
    answers with what was sent."""
    ledger = ledger_with(Record("edge-1", pod_ref("u1"), rv="3", digest="d3"))
    msg = pod_message("5")
    ledger.sent("edge-1", msg.header.id, pod_ref("u1"), "5", "d5", deleting=False)
    held = ledger.holding("edge-1", "ns/pod/web")
    assert held is not None and (held.rv, held.digest) == ("5", "d5")
    ledger.on_ack(notice("edge-1", "ns/pod/web", Operation.UPDATE, "5", msg))
    record = ledger.get("edge-1", "u1")
    assert record is not None and (record.rv, record.digest) == ("5", "d5")


def test_acked_delete_drops_the_record() -> None:
    """An acked delete removes the record: the node holds nothing there any more."""
    ledger = ledger_with(Record("edge-1", pod_ref("u1"), rv="3"))
    msg = pod_message("6", Operation.DELETE)
    ledger.sent("edge-1", msg.header.id, pod_ref("u1"), "6", "", deleting=True)
    assert ledger.holding("edge-1", "ns/pod/web").deleting  # type: ignore[union-attr]
    ledger.on_ack(notice("edge-1", "ns/pod/web", Operation.DELETE, "6", msg))
    assert ledger.get("edge-1", "u1") is None
    assert ledger.holding("edge-1", "ns/pod/web") is None


def test_unknown_ack_on_an_ambiguous_resource_is_ignored() -> None:
    """An ack nobody sent in this run moves a record only when one record fits it."""
    ledger = ledger_with(
        Record("edge-1", pod_ref("old"), rv="3"), Record("edge-1", pod_ref("new"), rv="8")
    )
    ledger.on_ack(notice("edge-1", "ns/pod/web", Operation.DELETE, "9", pod_message("9")))
    assert ledger.get("edge-1", "old") is not None and ledger.get("edge-1", "new") is not None
    held = ledger.holding("edge-1", "ns/pod/web")
    assert held is not None and held.uid == "new"
    single = ledger_with(Record("edge-1", pod_ref("u1"), rv="3"))
    single.on_ack(notice("edge-1", "ns/pod/web", Operation.UPDATE, "4", pod_message("4")))
    assert single.get("edge-1", "u1").rv == "4"  # type: ignore[union-attr]
