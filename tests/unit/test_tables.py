"""Server-side Tables for `kubectl get`: columns, pod and node status strings, CRD columns, ages."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from cloud.apiserver.errors import APIError
from cloud.apiserver.resources import BUILTIN, PrinterColumn, ResourceInfo
from cloud.apiserver.tables import (
    human_duration,
    include_object_param,
    to_table,
    wants_table,
)

NOW = datetime(2024, 6, 1, 12, 0, 0, tzinfo=UTC)
INFO = {i.kind: i for i in BUILTIN}
Obj = dict[str, Any]


def ago(**delta: float) -> str:
    return (NOW - timedelta(**delta)).strftime("%Y-%m-%dT%H:%M:%SZ")


def row(info: ResourceInfo, obj: Obj) -> dict[str, Any]:
    """The row's cells keyed by column name."""
    table = to_table(info, [obj], now=NOW)
    names = [c["name"] for c in table["columnDefinitions"]]
    cells = table["rows"][0]["cells"]
    assert len(cells) == len(names)
    return dict(zip(names, cells, strict=True))


def meta(name: str = "x", **extra: Any) -> Obj:
    return {"name": name, "namespace": "default", "creationTimestamp": ago(minutes=5), **extra}


def running(name: str = "c", restarts: int = 0, ready: bool = True) -> Obj:
    return {"name": name, "ready": ready, "restartCount": restarts, "state": {"running": {}}}


def waiting(reason: str, restarts: int = 0) -> Obj:
    state = {"waiting": {"reason": reason}}
    return {"name": "c", "ready": False, "restartCount": restarts, "state": state}


def terminated(reason: str, code: int, restarts: int = 0) -> Obj:
    state = {"terminated": {"reason": reason, "exitCode": code}}
    return {"name": "c", "ready": False, "restartCount": restarts, "state": state}


def pod(phase: str, statuses: list[Obj], containers: int = 1, **extra: Any) -> Obj:
    status: Obj = {"phase": phase, "containerStatuses": statuses, **extra.pop("status", {})}
    spec: Obj = {"containers": [{"name": f"c{i}"} for i in range(containers)]}
    spec.update(extra.pop("spec", {}))
    return {"metadata": meta("p", **extra), "spec": spec, "status": status}


# --- pods ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("obj", "expected"),
    [
        pytest.param(pod("Running", [running()]), "Running", id="running"),
        pytest.param(pod("Pending", []), "Pending", id="pending-no-statuses"),
        pytest.param(pod("", []), "Pending", id="no-phase-is-pending"),
        pytest.param(
            pod("Pending", [waiting("ContainerCreating")]),
            "ContainerCreating",
            id="pending-container-creating",
        ),
        pytest.param(
            pod("Running", [waiting("CrashLoopBackOff", 4)]), "CrashLoopBackOff", id="crashloop"
        ),
        pytest.param(pod("Succeeded", [terminated("Completed", 0)]), "Completed", id="completed"),
        pytest.param(pod("Failed", [terminated("Error", 1)]), "Error", id="error"),
        pytest.param(pod("Failed", [terminated("", 137)]), "ExitCode:137", id="exit-code"),
        pytest.param(
            pod("Running", [running()], deletionTimestamp=ago(seconds=3)),
            "Terminating",
            id="terminating",
        ),
        pytest.param(
            pod("Succeeded", [terminated("Completed", 0)], deletionTimestamp=ago(seconds=3)),
            "Completed",
            id="finished-pod-being-deleted-is-not-terminating",
        ),
        pytest.param(
            pod(
                "Running",
                [running()],
                deletionTimestamp=ago(seconds=3),
                status={"reason": "NodeLost"},
            ),
            "Unknown",
            id="node-lost",
        ),
        pytest.param(
            pod("Failed", [], status={"reason": "Evicted"}), "Evicted", id="status-reason"
        ),
        pytest.param(
            pod("Running", [terminated("Completed", 0), running("d")], containers=2),
            "NotReady",
            id="completed-but-one-running-not-ready",
        ),
        pytest.param(
            pod(
                "Running",
                [terminated("Completed", 0), running("d")],
                containers=2,
                status={"conditions": [{"type": "Ready", "status": "True"}]},
            ),
            "Running",
            id="completed-but-one-running-ready",
        ),
        pytest.param(
            pod(
                "Pending",
                [],
                status={"conditions": [{"type": "PodScheduled", "reason": "SchedulingGated"}]},
            ),
            "SchedulingGated",
            id="scheduling-gated",
        ),
    ],
)
def test_pod_status(obj: Obj, expected: str) -> None:
    """STATUS follows kubectl: pod reason, then container reasons, Terminating, then phase."""
    assert row(INFO["Pod"], obj)["Status"] == expected


def init_pod(init_state: Obj, restarts: int = 0) -> Obj:
    obj = pod("Pending", [waiting("PodInitializing")])
    obj["spec"]["initContainers"] = [{"name": "init"}, {"name": "init2"}]
    obj["status"]["initContainerStatuses"] = [
        {"name": "init", "ready": False, "restartCount": restarts, "state": init_state}
    ]
    return obj


@pytest.mark.parametrize(
    ("obj", "expected"),
    [
        pytest.param(init_pod({"waiting": {"reason": "PodInitializing"}}), "Init:0/2", id="n-of-m"),
        pytest.param(init_pod({"running": {}}), "Init:0/2", id="running-init"),
        pytest.param(
            init_pod({"waiting": {"reason": "CrashLoopBackOff"}}, 3),
            "Init:CrashLoopBackOff",
            id="init-crashloop",
        ),
        pytest.param(
            init_pod({"terminated": {"reason": "Error", "exitCode": 2}}), "Init:Error", id="failed"
        ),
        pytest.param(init_pod({"terminated": {"exitCode": 0}}), "PodInitializing", id="init-done"),
    ],
)
def test_pod_init_status(obj: Obj, expected: str) -> None:
    """Init containers that have not finished show as Init:<reason> or Init:<n>/<m>."""
    assert row(INFO["Pod"], obj)["Status"] == expected


def test_pod_init_restarts_counted_while_initializing() -> None:
    """While init containers run, RESTARTS counts their restarts."""
    obj = init_pod({"waiting": {"reason": "CrashLoopBackOff"}}, 3)
    assert row(INFO["Pod"], obj)["Restarts"] == 3


def test_pod_finished_init_restarts_not_counted() -> None:
    """Once initialized, RESTARTS counts app containers (and sidecars), not finished inits."""
    obj = pod("Running", [running("c", restarts=1)])
    obj["spec"]["initContainers"] = [{"name": "init"}]
    obj["status"]["initContainerStatuses"] = [
        {"name": "init", "restartCount": 2, "state": {"terminated": {"exitCode": 0}}}
    ]
    cells = row(INFO["Pod"], obj)
    assert (cells["Status"], cells["Restarts"]) == ("Running", 1)


@pytest.mark.parametrize(
    ("statuses", "containers", "ready", "restarts"),
    [
        pytest.param([running("a", 2), running("b", 3, ready=False)], 2, "1/2", 5, id="one-of-two"),
        pytest.param([running("a"), running("b")], 2, "2/2", 0, id="all-ready"),
        pytest.param([], 3, "0/3", 0, id="no-statuses-yet"),
        pytest.param([waiting("CrashLoopBackOff", 7)], 1, "0/1", 7, id="crashloop-restarts"),
        pytest.param(
            [
                {
                    "name": "a",
                    "ready": True,
                    "restartCount": 0,
                    "state": {"waiting": {"reason": "X"}},
                }
            ],
            1,
            "0/1",
            0,
            id="ready-flag-but-waiting",
        ),
    ],
)
def test_pod_ready_and_restarts(
    statuses: list[Obj], containers: int, ready: str, restarts: int
) -> None:
    """READY is ready running containers over spec containers; RESTARTS sums restartCount."""
    cells = row(INFO["Pod"], pod("Running", statuses, containers=containers))
    assert (cells["Ready"], cells["Restarts"]) == (ready, restarts)
    assert isinstance(cells["Restarts"], int)


def test_pod_sidecar_counts_in_ready() -> None:
    """A started restartable init container (sidecar) counts in READY's total and ready."""
    obj = pod("Running", [running("app")])
    obj["spec"]["initContainers"] = [{"name": "side", "restartPolicy": "Always"}]
    obj["status"]["initContainerStatuses"] = [
        {
            "name": "side",
            "ready": True,
            "started": True,
            "restartCount": 1,
            "state": {"running": {}},
        }
    ]
    cells = row(INFO["Pod"], obj)
    assert (cells["Ready"], cells["Status"], cells["Restarts"]) == ("2/2", "Running", 1)


def test_pod_wide_cells() -> None:
    """IP, NODE, NOMINATED NODE and READINESS GATES fill in, or show <none>."""
    obj = pod(
        "Running",
        [running()],
        spec={"nodeName": "edge-1", "readinessGates": [{"conditionType": "x/y"}]},
        status={"podIP": "10.0.0.7", "conditions": [{"type": "x/y", "status": "True"}]},
    )
    cells = row(INFO["Pod"], obj)
    assert [cells[k] for k in ("IP", "Node", "Nominated Node", "Readiness Gates")] == [
        "10.0.0.7",
        "edge-1",
        "<none>",
        "1/1",
    ]
    bare = row(INFO["Pod"], pod("Pending", []))
    assert [bare[k] for k in ("IP", "Node", "Readiness Gates")] == ["<none>"] * 3


def test_pod_podips_preferred() -> None:
    """The IP column prefers status.podIPs[0] over status.podIP."""
    obj = pod("Running", [running()], status={"podIP": "1.1.1.1", "podIPs": [{"ip": "2.2.2.2"}]})
    assert row(INFO["Pod"], obj)["IP"] == "2.2.2.2"


@pytest.mark.parametrize(
    ("phase", "conditions"),
    [
        pytest.param("Succeeded", [{"type": "Completed", "status": "True"}], id="succeeded"),
        pytest.param("Failed", [{"type": "Completed", "status": "True"}], id="failed"),
        pytest.param("Running", None, id="running-has-none"),
    ],
)
def test_pod_row_conditions(phase: str, conditions: list[Obj] | None) -> None:
    """Finished pods carry the Completed row condition, as Kubernetes sets it."""
    got = to_table(INFO["Pod"], [pod(phase, [])], now=NOW)["rows"][0].get("conditions")
    trimmed = [{k: c[k] for k in ("type", "status")} for c in got] if got else None
    assert trimmed == conditions


# --- nodes -----------------------------------------------------------------------------------


def node(ready: str | None = "True", labels: Obj | None = None, **spec: Any) -> Obj:
    conditions = [{"type": "Ready", "status": ready}] if ready else []
    return {
        "metadata": {**meta("n1"), "labels": labels or {}},
        "spec": spec,
        "status": {
            "conditions": [{"type": "MemoryPressure", "status": "False"}, *conditions],
            "nodeInfo": {
                "kubeletVersion": "v1.31.0-kubeedge",
                "osImage": "Debian GNU/Linux 12",
                "kernelVersion": "6.1.0",
                "containerRuntimeVersion": "containerd://1.7.0",
            },
            "addresses": [
                {"type": "Hostname", "address": "n1"},
                {"type": "InternalIP", "address": "10.1.2.3"},
            ],
        },
    }


@pytest.mark.parametrize(
    ("obj", "expected"),
    [
        pytest.param(node("True"), "Ready", id="ready"),
        pytest.param(node("False"), "NotReady", id="not-ready"),
        pytest.param(node("Unknown"), "NotReady", id="ready-unknown-is-not-ready"),
        pytest.param(node(None), "Unknown", id="no-ready-condition"),
        pytest.param(node("True", unschedulable=True), "Ready,SchedulingDisabled", id="cordoned"),
        pytest.param(
            node("False", unschedulable=True), "NotReady,SchedulingDisabled", id="cordoned-down"
        ),
    ],
)
def test_node_status(obj: Obj, expected: str) -> None:
    """STATUS comes from the Ready condition plus SchedulingDisabled when cordoned."""
    assert row(INFO["Node"], obj)["Status"] == expected


@pytest.mark.parametrize(
    ("labels", "expected"),
    [
        pytest.param({}, "<none>", id="none"),
        pytest.param({"node-role.kubernetes.io/edge": ""}, "edge", id="one"),
        pytest.param(
            {"node-role.kubernetes.io/worker": "", "node-role.kubernetes.io/agent": "true"},
            "agent,worker",
            id="sorted",
        ),
        pytest.param({"kubernetes.io/role": "master"}, "master", id="legacy-role-label"),
        pytest.param({"node-role.kubernetes.io/": ""}, "<none>", id="empty-role-ignored"),
        pytest.param({"app": "x"}, "<none>", id="unrelated-label"),
    ],
)
def test_node_roles(labels: Obj, expected: str) -> None:
    """ROLES lists node-role.kubernetes.io/<role> labels, sorted and comma-joined."""
    assert row(INFO["Node"], node(labels=labels))["Roles"] == expected


def test_node_cells() -> None:
    """VERSION and the wide columns come from status.nodeInfo and status.addresses."""
    cells = row(INFO["Node"], node())
    assert cells == {
        "Name": "n1",
        "Status": "Ready",
        "Roles": "<none>",
        "Age": "5m",
        "Version": "v1.31.0-kubeedge",
        "Internal-IP": "10.1.2.3",
        "External-IP": "<none>",
        "OS-Image": "Debian GNU/Linux 12",
        "Kernel-Version": "6.1.0",
        "Container-Runtime": "containerd://1.7.0",
    }


# --- columns of every built-in kind --------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "normal", "wide"),
    [
        pytest.param(
            "Pod",
            ["Name", "Ready", "Status", "Restarts", "Age"],
            ["IP", "Node", "Nominated Node", "Readiness Gates"],
            id="pod",
        ),
        pytest.param(
            "Node",
            ["Name", "Status", "Roles", "Age", "Version"],
            ["Internal-IP", "External-IP", "OS-Image", "Kernel-Version", "Container-Runtime"],
            id="node",
        ),
        pytest.param("Namespace", ["Name", "Status", "Age"], [], id="namespace"),
        pytest.param("ConfigMap", ["Name", "Data", "Age"], [], id="configmap"),
        pytest.param("Secret", ["Name", "Type", "Data", "Age"], [], id="secret"),
        pytest.param(
            "Service",
            ["Name", "Type", "Cluster-IP", "External-IP", "Port(s)", "Age"],
            ["Selector"],
            id="service",
        ),
        pytest.param(
            "Event",
            ["Last Seen", "Type", "Reason", "Object", "Message"],
            ["Subobject", "Source", "First Seen", "Count", "Name"],
            id="event",
        ),
        pytest.param("Lease", ["Name", "Holder", "Age"], [], id="lease"),
        pytest.param("CustomResourceDefinition", ["Name", "Created At"], [], id="crd"),
    ],
)
def test_column_priorities(kind: str, normal: list[str], wide: list[str]) -> None:
    """Priority-0 columns are the default view; priority-1 columns only show with -o wide."""
    columns = to_table(INFO[kind], [], now=NOW)["columnDefinitions"]
    assert [c["name"] for c in columns if c["priority"] == 0] == normal
    assert [c["name"] for c in columns if c["priority"] == 1] == wide
    assert all(set(c) == {"name", "type", "format", "description", "priority"} for c in columns)


def test_column_types() -> None:
    """Name is format name, Restarts is an integer, Age is a string."""
    columns = {c["name"]: c for c in to_table(INFO["Pod"], [], now=NOW)["columnDefinitions"]}
    assert (columns["Name"]["type"], columns["Name"]["format"]) == ("string", "name")
    assert columns["Restarts"]["type"] == "integer"
    assert (columns["Age"]["type"], columns["Age"]["format"]) == ("string", "")


@pytest.mark.parametrize(
    ("kind", "obj", "expected"),
    [
        pytest.param("Namespace", {"metadata": meta("ns1")}, ["ns1", "Active", "5m"], id="ns"),
        pytest.param(
            "Namespace",
            {"metadata": meta("ns1"), "status": {"phase": "Terminating"}},
            ["ns1", "Terminating", "5m"],
            id="ns-terminating",
        ),
        pytest.param(
            "ConfigMap",
            {"metadata": meta("cm"), "data": {"a": "1", "b": "2"}, "binaryData": {"c": "AA=="}},
            ["cm", 3, "5m"],
            id="configmap",
        ),
        pytest.param("ConfigMap", {"metadata": meta("cm")}, ["cm", 0, "5m"], id="configmap-empty"),
        pytest.param(
            "Secret",
            {
                "metadata": meta("s"),
                "type": "kubernetes.io/tls",
                "data": {"tls.crt": "", "tls.key": ""},
            },
            ["s", "kubernetes.io/tls", 2, "5m"],
            id="secret",
        ),
        pytest.param(
            "Lease",
            {"metadata": meta("l"), "spec": {"holderIdentity": "edge-1"}},
            ["l", "edge-1", "5m"],
            id="lease",
        ),
        pytest.param("Lease", {"metadata": meta("l")}, ["l", "", "5m"], id="lease-unheld"),
        pytest.param(
            "CustomResourceDefinition",
            {
                "metadata": {
                    "name": "widgets.example.com",
                    "creationTimestamp": "2024-01-02T03:04:05Z",
                }
            },
            ["widgets.example.com", "2024-01-02T03:04:05Z"],
            id="crd-created-at-rfc3339",
        ),
    ],
)
def test_simple_kind_cells(kind: str, obj: Obj, expected: list[Any]) -> None:
    """Namespaces, ConfigMaps, Secrets, Leases and CRDs print as kubectl shows them."""
    assert to_table(INFO[kind], [obj], now=NOW)["rows"][0]["cells"] == expected


def service(**spec: Any) -> Obj:
    return {"metadata": meta("svc"), "spec": {"clusterIP": "10.96.0.10", **spec}}


@pytest.mark.parametrize(
    ("obj", "expected"),
    [
        pytest.param(
            service(
                type="ClusterIP",
                ports=[{"port": 80, "protocol": "TCP"}, {"port": 443}],
                selector={"tier": "web", "app": "x"},
            ),
            ["svc", "ClusterIP", "10.96.0.10", "<none>", "80/TCP,443/TCP", "5m", "app=x,tier=web"],
            id="cluster-ip",
        ),
        pytest.param(
            service(type="NodePort", ports=[{"port": 80, "nodePort": 30080, "protocol": "UDP"}]),
            ["svc", "NodePort", "10.96.0.10", "<none>", "80:30080/UDP", "5m", "<none>"],
            id="node-port",
        ),
        pytest.param(
            service(type="LoadBalancer"),
            ["svc", "LoadBalancer", "10.96.0.10", "<pending>", "<none>", "5m", "<none>"],
            id="load-balancer-pending",
        ),
        pytest.param(
            service(clusterIP="None", externalIPs=["1.2.3.4"]),
            ["svc", "ClusterIP", "None", "1.2.3.4", "<none>", "5m", "<none>"],
            id="headless-default-type",
        ),
    ],
)
def test_service_cells(obj: Obj, expected: list[Any]) -> None:
    """TYPE, CLUSTER-IP, EXTERNAL-IP, PORT(S) and SELECTOR follow kubectl's formatting."""
    assert to_table(INFO["Service"], [obj], now=NOW)["rows"][0]["cells"] == expected


def test_event_cells() -> None:
    """LAST SEEN is an age, OBJECT is kind/name in lower case, MESSAGE is trimmed."""
    event = {
        "metadata": meta("p.17a"),
        "type": "Warning",
        "reason": "BackOff",
        "involvedObject": {"kind": "Pod", "name": "p", "fieldPath": "spec.containers{c}"},
        "message": " Back-off restarting failed container \n",
        "firstTimestamp": ago(hours=1),
        "lastTimestamp": ago(seconds=30),
        "count": 12,
        "source": {"component": "kubelet", "host": "edge-1"},
    }
    cells = row(INFO["Event"], event)
    assert cells == {
        "Last Seen": "30s",
        "Type": "Warning",
        "Reason": "BackOff",
        "Object": "pod/p",
        "Subobject": "spec.containers{c}",
        "Source": "kubelet, edge-1",
        "Message": "Back-off restarting failed container",
        "First Seen": "60m",
        "Count": 12,
        "Name": "p.17a",
    }


def test_event_last_seen_falls_back_to_event_time() -> None:
    """An events.k8s.io-style event with only eventTime still gets a LAST SEEN age."""
    event = {"metadata": meta("e"), "eventTime": "2024-06-01T11:59:50.123456Z"}
    assert row(INFO["Event"], event)["Last Seen"] == "9s"


# --- custom resources ------------------------------------------------------------------------


def cr_info(*columns: PrinterColumn) -> ResourceInfo:
    return ResourceInfo(
        "example.com", "v1", "Widget", "widgets", "widget", True, printer_columns=columns
    )


WIDGET = {
    "apiVersion": "example.com/v1",
    "kind": "Widget",
    "metadata": meta("w1", labels={"app.kubernetes.io/name": "demo"}),
    "spec": {
        "replicas": 3,
        "ratio": 1.5,
        "enabled": True,
        "ports": [{"port": 80, "name": "http"}, {"port": 443, "name": "https"}],
        "hosts": ["a.example", "b.example"],
    },
    "status": {"lastSync": ago(hours=3, minutes=5)},
}


@pytest.mark.parametrize(
    ("column", "expected"),
    [
        pytest.param(PrinterColumn("R", "integer", ".spec.replicas"), 3, id="integer"),
        pytest.param(PrinterColumn("R", "string", ".spec.replicas"), "3", id="int-as-string"),
        pytest.param(PrinterColumn("R", "number", ".spec.ratio"), 1.5, id="number"),
        pytest.param(PrinterColumn("R", "integer", ".spec.ratio"), 1, id="number-as-integer"),
        pytest.param(PrinterColumn("E", "boolean", ".spec.enabled"), True, id="boolean"),
        pytest.param(PrinterColumn("P", "integer", ".spec.ports[0].port"), 80, id="list-index"),
        pytest.param(PrinterColumn("P", "string", ".spec.ports[1].name"), "https", id="index-1"),
        pytest.param(PrinterColumn("P", "integer", ".spec.ports[-1].port"), 443, id="negative"),
        pytest.param(PrinterColumn("P", "integer", ".spec.ports[5].port"), None, id="out-of-range"),
        pytest.param(
            PrinterColumn("P", "string", ".spec.ports[*].name"), "http,https", id="wildcard-join"
        ),
        pytest.param(PrinterColumn("H", "string", ".spec.hosts[*]"), "a.example,b.example", id="w"),
        pytest.param(
            PrinterColumn("P", "integer", ".spec.ports[*].port"), "80,443", id="wildcard-non-string"
        ),
        pytest.param(PrinterColumn("M", "string", ".status.missing"), None, id="missing-field"),
        pytest.param(PrinterColumn("M", "string", ".spec.replicas.deeper"), None, id="into-int"),
        pytest.param(PrinterColumn("M", "integer", ".spec.hosts[0]"), None, id="wrong-type"),
        pytest.param(PrinterColumn("S", "date", ".status.lastSync"), "3h5m", id="date-as-age"),
        pytest.param(
            PrinterColumn("L", "string", ".metadata.labels['app.kubernetes.io/name']"),
            "demo",
            id="quoted-key",
        ),
        pytest.param(PrinterColumn("B", "string", "{.spec.replicas}"), "3", id="braces"),
        pytest.param(PrinterColumn("X", "string", ".spec[?(@.x)]"), None, id="unsupported-path"),
    ],
)
def test_crd_column_jsonpath(column: PrinterColumn, expected: Any) -> None:
    """additionalPrinterColumns are evaluated with JSONPath and typed; missing values are null."""
    assert row(cr_info(column), WIDGET)[column.name] == expected


def test_crd_columns_definitions_and_age() -> None:
    """Name comes first, printer columns keep type and priority, and Age is appended."""
    info = cr_info(
        PrinterColumn("Replicas", "integer", ".spec.replicas", description="How many"),
        PrinterColumn("Ports", "string", ".spec.ports[*].port", priority=1),
    )
    table = to_table(info, [WIDGET], now=NOW)
    assert [
        (c["name"], c["type"], c["priority"], c["description"]) for c in table["columnDefinitions"]
    ] == [
        ("Name", "string", 0, "Name must be unique within a namespace."),
        ("Replicas", "integer", 0, "How many"),
        (
            "Ports",
            "string",
            1,
            "Custom resource definition column (in JSONPath format): .spec.ports[*].port",
        ),
        ("Age", "string", 0, "CreationTimestamp is the time this object was created."),
    ]
    assert table["rows"][0]["cells"] == ["w1", 3, "80,443", "5m"]


def test_crd_own_age_column_not_duplicated() -> None:
    """A CRD that declares its own AGE column gets no second one."""
    info = cr_info(PrinterColumn("AGE", "date", ".metadata.creationTimestamp"))
    table = to_table(info, [WIDGET], now=NOW)
    assert [c["name"] for c in table["columnDefinitions"]] == ["Name", "AGE"]
    assert table["rows"][0]["cells"] == ["w1", "5m"]


def test_kind_without_printer_columns() -> None:
    """A custom kind with no printer columns prints NAME and AGE."""
    table = to_table(cr_info(), [WIDGET, {"metadata": {"name": "w2"}}], now=NOW)
    assert [c["name"] for c in table["columnDefinitions"]] == ["Name", "Age"]
    assert [r["cells"] for r in table["rows"]] == [["w1", "5m"], ["w2", "<unknown>"]]


def test_printer_columns_take_precedence_over_builtin_kind_name() -> None:
    """A CRD whose kind is named like a built-in still prints its own columns."""
    info = ResourceInfo(
        "example.com",
        "v1",
        "Pod",
        "pods",
        "pod",
        True,
        printer_columns=(PrinterColumn("Replicas", "integer", ".spec.replicas"),),
    )
    names = [c["name"] for c in to_table(info, [WIDGET], now=NOW)["columnDefinitions"]]
    assert names == ["Name", "Replicas", "Age"]


# --- ages ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("delta", "expected"),
    [
        pytest.param(timedelta(seconds=-5), "<invalid>", id="future"),
        pytest.param(timedelta(seconds=-1.5), "0s", id="small-skew"),
        pytest.param(timedelta(0), "0s", id="zero"),
        pytest.param(timedelta(seconds=5.9), "5s", id="seconds-truncate"),
        pytest.param(timedelta(seconds=119), "119s", id="under-2m"),
        pytest.param(timedelta(minutes=2), "2m", id="2m"),
        pytest.param(timedelta(minutes=3, seconds=12), "3m12s", id="3m12s"),
        pytest.param(timedelta(minutes=9, seconds=59), "9m59s", id="9m59s"),
        pytest.param(timedelta(minutes=10, seconds=30), "10m", id="10m"),
        pytest.param(timedelta(minutes=179), "179m", id="179m"),
        pytest.param(timedelta(hours=3), "3h", id="3h"),
        pytest.param(timedelta(hours=3, minutes=5), "3h5m", id="3h5m"),
        pytest.param(timedelta(hours=7, minutes=59), "7h59m", id="7h59m"),
        pytest.param(timedelta(hours=8, minutes=30), "8h", id="8h"),
        pytest.param(timedelta(hours=47), "47h", id="47h"),
        pytest.param(timedelta(hours=48), "2d", id="2d"),
        pytest.param(timedelta(days=2, hours=5), "2d5h", id="2d5h"),
        pytest.param(timedelta(days=7, hours=23), "7d23h", id="7d23h"),
        pytest.param(timedelta(days=8, hours=5), "8d", id="8d"),
        pytest.param(timedelta(days=729), "729d", id="729d"),
        pytest.param(timedelta(days=730), "2y", id="2y"),
        pytest.param(timedelta(days=731), "2y1d", id="2y1d"),
        pytest.param(timedelta(days=365 * 8 + 100), "8y", id="8y"),
    ],
)
def test_human_duration(delta: timedelta, expected: str) -> None:
    """Ages follow Kubernetes' duration.HumanDuration, including its clock-skew tolerance."""
    assert human_duration(delta) == expected


@pytest.mark.parametrize(
    ("created", "expected"),
    [
        pytest.param(ago(seconds=42), "42s", id="seconds"),
        pytest.param("2024-06-01T11:00:00+00:00", "60m", id="offset-form"),
        pytest.param(None, "<unknown>", id="absent"),
        pytest.param("not a time", "<unknown>", id="garbage"),
    ],
)
def test_age_cell(created: str | None, expected: str) -> None:
    """AGE is the human duration since creationTimestamp, or <unknown>."""
    obj = {"metadata": {"name": "cm", "creationTimestamp": created}}
    assert row(INFO["ConfigMap"], obj)["Age"] == expected


# --- the Table envelope ----------------------------------------------------------------------


def test_table_envelope_and_partial_metadata() -> None:
    """The Table carries list metadata and, by default, each row's PartialObjectMetadata."""
    obj = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta("cm"), "data": {"a": "b"}}
    table = to_table(INFO["ConfigMap"], [obj], now=NOW, list_meta={"resourceVersion": "42"})
    assert (table["kind"], table["apiVersion"], table["metadata"]) == (
        "Table",
        "meta.k8s.io/v1",
        {"resourceVersion": "42"},
    )
    assert table["rows"][0]["object"] == {
        "kind": "PartialObjectMetadata",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": obj["metadata"],
    }


@pytest.mark.parametrize(
    ("include", "expected"),
    [
        pytest.param("Object", {"kind": "ConfigMap", "apiVersion": "v1"}, id="object"),
        pytest.param("None", None, id="none"),
    ],
)
def test_include_object_modes(include: str, expected: Obj | None) -> None:
    """includeObject=Object embeds the full object (kind filled in); None omits it."""
    obj = {"metadata": meta("cm"), "data": {}}
    got = to_table(INFO["ConfigMap"], [obj], include_object=include, now=NOW)["rows"][0]
    if expected is None:
        assert "object" not in got
    else:
        assert got["object"] == {**expected, **obj}


def test_empty_list_has_columns_and_no_rows() -> None:
    """An empty list still returns the column definitions, so kubectl prints headers."""
    table = to_table(INFO["Pod"], [], now=NOW)
    assert (len(table["columnDefinitions"]), table["rows"], table["metadata"]) == (9, [], {})


KUBECTL_ACCEPT = (
    "application/json;as=Table;v=v1;g=meta.k8s.io,"
    "application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json"
)


@pytest.mark.parametrize(
    ("accept", "expected"),
    [
        pytest.param(KUBECTL_ACCEPT, True, id="kubectl-get"),
        pytest.param("application/json;as=Table;g=meta.k8s.io;v=v1", True, id="param-order"),
        pytest.param("application/json; as=Table; v=v1; g=meta.k8s.io", True, id="spaces"),
        pytest.param(
            "application/json, application/json;as=Table;v=v1;g=meta.k8s.io", True, id="second"
        ),
        pytest.param("application/json", False, id="plain-json"),
        pytest.param("", False, id="empty"),
        pytest.param("*/*", False, id="anything"),
        pytest.param("application/json;as=Table;v=v1beta1;g=meta.k8s.io", False, id="v1beta1-only"),
        pytest.param("application/json;as=Table;v=v1", False, id="no-group"),
        pytest.param(
            "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json",
            False,
            id="aggregated-discovery",
        ),
        pytest.param(
            "application/vnd.kubernetes.protobuf;as=Table;v=v1;g=meta.k8s.io", False, id="protobuf"
        ),
        pytest.param("application/json;as=Table;v=v1;g=meta.k8s.io;q=0", False, id="q-zero"),
    ],
)
def test_wants_table(accept: str, expected: bool) -> None:
    """A JSON Table is wanted when any Accept option asks for as=Table;g=meta.k8s.io;v=v1."""
    assert wants_table(accept) is expected


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        pytest.param({}, "Metadata", id="default"),
        pytest.param({"includeObject": ""}, "Metadata", id="empty"),
        pytest.param({"includeObject": "None"}, "None", id="none"),
        pytest.param({"includeObject": "Object"}, "Object", id="object"),
        pytest.param({"includeObject": ["Metadata"]}, "Metadata", id="parse-qs-list"),
    ],
)
def test_include_object_param(query: dict[str, Any], expected: str) -> None:
    """includeObject accepts None, Metadata and Object, defaulting to Metadata."""
    assert include_object_param(query) == expected


def test_include_object_param_rejects_unknown() -> None:
    """An unknown includeObject value is a 400 BadRequest."""
    with pytest.raises(APIError) as info:
        include_object_param({"includeObject": "Everything"})
    assert (info.value.code, info.value.reason) == (400, "BadRequest")
