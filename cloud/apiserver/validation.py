"""Request body decoding and `fieldValidation` (Strict / Warn / Ignore).

Decoding accepts JSON or YAML and notes duplicate keys. Unknown fields are found from a CRD's
openAPIV3Schema (honouring x-kubernetes-preserve-unknown-fields) or, for built-in kinds, from
the top-level fields each kind has and ObjectMeta's fields. Strict turns findings into a 400,
Warn into `Warning` headers, Ignore drops unknown fields silently.
"""

from __future__ import annotations

import json
from typing import Any

import yaml

from cloud.apiserver.errors import APIError, bad_request
from cloud.apiserver.resources import ResourceInfo

META_FIELDS = {
    "name",
    "generateName",
    "namespace",
    "selfLink",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "labels",
    "annotations",
    "ownerReferences",
    "finalizers",
    "managedFields",
}
COMMON = {"apiVersion", "kind", "metadata"}
BUILTIN_FIELDS: dict[str, set[str]] = {
    "Pod": {"spec", "status"},
    "Node": {"spec", "status"},
    "Namespace": {"spec", "status"},
    "Service": {"spec", "status"},
    "Lease": {"spec"},
    "CustomResourceDefinition": {"spec", "status"},
    "ConfigMap": {"data", "binaryData", "immutable"},
    "Secret": {"data", "stringData", "type", "immutable"},
    "Event": {
        "involvedObject",
        "reason",
        "message",
        "source",
        "firstTimestamp",
        "lastTimestamp",
        "count",
        "type",
        "eventTime",
        "series",
        "action",
        "related",
        "reportingComponent",
        "reportingInstance",
    },
}
MODES = ("Strict", "Warn", "Ignore")


def decode(body: bytes, content_type: str) -> tuple[Any, list[str]]:
    """Parse a JSON or YAML body; returns the value and any duplicate-field findings."""
    duplicates: list[str] = []

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in items:
            if key in out:
                duplicates.append(f'duplicate field "{key}"')
            out[key] = value
        return out

    if "protobuf" in content_type:
        raise APIError(
            415,
            "UnsupportedMediaType",
            f"the body of the request was in an unknown format - accepted media types include: "
            f"application/json, application/yaml (got {content_type!r})",
        )
    if not body.strip():
        raise bad_request("the request body is empty")
    if "yaml" in content_type:
        try:
            return yaml.safe_load(body), duplicates
        except yaml.YAMLError as exc:
            raise bad_request(f"the body is not valid YAML: {exc}") from exc
    try:
        return json.loads(body, object_pairs_hook=pairs), duplicates
    except (ValueError, UnicodeDecodeError) as exc:
        if content_type.startswith("application/json") or "patch" in content_type:
            raise bad_request(f"the body is not valid JSON: {exc}") from exc
        try:  # kubectl and curl users sometimes send YAML without saying so
            return yaml.safe_load(body), duplicates
        except yaml.YAMLError:
            raise bad_request(f"the body is not valid JSON: {exc}") from exc


def unknown_fields(info: ResourceInfo, obj: dict[str, Any]) -> list[str]:
    """Dotted paths of fields the kind does not have."""
    found = [f"metadata.{k}" for k in obj.get("metadata") or {} if k not in META_FIELDS]
    if info.schema is not None:
        props = dict(info.schema.get("properties", {}))
        for key, value in obj.items():
            if key in COMMON:
                continue
            if key not in props:
                if not info.schema.get("x-kubernetes-preserve-unknown-fields"):
                    found.append(key)
                continue
            found += _walk(props[key], value, key)
        return found
    allowed = COMMON | BUILTIN_FIELDS.get(info.kind, set())
    if info.crd_name:  # a CRD without a schema keeps everything
        return found
    return found + [k for k in obj if k not in allowed]


def _walk(schema: dict[str, Any], value: Any, path: str) -> list[str]:
    if schema.get("x-kubernetes-preserve-unknown-fields"):
        return []
    if isinstance(value, dict):
        props = schema.get("properties")
        extra = schema.get("additionalProperties")
        out: list[str] = []
        for key, sub in value.items():
            if props is not None and key in props:
                out += _walk(props[key], sub, f"{path}.{key}")
            elif isinstance(extra, dict):
                out += _walk(extra, sub, f"{path}.{key}")
            elif props is not None and extra is not True:
                out.append(f"{path}.{key}")
        return out
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        out = []
        for i, item in enumerate(value):
            out += _walk(schema["items"], item, f"{path}[{i}]")
        return out
    return []


def drop_fields(obj: dict[str, Any], paths: list[str]) -> None:
    """Remove the named (dotted, [i]-indexed) fields from obj in place."""
    for path in paths:
        parts = path.replace("[", ".[").split(".")
        node: Any = obj
        for part in parts[:-1]:
            node = node[int(part[1:-1])] if part.startswith("[") else node.get(part, {})
        if isinstance(node, dict):
            node.pop(parts[-1], None)


def check(info: ResourceInfo, obj: dict[str, Any], duplicates: list[str], mode: str) -> list[str]:
    """Apply a fieldValidation mode; returns warnings to send, raises on Strict findings."""
    if mode not in MODES:
        raise bad_request(f"fieldValidation must be one of {', '.join(MODES)}, not {mode!r}")
    unknown = unknown_fields(info, obj)
    findings = duplicates + [f'unknown field "{p}"' for p in unknown]
    if mode == "Strict" and findings:
        raise bad_request("strict decoding error: " + ", ".join(findings))
    drop_fields(obj, unknown)
    return findings if mode == "Warn" else []
