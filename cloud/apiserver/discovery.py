"""What the API server says about itself: /version, /api, /apis and their aggregated form.

Pure functions from the served ResourceInfos to the JSON bodies clients expect, in both the
legacy shapes (APIVersions, APIGroupList, APIResourceList) and the aggregated
apidiscovery.k8s.io/v2 APIGroupDiscoveryList that kubectl asks for first. Serving them,
content negotiation and caching belong to the HTTP layer; nothing here does I/O.
"""

from __future__ import annotations

import platform
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from cloud.apiserver.resources import ResourceInfo

# The media type of an aggregated discovery answer; the server echoes it as Content-Type.
AGGREGATED_CONTENT_TYPE = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"

KUBE_MAJOR = "1"
KUBE_MINOR = "31"
GIT_VERSION = f"v{KUBE_MAJOR}.{KUBE_MINOR}.0-kubeedge-py"


@dataclass(frozen=True)
class Subresource:
    """How one subresource is described: the verbs it takes and the kind it answers with."""

    verbs: tuple[str, ...]
    # None: the parent resource's own kind (status, log).
    group: str | None = None
    version: str | None = None
    kind: str | None = None


SUBRESOURCES: dict[str, Subresource] = {
    "status": Subresource(("get", "patch", "update")),
    "log": Subresource(("get",)),
    "scale": Subresource(("get", "patch", "update"), "autoscaling", "v1", "Scale"),
}


def subresource(info: ResourceInfo, name: str) -> tuple[Subresource, dict[str, str]]:
    """The description of `info`'s subresource `name` and its response {group, version, kind}."""
    sub = SUBRESOURCES.get(name, Subresource(("get",)))
    if sub.kind is None:
        return sub, gvk(info)
    return sub, {"group": sub.group or "", "version": sub.version or "", "kind": sub.kind}


def gvk(info: ResourceInfo) -> dict[str, str]:
    return {"group": info.group, "version": info.version, "kind": info.kind}


def version_info() -> dict[str, str]:
    """The body of GET /version."""
    return {
        "major": KUBE_MAJOR,
        "minor": KUBE_MINOR,
        "gitVersion": GIT_VERSION,
        "gitCommit": "",
        "gitTreeState": "clean",
        "buildDate": "",
        "goVersion": f"python{platform.python_version()}",
        "compiler": platform.python_implementation().lower(),
        "platform": f"{platform.system().lower()}/{_arch()}",
    }


def api_versions() -> dict[str, Any]:
    """The body of GET /api: the core group is served at v1 only."""
    return {
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": ""}],
    }


def api_group_list(infos: Iterable[ResourceInfo]) -> dict[str, Any]:
    """The body of GET /apis: every named group, its versions best first."""
    groups = []
    for group, versions in group_versions(infos).items():
        if not group:
            continue
        entries = [{"groupVersion": f"{group}/{v}", "version": v} for v in versions]
        groups.append({"name": group, "versions": entries, "preferredVersion": entries[0]})
    return {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}


def api_resource_list(infos: Iterable[ResourceInfo], group_version: str) -> dict[str, Any]:
    """The body of GET /api/v1 or /apis/{group}/{version}.

    An unknown group version gets an empty list; `group_versions` tells the caller which ones
    exist, so it can answer 404 instead.
    """
    resources: list[dict[str, Any]] = []
    for info in _sorted(i for i in infos if i.group_version == group_version):
        resources.append(
            {
                "name": info.plural,
                "singularName": info.singular,
                "namespaced": info.namespaced,
                "kind": info.kind,
                "verbs": list(info.verbs),
                "shortNames": list(info.short_names),
                "categories": list(info.categories),
            }
        )
        for name in info.subresources:
            sub, response = subresource(info, name)
            entry: dict[str, Any] = {
                "name": f"{info.plural}/{name}",
                "singularName": "",
                "namespaced": info.namespaced,
                "kind": response["kind"],
                "verbs": list(sub.verbs),
            }
            if sub.kind is not None:
                entry["group"] = response["group"]
                entry["version"] = response["version"]
            resources.append(entry)
    return {
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": group_version,
        "resources": resources,
    }


def aggregated_discovery(infos: Iterable[ResourceInfo], core: bool) -> dict[str, Any]:
    """The apidiscovery.k8s.io/v2 APIGroupDiscoveryList for /api (`core`) or /apis."""
    infos = list(infos)
    items = []
    for group, versions in group_versions(infos).items():
        if bool(group) == core:
            continue
        items.append(
            {
                "metadata": {"name": group, "creationTimestamp": None},
                "versions": [
                    {
                        "version": version,
                        "resources": [
                            _resource_discovery(i)
                            for i in _sorted(infos)
                            if i.group == group and i.version == version
                        ],
                        "freshness": "Current",
                    }
                    for version in versions
                ],
            }
        )
    return {
        "kind": "APIGroupDiscoveryList",
        "apiVersion": "apidiscovery.k8s.io/v2",
        "metadata": {},
        "items": items,
    }


def group_versions(infos: Iterable[ResourceInfo]) -> dict[str, list[str]]:
    """Group name ("" for core) -> its served versions, most preferred first.

    Groups keep the order in which they first appear in `infos` (built-ins before CRDs).
    """
    out: dict[str, list[str]] = {}
    for info in infos:
        versions = out.setdefault(info.group, [])
        if info.version not in versions:
            versions.append(info.version)
    return {group: sorted(versions, key=version_priority) for group, versions in out.items()}


_KUBE_VERSION = re.compile(r"v(\d+)(?:(alpha|beta)(\d+))?")


def version_priority(version: str) -> tuple[int, int, int, str]:
    """Sort key putting versions in Kubernetes' order: v2, v1, v1beta2, v1beta1, v1alpha1, foo.

    GA before beta before alpha, each from the highest number down; versions that do not look
    like Kubernetes versions come last, alphabetically.
    """
    m = _KUBE_VERSION.fullmatch(version)
    if m is None:
        return (3, 0, 0, version)
    stability = {None: 0, "beta": 1, "alpha": 2}[m[2]]
    return (stability, -int(m[1]), -int(m[3] or 0), "")


def _resource_discovery(info: ResourceInfo) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "resource": info.plural,
        "responseKind": gvk(info),
        "scope": "Namespaced" if info.namespaced else "Cluster",
        "singularResource": info.singular,
        "verbs": list(info.verbs),
    }
    if info.short_names:
        entry["shortNames"] = list(info.short_names)
    if info.categories:
        entry["categories"] = list(info.categories)
    subresources = []
    for name in info.subresources:
        sub, response = subresource(info, name)
        subresources.append(
            {"subresource": name, "responseKind": response, "verbs": list(sub.verbs)}
        )
    if subresources:
        entry["subresources"] = subresources
    return entry


def _sorted(infos: Iterable[ResourceInfo]) -> list[ResourceInfo]:
    return sorted(infos, key=lambda i: i.plural)


def _arch() -> str:
    machine = platform.machine().lower()
    return {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm"}.get(machine, machine)
