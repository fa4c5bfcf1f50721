"""The real control plane (kine + kube-apiserver + controller-manager + scheduler) for tests.

One control plane serves the whole test session (it takes seconds to start); it runs on an
event loop of its own in a background thread, so the tests' per-function loops never own its
processes. `wipe()` returns it to a clean cluster between tests: every object a test may have
made is deleted (finalizers dropped) and CRDs other than kubeedge's go. Namespaces stay, empty:
deleting one takes the namespace controller seconds, and re-creating a namespace that is still
terminating fails — so `kubectl apply` of a namespace keeps working, and a test that
`create`s one uses a unique name.

A test that needs other control-plane settings (short eviction timers, say) starts its own
with `TestControlPlane(...)` and stops it at the end.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

from common import join
from keadm import pki
from keadm.controlplane import ControlPlane, ControlPlaneSettings, kubeedge_crds
from keadm.processes import Backoff, ProcessGroup

T = TypeVar("T")
# The cluster's own (its controllers' service accounts, the API server's configmaps): never wiped.
UNTOUCHED_NAMESPACES = {"kube-system", "kube-public", "kubeedge"}
# Namespaced collections a test may fill: (API path prefix, plural).
# Controllers first: deleting a pod whose owner still exists only gets it recreated.
NAMESPACED = [
    ("/apis/apps/v1", "deployments"),
    ("/apis/apps/v1", "statefulsets"),
    ("/apis/apps/v1", "daemonsets"),
    ("/apis/batch/v1", "cronjobs"),
    ("/apis/batch/v1", "jobs"),
    ("/apis/apps/v1", "replicasets"),
    ("/apis/apps/v1", "controllerrevisions"),
    ("/api/v1", "pods"),
    ("/api/v1", "configmaps"),
    ("/api/v1", "secrets"),
    ("/api/v1", "events"),
    ("/api/v1", "services"),
    ("/api/v1", "serviceaccounts"),
    ("/apis/coordination.k8s.io/v1", "leases"),
    ("/apis/devices.kubeedge.io/v1beta1", "devices"),
    ("/apis/devices.kubeedge.io/v1beta1", "devicemodels"),
    ("/apis/reliablesyncs.kubeedge.io/v1alpha1", "objectsyncs"),
    ("/apis/rules.kubeedge.io/v1", "rules"),
    ("/apis/rules.kubeedge.io/v1", "ruleendpoints"),
]
CLUSTER = [
    ("/api/v1", "nodes"),
    ("/apis/reliablesyncs.kubeedge.io/v1alpha1", "clusterobjectsyncs"),
]
# What the cluster makes for itself and a wipe must leave alone.
KEEP = {
    "configmaps": {"kube-root-ca.crt"},
    "services": {"kubernetes"},
    "serviceaccounts": {"default"},
}


class TestControlPlane:
    """A control plane on a loop in its own thread; every method is synchronous."""

    __test__ = False  # not a test class, whatever its name says

    def __init__(self, data_dir: Path, **settings: Any) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="control-plane")
        self._thread.start()
        settings.setdefault("api_listen", "127.0.0.1:0")
        self.group = ProcessGroup(Backoff(0.2, 2.0, 30.0))
        self.cp = ControlPlane(ControlPlaneSettings(data_dir, **settings), self.group)

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 120) -> T:
        """Run `coro` on the control plane's loop; on timeout it is cancelled, not left going."""
        future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        try:
            return future.result(timeout)
        except TimeoutError:
            future.cancel()
            raise

    def start(self) -> TestControlPlane:
        try:
            self.run(self.cp.start(), 180)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        try:
            self.run(self.group.stop(), 60)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
            self._loop.close()

    @property
    def kubeconfig(self) -> Path:
        """The admin kubeconfig (what a test's kubectl uses)."""
        return self.cp.kubeconfig

    @property
    def cloudcore_kubeconfig(self) -> Path:
        return self.cp.kubeconfig_for(pki.CLOUDCORE)

    @property
    def server(self) -> str:
        return self.cp.server

    def request(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        return self.run(self.cp.request(method, path, body), 30)

    def wipe(self) -> None:
        """Delete everything tests make (namespaces stay, empty)."""
        for prefix, plural in CLUSTER:
            self._clear(f"{prefix}/{plural}", plural)
        _, listing = self.request("GET", "/api/v1/namespaces")
        namespaces = [n["metadata"]["name"] for n in listing.get("items", [])]
        for ns in set(namespaces) - UNTOUCHED_NAMESPACES:
            for prefix, plural in NAMESPACED:
                self._clear(f"{prefix}/namespaces/{ns}/{plural}", plural)
        self._drop_test_crds()
        self._drop_join_tokens()
        self._wait_no_pods()

    def _clear(self, path: str, plural: str) -> None:
        status, listing = self.request("GET", path)
        if status == 404:
            return  # a kind this cluster does not serve
        self._check(status, listing, f"GET {path}")
        keep = KEEP.get(plural, set())
        for item in listing.get("items", []):
            meta = item["metadata"]
            if meta["name"] in keep:
                continue
            target = f"{path}/{quote(meta['name'])}"
            if meta.get("finalizers"):
                patch = {"metadata": {"finalizers": None}}
                self._check(*self.request("PATCH", target, patch), f"PATCH {target}")
            gone = f"{target}?gracePeriodSeconds=0&propagationPolicy=Background"
            self._check(*self.request("DELETE", gone), f"DELETE {target}")

    @staticmethod
    def _check(status: int, body: Any, what: str) -> None:
        if status not in (200, 201, 202, 404):
            raise AssertionError(f"wipe: {what}: HTTP {status}: {body}")

    def _wait_no_pods(self, timeout: float = 30) -> None:
        """Pods outside the system namespaces must all be gone (none recreated)."""
        deadline = time.monotonic() + timeout
        while True:
            _, listing = self.request("GET", "/api/v1/pods")
            left = [
                f"{p['metadata']['namespace']}/{p['metadata']['name']}"
                for p in listing.get("items", [])
                if p["metadata"]["namespace"] not in UNTOUCHED_NAMESPACES
            ]
            if not left:
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"wipe: pods still there after {timeout}s: {left}")
            for name in left:
                ns, pod = name.split("/")
                self.request("DELETE", f"/api/v1/namespaces/{ns}/pods/{pod}?gracePeriodSeconds=0")
            time.sleep(0.2)

    def _drop_join_tokens(self) -> None:
        """Tokens a test made and did not spend (the edge CA in kubeedge stays)."""
        path = f"/api/v1/namespaces/{join.NAMESPACE}/secrets"
        _, listing = self.request("GET", f"{path}?fieldSelector=type%3D{join.TOKEN_SECRET_TYPE}")
        for secret in listing.get("items", []):
            self.request("DELETE", f"{path}/{secret['metadata']['name']}")

    def _drop_test_crds(self) -> None:
        ours = {crd["metadata"]["name"] for crd in kubeedge_crds()}
        base = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"
        _, listing = self.request("GET", base)
        for crd in listing.get("items", []):
            if crd["metadata"]["name"] not in ours:
                self.request("DELETE", f"{base}/{crd['metadata']['name']}")
