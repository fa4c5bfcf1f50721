"""Server-side `meta.k8s.io/v1` Table output, the form `kubectl get` asks for.

kubectl sends `Accept: application/json;as=Table;v=v1;g=meta.k8s.io` and prints whatever
columns the server returns; a plain list gets only NAME and AGE. So the familiar columns (a
pod's READY, STATUS and RESTARTS, a node's ROLES, a CRD's additionalPrinterColumns) are computed
here, following Kubernetes' printers (pkg/printers/internalversion) and the apiextensions table
convertor. Every column is always sent; priority-1 columns are the ones kubectl shows only with
`-o wide`.

What this does not do: protobuf, `v1beta1` Tables, or the `noHeaders` option; objects are
printed from their stored JSON with no typed model behind them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from cloud.apiserver.errors import bad_request
from cloud.apiserver.resources import PrinterColumn, ResourceInfo

__all__ = ["human_duration", "include_object_param", "to_table", "wants_table"]

Obj = dict[str, Any]
Column = dict[str, Any]
CellsFn = Callable[[Obj, datetime], list[Any]]

NONE = "<none>"
UNKNOWN = "<unknown>"
INCLUDE_OBJECT_VALUES = ("Metadata", "None", "Object")

# --- content negotiation -----------------------------------------------------------------------


def wants_table(accept: str) -> bool:
    """True when any option of an Accept header asks for a `meta.k8s.io/v1` Table."""
    for option in (accept or "").split(","):
        media_type, *params = (p.strip() for p in option.split(";"))
        pairs = dict(p.partition("=")[::2] for p in params if "=" in p)
        values = {k.strip().lower(): v.strip().strip('"') for k, v in pairs.items()}
        if (
            media_type.lower() == "application/json"
            and values.get("as") == "Table"
            and values.get("g") == "meta.k8s.io"
            and values.get("v") == "v1"
            and not _refused(values.get("q", "1"))
        ):
            return True
    return False


def _refused(quality: str) -> bool:
    """An Accept option with q=0 means "not acceptable"."""
    try:
        return float(quality) == 0
    except ValueError:
        return False


def include_object_param(query: dict[str, Any]) -> str:
    """The `includeObject` query parameter: None, Metadata (the default) or Object."""
    raw = query.get("includeObject")
    value = (raw[0] if raw else "") if isinstance(raw, list | tuple) else (raw or "")
    if value == "":
        return "Metadata"
    if value not in INCLUDE_OBJECT_VALUES:
        raise bad_request(
            f'includeObject: Unsupported value: "{value}": supported values: '
            '"Metadata", "None", "Object"'
        )
    return str(value)


# --- time --------------------------------------------------------------------------------------


def human_duration(delta: timedelta) -> str:
    """Kubernetes' duration.HumanDuration: ~2-3 significant figures, e.g. 5s, 3m12s, 4h5m, 9d."""
    seconds = int(delta.total_seconds())  # truncates toward zero, as Go's int() does
    if seconds < -1:
        return "<invalid>"  # more than the tolerated clock skew into the future
    if seconds < 0:
        return "0s"
    if seconds < 120:
        return f"{seconds}s"
    minutes, hours = seconds // 60, seconds // 3600
    if minutes < 10:
        return _two_units(minutes, "m", seconds % 60, "s")
    if minutes < 180:
        return f"{minutes}m"
    if hours < 8:
        return _two_units(hours, "h", minutes % 60, "m")
    if hours < 48:
        return f"{hours}h"
    days = hours // 24
    if hours < 24 * 8:
        return _two_units(days, "d", hours % 24, "h")
    if hours < 24 * 365 * 2:
        return f"{days}d"
    if hours < 24 * 365 * 8:
        return _two_units(days // 365, "y", days % 365, "d")
    return f"{days // 365}y"


def _two_units(major: int, major_unit: str, minor: int, minor_unit: str) -> str:
    return f"{major}{major_unit}{minor}{minor_unit}" if minor else f"{major}{major_unit}"


def _parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _since(value: Any, now: datetime) -> str:
    parsed = _parse_time(value)
    return human_duration(now - parsed) if parsed else UNKNOWN


def _age(obj: Obj, now: datetime) -> str:
    return _since(_meta(obj).get("creationTimestamp"), now)


# --- small accessors ---------------------------------------------------------------------------


def _meta(obj: Obj) -> Obj:
    return obj.get("metadata") or {}


def _name(obj: Obj) -> str:
    return str(_meta(obj).get("name", ""))


def _get(obj: Any, *path: str) -> Any:
    for key in path:
        if not isinstance(obj, dict):
            return None
        obj = obj.get(key)
    return obj


def _list(obj: Any, *path: str) -> list[Any]:
    value = _get(obj, *path)
    return value if isinstance(value, list) else []


def _col(
    name: str, description: str, *, type_: str = "string", priority: int = 0, fmt: str = ""
) -> Column:
    return {
        "name": name,
        "type": type_,
        "format": fmt,
        "description": description,
        "priority": priority,
    }


NAME_COL = _col("Name", "Name must be unique within a namespace.", fmt="name")
AGE_COL = _col("Age", "CreationTimestamp is the time this object was created.")


@dataclass(frozen=True)
class _Printer:
    columns: tuple[Column, ...]
    cells: CellsFn


# --- pods --------------------------------------------------------------------------------------


@dataclass
class _PodSummary:
    reason: str
    ready: int = 0
    restarts: int = 0


def _terminated_reason(terminated: Obj, prefix: str = "") -> str:
    if terminated.get("reason"):
        return prefix + str(terminated["reason"])
    if terminated.get("signal"):
        return f"{prefix}Signal:{terminated['signal']}"
    return f"{prefix}ExitCode:{terminated.get('exitCode', 0)}"


def _init_containers(pod: Obj, summary: _PodSummary, sidecars: set[str]) -> tuple[bool, int]:
    """Walk init container statuses; returns (still initializing, sidecar restarts)."""
    sidecar_restarts = 0
    statuses = _list(pod, "status", "initContainerStatuses")
    for i, cs in enumerate(statuses):
        summary.restarts += int(cs.get("restartCount") or 0)
        is_sidecar = cs.get("name") in sidecars
        if is_sidecar:
            sidecar_restarts += int(cs.get("restartCount") or 0)
        state = cs.get("state") or {}
        terminated, waiting = state.get("terminated"), state.get("waiting")
        if terminated is not None and not terminated.get("exitCode"):
            continue
        if is_sidecar and cs.get("started"):
            summary.ready += 1 if cs.get("ready") else 0
            continue
        if terminated is not None:
            summary.reason = _terminated_reason(terminated, "Init:")
        elif waiting and waiting.get("reason") and waiting["reason"] != "PodInitializing":
            summary.reason = f"Init:{waiting['reason']}"
        else:
            summary.reason = f"Init:{i}/{len(_list(pod, 'spec', 'initContainers'))}"
        return True, sidecar_restarts
    return False, sidecar_restarts


def _has_condition(pod: Obj, kind: str) -> bool:
    return any(
        c.get("type") == kind and c.get("status") == "True"
        for c in _list(pod, "status", "conditions")
    )


def _app_containers(pod: Obj, summary: _PodSummary) -> None:
    has_running = False
    for cs in reversed(_list(pod, "status", "containerStatuses")):
        summary.restarts += int(cs.get("restartCount") or 0)
        state = cs.get("state") or {}
        waiting, terminated = state.get("waiting") or {}, state.get("terminated")
        if waiting.get("reason"):
            summary.reason = str(waiting["reason"])
        elif terminated is not None:
            summary.reason = _terminated_reason(terminated)
        elif cs.get("ready") and "running" in state:
            has_running = True
            summary.ready += 1
    if summary.reason == "Completed" and has_running:
        summary.reason = "Running" if _has_condition(pod, "Ready") else "NotReady"


def _pod_summary(pod: Obj) -> _PodSummary:
    """READY, STATUS and RESTARTS as kubectl computes them (printPod)."""
    status = pod.get("status") or {}
    phase = str(status.get("phase") or "Pending")
    summary = _PodSummary(reason=str(status.get("reason") or phase))
    for cond in _list(status, "conditions"):
        if cond.get("type") == "PodScheduled" and cond.get("reason") == "SchedulingGated":
            summary.reason = "SchedulingGated"
    sidecars = {
        c.get("name")
        for c in _list(pod, "spec", "initContainers")
        if c.get("restartPolicy") == "Always"
    }
    initializing, sidecar_restarts = _init_containers(pod, summary, sidecars)
    if not initializing or _has_condition(pod, "Initialized"):
        summary.restarts = sidecar_restarts
        _app_containers(pod, summary)
    if _meta(pod).get("deletionTimestamp"):
        if status.get("reason") == "NodeLost":
            summary.reason = "Unknown"
        elif phase not in ("Succeeded", "Failed"):
            summary.reason = "Terminating"
    return summary


def _readiness_gates(pod: Obj) -> str:
    gates = _list(pod, "spec", "readinessGates")
    if not gates:
        return NONE
    statuses = {c.get("type"): c.get("status") for c in _list(pod, "status", "conditions")}
    ready = sum(1 for g in gates if statuses.get(g.get("conditionType")) == "True")
    return f"{ready}/{len(gates)}"


def _pod_cells(pod: Obj, now: datetime) -> list[Any]:
    summary = _pod_summary(pod)
    inits = _list(pod, "spec", "initContainers")
    sidecars = sum(1 for c in inits if c.get("restartPolicy") == "Always")
    total = len(_list(pod, "spec", "containers")) + sidecars
    pod_ips = _list(pod, "status", "podIPs")
    ip = (pod_ips[0].get("ip") if pod_ips else None) or _get(pod, "status", "podIP")
    return [
        _name(pod),
        f"{summary.ready}/{total}",
        summary.reason,
        summary.restarts,
        _age(pod, now),
        ip or NONE,
        _get(pod, "spec", "nodeName") or NONE,
        _get(pod, "status", "nominatedNodeName") or NONE,
        _readiness_gates(pod),
    ]


def _pod_conditions(pod: Obj) -> list[Obj]:
    """Row conditions Kubernetes sets on finished pods."""
    phase = _get(pod, "status", "phase")
    if phase == "Succeeded":
        message = "The pod has completed successfully."
    elif phase == "Failed":
        message = "The pod failed."
    else:
        return []
    return [{"type": "Completed", "status": "True", "reason": phase, "message": message}]


POD = _Printer(
    (
        NAME_COL,
        _col("Ready", "The aggregate readiness state of this pod for accepting traffic."),
        _col("Status", "The aggregate status of the containers in this pod."),
        _col(
            "Restarts",
            "The number of times the containers in this pod have been restarted.",
            type_="integer",
        ),
        AGE_COL,
        _col("IP", "IP address allocated to the pod.", priority=1),
        _col("Node", "NodeName the pod is scheduled onto.", priority=1),
        _col("Nominated Node", "The node the scheduler nominated for this pod.", priority=1),
        _col("Readiness Gates", "The readiness gates of this pod.", priority=1),
    ),
    _pod_cells,
)

# --- nodes -------------------------------------------------------------------------------------


def _node_status(node: Obj) -> str:
    ready = [c for c in _list(node, "status", "conditions") if c.get("type") == "Ready"]
    parts = (
        ["Unknown"] if not ready else ["Ready" if ready[0].get("status") == "True" else "NotReady"]
    )
    if _get(node, "spec", "unschedulable"):
        parts.append("SchedulingDisabled")
    return ",".join(parts)


def _node_roles(node: Obj) -> str:
    roles = set()
    for key, value in (_meta(node).get("labels") or {}).items():
        if key.startswith("node-role.kubernetes.io/") and key != "node-role.kubernetes.io/":
            roles.add(key.removeprefix("node-role.kubernetes.io/"))
        elif key == "kubernetes.io/role" and value:
            roles.add(value)
    return ",".join(sorted(roles)) or NONE


def _node_address(node: Obj, kind: str) -> str:
    for address in _list(node, "status", "addresses"):
        if address.get("type") == kind and address.get("address"):
            return str(address["address"])
    return NONE


def _node_cells(node: Obj, now: datetime) -> list[Any]:
    info = _get(node, "status", "nodeInfo") or {}
    return [
        _name(node),
        _node_status(node),
        _node_roles(node),
        _age(node, now),
        info.get("kubeletVersion", ""),
        _node_address(node, "InternalIP"),
        _node_address(node, "ExternalIP"),
        info.get("osImage") or UNKNOWN,
        info.get("kernelVersion") or UNKNOWN,
        info.get("containerRuntimeVersion") or UNKNOWN,
    ]


NODE = _Printer(
    (
        NAME_COL,
        _col("Status", "The status of the node"),
        _col("Roles", "The roles of the node"),
        AGE_COL,
        _col("Version", "Kubelet Version reported by the node."),
        _col("Internal-IP", "The node's InternalIP address.", priority=1),
        _col("External-IP", "The node's ExternalIP address.", priority=1),
        _col("OS-Image", "OS Image reported by the node.", priority=1),
        _col("Kernel-Version", "Kernel Version reported by the node.", priority=1),
        _col("Container-Runtime", "ContainerRuntime Version reported by the node.", priority=1),
    ),
    _node_cells,
)

# --- services ----------------------------------------------------------------------------------


def _service_ports(svc: Obj) -> str:
    pieces = []
    for port in _list(svc, "spec", "ports"):
        protocol = port.get("protocol") or "TCP"
        node_port = port.get("nodePort")
        middle = f":{node_port}" if node_port else ""
        pieces.append(f"{port.get('port')}{middle}/{protocol}")
    return ",".join(pieces) or NONE


def _service_external_ip(svc: Obj) -> str:
    spec = svc.get("spec") or {}
    kind = spec.get("type") or "ClusterIP"
    external = [str(ip) for ip in spec.get("externalIPs") or []]
    if kind in ("ClusterIP", "NodePort"):
        return ",".join(external) or NONE
    if kind == "LoadBalancer":
        ingress = _list(svc, "status", "loadBalancer", "ingress")
        lb = [
            str(i.get("ip") or i.get("hostname"))
            for i in ingress
            if i.get("ip") or i.get("hostname")
        ]
        return ",".join(lb + external) or "<pending>"
    if kind == "ExternalName":
        return str(spec.get("externalName", ""))
    return UNKNOWN


def _service_cells(svc: Obj, now: datetime) -> list[Any]:
    spec = svc.get("spec") or {}
    cluster_ips = spec.get("clusterIPs") or [spec.get("clusterIP")]
    selector = spec.get("selector") or {}
    return [
        _name(svc),
        spec.get("type") or "ClusterIP",
        cluster_ips[0] or NONE,
        _service_external_ip(svc),
        _service_ports(svc),
        _age(svc, now),
        ",".join(f"{k}={v}" for k, v in sorted(selector.items())) or NONE,
    ]


SERVICE = _Printer(
    (
        NAME_COL,
        _col("Type", "Type determines how the Service is exposed."),
        _col("Cluster-IP", "ClusterIP is the IP address of the service."),
        _col("External-IP", "The external IP addresses of the service."),
        _col("Port(s)", "The list of ports that are exposed by this service."),
        AGE_COL,
        _col("Selector", "Route service traffic to pods with these labels.", priority=1),
    ),
    _service_cells,
)

# --- events ------------------------------------------------------------------------------------


def _event_cells(event: Obj, now: datetime) -> list[Any]:
    first = event.get("firstTimestamp") or event.get("eventTime")
    last = event.get("lastTimestamp") or first
    count = event.get("count") or 1
    series = event.get("series")
    if isinstance(series, dict):
        last, count = series.get("lastObservedTime"), series.get("count") or count
    involved = event.get("involvedObject") or {}
    kind = str(involved.get("kind", "")).lower()
    target = f"{kind}/{involved['name']}" if involved.get("name") else kind
    source = event.get("source") or {}
    component = source.get("component") or event.get("reportingComponent") or ""
    host = source.get("host") or event.get("reportingInstance") or ""
    return [
        _since(last, now),
        event.get("type", ""),
        event.get("reason", ""),
        target,
        involved.get("fieldPath", ""),
        f"{component}, {host}" if host else component,
        str(event.get("message", "")).strip(),
        _since(first, now),
        int(count),
        _name(event),
    ]


EVENT = _Printer(
    (
        _col(
            "Last Seen", "The time at which the most recent occurrence of this event was recorded."
        ),
        _col("Type", "Type of this event (Normal, Warning)."),
        _col("Reason", "Short, machine understandable reason for the event."),
        _col("Object", "The object that this event is about."),
        _col("Subobject", "The field of the object this event is about.", priority=1),
        _col("Source", "The component reporting this event.", priority=1),
        _col("Message", "A human-readable description of the event."),
        _col("First Seen", "The time at which the event was first recorded.", priority=1),
        _col("Count", "The number of times this event has occurred.", priority=1, type_="integer"),
        _col("Name", "Name must be unique within a namespace.", priority=1, fmt="name"),
    ),
    _event_cells,
)

# --- the simple kinds --------------------------------------------------------------------------


def _data_count(obj: Obj, *fields: str) -> int:
    keys: set[str] = set()
    for field in fields:
        keys.update(obj.get(field) or {})
    return len(keys)


def _created_at(obj: Obj, _now: datetime) -> list[Any]:
    created = _parse_time(_meta(obj).get("creationTimestamp"))
    stamp = created.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if created else None
    return [_name(obj), stamp or "0001-01-01T00:00:00Z"]


NAMESPACE = _Printer(
    (NAME_COL, _col("Status", "The status of the namespace"), AGE_COL),
    lambda o, now: [_name(o), _get(o, "status", "phase") or "Active", _age(o, now)],
)
CONFIGMAP = _Printer(
    (NAME_COL, _col("Data", "The number of data entries.", type_="integer"), AGE_COL),
    lambda o, now: [_name(o), _data_count(o, "data", "binaryData"), _age(o, now)],
)
SECRET = _Printer(
    (
        NAME_COL,
        _col("Type", "Used to facilitate programmatic handling of secret data."),
        _col("Data", "The number of data entries.", type_="integer"),
        AGE_COL,
    ),
    lambda o, now: [
        _name(o),
        o.get("type") or "Opaque",
        _data_count(o, "data", "stringData"),
        _age(o, now),
    ],
)
LEASE = _Printer(
    (NAME_COL, _col("Holder", "The holder of the lease."), AGE_COL),
    lambda o, now: [_name(o), _get(o, "spec", "holderIdentity") or "", _age(o, now)],
)
CRD = _Printer(
    (NAME_COL, _col("Created At", "The time the object was created.", type_="date")),
    _created_at,
)

BUILTIN_PRINTERS: dict[tuple[str, str], _Printer] = {
    ("", "Pod"): POD,
    ("", "Node"): NODE,
    ("", "Namespace"): NAMESPACE,
    ("", "ConfigMap"): CONFIGMAP,
    ("", "Secret"): SECRET,
    ("", "Service"): SERVICE,
    ("", "Event"): EVENT,
    ("coordination.k8s.io", "Lease"): LEASE,
    ("apiextensions.k8s.io", "CustomResourceDefinition"): CRD,
}

# --- custom resources: additionalPrinterColumns ------------------------------------------------

_STEP = re.compile(r"\.([^.\[\]]+)|\[\s*(\*|-?\d+|'[^']*'|\"[^\"]*\")\s*\]")


def compile_json_path(expr: str) -> list[str | int | None]:
    """Steps of a simple JSONPath: a key (str), a list index (int) or a wildcard (None).

    Supports `.a.b`, `.a[0].b`, `.a[-1]`, `.a[*].b` and `['key.with.dots']`, with or without
    the surrounding `{}`; raises ValueError for anything else (filters, slices, recursion).
    """
    text = expr.strip()
    if text.startswith("{") and text.endswith("}"):
        text = text[1:-1].strip()
    text = text.removeprefix("$")
    steps: list[str | int | None] = []
    pos = 0
    while pos < len(text):
        match = _STEP.match(text, pos)
        if not match:
            raise ValueError(f"unsupported JSONPath {expr!r} at {text[pos:]!r}")
        key, bracket = match.groups()
        if key is not None:
            steps.append(key)
        elif bracket == "*":
            steps.append(None)
        elif bracket[0] in "'\"":
            steps.append(bracket[1:-1])
        else:
            steps.append(int(bracket))
        pos = match.end()
    return steps


def find_json_path(obj: Any, steps: list[str | int | None]) -> list[Any]:
    """Every value the steps reach; missing keys and out-of-range indexes yield nothing."""
    values = [obj]
    for step in steps:
        found: list[Any] = []
        for value in values:
            if step is None:
                items = value if isinstance(value, list) else []
                found.extend(value.values() if isinstance(value, dict) else items)
            elif isinstance(step, int):
                if isinstance(value, list) and -len(value) <= step < len(value):
                    found.append(value[step])
            elif isinstance(value, dict) and step in value:
                found.append(value[step])
        values = found
    return [v for v in values if v is not None]


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, dict | list):
        return json.dumps(value, separators=(",", ":"))
    return str(value)


def _typed_cell(column_type: str, value: Any, now: datetime) -> Any:
    """One JSON value as a cell of the column's type; None (shown as <none>) when it is not."""
    is_number = isinstance(value, int | float) and not isinstance(value, bool)
    if column_type == "integer" and is_number:
        return int(value)
    if column_type == "number" and is_number:
        return float(value)
    if column_type == "boolean" and isinstance(value, bool):
        return value
    if column_type == "date" and isinstance(value, str):
        if not value:
            return UNKNOWN
        parsed = _parse_time(value)
        return human_duration(now - parsed) if parsed else "<invalid>"
    return None


def _custom_cell(
    column: PrinterColumn, steps: list[str | int | None] | None, obj: Obj, now: datetime
) -> Any:
    results = find_json_path(obj, steps) if steps is not None else []
    if not results:
        return None
    if column.type == "string" or len(results) > 1:
        return ",".join(_text(v) for v in results)
    return _typed_cell(column.type, results[0], now)


def _compile_or_none(expr: str) -> list[str | int | None] | None:
    try:
        return compile_json_path(expr)
    except ValueError:
        return None  # an unusable column prints <none>, as Kubernetes prints it


def _custom_printer(columns: tuple[PrinterColumn, ...]) -> _Printer:
    compiled = [(c, _compile_or_none(c.json_path)) for c in columns]
    definitions = [NAME_COL]
    for c in columns:
        description = c.description or (
            f"Custom resource definition column (in JSONPath format): {c.json_path}"
        )
        definitions.append(
            _col(c.name, description, type_=c.type, priority=c.priority, fmt=c.format)
        )
    with_age = not any(c.name.lower() == "age" for c in columns)
    if with_age:
        definitions.append(AGE_COL)

    def cells(obj: Obj, now: datetime) -> list[Any]:
        row = [_name(obj)] + [_custom_cell(c, steps, obj, now) for c, steps in compiled]
        return [*row, _age(obj, now)] if with_age else row

    return _Printer(tuple(definitions), cells)


def _printer_for(info: ResourceInfo) -> _Printer:
    if info.printer_columns:
        return _custom_printer(info.printer_columns)
    return BUILTIN_PRINTERS.get((info.group, info.kind)) or _custom_printer(())


# --- the table ---------------------------------------------------------------------------------


def _row_object(info: ResourceInfo, obj: Obj, include_object: str) -> Obj | None:
    if include_object == "None":
        return None
    if include_object == "Object":
        return {"kind": info.kind, "apiVersion": info.api_version, **obj}
    return {
        "kind": "PartialObjectMetadata",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": _meta(obj),
    }


def to_table(
    info: ResourceInfo,
    objects: list[Obj],
    *,
    include_object: str = "Metadata",
    now: datetime | None = None,
    list_meta: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A `meta.k8s.io/v1` Table of `objects`, with every column (wide ones at priority 1)."""
    now = now or datetime.now(UTC)
    printer = _printer_for(info)
    rows = []
    for obj in objects:
        row: dict[str, Any] = {"cells": printer.cells(obj, now)}
        if info.kind == "Pod" and not info.group and (conditions := _pod_conditions(obj)):
            row["conditions"] = conditions
        if (row_object := _row_object(info, obj, include_object)) is not None:
            row["object"] = row_object
        rows.append(row)
    return {
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": list_meta or {},
        "columnDefinitions": [dict(c) for c in printer.columns],
        "rows": rows,
    }
