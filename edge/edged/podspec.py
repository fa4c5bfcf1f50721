"""Pod spec → CRI configs: the sandbox, each container's env, mounts, resources, labels.

Labels and annotations follow the kubelet's (io.kubernetes.pod.uid, io.kubernetes.container.name,
...), so `crictl` users see familiar names and edged can find its own sandboxes and containers
again after a restart. A hash of each container's spec rides along as an annotation; when the
spec changes, the container is replaced.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

from cri.runtime.v1 import api_pb2 as cri

from edge.edged import paths, subpaths
from edge.edged.quantity import BadQuantity, cpu_millis, memory_bytes
from edge.edged.volumes import API_DATA, Lookup, object_data

POD_UID = "io.kubernetes.pod.uid"
POD_NAME = "io.kubernetes.pod.name"
POD_NAMESPACE = "io.kubernetes.pod.namespace"
CONTAINER_NAME = "io.kubernetes.container.name"
CONTAINER_HASH = "io.kubernetes.container.hash"
RESTART_COUNT = "io.kubernetes.container.restartCount"
MANAGED_BY = "kubeedge-py.io/managed"

_REFERENCE = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")


class SpecError(Exception):
    """The pod spec cannot be turned into a container (a missing reference, a bad value)."""


def sandbox_config(pod: dict[str, Any], log_dir: Path, attempt: int = 0) -> cri.PodSandboxConfig:
    meta = pod["metadata"]
    spec = pod.get("spec", {})
    host_network = bool(spec.get("hostNetwork"))
    cfg = cri.PodSandboxConfig(
        metadata=cri.PodSandboxMetadata(
            name=meta["name"],
            uid=meta["uid"],
            namespace=meta.get("namespace", "default"),
            attempt=attempt,
        ),
        # A host-network pod has the node's UTS namespace: setting a hostname there fails
        # ("unable to set hostname without a private UTS namespace"); the kubelet sets none.
        hostname="" if host_network else spec.get("hostname") or meta["name"],
        log_directory=str(log_dir),
        labels={
            POD_UID: meta["uid"],
            POD_NAME: meta["name"],
            POD_NAMESPACE: meta.get("namespace", "default"),
            MANAGED_BY: "true",
        },
        annotations=dict(meta.get("annotations") or {}),
    )
    options = cfg.linux.security_context.namespace_options
    options.network = cri.NODE if host_network else cri.POD
    options.pid = cri.CONTAINER  # each container's process is its PID 1, as with the kubelet
    for c in spec.get("containers") or []:
        for port in c.get("ports") or []:
            if port.get("hostPort"):
                cfg.port_mappings.add(
                    protocol=cri.UDP if port.get("protocol") == "UDP" else cri.TCP,
                    container_port=int(port["containerPort"]),
                    host_port=int(port["hostPort"]),
                    host_ip=port.get("hostIP", ""),
                )
    return cfg


def container_hash(container: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(container, sort_keys=True).encode()).hexdigest()[:16]


def container_config(
    pod: dict[str, Any],
    container: dict[str, Any],
    *,
    lookup: Lookup,
    volume_paths: dict[str, str],
    subpath_dir: Path,
    restart_count: int,
    pod_ip: str,
    node_name: str,
    host_ip: str = "",
) -> cri.ContainerConfig:
    meta = pod["metadata"]
    name = container["name"]
    if not paths.DNS_LABEL.match(name):  # joined into the log path containerd writes
        raise SpecError(f"container name {name!r} must be a DNS label")
    cfg = cri.ContainerConfig(
        metadata=cri.ContainerMetadata(name=name, attempt=restart_count),
        image=cri.ImageSpec(image=container["image"]),
        command=container.get("command") or [],
        args=container.get("args") or [],
        working_dir=container.get("workingDir", ""),
        log_path=f"{name}/{restart_count}.log",
        labels={
            POD_UID: meta["uid"],
            POD_NAME: meta["name"],
            POD_NAMESPACE: meta.get("namespace", "default"),
            CONTAINER_NAME: name,
        },
        annotations={CONTAINER_HASH: container_hash(container), RESTART_COUNT: str(restart_count)},
        tty=bool(container.get("tty")),
        stdin=bool(container.get("stdin")),
    )
    envs = env(pod, container, lookup, pod_ip=pod_ip, node_name=node_name, host_ip=host_ip)
    for key, value in envs:
        cfg.envs.add(key=key, value=value)
    read_only = _api_data_volumes(pod)
    for index, mount in enumerate(container.get("volumeMounts") or []):
        pinned = subpath_dir / str(mount.get("name")) / name / str(index)
        host = _mount_source(name, mount, volume_paths, dict(envs), pinned)
        cfg.mounts.add(
            container_path=mount["mountPath"],
            host_path=host,
            readonly=bool(mount.get("readOnly")) or mount["name"] in read_only,
        )
    _resources(cfg.linux.resources, container.get("resources") or {})
    _security(cfg.linux.security_context, pod.get("spec", {}), container)
    options = cfg.linux.security_context.namespace_options
    options.network = cri.NODE if pod.get("spec", {}).get("hostNetwork") else cri.POD
    options.pid = cri.CONTAINER
    return cfg


def _security(
    out: cri.LinuxContainerSecurityContext, spec: dict[str, Any], container: dict[str, Any]
) -> None:
    """securityContext as the kubelet applies it: the container's settings over the pod's
    (runAsUser, runAsGroup, runAsNonRoot), plus the container-only ones (privileged,
    readOnlyRootFilesystem, capabilities, allowPrivilegeEscalation) and the pod's
    supplementalGroups/fsGroup as extra groups."""
    pod_sc = spec.get("securityContext") or {}
    sc = container.get("securityContext") or {}
    user = sc.get("runAsUser", pod_sc.get("runAsUser"))
    group = sc.get("runAsGroup", pod_sc.get("runAsGroup"))
    if user is not None:
        out.run_as_user.value = int(user)
    if group is not None:
        out.run_as_group.value = int(group)
    if sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot")) and (user is None or int(user) == 0):
        # The kubelet checks the image's user; edged does not read it, so it asks for a uid.
        raise SpecError(
            f"container {container['name']}: runAsNonRoot is set but runAsUser is "
            f"{'0' if user is not None else 'not set'} (edged needs a non-zero runAsUser)"
        )
    out.privileged = bool(sc.get("privileged"))
    out.readonly_rootfs = bool(sc.get("readOnlyRootFilesystem"))
    caps = sc.get("capabilities") or {}
    out.capabilities.add_capabilities.extend(str(c) for c in caps.get("add") or [])
    out.capabilities.drop_capabilities.extend(str(c) for c in caps.get("drop") or [])
    out.no_new_privs = sc.get("allowPrivilegeEscalation") is False
    groups = [int(g) for g in pod_sc.get("supplementalGroups") or []]
    if pod_sc.get("fsGroup") is not None:
        groups.append(int(pod_sc["fsGroup"]))
    out.supplemental_groups.extend(groups)


def unsupported(pod: dict[str, Any]) -> list[str]:
    """What a pod asks for that edged does not do yet: refused with a reason, never ignored."""
    spec = pod.get("spec") or {}
    out = []
    for c in spec.get("initContainers") or []:
        if c.get("restartPolicy"):  # a sidecar: runs beside the containers, probed, restarted
            out.append(f"restartPolicy of init container {c.get('name')} (sidecar containers)")
    for c in spec.get("containers") or []:
        for kind in ("livenessProbe", "readinessProbe", "startupProbe"):
            scheme = str(((c.get(kind) or {}).get("httpGet") or {}).get("scheme") or "HTTP")
            if scheme.upper() not in ("HTTP", "HTTPS"):
                out.append(f"{kind}.httpGet.scheme {scheme} of container {c.get('name')}")
    for v in spec.get("volumes") or []:
        medium = str((v.get("emptyDir") or {}).get("medium") or "")
        if medium not in ("", "Memory"):  # HugePages: edged does not reserve huge pages
            out.append(f"emptyDir.medium {medium} of volume {v.get('name')}")
    return out


def _api_data_volumes(pod: dict[str, Any]) -> set[str]:
    """configMap/secret/projected volumes: edged writes them, so containers get them read-only
    (as from the kubelet) and cannot plant a link edged would later write through."""
    volumes = pod.get("spec", {}).get("volumes") or []
    return {v["name"] for v in volumes if any(kind in v for kind in API_DATA)}


def _mount_source(
    container: str,
    mount: dict[str, Any],
    volume_paths: dict[str, str],
    envs: dict[str, str],
    pinned: Path,
) -> str:
    """The host path of a volumeMount: its volume, or for a subPath a bind mount (at `pinned`)
    of exactly the folder or file checked inside it (subpaths.py)."""
    host = volume_paths.get(mount["name"])
    if host is None:
        raise SpecError(f"container {container}: volumeMount {mount['name']!r} has no volume")
    try:
        sub = mount.get("subPath") or _expand(mount.get("subPathExpr") or "", envs)
        if not sub:
            return host
        paths.check_label(mount["name"], "volumeMount name")
        return str(subpaths.pin(Path(host), sub, pinned))
    except (paths.UnsafePath, OSError, ValueError) as exc:
        raise SpecError(
            f"failed to prepare subPath for volumeMount {mount['name']!r} "
            f"of container {container!r}: {exc}"
        ) from exc


def _expand(expr: str, envs: dict[str, str]) -> str:
    """subPathExpr: $(VAR) from the container's environment; $$ is a literal $ (kubelet)."""
    missing: list[str] = []

    def value(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        if not envs.get(m.group(1)):
            missing.append(m.group(1))
        return envs.get(m.group(1), "")

    expanded = _REFERENCE.sub(value, expr)
    if missing:
        raise ValueError(f"subPathExpr {expr!r}: missing value for {', '.join(missing)}")
    return expanded


def _resources(res: cri.LinuxContainerResources, spec: dict[str, Any]) -> None:
    limits = spec.get("limits") or {}
    requests = spec.get("requests") or {}
    try:
        if "cpu" in limits:
            res.cpu_period = 100_000
            res.cpu_quota = max(1000, cpu_millis(limits["cpu"]) * 100)
        cpu_request = requests.get("cpu") or limits.get("cpu")
        res.cpu_shares = max(2, cpu_millis(cpu_request) * 1024 // 1000) if cpu_request else 2
        if "memory" in limits:
            res.memory_limit_in_bytes = memory_bytes(limits["memory"])
    except BadQuantity as exc:
        raise SpecError(str(exc)) from None


def env(
    pod: dict[str, Any],
    container: dict[str, Any],
    lookup: Lookup,
    *,
    pod_ip: str,
    node_name: str,
    host_ip: str = "",
) -> list[tuple[str, str]]:
    """The container's environment: envFrom first, then env (later entries win)."""
    ns = pod["metadata"].get("namespace", "default")
    values: dict[str, str] = {}
    for src in container.get("envFrom") or []:
        prefix = src.get("prefix", "")
        for kind, key in (("configmap", "configMapRef"), ("secret", "secretRef")):
            if key in src:
                obj = lookup(kind, ns, src[key].get("name", ""))
                if obj is None:
                    if src[key].get("optional"):
                        continue
                    raise SpecError(f"{kind} {ns}/{src[key].get('name')} not found")
                for k, v in object_data(kind, obj).items():
                    values[prefix + k] = v.decode(errors="replace")
    for item in container.get("env") or []:
        if "value" in item or "valueFrom" not in item:
            values[item["name"]] = str(item.get("value", ""))
            continue
        resolved = _value_from(pod, item["valueFrom"], ns, lookup, (pod_ip, host_ip), node_name)
        if resolved is not None:
            values[item["name"]] = resolved
    return list(values.items())


def _value_from(
    pod: dict[str, Any],
    ref: dict[str, Any],
    ns: str,
    lookup: Lookup,
    ips: tuple[str, str],  # (pod IP, host IP)
    node: str,
) -> str | None:
    for kind, key in (("configmap", "configMapKeyRef"), ("secret", "secretKeyRef")):
        if key in ref:
            sel = ref[key]
            obj = lookup(kind, ns, sel.get("name", ""))
            data = object_data(kind, obj) if obj is not None else {}
            if sel.get("key") not in data:
                if sel.get("optional"):
                    return None
                raise SpecError(f"{kind} {ns}/{sel.get('name')} has no key {sel.get('key')!r}")
            return data[sel["key"]].decode(errors="replace")
    if "fieldRef" in ref:
        path = ref["fieldRef"].get("fieldPath", "")
        fields = {
            "metadata.name": pod["metadata"]["name"],
            "metadata.namespace": ns,
            "metadata.uid": pod["metadata"]["uid"],
            "spec.nodeName": node,
            "spec.serviceAccountName": pod.get("spec", {}).get("serviceAccountName", ""),
            "status.podIP": ips[0],
            "status.hostIP": ips[1],
        }
        if path not in fields:
            raise SpecError(f"unsupported fieldRef {path!r}")
        return str(fields[path])
    raise SpecError(f"unsupported valueFrom {sorted(ref)}")
