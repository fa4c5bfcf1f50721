"""edged: runs this node's pods on containerd through the CRI, and reports node and pods.

At start it brings up the container runtime (an existing one at --runtime-endpoint, or a private
containerd it supervises under DATA_DIR/containerd), imports the OCI archives in --images-dir,
registers the Node, and rebuilds its pods from metamanager's SQLite store, so it works with no
cloud: running containers are adopted, not recreated. Then it follows what metamanager passes
on (pods, configmaps, secrets), runs one PodWorker per pod, reports node status every
--node-status-interval, renews the node Lease, reports pod status when it changes, records
Kubernetes Events about its pods and the node as the kubelet does (events.py), and answers
log requests from `kubectl logs`.

Stopping edgecore leaves pods and the private containerd running, as stopping a kubelet does;
while edgecore runs, a private containerd that dies is started again.
"""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path
from typing import Any

from cri.runtime.v1 import api_pb2 as cri

from common.bus import Bus
from common.envelope import Message, new_message, resource
from common.errors import ConfigError, KubeEdgeError, UnknownModule
from common.names import Group, Module, Operation, ResourceType
from common.supervisor import together
from edge.edged import paths, podspec, volumes
from edge.edged.containerd import ManagedContainerd, import_images
from edge.edged.cri import CRI, CRIError
from edge.edged.events import EventRecorder
from edge.edged.logserver import LogServer
from edge.edged.node import host_ip, node_object, node_status, parse_taints
from edge.edged.worker import PodWorker, Timing
from edge.settings import EdgeSettings

log = logging.getLogger(__name__)

QUERY_TIMEOUT = 10.0


class Edged:
    name: str = Module.EDGED
    group: str = Group.EDGED

    def __init__(self, bus: Bus, settings: EdgeSettings) -> None:
        self.bus = bus
        self.settings = settings
        self.node = settings.node_name
        self.root = Path(settings.data_dir)
        self.runtime = CRI()
        self.managed: ManagedContainerd | None = None
        self.runtime_version = ""
        self.host_ip = host_ip()
        self.objects: dict[tuple[str, str, str], dict[str, Any]] = {}
        self.workers: dict[str, PodWorker] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self.logs = LogServer(
            self.root, self._worker_of, self.send_up, max_streams=settings.max_log_streams
        )
        self.events = EventRecorder(self.node, self._send_event)
        self.ready = asyncio.Event()
        try:
            self.taints = parse_taints(settings.register_with_taints)
        except ValueError as exc:
            raise ConfigError(f"--register-with-taints: {exc}") from exc

    # -- lifecycle -------------------------------------------------------------------------

    async def run(self) -> None:
        if not self.ready.is_set():
            volumes.private_pod_dirs(self.root)
            await self._start_runtime()
            await self._register()
            await self._restore()
            self.ready.set()
        loops = {
            "edged_inbox": self._inbox(),
            "edged_node_status": self._node_status_loop(),
            "edged_lease": self._lease_loop(),
        }
        if self.managed is not None:
            loops["edged_runtime"] = self._keep_runtime(self.managed)
        await together(**loops)

    async def close(self) -> None:
        await self.logs.close()
        for task in self._tasks.values():
            task.cancel()
        await asyncio.gather(*self._tasks.values(), return_exceptions=True)
        self._tasks.clear()
        await self.runtime.close()

    async def _start_runtime(self) -> None:
        endpoint = self.settings.runtime_endpoint
        if not endpoint:
            self.managed = ManagedContainerd(
                self.root / "containerd",
                bridge=self.settings.cni_bridge,
                pod_cidr=self.settings.pod_cidr,
            )
            log.info("edged: starting the node's private containerd (first start takes a few s)")
            endpoint = await self.managed.start()
        await self.runtime.connect(endpoint)
        version = await self.runtime.version()
        self.runtime_version = f"{version.runtime_name}://{version.runtime_version}"
        images = (
            Path(self.settings.images_dir) if self.settings.images_dir else self.root / "images"
        )
        if images.is_dir():
            names = await import_images(
                endpoint.removeprefix("unix://"), images, on_skip=self._archive_skipped
            )
            if names:
                log.info("edged: images available: %s", ", ".join(names))
        log.info("edged: runtime %s at %s", self.runtime_version, endpoint)

    def _archive_skipped(self, archive: Path, error: Exception) -> None:
        message = f"image archive {archive.name} skipped: {error}"
        self.events.node("ImageImportFailed", message, warning=True)

    async def _keep_runtime(self, managed: ManagedContainerd) -> None:
        """Start the node's private containerd again when it dies (as systemd would restart a
        kubelet's runtime). Its pods live on in their shims and are found again."""
        while True:
            await asyncio.sleep(self.settings.node_status_interval)
            if not managed.running():
                log.warning(
                    "edged: the node's containerd (pid %s) is gone; starting it", managed.pid
                )
                await managed.start()
                log.info("edged: containerd is back (pid %s)", managed.pid)

    async def _restore(self) -> None:
        """Rebuild pods from the SQLite store (works with no cloud); remove orphans."""
        for kind in (ResourceType.CONFIGMAP, ResourceType.SECRET, ResourceType.POD):
            for obj in await self._query(kind):
                self._remember(kind, obj)
        for (stored_kind, _, _), pod in list(self.objects.items()):
            if stored_kind == ResourceType.POD and pod.get("spec", {}).get("nodeName") == self.node:
                self._start_worker(pod)
        known = {w.uid for w in self.workers.values()}
        for sandbox in await self.runtime.list_pod_sandbox(
            cri.PodSandboxFilter(label_selector={podspec.MANAGED_BY: "true"})
        ):
            if sandbox.labels.get(podspec.POD_UID) not in known:
                log.info(
                    "edged: removing orphaned sandbox %s (%s)",
                    sandbox.id[:12],
                    sandbox.metadata.name,
                )
                try:
                    await self.runtime.stop_pod_sandbox(sandbox.id)
                    await self.runtime.remove_pod_sandbox(sandbox.id)
                except CRIError as exc:  # the next edgecore start tries again
                    log.error("edged: orphaned sandbox %s stays: %s", sandbox.id[:12], exc)
                    continue
                self._remove_folder(sandbox.labels.get(podspec.POD_UID, ""))
        self._sweep_folders(known)
        log.info("edged: %d pod(s) restored from the local store", len(self.workers))

    def _sweep_folders(self, known: set[str]) -> None:
        """Pod folders of no pod this node runs (edgecore died after removing a pod's sandbox,
        before its folder: its Secrets, logs, a Memory emptyDir's tmpfs)."""
        pods = self.root / "pods"
        for folder in sorted(pods.iterdir()) if pods.is_dir() else []:
            if folder.name not in known and not folder.is_symlink():
                log.info("edged: removing the folder of gone pod %s", folder.name)
                self._remove_folder(folder.name)

    def _remove_folder(self, uid: str) -> None:
        try:  # volumes (Secrets), logs, saved status
            volumes.remove(self.root, uid)
        except volumes.VolumeError as exc:  # the next start tries again
            log.error("edged: the folder of pod %s stays: %s", uid, exc)

    async def _query(self, kind: str) -> list[dict[str, Any]]:
        msg = new_message(source=self.name, group=Group.META, operation=Operation.QUERY)
        msg.query.kind = kind
        reply = await self.bus.send_sync(Module.METAMANAGER, msg, QUERY_TIMEOUT)
        return [json.loads(o.object_json) for o in reply.query_result.objects]

    # -- what comes in ---------------------------------------------------------------------

    async def _inbox(self) -> None:
        while True:
            msg = await self.bus.receive(self.name)
            try:
                await self._handle(msg)
            except KubeEdgeError as exc:
                log.warning("edged: cannot handle %s: %s", msg.route.resource, exc)

    async def _handle(self, msg: Message) -> None:
        body = msg.WhichOneof("body")
        if body == "log_query":
            await self.logs.open(msg)
            return
        if body == "stream_cancel":
            await self.logs.cancel(msg)
            return
        if body != "object":
            return
        kind = msg.route.resource.split("/", 2)[1]
        obj = json.loads(msg.object.object_json) if msg.object.object_json else {}
        deleted = msg.route.operation == Operation.DELETE
        if kind in (ResourceType.CONFIGMAP, ResourceType.SECRET):
            self._remember(kind, obj, deleted=deleted)
            self._poke_users(kind, obj)
        elif kind == ResourceType.POD:
            self._on_pod(obj, deleted)

    def _remember(self, kind: str, obj: dict[str, Any], *, deleted: bool = False) -> None:
        meta = obj.get("metadata", {})
        key = (kind, meta.get("namespace", ""), meta.get("name", ""))
        if not deleted:
            self.objects[key] = obj
            return
        held = self.objects.get(key, {}).get("metadata", {}).get("uid", "")
        if not meta.get("uid") or held in ("", meta.get("uid")):  # not a newer namesake
            self.objects.pop(key, None)

    def lookup(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        return self.objects.get((kind, namespace, name))

    def _worker_of(self, namespace: str, name: str) -> PodWorker | None:
        """The live worker of pod namespace/name (a deleted namesake does not count)."""
        for worker in self.workers.values():
            if worker.namespace == namespace and worker.name == name and not worker.deleted:
                return worker
        return None

    def _poke_users(self, kind: str, obj: dict[str, Any]) -> None:
        name = obj.get("metadata", {}).get("name", "")
        for worker in self.workers.values():
            if (kind, name) in volumes.referenced(worker.pod):
                worker.poke()

    def _on_pod(self, pod: dict[str, Any], deleted: bool) -> None:
        uid = pod.get("metadata", {}).get("uid", "")
        worker = self.workers.get(uid)
        if pod.get("spec", {}).get("nodeName") != self.node and not deleted:
            return
        self._remember(ResourceType.POD, pod, deleted=deleted)
        if not deleted:
            self._retire_namesakes(pod)
        if worker is not None:
            worker.update(None if deleted else pod)
        elif not deleted:
            self._start_worker(pod)

    def _retire_namesakes(self, pod: dict[str, Any]) -> None:
        """A pod name belongs to one pod at a time: a new uid under a name means the older
        pod of that name is gone, even if its delete never reached the node (or came late)."""
        meta = pod["metadata"]
        key = f"{meta.get('namespace', 'default')}/{meta.get('name')}"
        for other in list(self.workers.values()):
            if other.key == key and other.uid != meta.get("uid") and not other.deleted:
                log.info("edged: pod %s: uid %s replaced by %s", key, other.uid, meta.get("uid"))
                other.update(None)

    def _start_worker(self, pod: dict[str, Any]) -> None:
        try:  # the uid names the pod's folder under DATA_DIR
            paths.check_element(str(pod["metadata"].get("uid", "")), "pod uid")
        except paths.UnsafePath as exc:
            log.error("edged: refusing pod %s: %s", pod["metadata"].get("name"), exc)
            return
        timing = Timing(
            self.settings.pod_sync_interval,
            self.settings.crash_backoff_initial,
            self.settings.crash_backoff_max,
            max(64 * 1024, self.settings.container_log_max_bytes),
            max(2, self.settings.container_log_max_files),
        )
        worker = PodWorker(
            pod,
            self.runtime,
            self.root,
            self.node,
            self.lookup,
            self._report_pod,
            self._pod_gone,
            timing,
            host_ip=self.host_ip,
            events=self.events,
        )
        self.workers[worker.uid] = worker
        self._tasks[worker.uid] = asyncio.create_task(self._guard(worker), name=f"pod:{worker.key}")

    async def _guard(self, worker: PodWorker) -> None:
        """Run a pod worker; an unexpected failure is logged and the worker resumes."""
        while True:
            try:
                await worker.run()
                return
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("edged: pod %s worker failed; resuming in 1s", worker.key)
                await asyncio.sleep(1)

    # -- what goes up ----------------------------------------------------------------------

    async def send_up(self, msg: Message) -> None:
        await self.bus.send(Module.EDGEHUB, msg)

    def _send_event(self, msg: Message) -> bool:
        """Events never wait: one edgehub's queue cannot take now is dropped (best-effort)."""
        try:
            self.bus.send_nowait(Module.EDGEHUB, msg)
        except (asyncio.QueueFull, UnknownModule):  # edgehub busy, or not on this bus
            return False
        return True

    def _message(self, op: str, res: str) -> Message:
        return new_message(source=self.name, group=Group.RESOURCE, operation=op, resource=res)

    async def _register(self) -> None:
        msg = self._message(Operation.INSERT, resource(None, ResourceType.NODE, self.node))
        obj = node_object(self.node, self.runtime_version, self.taints)
        ev = msg.object
        ev.api_version, ev.kind, ev.name = "v1", "Node", self.node
        ev.object_json = json.dumps(obj).encode()
        await self.send_up(msg)

    async def _node_status_loop(self) -> None:
        while True:
            ready = True
            message = ""
            try:
                await self.runtime.version()
            except CRIError as exc:
                ready, message = False, f"container runtime is down: {exc}"
            msg = self._message(
                Operation.UPDATE, resource(None, ResourceType.NODE_STATUS, self.node)
            )
            msg.node_status.node_name = self.node
            status = node_status(self.runtime_version, ready=ready, message=message)
            msg.node_status.status_json = json.dumps(status).encode()
            await self.send_up(msg)
            await asyncio.sleep(self.settings.node_status_interval)

    async def _lease_loop(self) -> None:
        while True:
            msg = self._message(
                Operation.UPDATE, f"kube-node-lease/{ResourceType.LEASE}/{self.node}"
            )
            msg.lease.node_name = self.node
            msg.lease.renew_time_ms = msg.header.timestamp_ms
            msg.lease.lease_duration_seconds = self.settings.lease_duration
            await self.send_up(msg)
            await asyncio.sleep(self.settings.lease_renew_interval)

    async def _report_pod(self, pod: dict[str, Any], status: dict[str, Any]) -> None:
        meta = pod["metadata"]
        ns = meta.get("namespace", "default")
        msg = self._message(Operation.UPDATE, resource(ns, ResourceType.POD_STATUS, meta["name"]))
        report = msg.pod_status
        report.namespace, report.name, report.uid = ns, meta["name"], meta["uid"]
        report.status_json = json.dumps(status).encode()
        await self.send_up(msg)

    async def _pod_gone(self, pod: dict[str, Any]) -> None:
        meta = pod["metadata"]
        ns = meta.get("namespace", "default")
        self.workers.pop(meta["uid"], None)
        self._tasks.pop(meta["uid"], None)
        msg = self._message(Operation.DELETE, resource(ns, ResourceType.POD, meta["name"]))
        msg.pod_status.namespace, msg.pod_status.name = ns, meta["name"]
        msg.pod_status.uid = meta["uid"]
        await self.send_up(msg)
