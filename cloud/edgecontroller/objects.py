"""What edgecontroller knows about the objects it sends: kinds, references, digests, messages.

Pure functions over the raw JSON dicts the API returned:
- KINDS: the four kinds that go to edge nodes and how they are named on the wire;
- `references(pod)`: the configmaps and secrets a pod needs on its node;
- `digest(obj)`: a hash of what the edge cares about (everything but status and the
  fields the API server changes on every write), so a status-only change is not sent down;
- `object_message(...)`: the downstream message of docs/protocol.md for one object. It is the
  one place such a message is built; synccontroller's resends go through the same path.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from common.envelope import Message, new_message, resource, with_node
from common.join import shipped_to_nodes
from common.names import Group, Module, Operation, ResourceType

Obj = dict[str, Any]

EDGE_NODE_LABEL = "node-role.kubernetes.io/edge"


@dataclass(frozen=True)
class Kind:
    kind: str
    api_version: str
    type: ResourceType
    namespaced: bool


POD = Kind("Pod", "v1", ResourceType.POD, True)
CONFIGMAP = Kind("ConfigMap", "v1", ResourceType.CONFIGMAP, True)
SECRET = Kind("Secret", "v1", ResourceType.SECRET, True)
NODE = Kind("Node", "v1", ResourceType.NODE, False)
KINDS = {k.kind: k for k in (POD, CONFIGMAP, SECRET, NODE)}

# (kind, namespace, name): a configmap or secret some pod references.
Ref = tuple[str, str, str]

# Metadata the API server rewrites on every write; a change in them alone means nothing to
# the edge.
_VOLATILE_META = ("resourceVersion", "managedFields", "generation")


def meta(obj: Obj) -> Obj:
    m: Obj = obj.get("metadata") or {}
    return m


def key_of(obj: Obj) -> tuple[str, str]:
    """(namespace, name); the namespace is "" for cluster-scoped objects."""
    m = meta(obj)
    return str(m.get("namespace") or ""), str(m.get("name") or "")


def uid_of(obj: Obj) -> str:
    return str(meta(obj).get("uid") or "")


def rv_of(obj: Obj) -> str:
    return str(meta(obj).get("resourceVersion") or "")


def wire_resource(kind: Kind, namespace: str, name: str) -> str:
    return resource(namespace if kind.namespaced else None, kind.type, name)


def is_edge_node(node: Obj) -> bool:
    return EDGE_NODE_LABEL in (meta(node).get("labels") or {})


def digest(obj: Obj) -> str:
    """What the edge would see change: everything but status and volatile metadata."""
    trimmed = {k: v for k, v in obj.items() if k != "status"}
    trimmed["metadata"] = {k: v for k, v in meta(obj).items() if k not in _VOLATILE_META}
    blob = json.dumps(trimmed, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()[:32]


def references(pod: Obj) -> frozenset[Ref]:
    """The configmaps and secrets a pod uses: volumes, projected sources, env, envFrom and
    imagePullSecrets, all in the pod's namespace (but never kubeedge's own: the edge CA, join
    tokens, revocations)."""
    ns = meta(pod).get("namespace") or "default"
    spec = pod.get("spec") or {}
    refs: set[Ref] = set()
    for kind, name in _volume_refs(spec.get("volumes") or []):
        refs.add((kind, ns, name))
    for field in ("containers", "initContainers", "ephemeralContainers"):
        for container in spec.get(field) or []:
            for kind, name in _container_refs(container):
                refs.add((kind, ns, name))
    for secret in spec.get("imagePullSecrets") or []:
        if secret.get("name"):
            refs.add((SECRET.kind, ns, secret["name"]))
    # The edge CA and join tokens never leave the cloud, whatever a pod asks for.
    return frozenset(r for r in refs if r[0] != SECRET.kind or shipped_to_nodes(ns, r[2]))


def _volume_refs(volumes: list[Obj]) -> Iterator[tuple[str, str]]:
    for volume in volumes:
        if (volume.get("configMap") or {}).get("name"):
            yield CONFIGMAP.kind, volume["configMap"]["name"]
        if (volume.get("secret") or {}).get("secretName"):
            yield SECRET.kind, volume["secret"]["secretName"]
        for source in (volume.get("projected") or {}).get("sources") or []:
            if (source.get("configMap") or {}).get("name"):
                yield CONFIGMAP.kind, source["configMap"]["name"]
            if (source.get("secret") or {}).get("name"):
                yield SECRET.kind, source["secret"]["name"]


def _container_refs(container: Obj) -> Iterator[tuple[str, str]]:
    for env in container.get("env") or []:
        source = env.get("valueFrom") or {}
        if (source.get("configMapKeyRef") or {}).get("name"):
            yield CONFIGMAP.kind, source["configMapKeyRef"]["name"]
        if (source.get("secretKeyRef") or {}).get("name"):
            yield SECRET.kind, source["secretKeyRef"]["name"]
    for env_from in container.get("envFrom") or []:
        if (env_from.get("configMapRef") or {}).get("name"):
            yield CONFIGMAP.kind, env_from["configMapRef"]["name"]
        if (env_from.get("secretRef") or {}).get("name"):
            yield SECRET.kind, env_from["secretRef"]["name"]


def object_message(node: str, operation: Operation, kind: Kind, obj: Obj) -> Message:
    """The downstream message carrying `obj` to `node` (group meta; body object)."""
    namespace, name = key_of(obj)
    version = rv_of(obj)
    msg = new_message(
        source=Module.EDGECONTROLLER,
        group=Group.META,
        operation=operation,
        resource=with_node(node, wire_resource(kind, namespace, name)),
        resource_version=version,
    )
    event = msg.object
    event.api_version = str(obj.get("apiVersion") or kind.api_version)
    event.kind = kind.kind
    event.namespace = namespace if kind.namespaced else ""
    event.name = name
    event.uid = uid_of(obj)
    event.resource_version = version
    event.object_json = json.dumps(obj, separators=(",", ":")).encode()
    return msg


def stub(kind: Kind, namespace: str | None, name: str, uid: str) -> Obj:
    """The smallest object naming a deleted object, for a delete whose object is gone."""
    metadata: Obj = {"name": name, "uid": uid}
    if kind.namespaced and namespace:
        metadata["namespace"] = namespace
    return {"apiVersion": kind.api_version, "kind": kind.kind, "metadata": metadata}
