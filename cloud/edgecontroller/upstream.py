"""What edge nodes report, written to the Kubernetes API (docs/protocol.md, upstream).

- node registration (`null/node/{node}`, insert/update, object): create the Node if missing,
  else merge the node's labels in (labels users set stay) and refresh its status;
- node status (`null/nodestatus/{node}`, node_status): strategic-merge nodes/{node}/status,
  so conditions merge by type; a condition whose status did not change keeps its
  lastTransitionTime;
- lease (`kube-node-lease/lease/{node}`, lease): create or update Lease kube-node-lease/{node};
- pod status (`{ns}/podstatus/{name}`, pod_status): patch pods/{name}/status when the pod is
  still the one the node reports (same uid) and bound to that node;
- pod gone (`{ns}/pod/{name}`, delete, pod_status): delete the pod with grace 0 and a uid
  precondition; a pod already gone is fine;
- event (`{ns}/event/{name}`, insert/update, object): create the Event (insert; one already
  there is patched) or merge-patch its count, lastTimestamp and message (update; an Event
  not there is created: its insert collapsed into the update at the edge, or it expired).
  Only Events about the node itself (in namespace default) or a pod bound to it, from source
  host the node; one about a pod gone is dropped. An Event is patched only when the one there
  is about the same object (uid, kind, name) from the same host, else refused, and the patch
  carries the resourceVersion read. What is written is normalized: source is the kubelet on
  the node; related, series, eventTime, action and the reporting fields are dropped; message
  and reason are cut to MAX_EVENT_MESSAGE and MAX_EVENT_REASON characters.

A node may only write about itself and its own pods. cloudhub's authorizer
(cloud/hub/authorizer.py) refuses other reports before they are recorded; the checks here stay
so that no write ever names another node's objects, --no-node-authorization included.

Every write is idempotent (cloudhub may hand a message on again after a restart); reports of
one resource are applied in order (one worker per shard of resources); a write the API could
not take is retried a few times. Reports wait until the caches they are checked against hold
the first listings. A report that cannot be applied is counted (refused, failed) and dropped:
no report, however shaped, ends a worker.

Backpressure: each shard's queue holds at most SHARD_QUEUE reports: `submit` waits while it
is full, so a slow API holds edgecontroller's bus inbox, then cloudhub's hand-over, and
nothing piles up in memory. Events are best-effort (as in Kubernetes) and must never delay a
Lease renewal: they have their own queue (EVENT_QUEUE) and worker, `submit` never waits for
them (an Event that finds the queue full is dropped, counted, and the first drop of a run is
logged), and an Event the API could not take is tried once more at most.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import zlib
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from cloud.edgecontroller.objects import EDGE_NODE_LABEL, meta, uid_of
from cloud.kube import Kube, Obj
from cloud.kubeerrors import APIUnavailable, Conflict, KubeAPIError, NotFound
from cloud.metrics import CloudMetrics
from common.envelope import Message, event_parts, json_object, parse_resource, split_node
from common.errors import BadMessage
from common.names import (
    EVENT_SOURCE_COMPONENT,
    LEASE_NAMESPACE,
    MAX_EVENT_MESSAGE,
    NODE_EVENT_NAMESPACE,
    Operation,
    ResourceType,
)
from common.supervisor import together

log = logging.getLogger(__name__)

DEFAULT_LEASE_SECONDS = 40
SMP = "application/strategic-merge-patch+json"
MERGE = "application/merge-patch+json"
APPLY = "application/apply-patch+yaml"  # a JSON body is YAML too
FIELD_MANAGER = "cloudcore"
SHARDS = 4
SHARD_QUEUE = 1000  # reports waiting per shard; then `submit` waits (backpressure)
EVENT_QUEUE = 1000  # Events waiting; then an Event is dropped (best-effort)
ATTEMPTS = 5
EVENT_ATTEMPTS = 2  # an Event the API could not take is tried once more, then dropped
EVENT_OPERATIONS = frozenset({Operation.INSERT, Operation.UPDATE})
# Fields of a node's Event never written: what the kubelet's v1 recorder does not set, and
# what would point at (related) or speak for (reporting*) something other than the node.
EVENT_DROPPED_FIELDS = frozenset(
    {"related", "series", "eventTime", "action", "reportingController", "reportingInstance"}
)
EVENT_SERIES_FIELDS = ("count", "lastTimestamp", "message")  # what an update patches
MAX_EVENT_REASON = 128  # the API's limit on a reason
NODE_STATUS_FIELDS = ("addresses", "capacity", "allocatable", "nodeInfo", "daemonEndpoints")


class Refused(Exception):
    """A report this node may not make (about another node, or another node's pod)."""


def now_rfc3339() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def micro_time(ms: int) -> str:
    """RFC 3339 with microseconds, as Lease.spec.renewTime (a MicroTime) is written."""
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class Upstream:
    def __init__(
        self,
        kube: Kube,
        node_lookup: Callable[[str], Obj | None],
        pod_lookup: Callable[[str, str], Obj | None],
        ready: asyncio.Event,
        metrics: CloudMetrics | None = None,
        *,
        queue_size: int = SHARD_QUEUE,
        event_queue_size: int = EVENT_QUEUE,
    ) -> None:
        self.kube = kube
        self.ready = ready  # the caches the lookups read are filled
        self.node_lookup = node_lookup
        self.pod_lookup = pod_lookup
        self.metrics = metrics
        self._shards: list[asyncio.Queue[Message]] = [
            asyncio.Queue(queue_size) for _ in range(SHARDS)
        ]
        self._events: asyncio.Queue[Message] = asyncio.Queue(event_queue_size)
        self._dropping = 0  # Events dropped since the queue was last found with room
        # Per node (bounded by the nodes): the newest renewTime written to its Lease (ms) and
        # the Node uid a write of its Lease's ownerReferences carried.
        self._renewed: dict[str, int] = {}
        self._owned: dict[str, str] = {}

    async def submit(self, msg: Message) -> None:
        """Queue a report, waiting while its shard is full; reports of one resource go to one
        worker, so they stay in order. An Event never waits: see `_offer_event`."""
        if _type_of(msg) == ResourceType.EVENT:
            self._offer_event(msg)
            return
        shard = zlib.crc32(msg.route.resource.encode()) % SHARDS
        await self._shards[shard].put(msg)

    def _offer_event(self, msg: Message) -> None:
        """Queue an Event, or drop it (counted; the first of a run of drops logged)."""
        try:
            self._events.put_nowait(msg)
        except asyncio.QueueFull:
            if not self._dropping:
                log.warning(
                    "edgecontroller: Event queue full (%d): dropping Events until it has room",
                    self._events.maxsize,
                )
            self._dropping += 1
            self._count(msg, "dropped")
            return
        if self._dropping:
            log.info("edgecontroller: Event queue has room again; %d dropped", self._dropping)
            self._dropping = 0

    async def run(self) -> None:
        await self.ready.wait()  # a pod report checked against an empty cache would be lost
        workers = {f"upstream_{i}": self._worker(q, ATTEMPTS) for i, q in enumerate(self._shards)}
        await together(**workers, upstream_events=self._worker(self._events, EVENT_ATTEMPTS))

    async def _worker(self, queue: asyncio.Queue[Message], attempts: int) -> None:
        while True:
            msg = await queue.get()
            await self.apply_with_retries(msg, attempts)

    async def apply_with_retries(self, msg: Message, attempts: int = ATTEMPTS) -> None:
        """Apply one report, again (with back-off) while the API is unavailable, `attempts`
        times at most; the result is counted, and no exception leaves."""
        delay = 0.2
        for attempt in range(1, attempts + 1):
            try:
                result = await self._apply_once(msg)
            except APIUnavailable as exc:
                if attempt < attempts:
                    await asyncio.sleep(delay)
                    delay *= 2
                    continue
                log.error("edgecontroller: giving up on %s: %s", msg.route.resource, exc)
                result = "failed"
            self._count(msg, result)
            return

    async def _apply_once(self, msg: Message) -> str:
        """`apply`, with a report that cannot be applied logged and answered "refused" or
        "failed"; only APIUnavailable (worth another try) leaves."""
        try:
            return await self.apply(msg)
        except APIUnavailable:
            raise
        except (KubeAPIError, BadMessage, Refused, ValueError) as exc:
            log.warning("edgecontroller: cannot apply %s: %s", msg.route.resource, exc)
            return "refused"
        except Exception:  # the last resort: no report, however shaped, may end its worker
            log.exception("edgecontroller: failed to apply %s", msg.route.resource)
            return "failed"

    def _count(self, msg: Message, result: str) -> None:
        if self.metrics is not None:
            self.metrics.upstream.labels(_type_of(msg), result).inc()

    async def apply(self, msg: Message) -> str:
        """Apply one report; returns "applied" or "ignored"."""
        node, wire = split_node(msg.route.resource)
        res = parse_resource(wire)
        op, body = msg.route.operation, msg.WhichOneof("body")
        if res.type == ResourceType.NODE and body == "object" and op != Operation.DELETE:
            await self.register(node, res.name, msg.object.object_json)
        elif res.type == ResourceType.NODE_STATUS and body == "node_status":
            await self.node_status(node, res.name, msg.node_status.status_json)
        elif res.type == ResourceType.LEASE and body == "lease":
            await self.lease(node, res.name, msg.lease)
        elif res.type == ResourceType.POD_STATUS and body == "pod_status":
            await self.pod_status(node, res.namespace, res.name, msg.pod_status)
        elif res.type == ResourceType.POD and op == Operation.DELETE and body == "pod_status":
            await self.pod_gone(node, res.namespace, res.name, msg.pod_status.uid)
        elif res.type == ResourceType.EVENT and body == "object" and op in EVENT_OPERATIONS:
            await self.event(node, res.namespace, res.name, op, msg.object.object_json)
        else:
            log.debug("edgecontroller: ignoring %s %s (%s) from %s", op, wire, body, node)
            return "ignored"
        return "applied"

    # -- nodes -----------------------------------------------------------------------------

    async def register(self, node: str, name: str, object_json: bytes) -> None:
        _own(node, name)
        reported = json_object(object_json, "a node object")
        labels = dict(meta(reported).get("labels") or {})
        labels.setdefault(EDGE_NODE_LABEL, "")
        core = self.kube.core
        existed = True
        try:
            await self.kube.read(core.read_node, node)
        except NotFound:
            existed = False
            body: Obj = {
                "apiVersion": "v1",
                "kind": "Node",
                "metadata": {
                    "name": node,
                    "labels": labels,
                    "annotations": meta(reported).get("annotations") or {},
                },
                "spec": reported.get("spec") or {},
            }
            try:
                await self.kube.call(core.create_node, body)
                log.info("edgecontroller: node %s registered", node)
            except Conflict:
                existed = True  # registered meanwhile (a resend, or another cloudcore)
        if existed:  # the node's own labels win; labels users set stay
            await self.kube.call(
                core.patch_node, node, {"metadata": {"labels": labels}}, _content_type=MERGE
            )
        status = reported.get("status") or {}
        fields = {k: status[k] for k in NODE_STATUS_FIELDS if k in status}
        if status.get("conditions"):
            fields["conditions"] = self._conditions(node, status["conditions"])
        if fields:
            await self.kube.call(
                core.patch_node_status, node, {"status": fields}, _content_type=SMP
            )

    async def node_status(self, node: str, name: str, status_json: bytes) -> None:
        _own(node, name)
        status = json_object(status_json, "a node status")
        if status.get("conditions"):
            status["conditions"] = self._conditions(node, status["conditions"])
        await self.kube.call(
            self.kube.core.patch_node_status, node, {"status": status}, _content_type=SMP
        )

    def _conditions(self, node: str, reported: Any) -> list[Obj]:
        """Reported conditions with heartbeat and transition times filled in."""
        if not isinstance(reported, list) or not all(isinstance(c, dict) for c in reported):
            raise BadMessage("a node's conditions must be a list of objects")
        cached = self.node_lookup(node) or {}
        known = {c.get("type"): c for c in (cached.get("status") or {}).get("conditions") or []}
        now = now_rfc3339()
        out = []
        for condition in reported:
            c = dict(condition)
            c.setdefault("lastHeartbeatTime", now)
            before = known.get(c.get("type"))
            if "lastTransitionTime" not in c:
                same = before is not None and before.get("status") == c.get("status")
                c["lastTransitionTime"] = (before or {}).get("lastTransitionTime") if same else now
                c["lastTransitionTime"] = c["lastTransitionTime"] or now
            out.append(c)
        return out

    async def lease(self, node: str, name: str, renewal: Any) -> None:
        """Renew node's Lease from its report: a merge patch, or a server-side apply that
        creates it. Its renewTime only moves forward and the Lease is owned by the Node, as
        kube-controller-manager's node lifecycle controller expects of a kubelet's Lease:
        - the controller keeps the copy with the newest renewTime it saw and, with its Lease
          circuit breaker (on in 1.37), stops judging a node whose live Lease has another
          version; a write that does not move renewTime forward (a Lease created without one,
          an older renewal landing after a newer one) would leave it there for good, and a
          node cut off afterwards would never be marked or tainted;
        - the owner makes the Lease go with its Node; it rides on a renewal (never a write of
          its own, for the same reason) until one carried it."""
        _own(node, name)
        if renewal.node_name and renewal.node_name != node:
            raise Refused(f"node {node} may not renew the lease of {renewal.node_name}")
        renew_ms = renewal.renew_time_ms or int(datetime.now(UTC).timestamp() * 1000)
        duration = renewal.lease_duration_seconds or DEFAULT_LEASE_SECONDS
        last = self._renewed.get(node)
        if last is not None and last - duration * 1000 < renew_ms <= last:
            # An older renewal overtaken by a newer one (a resend, a backlog): nothing to do.
            # One older by more than a lease's duration is the node's clock set back: written.
            log.debug(
                "edgecontroller: lease of %s at %d is not newer than %d", node, renew_ms, last
            )
            return
        spec = {
            "holderIdentity": node,
            "leaseDurationSeconds": duration,
            "renewTime": micro_time(renew_ms),
        }
        await self._write_lease(node, spec)
        self._renewed[node] = renew_ms

    async def _node_ref(self, node: str, cached: Obj | None) -> list[Obj]:
        """ownerReferences naming the Node: the cached one or, just after it registered, from
        the API; none if it is not registered yet (a later renewal brings the owner)."""
        found = cached
        if found is None:
            try:
                found = await self.kube.read(self.kube.core.read_node, node)
            except NotFound:
                return []
        uid = uid_of(found)
        return [{"apiVersion": "v1", "kind": "Node", "name": node, "uid": uid}] if uid else []

    async def _write_lease(self, node: str, spec: Obj) -> None:
        api = self.kube.coordination
        cached = self.node_lookup(node)
        owned = node in self._owned and (cached is None or self._owned[node] == uid_of(cached))
        owner = [] if owned else await self._node_ref(node, cached)
        patch: Obj = {"spec": spec}
        if owner:
            patch["metadata"] = {"ownerReferences": owner}
        try:
            await self.kube.call(
                api.patch_namespaced_lease, node, LEASE_NAMESPACE, patch, _content_type=MERGE
            )
        except NotFound:
            # A new Lease is born renewed and owned, in one server-side apply (which creates
            # it, or renews it if another writer created it meanwhile). Not create(): the
            # client's create parses the body into its model and writes a whole-second
            # renewTime without the microseconds a MicroTime needs (a 400).
            owner = owner or await self._node_ref(node, cached)
            metadata: Obj = {"name": node, "namespace": LEASE_NAMESPACE}
            if owner:
                metadata["ownerReferences"] = owner
            body = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": metadata}
            await self.kube.call(
                api.patch_namespaced_lease,
                node,
                LEASE_NAMESPACE,
                {**body, "spec": spec},
                field_manager=FIELD_MANAGER,
                force=True,
                _content_type=APPLY,
            )
        if owner:
            self._owned[node] = owner[0]["uid"]

    # -- pods ------------------------------------------------------------------------------

    def _own_pod(self, node: str, namespace: str, name: str, uid: str) -> Obj | None:
        """The cached pod if it is the one the node reports about, else None."""
        pod = self.pod_lookup(namespace, name)
        if pod is None or (uid and uid_of(pod) != uid):
            return None  # gone, or a new pod of the same name: the report is stale
        if (pod.get("spec") or {}).get("nodeName") != node:
            raise Refused(f"pod {namespace}/{name} is not bound to node {node}")
        return pod

    async def pod_status(self, node: str, namespace: str, name: str, report: Any) -> None:
        if self._own_pod(node, namespace, name, report.uid) is None:
            log.debug("edgecontroller: status of a pod gone: %s/%s", namespace, name)
            return
        status = json_object(report.status_json, "a pod status")
        with contextlib.suppress(NotFound):  # deleted meanwhile
            await self.kube.call(
                self.kube.core.patch_namespaced_pod_status,
                name,
                namespace,
                {"status": status},
                _content_type=SMP,
            )

    async def pod_gone(self, node: str, namespace: str, name: str, uid: str) -> None:
        if not uid:
            raise Refused(f"pod-gone report for {namespace}/{name} names no uid")
        if self._own_pod(node, namespace, name, uid) is None:
            return  # gone, replaced, or never seen here: not a pod this node may delete
        # V1DeleteOptions as the client would serialize it; only cloud/kube.py imports the client
        options = {"gracePeriodSeconds": 0, "preconditions": {"uid": uid}}
        try:
            await self.kube.call(
                self.kube.core.delete_namespaced_pod, name, namespace, body=options
            )
            log.info("edgecontroller: pod %s/%s removed by node %s", namespace, name, node)
        except (NotFound, Conflict):
            pass  # already gone, or the name now belongs to another pod

    # -- events ----------------------------------------------------------------------------

    async def event(
        self, node: str, namespace: str, name: str, op: str, object_json: bytes
    ) -> None:
        event, about, source = event_parts(object_json)
        if source.get("host", node) != node:
            raise Refused(f"node {node} may not write events of host {source['host']}")
        if not self._about_own(node, namespace, about):
            log.debug("edgecontroller: event %s/%s about a pod gone; dropped", namespace, name)
            return
        body = _normalized(event, node, namespace, name)
        core = self.kube.core
        if op == Operation.INSERT:
            try:
                await self.kube.call(core.create_namespaced_event, namespace, body)
                return
            except Conflict:
                pass  # there already (a resend): the patch brings it up to date
        try:
            there: Obj = await self.kube.read(core.read_namespaced_event, name, namespace)
        except NotFound:  # its insert collapsed into this update at the edge, or it expired
            await self.kube.call(core.create_namespaced_event, namespace, body)
            return
        _same_event(node, there, body)
        series: Obj = {k: body[k] for k in EVENT_SERIES_FIELDS if k in body}
        series["metadata"] = {"resourceVersion": meta(there).get("resourceVersion")}
        await self.kube.call(
            core.patch_namespaced_event, name, namespace, series, _content_type=MERGE
        )

    def _about_own(self, node: str, namespace: str, about: Obj) -> bool:
        """Whether an event is about the node itself (in namespace default) or a pod bound
        to it (Refused if about anything else); False for a pod gone or replaced (a stale
        event, dropped)."""
        kind, name = about.get("kind"), str(about.get("name") or "")
        if kind == "Node":
            _own(node, name)
            if namespace != NODE_EVENT_NAMESPACE:
                raise Refused(f"events about node {node} go to namespace {NODE_EVENT_NAMESPACE}")
            return True
        if kind == "Pod" and about.get("namespace") == namespace:
            uid = str(about.get("uid") or "")
            return self._own_pod(node, namespace, name, uid) is not None
        raise Refused(f"node {node} may not write events about {kind} {namespace}/{name}")


def _type_of(msg: Message) -> str:
    """The resource type a report names ("unknown" when it names none)."""
    try:
        return parse_resource(split_node(msg.route.resource)[1]).type
    except BadMessage:
        return "unknown"


def _normalized(event: Obj, node: str, namespace: str, name: str) -> Obj:
    """The Event as written: the node's fields but those it may not set, the kubelet on the
    node as its source, message and reason cut to the API's limits."""
    body = {k: v for k, v in event.items() if k not in EVENT_DROPPED_FIELDS}
    body.update(
        apiVersion="v1",
        kind="Event",
        metadata={"name": name, "namespace": namespace},
        source={"component": EVENT_SOURCE_COMPONENT, "host": node},
    )
    for field, limit in (("message", MAX_EVENT_MESSAGE), ("reason", MAX_EVENT_REASON)):
        if isinstance(body.get(field), str):
            body[field] = body[field][:limit]
    return body


def _same_event(node: str, there: Obj, body: Obj) -> None:
    """Refused unless the Event `there` is the one the node's report updates: about the same
    object (uid, kind, name), from the node."""
    theirs, ours = there.get("involvedObject") or {}, body["involvedObject"]
    host = (there.get("source") or {}).get("host")
    if host == node and all(
        str(theirs.get(k) or "") == str(ours.get(k) or "") for k in ("uid", "kind", "name")
    ):
        return
    about = f"{theirs.get('kind')} {theirs.get('name')} ({theirs.get('uid')})"
    raise Refused(
        f"event {meta(there).get('namespace')}/{meta(there).get('name')} is about {about} "
        f"from host {host}: node {node} may not overwrite it"
    )


def _own(node: str, name: str) -> None:
    if name != node:
        raise Refused(f"node {node} may not report about node {name}")
