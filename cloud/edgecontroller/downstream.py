"""Which edge node gets which object, and the one path every downstream object takes.

Fed by the informers' events (one at a time, under one lock), it keeps the cached objects and
two indexes: the pods placed on each edge node, and how many of a node's pods reference each
configmap/secret. From them, per event:
- a Node with the edge label goes to itself; when a node becomes an edge node, its pods do;
- a pod bound to an edge node goes there, after the configmaps/secrets it references;
  a pod's deletion (or its deletionTimestamp, as an update) reaches the node;
- a configmap/secret goes to every node with a pod referencing it; one no pod on a node
  references any more is deleted there.

`offer()` is the send path (synccontroller's periodic resends come through `reconcile()` to
it): it compares with what the node holds or was last sent (the Ledger), skips a change the
edge would not see (status-only: same digest), ensures the ObjectSync record exists before
the first send, and queues the message with cloudhub. `retract()` sends a delete for what a
node holds.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter

from cloud.edgecontroller.objects import (
    KINDS,
    NODE,
    POD,
    Kind,
    Ref,
    digest,
    is_edge_node,
    key_of,
    object_message,
    references,
    rv_of,
    stub,
    uid_of,
)
from cloud.kube import Obj, WatchEvent
from cloud.metrics import CloudMetrics
from cloud.synccontroller.ledger import Ledger, ObjectRef, Record
from common.bus import Bus
from common.envelope import rv_older
from common.names import Module, Operation

log = logging.getLogger(__name__)

PodKey = tuple[str, str]


def object_ref(kind: Kind, obj: Obj) -> ObjectRef:
    namespace, name = key_of(obj)
    return ObjectRef(
        api_version=str(obj.get("apiVersion") or kind.api_version),
        kind=kind.kind,
        namespace=namespace if kind.namespaced else None,
        name=name,
        uid=uid_of(obj),
    )


class Downstream:
    def __init__(self, bus: Bus, ledger: Ledger, metrics: CloudMetrics | None = None) -> None:
        self.bus = bus
        self.ledger = ledger
        self.metrics = metrics
        self.cache: dict[str, dict[tuple[str, str], Obj]] = {k: {} for k in KINDS}
        self.edge_nodes: set[str] = set()
        self.synced = asyncio.Event()  # every informer's first listing is applied
        self.lock = asyncio.Lock()
        self._pods_on: dict[str, set[PodKey]] = {}  # node -> pods bound to it (any node)
        self._placed: dict[PodKey, tuple[str, frozenset[Ref]]] = {}  # on an edge node
        self._refs_on: dict[str, Counter[Ref]] = {}
        self._listed: set[str] = set()

    # -- lookups for the other parts of edgecontroller ---------------------------------------

    def node(self, name: str) -> Obj | None:
        return self.cache[NODE.kind].get(("", name))

    def pod(self, namespace: str, name: str) -> Obj | None:
        return self.cache[POD.kind].get((namespace, name))

    def edge_node_objects(self) -> dict[str, Obj]:
        return {n: obj for n in self.edge_nodes if (obj := self.node(n)) is not None}

    def referenced_on(self, node: str, type_: str, namespace: str, name: str) -> bool:
        """Whether a pod placed on `node` references this configmap or secret (`type_` as on
        the wire): what the node should hold, and so all it may read."""
        kind = next((k.kind for k in KINDS.values() if k.type == type_), "")
        return self._refs_on.get(node, Counter()).get((kind, namespace, name), 0) > 0

    # -- informer events -------------------------------------------------------------------

    async def handle(self, kind: str, event: WatchEvent) -> None:
        async with self.lock:
            if event.type == "SYNC":
                await self._replace(kind, event.items)
                self._listed.add(kind)
                if self._listed == set(KINDS):
                    self.synced.set()
            elif event.type == "DELETED":
                await self._deleted(kind, event.obj)
            else:
                await self._changed(kind, event.obj)

    async def _replace(self, kind: str, items: list[Obj]) -> None:
        """A fresh listing: what vanished was deleted, what is new or moved changed."""
        fresh = {key_of(obj): obj for obj in items}
        for key, old in list(self.cache[kind].items()):
            if key not in fresh:
                await self._deleted(kind, old)
        for key, obj in fresh.items():
            cached = self.cache[kind].get(key)
            if cached is None or rv_of(cached) != rv_of(obj):
                await self._changed(kind, obj)

    async def _changed(self, kind: str, obj: Obj) -> None:
        key = key_of(obj)
        self.cache[kind][key] = obj
        if kind == NODE.kind:
            await self._node_changed(key[1], obj)
        elif kind == POD.kind:
            node = (obj.get("spec") or {}).get("nodeName")
            if node:
                self._pods_on.setdefault(node, set()).add(key)
            await self._place(key)
        else:
            for node in self._nodes_referencing((kind, *key)):
                await self.offer(node, KINDS[kind], obj)

    async def _deleted(self, kind: str, obj: Obj) -> None:
        key = key_of(obj)
        self.cache[kind].pop(key, None)
        if kind == NODE.kind:
            self._node_gone(key[1])
        elif kind == POD.kind:
            node = (obj.get("spec") or {}).get("nodeName")
            if node:
                self._pods_on.get(node, set()).discard(key)
            placed = self._placed.pop(key, None)
            if placed is not None:
                await self.retract(placed[0], POD, obj)
                await self._release(placed[0], placed[1])
        else:
            for node in self._nodes_referencing((kind, *key)):
                await self.retract(node, KINDS[kind], obj)

    async def _node_changed(self, name: str, node: Obj) -> None:
        if not is_edge_node(node):
            self._node_gone(name)
            return
        newly = name not in self.edge_nodes
        self.edge_nodes.add(name)
        await self.offer(name, NODE, node)
        if newly:
            for key in sorted(self._pods_on.get(name, ())):
                await self._place(key)

    def _node_gone(self, name: str) -> None:
        """Not (or no longer) an edge node: forget what it held; nothing more goes there."""
        if name not in self.edge_nodes:
            return
        self.edge_nodes.discard(name)
        for key in [k for k, (n, _) in self._placed.items() if n == name]:
            del self._placed[key]
        self._refs_on.pop(name, None)
        self.ledger.forget_node(name)

    async def _place(self, key: PodKey) -> None:
        """Send a pod (and what it references) to its edge node, if it is bound to one."""
        pod = self.cache[POD.kind].get(key)
        previous = self._placed.get(key)
        node = str(((pod or {}).get("spec") or {}).get("nodeName") or "")
        if pod is None or node not in self.edge_nodes:
            if previous is not None:
                del self._placed[key]
                await self._release(*previous)
            return
        refs = references(pod)
        kept = previous[1] if previous is not None and previous[0] == node else frozenset()
        self._placed[key] = (node, refs)
        counts = self._refs_on.setdefault(node, Counter())
        for ref in refs - kept:
            counts[ref] += 1
        for kind, namespace, name in sorted(refs):  # data first, so the pod finds it
            obj = self.cache[kind].get((namespace, name))
            if obj is not None:
                await self.offer(node, KINDS[kind], obj)
        await self.offer(node, POD, pod)
        await self._release(node, kept - refs)

    async def _release(self, node: str, refs: frozenset[Ref]) -> None:
        """Pods on `node` stopped referencing `refs`; delete those none references any more."""
        counts = self._refs_on.get(node)
        if counts is None:
            return
        for ref in sorted(refs):
            counts[ref] -= 1
            if counts[ref] > 0:
                continue
            del counts[ref]
            kind, namespace, name = ref
            obj = self.cache[kind].get((namespace, name))
            if obj is not None:
                await self.retract(node, KINDS[kind], obj)

    def _nodes_referencing(self, ref: Ref) -> list[str]:
        return sorted(node for node, counts in self._refs_on.items() if counts.get(ref))

    def _wanted(self, node: str, kind: Kind, obj: Obj) -> bool:
        """Whether `node` should hold `obj` now."""
        key = key_of(obj)
        if kind is NODE:
            return key[1] == node and node in self.edge_nodes
        if kind is POD:
            placed = self._placed.get(key)
            return placed is not None and placed[0] == node
        return self.referenced_on(node, kind.type, *key)

    # -- the send path ---------------------------------------------------------------------

    async def offer(self, node: str, kind: Kind, obj: Obj) -> bool:
        """Queue `obj` for `node` unless the node holds (or will hold) the same content."""
        ref = object_ref(kind, obj)
        version, content = rv_of(obj), digest(obj)
        held = self.ledger.holding(node, ref.resource)
        operation = Operation.INSERT
        if held is not None and held.uid == ref.uid and not held.deleting:
            if held.digest == content or held.rv == version or rv_older(version, held.rv):
                return False
            operation = Operation.UPDATE
        elif held is not None and held.uid != ref.uid:
            self.ledger.forget(node, held.uid)  # the name now belongs to a new object
        await self.ledger.ensure(node, ref)
        msg = object_message(node, operation, kind, obj)
        self.ledger.sent(node, msg.header.id, ref, version, content, deleting=False)
        await self.bus.send(Module.CLOUDHUB, msg)
        self._count(kind, operation)
        log.debug("edgecontroller: %s %s rv %s -> node %s", operation, ref.resource, version, node)
        return True

    async def retract(self, node: str, kind: Kind, obj: Obj) -> bool:
        """Queue a delete of `obj` for `node`, if the node holds that very object."""
        ref = object_ref(kind, obj)
        held = self.ledger.holding(node, ref.resource)
        if held is None or held.deleting or held.uid != ref.uid:
            return False
        msg = object_message(node, Operation.DELETE, kind, obj)
        self.ledger.sent(node, msg.header.id, ref, rv_of(obj), "", deleting=True)
        await self.bus.send(Module.CLOUDHUB, msg)
        self._count(kind, Operation.DELETE)
        log.debug("edgecontroller: delete %s -> node %s", ref.resource, node)
        return True

    def _count(self, kind: Kind, operation: str) -> None:
        if self.metrics is not None:
            self.metrics.downstream.labels(kind.kind, operation).inc()

    # -- synccontroller's periodic comparison ------------------------------------------------

    async def reconcile(self, record: Record) -> None:
        """Make `record.node` consistent with the API for one object it was sent."""
        async with self.lock:
            if self.ledger.get(record.node, record.ref.uid) is not record:
                return  # acked away or forgotten since the round began
            node, ref = record.node, record.ref
            kind = KINDS[ref.kind]
            if node not in self.edge_nodes:
                self.ledger.forget(node, ref.uid)  # the node is gone (or no longer edge)
                return
            obj = self.cache[kind.kind].get((ref.namespace or "", ref.name))
            if obj is not None and self._wanted(node, kind, obj):
                await self.offer(node, kind, obj)
                if uid_of(obj) != ref.uid:
                    self.ledger.forget(node, ref.uid)
                return
            if obj is None or uid_of(obj) != ref.uid:
                obj = stub(kind, ref.namespace, ref.name, ref.uid)
            await self.retract(node, kind, obj)
