"""devicecontroller: Device and DeviceModel objects to the edge nodes; what nodes report, back.

What it does:
- lists and watches DeviceModels and Devices (devices.kubeedge.io/v1beta1) through the
  official kubernetes client, through cloud/kube.py (edge/… never sees the client: it gets
  objects on the hub);
- downstream (group `twin`, through cloudhub's durable per-node queue): each Device goes to the
  node in its spec.nodeName (`{ns}/device/{name}`, insert/update/delete, body `object`),
  preceded by its DeviceModel (`{ns}/devicemodel/{name}`); a Device that moves to another node
  is deleted from the old one; changes of status only are not sent (they are ours);
- membership: after the first listing and whenever a node's set of devices changes, the node
  gets a snapshot `null/membership/{node}` listing all its devices as of the watch's
  resourceVersion, so a device deleted while cloudcore was down leaves the edge too;
- upstream (group `twin`, from cloudhub): a node's twin snapshot (`{ns}/twin/{name}`) and
  device state (`{ns}/devicestate/{name}`) become the Device's status (twins[].reported,
  observedDesired; state; lastOnlineTime), written by status.StatusWriter. A node may report
  only for its own devices: cloudhub's authorizer refuses the rest before they get here
  (asking `device_node`), and `_report` checks again.

Everything it sends is idempotent at the edge (versions are compared there), and every status
write is a merge patch, so repeating any of it after a restart is harmless.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
from collections import defaultdict
from pathlib import Path
from typing import Any

from cloud.devicecontroller.status import StatusWriter, state_status, twins_status
from cloud.kube import EventQueue, Kube, Obj, WatchEvent, event_queue
from cloud.kubeerrors import KubeAPIError
from cloud.settings import CloudSettings
from common.bus import Bus
from common.envelope import Message, new_message, now_ms, parse_resource, split_node, with_node
from common.errors import BadMessage
from common.names import CLUSTER_NAMESPACE, Group, Module, Operation, ResourceType
from common.supervisor import together

log = logging.getLogger(__name__)

DEVICE, MODEL = "Device", "DeviceModel"
GROUP, VERSION = "devices.kubeedge.io", "v1beta1"
API_VERSION = f"{GROUP}/{VERSION}"
MERGE_PATCH = "application/merge-patch+json"


def key_of(obj: Obj) -> str:
    meta = obj.get("metadata") or {}
    return f"{meta.get('namespace', '')}/{meta.get('name', '')}"


def rv_of(obj: Obj) -> str:
    return str((obj.get("metadata") or {}).get("resourceVersion") or "")


def spec_of(obj: Obj | None) -> dict[str, Any]:
    spec = (obj or {}).get("spec")
    return spec if isinstance(spec, dict) else {}


def node_of(obj: Obj | None) -> str:
    return str(spec_of(obj).get("nodeName") or "")


def model_key_of(device: Obj) -> str:
    ref = spec_of(device).get("deviceModelRef") or {}
    name = ref.get("name", "") if isinstance(ref, dict) else ""
    return f"{key_of(device).split('/', 1)[0]}/{name}" if name else ""


class DeviceController:
    name: str = Module.DEVICECONTROLLER
    group: str = Group.TWIN

    def __init__(
        self,
        bus: Bus,
        settings: CloudSettings,
        *,
        kubeconfig: Path,
    ) -> None:
        self.bus = bus
        self.settings = settings
        self.kubeconfig = kubeconfig  # --kubeconfig: the cluster cloudcore works on
        self.models: dict[str, Obj] = {}
        self.devices: dict[str, Obj] = {}
        self.on_node: dict[str, set[str]] = defaultdict(set)  # node -> device keys
        self.version = ""  # how far the Device watch has come (a resourceVersion)
        self.synced = asyncio.Event()
        self._synced_kinds: set[str] = set()
        self._last_report: dict[str, int] = {}  # device key -> newest twin snapshot time (ms)
        self.status = StatusWriter(settings.device_status_batch)
        self.kube: Kube | None = None

    async def run(self) -> None:
        kube = Kube(
            self.kubeconfig,
            name=self.name,
            workers=self.settings.device_api_workers,
            watch_timeout=self.settings.kube_watch_timeout,
        )
        self.kube = kube
        try:
            await kube.connect()
            events: EventQueue = event_queue()
            list_fn = kube.custom.list_cluster_custom_object
            for kind, plural in ((MODEL, "devicemodels"), (DEVICE, "devices")):
                fn = functools.partial(list_fn, GROUP, VERSION, plural)
                kube.informer(kind, API_VERSION, fn, events)
            kube.start_informers()
            write = functools.partial(patch_status, kube)
            await together(
                devices_follow=self._follow(events),
                devices_upstream=self._upstream(),
                devices_status=self.status.run(write),
            )
        finally:
            self.kube = None
            await kube.close()

    async def close(self) -> None:
        return None

    # -- the API -> nodes ------------------------------------------------------------------

    async def _follow(self, events: EventQueue) -> None:
        while True:
            kind, event = await events.get()
            if kind == MODEL:
                await self._on_model(event)
            else:
                await self._on_device(event)

    async def _on_model(self, event: WatchEvent) -> None:
        if event.type == "SYNC":
            listed = {key_of(o): o for o in event.items}
            for key in set(self.models) - set(listed):
                await self._model_changed(self.models[key], deleted=True)
            for obj in listed.values():
                await self._model_changed(obj, deleted=False)
            self._mark_synced(MODEL)
        else:
            await self._model_changed(event.obj, deleted=event.type == "DELETED")

    async def _model_changed(self, obj: Obj, *, deleted: bool) -> None:
        key = key_of(obj)
        old = self.models.pop(key, None) if deleted else self.models.get(key)
        if not deleted:
            self.models[key] = obj
            if old is not None and spec_of(old) == spec_of(obj):
                return
        op = Operation.DELETE if deleted else Operation.UPDATE
        for node in sorted({node_of(d) for d in self.devices.values() if model_key_of(d) == key}):
            if node:
                await self._send_object(node, ResourceType.DEVICE_MODEL, obj, op, rv_of(obj))

    async def _on_device(self, event: WatchEvent) -> None:
        if event.type == "SYNC":
            self.version = event.version
            first = DEVICE not in self._synced_kinds
            touched: set[str] = set()
            listed = {key_of(o): o for o in event.items}
            for key in set(self.devices) - set(listed):
                touched |= await self._device_deleted(self.devices[key], self.version)
            for obj in listed.values():
                touched |= await self._device_changed(obj)
            nodes = touched | {n for n, keys in self.on_node.items() if keys}
            if first and self.kube is not None:
                nodes |= set(await node_names(self.kube))
            for node in sorted(nodes):
                await self._send_membership(node)
            self._mark_synced(DEVICE)
            return
        self.version = event.version
        if event.type == "DELETED":
            touched = await self._device_deleted(event.obj, rv_of(event.obj))
        else:
            touched = await self._device_changed(event.obj)
        for node in sorted(touched):
            await self._send_membership(node)

    def _mark_synced(self, kind: str) -> None:
        self._synced_kinds.add(kind)
        if {MODEL, DEVICE} <= self._synced_kinds and not self.synced.is_set():
            log.info(
                "devicecontroller: synced %d device(s), %d model(s)",
                len(self.devices),
                len(self.models),
            )
            self.synced.set()

    async def _device_changed(self, obj: Obj) -> set[str]:
        """Send a new or changed Device to its node; the nodes whose membership changed."""
        key = key_of(obj)
        old = self.devices.get(key)
        self.devices[key] = obj
        new_node, old_node = node_of(obj), node_of(old)
        touched = set()
        if old is not None and old_node and old_node != new_node:
            await self._send_object(
                old_node, ResourceType.DEVICE, obj, Operation.DELETE, rv_of(obj)
            )
            self.on_node[old_node].discard(key)
            touched.add(old_node)
        if not new_node:
            return touched
        moved_in = old is None or old_node != new_node
        if not moved_in and spec_of(old) == spec_of(obj):
            return touched  # a status (or metadata) change: nothing for the edge
        model = self.models.get(model_key_of(obj))
        if model is not None:
            await self._send_object(
                new_node, ResourceType.DEVICE_MODEL, model, Operation.UPDATE, rv_of(model)
            )
        op = Operation.INSERT if moved_in else Operation.UPDATE
        await self._send_object(new_node, ResourceType.DEVICE, obj, op, rv_of(obj))
        if moved_in:
            self.on_node[new_node].add(key)
            touched.add(new_node)
        return touched

    async def _device_deleted(self, obj: Obj, rv: str) -> set[str]:
        key = key_of(obj)
        old = self.devices.pop(key, None) or obj
        self._last_report.pop(key, None)
        node = node_of(old)
        if not node:
            return set()
        self.on_node[node].discard(key)
        await self._send_object(node, ResourceType.DEVICE, old, Operation.DELETE, rv)
        return {node}

    async def _send_object(self, node: str, type_: str, obj: Obj, op: str, rv: str) -> None:
        meta = obj.get("metadata") or {}
        namespace, name = str(meta.get("namespace", "")), str(meta.get("name", ""))
        msg = new_message(
            source=self.name,
            group=Group.TWIN,
            operation=op,
            resource=with_node(node, f"{namespace}/{type_}/{name}"),
            resource_version=rv,
        )
        ev = msg.object
        ev.api_version, ev.kind = str(obj.get("apiVersion", "")), str(obj.get("kind", ""))
        ev.namespace, ev.name = namespace, name
        ev.uid, ev.resource_version = str(meta.get("uid", "")), rv_of(obj)
        ev.object_json = json.dumps(obj, separators=(",", ":")).encode()
        await self.bus.send(Module.CLOUDHUB, msg)

    async def _send_membership(self, node: str) -> None:
        """The node's complete device list as of the Device watch's resourceVersion."""
        msg = new_message(
            source=self.name,
            group=Group.TWIN,
            operation=Operation.UPDATE,
            resource=with_node(node, f"{CLUSTER_NAMESPACE}/{ResourceType.MEMBERSHIP}/{node}"),
            resource_version=self.version,
        )
        snapshot = msg.membership
        snapshot.node_name, snapshot.event_id = node, msg.header.id
        snapshot.timestamp_ms = now_ms()
        for key in sorted(self.on_node.get(node, ())):
            namespace, name = key.split("/", 1)
            device = snapshot.added_devices.add()
            device.id, device.namespace, device.name = key, namespace, name
            device.model = model_key_of(self.devices[key]).split("/", 1)[-1]
        await self.bus.send(Module.CLOUDHUB, msg)

    # -- nodes -> the API ------------------------------------------------------------------

    def device_node(self, namespace: str, name: str) -> str | None:
        """The node a known Device is bound to ("" for none), or None for an unknown Device;
        cloudhub's authorizer asks, so a node reports only on its own devices."""
        device = self.devices.get(f"{namespace}/{name}")
        return None if device is None else node_of(device)

    async def _upstream(self) -> None:
        await self.synced.wait()  # reports are checked against the devices we know
        while True:
            msg = await self.bus.receive(self.name)
            try:
                self._report(msg)
            except BadMessage as exc:
                log.warning("devicecontroller: ignoring a report: %s", exc.reason)

    def _report(self, msg: Message) -> None:
        node, wire = split_node(msg.route.resource)
        res = parse_resource(wire)
        key = f"{res.namespace}/{res.name}"
        device = self.devices.get(key)
        if device is None:
            raise BadMessage(f"node {node} reported on {key}, which is not a known Device")
        if node_of(device) != node:
            raise BadMessage(f"node {node} reported on {key}, a device of {node_of(device)!r}")
        body = msg.WhichOneof("body")
        if res.type == ResourceType.TWIN and body == "twin_update":
            stamp = msg.twin_update.timestamp_ms
            if stamp < self._last_report.get(key, 0):
                return  # an older snapshot than one already written
            self._last_report[key] = stamp
            self.status.put(key, twins_status(msg.twin_update))
        elif res.type == ResourceType.DEVICE_STATE and body == "device_state":
            self.status.put(key, state_status(msg.device_state))
        else:
            raise BadMessage(f"devicecontroller cannot handle a {body} for {wire}")


# -- the API calls of its own ---------------------------------------------------------------


async def patch_status(kube: Kube, namespace: str, name: str, status: Obj) -> None:
    """Merge-patch a Device's status subresource."""
    fn = kube.custom.patch_namespaced_custom_object_status
    body = {"status": status}
    await kube.call(fn, GROUP, VERSION, namespace, "devices", name, body, _content_type=MERGE_PATCH)


async def node_names(kube: Kube) -> list[str]:
    """The names of the Nodes the API knows (empty when it cannot say)."""
    try:
        listing = await kube.read(kube.core.list_node)
    except KubeAPIError as exc:
        log.warning("devicecontroller: cannot list nodes: %s", exc)
        return []
    return [str(n.get("metadata", {}).get("name")) for n in listing.get("items") or []]
