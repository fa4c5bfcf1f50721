"""What each API verb does to stored objects, independent of HTTP.

Kubernetes semantics kept here: metadata filled on create (uid, creationTimestamp,
generation, generateName), apiVersion/kind/namespace checked against the URL, optimistic
concurrency on resourceVersion, the status subresource (main-resource writes keep status,
status writes keep everything else), generation bumped on spec changes, finalizers and
deletionTimestamp, graceful deletion of pods bound to existing nodes (and immediate removal of
unbound pods or pods on missing nodes, as the pod garbage collector would), namespace and CRD
cascades, and CRDs that become servable the moment they are created.
"""

from __future__ import annotations

import base64
import copy
import logging
import re
import secrets
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from cloud.apiserver import patch as patching
from cloud.apiserver import selectors
from cloud.apiserver.errors import (
    APIError,
    already_exists,
    bad_request,
    conflict,
    invalid,
    not_found,
    unsupported_media_type,
)
from cloud.apiserver.registry import Registry, kubeedge_crds, storage_key
from cloud.apiserver.resources import ResourceInfo
from cloud.apiserver.storage import AlreadyExists, Conflict, NotFound, Obj, Storage

log = logging.getLogger(__name__)

NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
SYSTEM_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")
PATCH_TYPES = (
    "application/json-patch+json",
    "application/merge-patch+json",
    "application/strategic-merge-patch+json",
)
CONFLICT_RETRIES = 10


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _meta(obj: Obj) -> dict[str, Any]:
    meta = obj.setdefault("metadata", {})
    if not isinstance(meta, dict):
        raise bad_request("metadata must be an object")
    return meta


class API:
    def __init__(self, storage: Storage, registry: Registry) -> None:
        self.storage = storage
        self.registry = registry

    # -- start-up --------------------------------------------------------------------------

    async def bootstrap(self) -> None:
        """Serve stored CRDs, install kubeedge's CRDs and the system namespaces if missing."""
        crd_info = self.registry.lookup("apiextensions.k8s.io", "v1", "customresourcedefinitions")
        ns_info = self.registry.lookup("", "v1", "namespaces")
        assert crd_info is not None and ns_info is not None
        stored, _, _ = await self.storage.list_objects(storage_key(crd_info), None)
        for crd in stored:
            self.registry.add_crd(crd)
        have = {c["metadata"]["name"] for c in stored}
        for crd in kubeedge_crds():
            if crd["metadata"]["name"] not in have:
                await self.create(crd_info, "", crd)
        for ns in SYSTEM_NAMESPACES:
            try:
                await self.create(ns_info, "", {"metadata": {"name": ns}})
            except APIError as exc:
                if exc.code != 409:
                    raise

    # -- reads -----------------------------------------------------------------------------

    async def get(self, info: ResourceInfo, ns: str, name: str) -> Obj:
        try:
            return await self.storage.get(storage_key(info), ns, name)
        except NotFound:
            raise not_found(info.plural, info.group, name) from None

    async def list(
        self,
        info: ResourceInfo,
        ns: str | None,
        *,
        label_selector: str = "",
        field_selector: str = "",
        limit: int = 0,
        continue_token: str = "",
    ) -> Obj:
        match = self.matcher(label_selector, field_selector)
        try:
            items, rv, token = await self.storage.list_objects(
                storage_key(info), ns, limit=0 if match else limit, continue_token=continue_token
            )
        except ValueError as exc:
            raise bad_request(str(exc)) from exc
        if match:
            items = [o for o in items if match(o)]
            if limit and len(items) > limit:
                items = items[:limit]
                last = items[-1]["metadata"]
                from cloud.apiserver.storage import encode_continue

                token = encode_continue(rv, last.get("namespace", ""), last["name"])
        meta: dict[str, Any] = {"resourceVersion": str(rv)}
        if token:
            meta["continue"] = token
        for item in items:
            item.setdefault("apiVersion", info.api_version)
            item.setdefault("kind", info.kind)
        return {
            "kind": info.list_kind,
            "apiVersion": info.api_version,
            "metadata": meta,
            "items": items,
        }

    @staticmethod
    def matcher(label_selector: str, field_selector: str) -> Any:
        """A predicate over objects for the selectors, or None when both are empty."""
        if not label_selector and not field_selector:
            return None
        try:
            labels = selectors.parse_label_selector(label_selector)
            fields = selectors.parse_field_selector(field_selector)
        except selectors.SelectorError as exc:
            raise bad_request(str(exc)) from exc

        def match(obj: Obj) -> bool:
            return bool(labels(obj.get("metadata", {}).get("labels") or {}) and fields(obj))

        return match

    # -- create ----------------------------------------------------------------------------

    async def create(self, info: ResourceInfo, ns: str, obj: Obj) -> Obj:
        if not isinstance(obj, dict):
            raise bad_request("the body must be a JSON object")
        self._check_type(info, obj)
        meta = _meta(obj)
        ns = await self._check_namespace(info, ns, meta)
        name = meta.get("name") or ""
        if not name:
            prefix = meta.get("generateName") or ""
            if not prefix:
                raise invalid(
                    info.kind, info.group, "", "metadata.name", "name or generateName is required"
                )
            name = prefix + "".join(secrets.choice("bcdfghjklmnpqrstvwxz2456789") for _ in range(5))
        self._check_name(info, name)
        meta.update(name=name, uid=str(uuid.uuid4()), creationTimestamp=now(), generation=1)
        for field in (
            "resourceVersion",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "selfLink",
        ):
            meta.pop(field, None)
        if info.namespaced:
            meta["namespace"] = ns
        else:
            meta.pop("namespace", None)
        if "status" in info.subresources and info.crd_name:
            obj.pop("status", None)
        self._defaults(info, obj)
        try:
            created = await self.storage.create(storage_key(info), ns, name, obj)
        except AlreadyExists:
            raise already_exists(info.plural, info.group, name) from None
        if info.kind == "CustomResourceDefinition":
            self._serve_crd(created)
        return created

    def _check_type(self, info: ResourceInfo, obj: Obj) -> None:
        api_version = obj.setdefault("apiVersion", info.api_version)
        kind = obj.setdefault("kind", info.kind)
        if api_version != info.api_version:
            raise bad_request(
                f"the API version in the data ({api_version}) does not match the expected "
                f"API version ({info.api_version})"
            )
        if kind != info.kind:
            raise bad_request(
                f"the kind in the data ({kind}) does not match the expected kind ({info.kind})"
            )

    async def _check_namespace(self, info: ResourceInfo, ns: str, meta: dict[str, Any]) -> str:
        if not info.namespaced:
            return ""
        body_ns = meta.get("namespace")
        if body_ns and ns and body_ns != ns:
            raise bad_request(
                "the namespace of the provided object does not match the namespace sent on "
                "the request"
            )
        ns = ns or body_ns or "default"
        try:
            await self.storage.get("/namespaces", "", ns)
        except NotFound:
            raise not_found("namespaces", "", ns) from None
        return ns

    @staticmethod
    def _check_name(info: ResourceInfo, name: str) -> None:
        if len(name) > 253 or not NAME.match(name):
            raise invalid(
                info.kind,
                info.group,
                name,
                "metadata.name",
                f"Invalid value: {name!r}: a lowercase RFC 1123 subdomain must consist of lower "
                "case alphanumeric characters, '-' or '.', and must start and end with an "
                "alphanumeric character",
            )

    @staticmethod
    def _defaults(info: ResourceInfo, obj: Obj) -> None:
        if info.kind == "Pod":
            status = obj.get("status") or {}
            status.setdefault("phase", "Pending")
            status.setdefault("qosClass", "BestEffort")
            obj["status"] = status
        elif info.kind == "Namespace":
            obj.setdefault("status", {}).setdefault("phase", "Active")
        elif info.kind == "Secret":
            string_data = obj.pop("stringData", None) or {}
            data = obj.setdefault("data", {})
            for key, value in string_data.items():
                data[key] = base64.b64encode(str(value).encode()).decode()
            obj.setdefault("type", "Opaque")
        elif info.kind == "CustomResourceDefinition":
            names = obj.get("spec", {}).get("names", {})
            obj["status"] = {
                "acceptedNames": names,
                "storedVersions": [
                    v["name"] for v in obj.get("spec", {}).get("versions", []) if v.get("storage")
                ],
                "conditions": [
                    {
                        "type": t,
                        "status": "True",
                        "reason": r,
                        "lastTransitionTime": now(),
                        "message": m,
                    }
                    for t, r, m in (
                        ("NamesAccepted", "NoConflicts", "no conflicts found"),
                        (
                            "Established",
                            "InitialNamesAccepted",
                            "the initial names have been accepted",
                        ),
                    )
                ],
            }

    def _serve_crd(self, crd: Obj) -> None:
        try:
            infos = self.registry.add_crd(crd)
        except (KeyError, TypeError) as exc:
            log.error("apiserver: CRD %s is malformed: %s", crd["metadata"]["name"], exc)
            return
        log.info(
            "apiserver: serving %s", ", ".join(f"{i.plural}.{i.group}/{i.version}" for i in infos)
        )

    # -- update and patch ------------------------------------------------------------------

    async def update(
        self, info: ResourceInfo, ns: str, name: str, obj: Obj, subresource: str = ""
    ) -> Obj:
        if not isinstance(obj, dict):
            raise bad_request("the body must be a JSON object")
        self._check_type(info, obj)
        meta = _meta(obj)
        if meta.get("name", name) != name:
            raise bad_request(
                f"the name of the object ({meta.get('name')}) does not match the name on the "
                f"URL ({name})"
            )
        current = await self.get(info, ns, name)
        return await self._replace(
            info, ns, name, current, obj, subresource, str(meta.get("resourceVersion") or "")
        )

    async def patch(
        self,
        info: ResourceInfo,
        ns: str,
        name: str,
        content_type: str,
        body: Any,
        subresource: str = "",
    ) -> Obj:
        kind = content_type.split(";", maxsplit=1)[0].strip()
        if kind not in PATCH_TYPES:
            raise unsupported_media_type(content_type)
        if kind == PATCH_TYPES[2] and info.crd_name:
            raise unsupported_media_type(
                f"{content_type} (strategic merge patch is not supported for custom resources)"
            )
        for _ in range(CONFLICT_RETRIES):
            current = await self.get(info, ns, name)
            try:
                if kind == PATCH_TYPES[0]:
                    if not isinstance(body, list):
                        raise bad_request("a JSON patch must be a list of operations")
                    patched = patching.json_patch(current, body)
                elif kind == PATCH_TYPES[1]:
                    patched = patching.merge_patch(current, body)
                else:
                    if not isinstance(body, dict):
                        raise bad_request("a strategic merge patch must be a JSON object")
                    patched = patching.strategic_merge_patch(current, body, info.merge_keys)
            except patching.PatchError as exc:
                raise APIError(422, "Invalid", f"the patch cannot be applied: {exc}") from exc
            if not isinstance(patched, dict):
                raise bad_request("the patched object is not a JSON object")
            self._check_type(info, patched)
            asked_rv = str(_meta(patched).get("resourceVersion") or "")
            precondition = asked_rv if asked_rv != current["metadata"]["resourceVersion"] else ""
            try:
                return await self._replace(
                    info,
                    ns,
                    name,
                    current,
                    patched,
                    subresource,
                    precondition or current["metadata"]["resourceVersion"],
                )
            except APIError as exc:
                if exc.code != 409 or precondition:
                    raise
        raise conflict(info.plural, info.group, name, "too many concurrent writers")

    async def _replace(
        self,
        info: ResourceInfo,
        ns: str,
        name: str,
        current: Obj,
        new: Obj,
        subresource: str,
        expect_rv: str,
    ) -> Obj:
        cur_meta = current["metadata"]
        if subresource == "status":
            merged = copy.deepcopy(current)
            merged["status"] = new.get("status", {})
            new = merged
        else:
            meta = _meta(new)
            for field in (
                "uid",
                "creationTimestamp",
                "deletionTimestamp",
                "deletionGracePeriodSeconds",
                "namespace",
                "name",
            ):
                if field in cur_meta:
                    meta[field] = cur_meta[field]
                else:
                    meta.pop(field, None)
            if "status" in info.subresources:
                if "status" in current:
                    new["status"] = current["status"]
                else:
                    new.pop("status", None)
            meta["generation"] = cur_meta.get("generation", 1) + (
                1 if _spec(new) != _spec(current) else 0
            )
        if info.kind == "Secret":
            self._defaults(info, new)
        finalized = cur_meta.get("deletionTimestamp") and not new["metadata"].get("finalizers")
        if finalized and not (info.kind == "Pod" and await self._pod_waits_for_node(current)):
            return await self._remove(info, ns, name, expect_rv)
        try:
            updated = await self.storage.update(
                storage_key(info), ns, name, new, expect_rv=expect_rv
            )
        except NotFound:
            raise not_found(info.plural, info.group, name) from None
        except Conflict as exc:
            raise conflict(info.plural, info.group, name, str(exc)) from None
        if info.kind == "CustomResourceDefinition":
            self._serve_crd(updated)
        return updated

    # -- delete ----------------------------------------------------------------------------

    async def delete(self, info: ResourceInfo, ns: str, name: str, options: dict[str, Any]) -> Obj:
        current = await self.get(info, ns, name)
        meta = current["metadata"]
        pre = options.get("preconditions") or {}
        if pre.get("uid") and pre["uid"] != meta.get("uid"):
            raise conflict(
                info.plural,
                info.group,
                name,
                f"Precondition failed: UID in precondition: {pre['uid']}, "
                f"UID in object meta: {meta.get('uid')}",
            )
        expect_rv = str(pre.get("resourceVersion") or "")
        grace = options.get("gracePeriodSeconds")
        if info.kind == "Pod" and await self._pod_waits_for_node(current):
            if grace is None:
                grace = current.get("spec", {}).get("terminationGracePeriodSeconds", 30)
            if int(grace) > 0 or meta.get("finalizers"):
                return await self._mark_deleted(info, ns, name, current, int(grace), expect_rv)
        if meta.get("finalizers"):
            return await self._mark_deleted(info, ns, name, current, 0, expect_rv)
        return await self._remove(info, ns, name, expect_rv)

    async def _pod_waits_for_node(self, pod: Obj) -> bool:
        """A pod bound to an existing node is removed by that node, not at once."""
        node = pod.get("spec", {}).get("nodeName")
        if not node:
            return False
        try:
            await self.storage.get("/nodes", "", node)
        except NotFound:
            return False
        return True

    async def _mark_deleted(
        self, info: ResourceInfo, ns: str, name: str, current: Obj, grace: int, expect_rv: str
    ) -> Obj:
        meta = current["metadata"]
        if meta.get("deletionTimestamp"):
            if grace >= int(meta.get("deletionGracePeriodSeconds") or 0):
                return current
        else:
            when = datetime.now(UTC) + timedelta(seconds=grace)
            meta["deletionTimestamp"] = when.strftime("%Y-%m-%dT%H:%M:%SZ")
        meta["deletionGracePeriodSeconds"] = grace
        try:
            return await self.storage.update(
                storage_key(info), ns, name, current, expect_rv=expect_rv
            )
        except Conflict as exc:
            raise conflict(info.plural, info.group, name, str(exc)) from None

    async def _remove(self, info: ResourceInfo, ns: str, name: str, expect_rv: str) -> Obj:
        if info.kind == "Namespace":
            await self._empty_namespace(name)
        try:
            removed = await self.storage.delete(storage_key(info), ns, name, expect_rv=expect_rv)
        except NotFound:
            raise not_found(info.plural, info.group, name) from None
        except Conflict as exc:
            raise conflict(info.plural, info.group, name, str(exc)) from None
        if info.kind == "CustomResourceDefinition":
            await self._drop_crd_objects(removed)
        return removed

    async def _empty_namespace(self, ns: str) -> None:
        seen = set()
        for info in self.registry.all():
            key = storage_key(info)
            if not info.namespaced or key in seen:
                continue
            seen.add(key)
            items, _, _ = await self.storage.list_objects(key, ns)
            for item in items:
                await self.storage.delete(key, ns, item["metadata"]["name"])

    async def _drop_crd_objects(self, crd: Obj) -> None:
        spec = crd.get("spec", {})
        key = f"{spec.get('group')}/{spec.get('names', {}).get('plural')}"
        items, _, _ = await self.storage.list_objects(key, None)
        for item in items:
            meta = item["metadata"]
            await self.storage.delete(key, meta.get("namespace", ""), meta["name"])
        self.registry.remove_crd(crd["metadata"]["name"])

    async def delete_collection(
        self,
        info: ResourceInfo,
        ns: str | None,
        label_selector: str,
        field_selector: str,
        options: dict[str, Any],
    ) -> Obj:
        listing = await self.list(
            info, ns, label_selector=label_selector, field_selector=field_selector
        )
        for item in listing["items"]:
            meta = item["metadata"]
            try:
                await self.delete(info, meta.get("namespace", ""), meta["name"], options)
            except APIError as exc:
                if exc.code != 404:
                    raise
        return listing


def _spec(obj: Obj) -> Any:
    """Everything but metadata and status: a change here bumps metadata.generation."""
    return {k: v for k, v in obj.items() if k not in ("metadata", "status")}
