"""The real kubectl against the real control plane (kube-apiserver on kine) with cloudcore on it."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import yaml

from tests.support.cluster import KUBECTL, Cluster, start_cluster
from tests.support.controlplane import TestControlPlane
from tests.support.waiting import eventually

EXAMPLES = Path(__file__).parents[2] / "examples"
pytestmark = pytest.mark.e2e


@pytest.fixture
async def cluster(tmp_path: Path, kube: TestControlPlane) -> AsyncIterator[Cluster]:
    c = await start_cluster(tmp_path / "cloud", kube)
    yield c
    await c.proc.terminate()


async def apply_examples(cluster: Cluster) -> None:
    for name in ("namespace", "configmap", "pod", "devicemodel", "device"):
        await cluster.kubectl("apply", "-f", str(EXAMPLES / f"{name}.yaml"))


async def test_apply_creates_every_kind(cluster: Cluster) -> None:
    """apply -f of a namespace, pod, configmap, DeviceModel and Device stores each."""
    await apply_examples(cluster)
    pod = await cluster.get_json("pod", "web", "-n", "demo")
    assert pod["spec"]["containers"][0]["env"][1] == {"name": "MODE", "value": "demo"}
    assert pod["metadata"]["uid"] and pod["metadata"]["creationTimestamp"]
    device = await cluster.get_json("device", "thermostat-1", "-n", "demo")
    assert device["spec"]["properties"][0]["desired"]["value"] == "20"
    cm = await cluster.get_json("cm", "web-content", "-n", "demo")
    assert cm["data"]["index.html"].startswith("hello")


async def test_reapply_removes_dropped_label_and_key(cluster: Cluster, tmp_path: Path) -> None:
    """Re-applying a pod without one label, and a configmap without one key, removes exactly
    those (kubectl's three-way merge against the last applied configuration)."""
    await apply_examples(cluster)
    manifest = yaml.safe_load((EXAMPLES / "pod.yaml").read_text())
    del manifest["metadata"]["labels"]["tier"]
    changed = tmp_path / "pod.yaml"
    changed.write_text(yaml.safe_dump(manifest))
    assert "configured" in await cluster.kubectl("apply", "-f", str(changed))
    pod = await cluster.get_json("pod", "web", "-n", "demo")
    assert pod["metadata"]["labels"] == {"app": "web"}
    assert pod["spec"]["containers"][0]["volumeMounts"][0]["mountPath"] == "/www"
    cm = yaml.safe_load((EXAMPLES / "configmap.yaml").read_text())
    cm["data"]["extra"] = "1"
    await cluster.kubectl("apply", "-f", "-", stdin=json.dumps(cm))
    del cm["data"]["extra"]
    await cluster.kubectl("apply", "-f", "-", stdin=json.dumps(cm))
    got = await cluster.get_json("cm", "web-content", "-n", "demo")
    assert set(got["data"]) == {"index.html"}


async def test_get_output_formats(cluster: Cluster) -> None:
    """get with -o yaml, -o wide, selectors; server-side columns for pods, nodes and devices."""
    await apply_examples(cluster)
    as_yaml = yaml.safe_load(await cluster.kubectl("get", "pod", "web", "-n", "demo", "-o", "yaml"))
    assert as_yaml["kind"] == "Pod"
    wide = await cluster.kubectl("get", "pods", "-n", "demo", "-o", "wide")
    header = wide.splitlines()[0].split()
    assert header[:5] == ["NAME", "READY", "STATUS", "RESTARTS", "AGE"]
    assert "NODE" in header and "IP" in header
    assert "edge-1" in wide.splitlines()[1]
    devices = await cluster.kubectl("get", "devices", "-n", "demo")
    assert devices.split()[:4] == ["NAME", "NODE", "MODEL", "STATE"]
    assert "thermostat" in devices.splitlines()[1]
    selected = await cluster.kubectl("get", "pods", "-A", "-l", "app in (web),tier!=backend")
    assert "web" in selected
    assert "No resources" in await cluster.kubectl(
        "get", "pods", "-n", "demo", "-l", "tier=backend", check=False
    )
    by_field = await cluster.kubectl(
        "get", "pods", "-A", "--field-selector", "spec.nodeName=edge-1,status.phase=Pending"
    )
    assert "web" in by_field
    assert "web" not in await cluster.kubectl(
        "get", "pods", "-A", "--field-selector", "spec.nodeName=other", check=False
    )


async def test_label_annotate_and_three_patch_types(cluster: Cluster) -> None:
    """label, annotate, patch --type merge/json and the default strategic patch all apply."""
    await apply_examples(cluster)
    ns = ("-n", "demo")
    await cluster.kubectl("label", "pod", "web", "stage=test", *ns)
    await cluster.kubectl("annotate", "pod", "web", "owner=ops", *ns)
    await cluster.kubectl(
        "patch",
        "pod",
        "web",
        *ns,
        "--type",
        "merge",
        "-p",
        '{"metadata":{"labels":{"merged":"yes"}}}',
    )
    await cluster.kubectl(
        "patch",
        "pod",
        "web",
        *ns,
        "--type",
        "json",
        "-p",
        '[{"op":"replace","path":"/metadata/labels/app","value":"site"}]',
    )
    await cluster.kubectl(
        "patch",
        "pod",
        "web",
        *ns,
        "-p",
        '{"spec":{"containers":[{"name":"httpd","image":"kubeedge-py/busybox:v2"}]}}',
    )
    pod = await cluster.get_json("pod", "web", *ns)
    labels = pod["metadata"]["labels"]
    assert labels["stage"] == "test" and labels["merged"] == "yes" and labels["app"] == "site"
    assert pod["metadata"]["annotations"]["owner"] == "ops"
    container = pod["spec"]["containers"][0]
    assert container["image"] == "kubeedge-py/busybox:v2"
    # Strategic: the container is merged by name, not replaced, so its env is still there.
    assert {e["name"] for e in container["env"]} == {"GREETING", "MODE"}
    # A patch on a Device (custom resource) uses merge patch.
    await cluster.kubectl(
        "patch",
        "device",
        "thermostat-1",
        *ns,
        "--type",
        "merge",
        "-p",
        '{"metadata":{"labels":{"room":"lab"}}}',
    )
    assert (await cluster.get_json("device", "thermostat-1", *ns))["metadata"]["labels"] == {
        "room": "lab"
    }


async def test_replace_needs_current_version(cluster: Cluster) -> None:
    """replace with the current object succeeds; with a stale resourceVersion it conflicts."""
    await apply_examples(cluster)
    cm = await cluster.get_json("cm", "web-content", "-n", "demo")
    cm["data"]["extra"] = "1"
    await cluster.kubectl("replace", "-f", "-", stdin=json.dumps(cm))
    cm["data"]["extra"] = "2"  # still carries the old resourceVersion
    out = await cluster.kubectl("replace", "-f", "-", stdin=json.dumps(cm), check=False)
    assert "Conflict" in out or "modified" in out
    assert (await cluster.get_json("cm", "web-content", "-n", "demo"))["data"]["extra"] == "1"


async def test_delete_with_finalizer_marks_then_removes(cluster: Cluster) -> None:
    """delete leaves an object with a finalizer in place, marked; removing the finalizer
    removes it, and wait --for=delete sees that."""
    await apply_examples(cluster)
    ns = ("-n", "demo")
    await cluster.kubectl(
        "patch",
        "cm",
        "web-content",
        *ns,
        "--type",
        "merge",
        "-p",
        '{"metadata":{"finalizers":["example.com/hold"]}}',
    )
    await cluster.kubectl("delete", "cm", "web-content", *ns, "--wait=false")
    cm = await cluster.get_json("cm", "web-content", *ns)
    assert cm["metadata"]["deletionTimestamp"]
    waiter = asyncio.create_task(
        cluster.kubectl("wait", "--for=delete", "cm/web-content", *ns, "--timeout=30s")
    )
    await asyncio.sleep(0.5)
    assert not waiter.done()
    await cluster.kubectl(
        "patch",
        "cm",
        "web-content",
        *ns,
        "--type",
        "json",
        "-p",
        '[{"op":"remove","path":"/metadata/finalizers"}]',
    )
    await asyncio.wait_for(waiter, 30)
    assert "NotFound" in await cluster.kubectl("get", "cm", "web-content", *ns, check=False)


async def test_get_watch_sees_changes(cluster: Cluster) -> None:
    """kubectl get -w prints a line when the watched object changes."""
    await apply_examples(cluster)
    proc = await asyncio.create_subprocess_exec(
        KUBECTL,
        "--kubeconfig",
        str(cluster.kubeconfig),
        "get",
        "cm",
        "-n",
        "demo",
        "-w",
        "--output-watch-events",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stdout is not None
    try:
        first = await asyncio.wait_for(proc.stdout.readline(), 20)  # header
        assert b"NAME" in first
        fresh = {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "data": {"a": "b"},
            "metadata": {"name": "fresh", "namespace": "demo"},
        }
        await cluster.kubectl("apply", "-f", "-", stdin=json.dumps(fresh))
        lines = []  # first the existing configmaps (web-content, kube-root-ca.crt), then ours
        while not any(b"fresh" in line for line in lines):
            lines.append(await asyncio.wait_for(proc.stdout.readline(), 20))
        assert b"ADDED" in lines[-1]
    finally:
        proc.kill()
        await proc.wait()


async def test_api_resources_lists_kubeedge_crds(cluster: Cluster) -> None:
    """api-resources shows devices, devicemodels, the reliablesyncs kinds and the rules kinds
    (served now, implemented later); explain reads their schemas."""
    out = await cluster.kubectl("api-resources")
    names = ("devices", "devicemodels", "objectsyncs", "clusterobjectsyncs", "rules")
    for name in (*names, "ruleendpoints"):
        assert name in out
    for group in ("devices.kubeedge.io/v1beta1", "reliablesyncs.kubeedge.io/v1alpha1"):
        assert group in out
    assert "rules.kubeedge.io/v1" in out
    explained = await cluster.kubectl("explain", "ruleendpoints.spec")
    assert "ruleEndpointType" in explained


async def test_strict_field_validation(cluster: Cluster, tmp_path: Path) -> None:
    """kubectl's default Strict validation rejects an unknown field with the field's name."""
    await apply_examples(cluster)
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x, namespace: demo}\n"
        "data: {a: b}\nbogus: 1\n"
    )
    out = await cluster.kubectl("apply", "-f", str(bad), check=False)
    assert 'unknown field "bogus"' in out
    assert "NotFound" in await cluster.kubectl("get", "cm", "x", "-n", "demo", check=False)


async def test_new_crd_becomes_servable(cluster: Cluster) -> None:
    """A CRD created with kubectl is served at once, with its status subresource."""
    crd = {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.example.com"},
        "spec": {
            "group": "example.com",
            "scope": "Namespaced",
            "names": {"kind": "Widget", "plural": "widgets", "singular": "widget"},
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "x-kubernetes-preserve-unknown-fields": True,
                        }
                    },
                }
            ],
        },
    }
    await cluster.kubectl("apply", "-f", "-", stdin=json.dumps(crd))
    widget = {
        "apiVersion": "example.com/v1",
        "kind": "Widget",
        "metadata": {"name": "w1", "namespace": "default"},
        "spec": {"size": 3},
    }
    await cluster.kubectl("apply", "-f", "-", stdin=json.dumps(widget))
    assert (await cluster.get_json("widget", "w1"))["spec"]["size"] == 3
    await cluster.kubectl(
        "patch",
        "widget",
        "w1",
        "--subresource",
        "status",
        "--type",
        "merge",
        "-p",
        '{"status":{"ready":true}}',
    )
    got = await cluster.get_json("widget", "w1")
    assert got["status"] == {"ready": True} and got["spec"]["size"] == 3


async def test_generators_send_protobuf_and_are_accepted(cluster: Cluster) -> None:
    """kubectl's generators (protobuf request bodies) create a namespace, a configmap from a
    literal and a generic secret."""
    ns = f"t-{uuid.uuid4().hex[:8]}"  # namespaces outlive a test (wipe empties them)
    await cluster.kubectl("create", "namespace", ns)
    await cluster.kubectl("create", "configmap", "c1", "-n", ns, "--from-literal=a=b")
    await cluster.kubectl("create", "secret", "generic", "s1", "-n", ns, "--from-literal=k=v")
    assert (await cluster.get_json("cm", "c1", "-n", ns))["data"] == {"a": "b"}
    secret = await cluster.get_json("secret", "s1", "-n", ns)
    assert secret["data"] == {"k": "dg=="} and secret["type"] == "Opaque"


async def test_server_side_apply_owns_fields(cluster: Cluster) -> None:
    """apply --server-side creates, then a second manager's conflicting change is refused
    unless forced."""
    cm = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "ssa", "namespace": "default"},
        "data": {"a": "1"},
    }
    await cluster.kubectl("apply", "--server-side", "-f", "-", stdin=json.dumps(cm))
    cm["data"]["a"] = "2"
    out = await cluster.kubectl(
        "apply",
        "--server-side",
        "--field-manager",
        "other",
        "-f",
        "-",
        stdin=json.dumps(cm),
        check=False,
    )
    assert "conflict" in out.lower()
    await cluster.kubectl(
        "apply",
        "--server-side",
        "--field-manager",
        "other",
        "--force-conflicts",
        "-f",
        "-",
        stdin=json.dumps(cm),
    )
    got = await cluster.get_json("cm", "ssa", "--show-managed-fields")
    assert got["data"] == {"a": "2"}
    assert {m["manager"] for m in got["metadata"]["managedFields"]} >= {"other"}


async def test_apply_of_a_list(cluster: Cluster) -> None:
    """apply -f of a `kind: List` creates every item."""
    items = [
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": f"l{i}"}, "data": {}}
        for i in range(2)
    ]
    doc = {"apiVersion": "v1", "kind": "List", "items": items}
    await cluster.kubectl("apply", "-f", "-", stdin=json.dumps(doc))
    names = {i["metadata"]["name"] for i in (await cluster.get_json("cm"))["items"]}
    assert {"l0", "l1"} <= names


async def test_explain_auth_and_events(cluster: Cluster) -> None:
    """explain knows pod.spec.containers, auth can-i answers, and get events shows what the
    real controllers did (the deployment controller scaling up a ReplicaSet)."""
    explained = await cluster.kubectl("explain", "pod.spec.containers")
    assert "FIELD: containers" in explained and "image" in explained
    assert (await cluster.kubectl("auth", "can-i", "create", "pods")).strip() == "yes"
    await cluster.kubectl("create", "deployment", "d1", "--image=kubeedge-py/busybox:latest")

    async def scaled() -> bool:
        out = await cluster.kubectl("get", "events", "--field-selector", "reason=ScalingReplicaSet")
        return "Scaled up replica set d1-" in out

    await eventually(scaled, 30, "a ScalingReplicaSet event for d1")


async def test_cloudcore_is_not_cluster_admin(cluster: Cluster) -> None:
    """cloudcore's identity has deploy/cloudcore-rbac.yaml's rights and no more: it writes
    pod status and reads secrets, but may not delete namespaces or read RBAC."""
    as_cloudcore = ("--as", "system:kubeedge:cloudcore")

    async def can(*what: str) -> str:
        out = await cluster.kubectl("auth", "can-i", *what, *as_cloudcore, check=False)
        return out.strip().splitlines()[0]

    assert await can("patch", "pods", "--subresource=status") == "yes"
    assert await can("list", "secrets", "-A") == "yes"
    assert await can("delete", "namespaces") == "no"
    assert await can("create", "clusterroles") == "no"
