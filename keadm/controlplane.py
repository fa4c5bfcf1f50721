"""The embedded control plane, k3s-style: kine on SQLite, kube-apiserver, kube-controller-manager
and kube-scheduler — the real binaries that `make setup` builds from third_party/ — each a
supervised child with its log under DATA_DIR/logs/.

What it keeps in DATA_DIR: `db/state.db` (kine's SQLite: every object), `pki/` (CA, certificates,
service-account key), `kubeconfig` (admin, 0600), and one kubeconfig per component under
`pki/`. A later start reuses all of it: objects, certificates and kubeconfigs survive.

kubectl logs: kube-apiserver reaches a node's kubelet API for that, and edge nodes cannot be
reached from here. Its egress selector sends that ("cluster") traffic as HTTP CONNECT over the
unix socket `DATA_DIR/kubelet-tunnel.sock`, where cloudcore (--kubelet-tunnel-socket) answers
through the hub.

Edge autonomy: Kubernetes' node lifecycle controller taints a node that stops reporting
`node.kubernetes.io/unreachable:NoExecute`, and the taint-eviction controller then deletes its
pods after `--default-unreachable-toleration-seconds` (300 s). For an edge node a lost link is
normal and its pods keep running there, so by default the taint-eviction controller is not
started: offline nodes keep their pods bound in the API, and nothing is recreated when they
return. `offline_eviction=True` restores Kubernetes' behaviour.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import ssl
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from common import ports
from keadm import pki as pki_mod
from keadm.processes import ProcessGroup, Spec

ROOT = Path(__file__).resolve().parents[1]
BIN_DIR = Path(os.environ.get("KUBEEDGE_K8S_BIN", ROOT / ".k8s" / "bin"))
CRD_DIR = ROOT / "deploy" / "crds"
RBAC = ROOT / "deploy" / "cloudcore-rbac.yaml"
# What `apply` knows how to address: kind -> (API prefix, plural, namespaced).
KINDS = {
    "CustomResourceDefinition": (
        "/apis/apiextensions.k8s.io/v1",
        "customresourcedefinitions",
        False,
    ),
    "Namespace": ("/api/v1", "namespaces", False),
    "ServiceAccount": ("/api/v1", "serviceaccounts", True),
    "ClusterRole": ("/apis/rbac.authorization.k8s.io/v1", "clusterroles", False),
    "ClusterRoleBinding": ("/apis/rbac.authorization.k8s.io/v1", "clusterrolebindings", False),
    "Role": ("/apis/rbac.authorization.k8s.io/v1", "roles", True),
    "RoleBinding": ("/apis/rbac.authorization.k8s.io/v1", "rolebindings", True),
}
BINARIES = ("kine", "kube-apiserver", "kube-controller-manager", "kube-scheduler")
SERVICE_CIDR = "10.43.0.0/16"
MAX_UNIX_PATH = 107


class ControlPlaneError(Exception):
    """The control plane cannot be started (binaries missing, a component never ready)."""


@dataclass
class ControlPlaneSettings:
    data_dir: Path
    """Where kine's SQLite, the PKI, kubeconfigs and logs live."""
    api_listen: str = "127.0.0.1:6443"
    """host:port kube-apiserver serves on (port 0: a free port is picked)."""
    bin_dir: Path = BIN_DIR
    """Where kine and the Kubernetes binaries are (built by scripts/build-k8s.sh)."""
    offline_eviction: bool = False
    """Evict pods of unreachable nodes, as Kubernetes does; off keeps edge pods bound."""
    unreachable_toleration: int = 300
    """Seconds a pod tolerates its node being unreachable or not ready before eviction."""
    node_monitor_grace: float = 50.0
    """Seconds without a heartbeat before the node lifecycle controller marks a node Unknown."""
    node_monitor_period: float = 5.0
    """How often the node lifecycle controller checks the nodes."""
    log_level: int = 1
    """klog verbosity of the Kubernetes components."""
    extra_args: dict[str, list[str]] = field(default_factory=dict)
    """More flags per component name (e.g. {"kube-apiserver": ["--max-requests-inflight=50"]})."""


class ControlPlane:
    def __init__(self, cfg: ControlPlaneSettings, group: ProcessGroup) -> None:
        self.cfg = cfg
        self.group = group
        self.data = cfg.data_dir.resolve()
        self.host, port = cfg.api_listen.rsplit(":", 1)
        self.port = int(port) or ports.free_port(self.host)
        self.pki = pki_mod.Pki(self.data / "pki")

    @property
    def server(self) -> str:
        return f"https://{self.host}:{self.port}"

    @property
    def kubeconfig(self) -> Path:
        """The admin kubeconfig (cluster-admin through system:masters)."""
        return self.data / "kubeconfig"

    def kubeconfig_for(self, who: pki_mod.Identity) -> Path:
        return self.data / "pki" / f"{who.file}.kubeconfig"

    async def start(self) -> None:
        """Start kine, kube-apiserver (waiting for /readyz), install kubeedge's CRDs, then the
        controller-manager and the scheduler."""
        missing = [b for b in BINARIES if not (self.cfg.bin_dir / b).exists()]
        if missing:
            raise ControlPlaneError(
                f"{', '.join(missing)} not found in {self.cfg.bin_dir}; run `make setup` "
                "(it builds them from third_party/, about 10 minutes the first time)"
            )
        self.data.mkdir(parents=True, exist_ok=True, mode=0o700)
        (self.data / "db").mkdir(exist_ok=True, mode=0o700)
        await self._check_nothing_running()
        await asyncio.to_thread(self._prepare_pki)
        await self.group.add(self._kine())
        await self.group.add(self._apiserver())
        await self.install_crds()
        await self.group.add(self._controller_manager())
        await self.group.add(self._scheduler())
        # Pods are refused until the service-account controller has made `default` in their
        # namespace: be ready for them before saying the control plane is.
        await self._wait_for("/api/v1/namespaces/default/serviceaccounts/default", 60)

    async def _check_nothing_running(self) -> None:
        """Two kines on one SQLite file, or an API server answering for another, would corrupt
        or confuse: refuse to start over what a killed supervisor may have left."""
        with contextlib.suppress(OSError):
            if await self._kine_ready():
                raise ControlPlaneError(f"a kine already serves {self.kine_socket}; stop it first")
        try:
            _, writer = await asyncio.open_connection(self.host, self.port)
        except OSError:
            return
        writer.close()
        await writer.wait_closed()
        raise ControlPlaneError(f"{self.host}:{self.port} is in use; choose another --api-listen")

    def _prepare_pki(self) -> None:
        pki_mod.ensure_pki(self.pki.dir, [self.host])
        pki_mod.write_kubeconfig(
            self.kubeconfig, server=self.server, pki=self.pki, who=pki_mod.ADMIN
        )
        for who in (pki_mod.CONTROLLER_MANAGER, pki_mod.SCHEDULER, pki_mod.CLOUDCORE):
            pki_mod.write_kubeconfig(
                self.kubeconfig_for(who), server=self.server, pki=self.pki, who=who
            )

    # -- the components ------------------------------------------------------------------

    def _spec(self, name: str, args: list[str], **kw: Any) -> Spec:
        argv = [str(self.cfg.bin_dir / name), *args, *self.cfg.extra_args.get(name, [])]
        # If the supervisor dies, every component is told at once: kube-apiserver, its storage
        # gone, then takes minutes to shut down gracefully. These hold nothing a SIGKILL can
        # lose (kine's SQLite is crash-safe), so they are killed. An orderly stop still sends
        # SIGTERM, in reverse order.
        kw.setdefault("death_signal", signal.SIGKILL)
        return Spec(name, argv, self.data / "logs" / f"{name}.log", **kw)

    @property
    def kubelet_tunnel(self) -> Path:
        """Where cloudcore should serve the kubelet API of edge nodes (--kubelet-tunnel-socket)."""
        return self.data / "kubelet-tunnel.sock"

    def _write_egress_config(self) -> Path:
        if len(str(self.kubelet_tunnel)) > MAX_UNIX_PATH:
            raise ControlPlaneError(f"{self.kubelet_tunnel}: too long for a unix socket path")
        config = {
            "apiVersion": "apiserver.k8s.io/v1beta1",
            "kind": "EgressSelectorConfiguration",
            "egressSelections": [
                {
                    "name": "cluster",
                    "connection": {
                        "proxyProtocol": "HTTPConnect",
                        "transport": {"uds": {"udsName": str(self.kubelet_tunnel)}},
                    },
                }
            ],
        }
        path = self.data / "egress-selector.yaml"
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        return path

    @property
    def kine_socket(self) -> Path:
        return self.data / "kine.sock"

    def _kine(self) -> Spec:
        self.kine_socket.unlink(missing_ok=True)
        db = self.data / "db" / "state.db"
        return self._spec(
            "kine",
            [
                f"--endpoint=sqlite://{db}?_journal=WAL&cache=shared&_busy_timeout=30000",
                f"--listen-address=unix://{self.kine_socket}",
                # Its default serves metrics on :8080 of every interface: off, so several
                # control planes (tests, a second data dir) never collide on a fixed port.
                "--metrics-bind-address=0",
            ],
            ready=self._kine_ready,
        )

    async def _kine_ready(self) -> bool:
        if not self.kine_socket.exists():
            return False
        _, writer = await asyncio.open_unix_connection(str(self.kine_socket))
        writer.close()
        await writer.wait_closed()
        return True

    def _apiserver(self) -> Spec:
        p = self.pki
        return self._spec(
            "kube-apiserver",
            [
                f"--etcd-servers=unix://{self.kine_socket}",
                f"--bind-address={self.host}",
                f"--advertise-address={self.host}",
                f"--secure-port={self.port}",
                f"--tls-cert-file={p.serving_cert}",
                f"--tls-private-key-file={p.serving_key}",
                f"--client-ca-file={p.ca_cert}",
                f"--service-account-key-file={p.sa_pub}",
                f"--service-account-signing-key-file={p.sa_key}",
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                f"--kubelet-client-certificate={p.cert(pki_mod.KUBELET_CLIENT)}",
                f"--kubelet-client-key={p.key(pki_mod.KUBELET_CLIENT)}",
                "--authorization-mode=Node,RBAC",
                "--anonymous-auth=false",
                "--allow-privileged=true",
                "--profiling=false",
                "--endpoint-reconciler-type=none",
                f"--egress-selector-config-file={self._write_egress_config()}",
                f"--default-unreachable-toleration-seconds={self.cfg.unreachable_toleration}",
                f"--default-not-ready-toleration-seconds={self.cfg.unreachable_toleration}",
                f"--v={self.cfg.log_level}",
            ],
            ready=self._api_ready,
        )

    async def _api_ready(self) -> bool:
        status, _ = await self.request("GET", "/readyz")
        return status == 200

    def _controller_manager(self) -> Spec:
        p = self.pki
        controllers = "*" if self.cfg.offline_eviction else "*,-taint-eviction-controller"
        kubeconfig = self.kubeconfig_for(pki_mod.CONTROLLER_MANAGER)
        return self._spec(
            "kube-controller-manager",
            [
                *_client_component_flags(kubeconfig),
                "--use-service-account-credentials=true",
                f"--service-account-private-key-file={p.sa_key}",
                f"--root-ca-file={p.ca_cert}",
                f"--cluster-signing-cert-file={p.ca_cert}",
                f"--cluster-signing-key-file={p.ca_key}",
                f"--controllers={controllers}",
                f"--node-monitor-grace-period={self.cfg.node_monitor_grace}s",
                f"--node-monitor-period={self.cfg.node_monitor_period}s",
                "--profiling=false",
                f"--v={self.cfg.log_level}",
            ],
        )

    def _scheduler(self) -> Spec:
        kubeconfig = self.kubeconfig_for(pki_mod.SCHEDULER)
        return self._spec(
            "kube-scheduler",
            [
                *_client_component_flags(kubeconfig),
                "--profiling=false",
                f"--v={self.cfg.log_level}",
            ],
        )

    # -- talking to the API server as admin ----------------------------------------------

    def _ssl(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.pki.ca_cert))
        ctx.load_cert_chain(self.pki.cert(pki_mod.ADMIN), self.pki.key(pki_mod.ADMIN))
        return ctx

    async def request(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        """(HTTP status, decoded JSON body or text) of one admin request; PATCH is a JSON
        merge patch."""
        return await asyncio.to_thread(self._request, method, path, body)

    def _request(self, method: str, path: str, body: Any) -> tuple[int, Any]:
        data = None if body is None else json.dumps(body).encode()
        kind = "application/merge-patch+json" if method == "PATCH" else "application/json"
        req = urllib.request.Request(
            self.server + path,
            data=data,
            method=method,
            headers={"Content-Type": kind, "Accept": "application/json"},
        )
        try:
            with urllib.request.urlopen(req, context=self._ssl(), timeout=10) as resp:
                return resp.status, _decode(resp.read())
        except urllib.error.HTTPError as exc:
            return exc.code, _decode(exc.read())

    async def install_crds(self) -> None:
        """Create or update kubeedge's CRDs (deploy/crds/) and cloudcore's RBAC
        (deploy/cloudcore-rbac.yaml); wait until each CRD is Established."""
        crds = kubeedge_crds()
        for obj in [*crds, *cloudcore_rbac()]:
            await self.apply(obj)
        base = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"
        for crd in crds:
            await self._wait_established(f"{base}/{crd['metadata']['name']}")

    async def apply(self, obj: dict[str, Any]) -> None:
        """Create `obj`, or replace what is there (one of the kinds in KINDS)."""
        prefix, plural, namespaced = KINDS[obj["kind"]]
        meta = obj["metadata"]
        ns = f"/namespaces/{meta['namespace']}" if namespaced else ""
        collection = f"{prefix}{ns}/{plural}"
        status, current = await self.request("GET", f"{collection}/{meta['name']}")
        if status == 404:
            status, answer = await self.request("POST", collection, obj)
        elif status != 200:
            raise ControlPlaneError(
                f"reading {obj['kind']} {meta['name']}: HTTP {status}: {current}"
            )
        else:
            meta["resourceVersion"] = current["metadata"]["resourceVersion"]
            status, answer = await self.request("PUT", f"{collection}/{meta['name']}", obj)
        if status not in (200, 201):
            raise ControlPlaneError(
                f"applying {obj['kind']} {meta['name']}: HTTP {status}: {answer}"
            )

    async def _wait_for(self, path: str, timeout: float) -> None:
        try:
            async with asyncio.timeout(timeout):
                while True:
                    if (await self.request("GET", path))[0] == 200:
                        return
                    await asyncio.sleep(0.1)
        except TimeoutError:
            raise ControlPlaneError(f"{path} did not appear within {timeout:.0f}s") from None

    async def _wait_established(self, path: str) -> None:
        try:
            async with asyncio.timeout(30):
                while True:
                    _, crd = await self.request("GET", path)
                    status = crd.get("status") if isinstance(crd, dict) else None
                    conditions = (status or {}).get("conditions") or []
                    if any(
                        c.get("type") == "Established" and c.get("status") == "True"
                        for c in conditions
                    ):
                        return
                    await asyncio.sleep(0.1)
        except TimeoutError:
            raise ControlPlaneError(f"{path} not Established within 30s") from None


def _client_component_flags(kubeconfig: Path) -> list[str]:
    """What controller-manager and scheduler share: one identity for everything they call,
    no serving port of their own (nothing here scrapes them), one instance (no election)."""
    return [
        f"--kubeconfig={kubeconfig}",
        f"--authentication-kubeconfig={kubeconfig}",
        f"--authorization-kubeconfig={kubeconfig}",
        "--secure-port=0",
        "--leader-elect=false",
    ]


def _manifests(*paths: Path) -> list[dict[str, Any]]:
    return [doc for path in paths for doc in yaml.safe_load_all(path.read_text()) if doc]


def cloudcore_rbac() -> list[dict[str, Any]]:
    return _manifests(RBAC)


def kubeedge_crds() -> list[dict[str, Any]]:
    return _manifests(*sorted(CRD_DIR.glob("*.yaml")))


def _decode(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        return raw.decode(errors="replace")
