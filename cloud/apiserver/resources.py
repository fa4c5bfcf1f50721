"""The kinds the embedded API server serves: names, scope, subresources, printer columns.

A ResourceInfo is everything the server needs to route, store, list and print one resource;
built-in kinds are declared here, CustomResourceDefinitions add theirs at run time
(`from_crd`). Merge keys for strategic merge patch live with each kind, by field path.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class PrinterColumn:
    """One column of `kubectl get` output (a CRD's additionalPrinterColumns shape)."""

    name: str
    type: str
    json_path: str
    description: str = ""
    priority: int = 0  # 0: always shown; 1: only with -o wide
    format: str = ""


@dataclass(frozen=True)
class ResourceInfo:
    group: str  # "" for the core group
    version: str
    kind: str
    plural: str
    singular: str
    namespaced: bool
    short_names: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    subresources: tuple[str, ...] = ()  # "status", "log"
    # Strategic merge patch: dotted field path (list items are transparent) -> merge key.
    # A path listed with "" is a list of primitives merged as a set (e.g. finalizers).
    merge_keys: dict[str, str] = field(default_factory=dict)
    # CRDs only: additionalPrinterColumns; built-in kinds are printed by tables.py.
    printer_columns: tuple[PrinterColumn, ...] = ()
    # CRDs only: the openAPIV3Schema of the served version, when given.
    schema: dict[str, Any] | None = None
    crd_name: str = ""  # CRDs only: "<plural>.<group>"

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def group_version(self) -> str:
        return self.api_version

    @property
    def list_kind(self) -> str:
        return f"{self.kind}List"

    @property
    def verbs(self) -> list[str]:
        return ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]


OBJECT_META_KEYS = {"metadata.finalizers": "", "metadata.ownerReferences": "uid"}

POD_KEYS = {
    **OBJECT_META_KEYS,
    "spec.containers": "name",
    "spec.initContainers": "name",
    "spec.containers.env": "name",
    "spec.initContainers.env": "name",
    "spec.containers.ports": "containerPort",
    "spec.initContainers.ports": "containerPort",
    "spec.containers.volumeMounts": "mountPath",
    "spec.initContainers.volumeMounts": "mountPath",
    "spec.containers.volumeDevices": "devicePath",
    "spec.volumes": "name",
    "spec.imagePullSecrets": "name",
    "spec.hostAliases": "ip",
    "status.conditions": "type",
}

BUILTIN: tuple[ResourceInfo, ...] = (
    ResourceInfo(
        "",
        "v1",
        "Namespace",
        "namespaces",
        "namespace",
        False,
        ("ns",),
        subresources=("status",),
        merge_keys=dict(OBJECT_META_KEYS),
    ),
    ResourceInfo(
        "",
        "v1",
        "Node",
        "nodes",
        "node",
        False,
        ("no",),
        subresources=("status",),
        merge_keys={
            **OBJECT_META_KEYS,
            "status.conditions": "type",
            "status.addresses": "type",
            "spec.taints": "key",
        },
    ),
    ResourceInfo(
        "",
        "v1",
        "Pod",
        "pods",
        "pod",
        True,
        ("po",),
        ("all",),
        subresources=("status", "log"),
        merge_keys=POD_KEYS,
    ),
    ResourceInfo(
        "",
        "v1",
        "ConfigMap",
        "configmaps",
        "configmap",
        True,
        ("cm",),
        merge_keys=dict(OBJECT_META_KEYS),
    ),
    ResourceInfo(
        "", "v1", "Secret", "secrets", "secret", True, (), merge_keys=dict(OBJECT_META_KEYS)
    ),
    ResourceInfo(
        "", "v1", "Event", "events", "event", True, ("ev",), merge_keys=dict(OBJECT_META_KEYS)
    ),
    ResourceInfo(
        "",
        "v1",
        "Service",
        "services",
        "service",
        True,
        ("svc",),
        ("all",),
        subresources=("status",),
        merge_keys={**OBJECT_META_KEYS, "spec.ports": "port"},
    ),
    ResourceInfo(
        "coordination.k8s.io",
        "v1",
        "Lease",
        "leases",
        "lease",
        True,
        merge_keys=dict(OBJECT_META_KEYS),
    ),
    ResourceInfo(
        "apiextensions.k8s.io",
        "v1",
        "CustomResourceDefinition",
        "customresourcedefinitions",
        "customresourcedefinition",
        False,
        ("crd", "crds"),
        subresources=("status",),
        merge_keys=dict(OBJECT_META_KEYS),
    ),
)


def from_crd(crd: dict[str, Any]) -> list[ResourceInfo]:
    """One ResourceInfo per served version of a CustomResourceDefinition object."""
    spec = crd["spec"]
    names = spec["names"]
    out = []
    for ver in spec.get("versions", []):
        if not ver.get("served", True):
            continue
        columns = tuple(
            PrinterColumn(
                name=c["name"],
                type=c.get("type", "string"),
                json_path=c["jsonPath"],
                description=c.get("description", ""),
                priority=int(c.get("priority", 0)),
                format=c.get("format", ""),
            )
            for c in ver.get("additionalPrinterColumns", [])
        )
        subresources = tuple(k for k in ("status", "scale") if k in ver.get("subresources", {}))
        out.append(
            ResourceInfo(
                group=spec["group"],
                version=ver["name"],
                kind=names["kind"],
                plural=names["plural"],
                singular=names.get("singular", names["kind"].lower()),
                namespaced=spec.get("scope", "Namespaced") == "Namespaced",
                short_names=tuple(names.get("shortNames", [])),
                categories=tuple(names.get("categories", [])),
                subresources=subresources,
                merge_keys=dict(OBJECT_META_KEYS),
                printer_columns=columns,
                schema=(ver.get("schema") or {}).get("openAPIV3Schema"),
                crd_name=crd["metadata"]["name"],
            )
        )
    return out
