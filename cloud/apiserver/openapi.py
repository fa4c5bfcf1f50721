"""OpenAPI v3 documents for the served kinds: just enough for kubectl to trust the server.

kubectl 1.37 reads /openapi/v3 and, per group version, looks for a PATCH operation tagged with
the object's `x-kubernetes-group-version-kind` and taking a `fieldValidation` query parameter;
finding one, it leaves validation to the server (see shared/reference/kubectl-facts.md). Each
document here therefore lists every kind's collection, item and subresource paths with their
operations, and one schema per kind.

Schemas are deliberately permissive: built-in kinds accept any field
(`x-kubernetes-preserve-unknown-fields`) and a CRD's schema is the one it declares, so a client
never rejects, on its own, an object the server would take. They are not a full description of
the Kubernetes types; `kubectl explain` shows only the top-level fields of a built-in kind.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
from collections.abc import Iterable
from typing import Any

from cloud.apiserver.discovery import GIT_VERSION, group_versions, gvk, subresource
from cloud.apiserver.resources import ResourceInfo

META = "io.k8s.apimachinery.pkg.apis.meta.v1"
OBJECT_META = f"{META}.ObjectMeta"
LIST_META = f"{META}.ListMeta"
STATUS = f"{META}.Status"
PATCH = f"{META}.Patch"
DELETE_OPTIONS = f"{META}.DeleteOptions"
SCALE = "io.k8s.api.autoscaling.v1.Scale"

JSON_PATCH = "application/json-patch+json"
MERGE_PATCH = "application/merge-patch+json"
STRATEGIC_MERGE_PATCH = "application/strategic-merge-patch+json"
APPLY_PATCH = "application/apply-patch+yaml"
# Not advertised: kubectl, seeing strategic merge patch here, would compute it from these
# schemas, which lack the field list and merge keys it needs, and warn on every apply; without
# it, kubectl uses the merge keys compiled into it for built-in kinds and still sends one.
PATCH_TYPES = (JSON_PATCH, MERGE_PATCH, APPLY_PATCH)

OBJECT_TYPES = ("application/json", "application/yaml")
LIST_TYPES = (*OBJECT_TYPES, "application/json;stream=watch")

Json = dict[str, Any]


def openapi_v3_index(infos: Iterable[ResourceInfo]) -> Json:
    """The body of GET /openapi/v3: one entry per group version, its URL carrying the doc's hash."""
    infos = list(infos)
    paths: Json = {}
    for group, versions in group_versions(infos).items():
        for version in versions:
            group_version = f"{group}/{version}" if group else version
            doc = openapi_v3_document(infos, group_version)
            key = index_path(group_version)
            paths[key] = {"serverRelativeURL": f"/openapi/v3/{key}?hash={doc_hash(doc)}"}
    return {"paths": paths}


def index_path(group_version: str) -> str:
    """The key of a group version under /openapi/v3: v1 -> api/v1, apps/v1 -> apis/apps/v1."""
    return f"apis/{group_version}" if "/" in group_version else f"api/{group_version}"


def group_version_of(path: str) -> str | None:
    """The group version an /openapi/v3/<path> names, or None: "apis/apps/v1" -> "apps/v1"."""
    parts = path.strip("/").split("/")
    if len(parts) == 2 and parts[0] == "api":
        return parts[1]
    if len(parts) == 3 and parts[0] == "apis":
        return f"{parts[1]}/{parts[2]}"
    return None


def doc_hash(doc: Any) -> str:
    """A stable hash of a document: SHA-512 of its canonical JSON, upper-case hex."""
    canonical = json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha512(canonical.encode("utf-8")).hexdigest().upper()


def openapi_v3_document(infos: Iterable[ResourceInfo], group_version: str) -> Json | None:
    """The OpenAPI 3.0 document of one group version, or None when nothing is served there."""
    served = sorted((i for i in infos if i.group_version == group_version), key=lambda i: i.plural)
    if not served:
        return None
    paths: Json = {}
    schemas = _common_schemas()
    for info in served:
        paths.update(_resource_paths(info))
        schemas[schema_name(info)] = _kind_schema(info)
        schemas[f"{schema_name(info)}List"] = _list_schema(info)
        if "scale" in info.subresources:
            schemas[SCALE] = _permissive(
                "Scale represents a scaling request for a resource.",
                {"group": "autoscaling", "version": "v1", "kind": "Scale"},
            )
    doc = {
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": GIT_VERSION},
        "paths": paths,
        "components": {"schemas": dict(sorted(schemas.items()))},
    }
    # Parameter tables are shared between operations; a caller may edit its copy freely.
    return copy.deepcopy(doc)


def schema_name(info: ResourceInfo) -> str:
    """Reverse-domain schema name: io.k8s.api.core.v1.Pod, io.kubeedge.devices.v1beta1.Device."""
    if not info.group:
        return f"io.k8s.api.core.{info.version}.{info.kind}"
    return ".".join([*reversed(info.group.split(".")), info.version, info.kind])


# -- paths ---------------------------------------------------------------------------------


def _resource_paths(info: ResourceInfo) -> Json:
    return _PathsOf(info).build()


class _PathsOf:
    """The path items of one kind: its collection, its items, every namespace, subresources."""

    def __init__(self, info: ResourceInfo) -> None:
        self.info = info
        self.target = gvk(info)
        self.kind = _ref(schema_name(info))
        self.kind_list = _ref(f"{schema_name(info)}List")
        self.tag = f"{_group_id(info.group)}_{info.version}"
        # Operation ids in Kubernetes' style: patchCoreV1NamespacedPod, listCoreV1PodFor...
        self.id_prefix = _camel(_group_id(info.group), upper=True) + _camel(
            info.version, upper=True
        )

    def build(self) -> Json:
        info = self.info
        prefix = f"/apis/{info.group_version}" if info.group else f"/api/{info.version}"
        scope = [_path_param("namespace", "object name and auth scope, such as for teams")]
        if info.namespaced:
            collection = f"{prefix}/namespaces/{{namespace}}/{info.plural}"
        else:
            collection, scope = f"{prefix}/{info.plural}", []
        item = f"{collection}/{{name}}"
        item_scope = [_path_param("name", f"name of the {info.kind}"), *scope]
        paths: Json = {
            collection: self.collection(scope),
            item: self.item(item_scope),
        }
        if info.namespaced:
            paths[f"{prefix}/{info.plural}"] = self.all_namespaces()
        for sub in info.subresources:
            paths[f"{item}/{sub}"] = self.subresource(sub, item_scope)
        return paths

    def collection(self, scope: list[Json]) -> Json:
        kind = self.info.kind
        return {
            "get": self.op(
                "list",
                self.op_id("list", kind),
                f"list or watch objects of kind {kind}",
                params=_LIST_PARAMS,
                responses=_responses(self.kind_list, LIST_TYPES),
            ),
            "post": self.op(
                "post",
                self.op_id("create", kind),
                f"create a {kind}",
                params=_WRITE_PARAMS,
                responses=_responses(self.kind, codes=("200", "201", "202")),
                body=_body(self.kind),
            ),
            "delete": self.op(
                "deletecollection",
                self.op_id("deleteCollection", kind),
                f"delete collection of {kind}",
                params=[*_DELETE_PARAMS, *_LIST_PARAMS],
                responses=_responses(_ref(STATUS)),
                body=_body(_ref(DELETE_OPTIONS), required=False),
            ),
            "parameters": [*scope, _PRETTY],
        }

    def item(self, scope: list[Json]) -> Json:
        kind = self.info.kind
        return {
            "get": self.op(
                "get",
                self.op_id("read", kind),
                f"read the specified {kind}",
                responses=_responses(self.kind),
            ),
            "put": self.op(
                "put",
                self.op_id("replace", kind),
                f"replace the specified {kind}",
                params=_WRITE_PARAMS,
                responses=_responses(self.kind, codes=("200", "201")),
                body=_body(self.kind),
            ),
            "patch": self.patch(self.op_id("patch", kind), f"the specified {kind}", self.kind),
            "delete": self.op(
                "delete",
                self.op_id("delete", kind),
                f"delete a {kind}",
                params=_DELETE_PARAMS,
                responses=_responses(self.kind, codes=("200", "202")),
                body=_body(_ref(DELETE_OPTIONS), required=False),
            ),
            "parameters": [*scope, _PRETTY],
        }

    def all_namespaces(self) -> Json:
        kind = self.info.kind
        return {
            "get": self.op(
                "list",
                self.op_id("list", f"{kind}ForAllNamespaces", namespaced=False),
                f"list or watch objects of kind {kind} in every namespace",
                params=_LIST_PARAMS,
                responses=_responses(self.kind_list, LIST_TYPES),
            ),
            "parameters": [_PRETTY],
        }

    def subresource(self, sub: str, scope: list[Json]) -> Json:
        desc, target = subresource(self.info, sub)
        what = f"{sub} of the specified {self.info.kind}"
        noun = f"{self.info.kind}{sub.capitalize()}"
        item: Json = {}
        if sub == "log":
            text = {"200": {"description": "OK", "content": {"text/plain": {"schema": _STRING}}}}
            item["get"] = self.op(
                "get", self.op_id("read", noun), f"read {what}", params=_LOG_PARAMS, responses=text
            )
            item["parameters"] = [*scope, _PRETTY]
            return item
        kind = _ref(SCALE) if target["kind"] == "Scale" else self.kind
        if "get" in desc.verbs:
            item["get"] = self.op(
                "get",
                self.op_id("read", noun),
                f"read {what}",
                responses=_responses(kind),
                target=target,
            )
        if "update" in desc.verbs:
            item["put"] = self.op(
                "put",
                self.op_id("replace", noun),
                f"replace {what}",
                params=_WRITE_PARAMS,
                responses=_responses(kind, codes=("200", "201")),
                body=_body(kind),
                target=target,
            )
        if "patch" in desc.verbs:
            item["patch"] = self.patch(self.op_id("patch", noun), what, kind, target)
        item["parameters"] = [*scope, _PRETTY]
        return item

    def patch(
        self, op_id: str, what: str, kind: Json, target: dict[str, str] | None = None
    ) -> Json:
        """A PATCH operation: kubectl needs its GVK extension and its fieldValidation parameter."""
        return self.op(
            "patch",
            op_id,
            f"partially update {what}",
            params=[*_WRITE_PARAMS, _FORCE],
            responses=_responses(kind, codes=("200", "201")),
            body={"content": {t: {"schema": _ref(PATCH)} for t in PATCH_TYPES}, "required": True},
            target=target,
        )

    def op(
        self,
        action: str,
        op_id: str,
        description: str,
        *,
        responses: Json,
        params: list[Json] | None = None,
        body: Json | None = None,
        target: dict[str, str] | None = None,
    ) -> Json:
        operation: Json = {
            "tags": [self.tag],
            "description": description,
            "operationId": op_id,
            "parameters": list(params or []),
            "responses": responses,
            "x-kubernetes-action": action,
            "x-kubernetes-group-version-kind": dict(target or self.target),
        }
        if body is not None:
            operation["requestBody"] = body
        return operation

    def op_id(self, verb: str, noun: str, *, namespaced: bool | None = None) -> str:
        scoped = self.info.namespaced if namespaced is None else namespaced
        return f"{verb}{self.id_prefix}{'Namespaced' if scoped else ''}{noun}"


def _group_id(group: str) -> str:
    """The group as tags and operation ids name it: core, coordination, devicesKubeedgeIo."""
    if not group:
        return "core"
    return _camel(group.removesuffix(".k8s.io"), upper=False)


def _camel(text: str, *, upper: bool) -> str:
    words = [w for w in re.split(r"[^A-Za-z0-9]+", text) if w]
    joined = "".join(w[:1].upper() + w[1:] for w in words)
    return joined if upper else joined[:1].lower() + joined[1:]


# -- parameters, bodies, responses -----------------------------------------------------------


def _query(name: str, kind: str, description: str) -> Json:
    return {
        "name": name,
        "in": "query",
        "description": description,
        "schema": {"type": kind},
    }


def _path_param(name: str, description: str) -> Json:
    return {
        "name": name,
        "in": "path",
        "description": description,
        "required": True,
        "schema": {"type": "string"},
    }


_STRING: Json = {"type": "string"}
_PRETTY = _query("pretty", "string", "if 'true', the output is pretty printed")
_WRITE_PARAMS = [
    _query("dryRun", "string", "'All': process the request without persisting it"),
    _query("fieldManager", "string", "name of the actor making the change"),
    _query(
        "fieldValidation",
        "string",
        "Ignore, Warn or Strict: what to do with unknown or duplicate fields",
    ),
]
_DELETE_PARAMS = [
    _query("dryRun", "string", "'All': process the request without persisting it"),
    _query("gracePeriodSeconds", "integer", "seconds before the object is deleted"),
    _query("propagationPolicy", "string", "Orphan, Background or Foreground"),
]
_LIST_PARAMS = [
    _query("allowWatchBookmarks", "boolean", "ask for BOOKMARK watch events"),
    _query("continue", "string", "token from a previous paged list"),
    _query("fieldSelector", "string", "restrict the list by fields"),
    _query("labelSelector", "string", "restrict the list by labels"),
    _query("limit", "integer", "largest number of items to return"),
    _query("resourceVersion", "string", "list or watch from this resource version"),
    _query("resourceVersionMatch", "string", "how resourceVersion applies to a list"),
    _query("sendInitialEvents", "boolean", "start a watch with the current state"),
    _query("timeoutSeconds", "integer", "end the list or watch after this many seconds"),
    _query("watch", "boolean", "watch for changes instead of listing"),
]
_LOG_PARAMS = [
    _query("container", "string", "the container whose log to read"),
    _query("follow", "boolean", "stream the log as it grows"),
    _query("limitBytes", "integer", "stop after this many bytes"),
    _query("previous", "boolean", "the log of the previous, terminated container"),
    _query("sinceSeconds", "integer", "only lines newer than this many seconds"),
    _query("tailLines", "integer", "only this many lines from the end"),
    _query("timestamps", "boolean", "prefix every line with its timestamp"),
]

_FORCE = _query("force", "boolean", "take conflicting fields (apply patch only)")
_DESCRIPTIONS = {"200": "OK", "201": "Created", "202": "Accepted"}


def _responses(
    schema: Json, media_types: tuple[str, ...] = OBJECT_TYPES, codes: tuple[str, ...] = ("200",)
) -> Json:
    out: Json = {
        code: {
            "description": _DESCRIPTIONS[code],
            "content": {t: {"schema": schema} for t in media_types},
        }
        for code in codes
    }
    out["401"] = {"description": "Unauthorized"}
    return out


def _body(schema: Json, *, required: bool = True) -> Json:
    return {"content": {"*/*": {"schema": schema}}, "required": required}


def _ref(name: str) -> Json:
    return {"$ref": f"#/components/schemas/{name}"}


# -- schemas -------------------------------------------------------------------------------


def _kind_schema(info: ResourceInfo) -> Json:
    target = gvk(info)
    if info.schema is None:
        schema = _permissive(f"{info.kind} of {info.api_version}.", target)
    else:
        schema = copy.deepcopy(info.schema)
        schema.setdefault("type", "object")
        schema["x-kubernetes-group-version-kind"] = [target]
    properties = schema.setdefault("properties", {})
    properties.setdefault("apiVersion", {"type": "string", "description": "the schema version"})
    properties.setdefault("kind", {"type": "string", "description": "the REST resource type"})
    properties["metadata"] = _ref(OBJECT_META)
    return schema


def _list_schema(info: ResourceInfo) -> Json:
    return {
        "description": f"{info.list_kind} is a list of {info.kind}.",
        "type": "object",
        "required": ["items"],
        "properties": {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "items": {"type": "array", "items": _ref(schema_name(info))},
            "metadata": _ref(LIST_META),
        },
        "x-kubernetes-group-version-kind": [{**gvk(info), "kind": info.list_kind}],
    }


def _permissive(description: str, target: dict[str, str] | None = None) -> Json:
    schema: Json = {
        "description": description,
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": True,
    }
    if target is not None:
        schema["x-kubernetes-group-version-kind"] = [target]
    return schema


def _common_schemas() -> Json:
    meta = {"group": "", "version": "v1"}
    return {
        OBJECT_META: _permissive("Metadata every persisted resource has."),
        LIST_META: _permissive("Metadata of a list: resourceVersion and continue."),
        STATUS: _permissive(
            "The outcome of a request that returns no object.", {**meta, "kind": "Status"}
        ),
        DELETE_OPTIONS: _permissive("Options for a delete.", {**meta, "kind": "DeleteOptions"}),
        # Any JSON: a JSON patch is an array, the other patch types are objects.
        PATCH: {
            "description": "The body of a PATCH request, in the format its Content-Type names."
        },
    }
