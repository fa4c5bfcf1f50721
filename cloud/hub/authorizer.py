"""Node authorization: what an edge node may ask of the cloud, decided before anything is done.

Kubernetes' NodeRestriction keeps each kubelet to its own objects; this is the same rule for
the hub. A message arriving on node N's stream may
- register N's Node and report N's node status (`null/node/N`, `null/nodestatus/N`);
- renew N's Lease (`kube-node-lease/lease/N`);
- report the status, or the end, of a pod bound to N (`{ns}/podstatus/{name}`, delete
  `{ns}/pod/{name}`): bound as edgecontroller's informer cache says (spec.nodeName), never as
  the message says;
- report twins and state of a Device bound to N (`{ns}/twin/{name}`, `{ns}/devicestate/{name}`),
  as devicecontroller's cache says (spec.nodeName);
- write Events (`{ns}/event/{name}`, insert/update) whose involvedObject is N's Node (in
  namespace default) or a pod bound to N (in the pod's namespace), from source host N; the
  Event, its involvedObject and its source must be JSON objects;
- read (query) a configmap or secret only when a pod placed on N references it: what
  edgecontroller sends N anyway;
- send application data (group `user`), which no controller writes to the API.
Anything else is refused. Log streams are not checked here: their frames answer a query the
cloud sent, and cloudhub relays them only from the node it asked.

cloudhub asks `decide` before it records or acks an upstream message, so a refused message is
never handed on and changes nothing: the node gets an error (403 and the reason) instead of an
ack, which settles it (no resend); the refusal is counted (kubeedge_cloudhub_denied_total{node,
kind}) and logged once per node and kind, so a tampered or confused node cannot flood the log.

A report about a pod the cache does not hold, or about an older pod of that name (another
uid), or about an unknown Device — an Event about such a pod too — is stale rather than
foreign: it is let through, and the
controller drops it without writing (its own checks stay). A rule whose cache is still being
listed answers WAIT: the message is neither acked nor refused, and the node resends it.

--no-node-authorization turns this off, for debugging: every message is handed on as before.
The controllers still never write another node's objects, but nothing is refused with a
reason, counted or logged here, and reads are not checked.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import Any, Protocol

from cloud.metrics import CloudMetrics
from common.envelope import Message, Resource, event_parts, parse_resource
from common.errors import BadMessage
from common.names import LEASE_NAMESPACE, NODE_EVENT_NAMESPACE, Group, Operation, ResourceType

log = logging.getLogger(__name__)

OPEN_GROUPS = frozenset({Group.USER})  # application data: no controller writes it to the API
METRIC_KINDS = frozenset(ResourceType)  # label values: never a string a node made up
MAX_REASON = 300  # the reason echoes names the node sent; keep the reply and the log short


MAX_LOGGED = 10_000  # (node, kind) pairs remembered as logged; then the memory starts over


class Verdict(Enum):
    ALLOW = "allow"
    WAIT = "wait"  # the cache the rule reads is still being listed: decide on the resend


@dataclass(frozen=True, slots=True)
class Denied:
    """A refusal: the resource type asked about (the metric's `kind`) and why, for the node."""

    kind: str
    reason: str


Decision = Verdict | Denied
Rule = Callable[[str, Resource, Message], Decision]


class PodFacts(Protocol):
    """What edgecontroller knows (its Downstream): pods as listed, and what nodes' pods use."""

    synced: asyncio.Event

    def pod(self, namespace: str, name: str) -> dict[str, Any] | None: ...

    def referenced_on(self, node: str, type_: str, namespace: str, name: str) -> bool: ...


class DeviceFacts(Protocol):
    """What devicecontroller knows: the node each Device is bound to."""

    synced: asyncio.Event

    def device_node(self, namespace: str, name: str) -> str | None: ...


class NodeAuthorizer:
    """The rule table, and the refusals' metric and log. `pods` and `devices` are set by
    cloud/main.py's register_modules; until then, rules that need them answer WAIT."""

    def __init__(self, *, enabled: bool = True, metrics: CloudMetrics | None = None) -> None:
        self.enabled = enabled
        self.metrics = metrics
        self.pods: PodFacts | None = None
        self.devices: DeviceFacts | None = None
        self._logged: set[tuple[str, str]] = set()  # (node, kind) refusals already logged
        update, query = frozenset({Operation.UPDATE}), frozenset({Operation.QUERY})
        resource, twin = Group.RESOURCE, Group.TWIN
        # (group, resource type, body) -> (operations allowed, the rule deciding for a node)
        self._rules: dict[tuple[str, str, str], tuple[frozenset[str], Rule]] = {
            (resource, ResourceType.NODE, "object"): (
                frozenset({Operation.INSERT, Operation.UPDATE}),
                self._own_node,
            ),
            (resource, ResourceType.NODE_STATUS, "node_status"): (update, self._own_node),
            (resource, ResourceType.LEASE, "lease"): (update, self._own_lease),
            (resource, ResourceType.POD_STATUS, "pod_status"): (update, self._bound_pod),
            (resource, ResourceType.POD, "pod_status"): (
                frozenset({Operation.DELETE}),
                self._bound_pod,
            ),
            (resource, ResourceType.EVENT, "object"): (
                frozenset({Operation.INSERT, Operation.UPDATE}),
                self._own_event,
            ),
            (resource, ResourceType.CONFIGMAP, "query"): (query, self._referenced),
            (resource, ResourceType.SECRET, "query"): (query, self._referenced),
            (twin, ResourceType.TWIN, "twin_update"): (update, self._bound_device),
            (twin, ResourceType.DEVICE_STATE, "device_state"): (update, self._bound_device),
        }

    def decide(self, node: str, msg: Message) -> Decision:
        """Whether the node whose stream `msg` came on may send it; refusals are counted and
        logged here, so callers only answer the node."""
        if not self.enabled or msg.route.group in OPEN_GROUPS:
            return Verdict.ALLOW
        decision = self._judge(node, msg)
        if isinstance(decision, Denied):
            decision = Denied(decision.kind, decision.reason[:MAX_REASON])
            self._count(node, decision)
        return decision

    def _judge(self, node: str, msg: Message) -> Decision:
        route, body = msg.route, msg.WhichOneof("body") or ""
        try:
            res = parse_resource(route.resource)
        except BadMessage as exc:
            return Denied("", exc.reason)
        known = self._rules.get((route.group, res.type, body))
        if known is None or route.operation not in known[0]:
            return Denied(
                res.type,
                f"nodes may not send {route.operation!r} of {res.type!r} ({body}) "
                f"to group {route.group!r}",
            )
        return known[1](node, res, msg)

    def _count(self, node: str, denied: Denied) -> None:
        kind = denied.kind if denied.kind in METRIC_KINDS else "other"
        if self.metrics is not None:
            self.metrics.denied.labels(node, kind).inc()
        if (node, kind) in self._logged:
            log.debug("cloudhub: refused %s from node %s: %s", kind, node, denied.reason)
            return
        if len(self._logged) >= MAX_LOGGED:  # bounded: node names are what clients claim
            self._logged.clear()
        self._logged.add((node, kind))
        log.warning(
            "cloudhub: refused %s from node %s: %s (further %s refusals for this node are "
            "counted in kubeedge_cloudhub_denied_total, not logged)",
            kind,
            node,
            denied.reason,
            kind,
        )

    # -- the rules: (node, resource, message) -> decision ------------------------------------

    def _own_node(self, node: str, res: Resource, msg: Message) -> Decision:
        """Registration and node status: of the sending node only (resource and body)."""
        others = {res.name, msg.node_status.node_name or node} - {node}
        if not others:
            return Verdict.ALLOW
        named = ", ".join(sorted(others))
        return Denied(res.type, f"node {node} may not write the {res.type} of node {named}")

    def _own_lease(self, node: str, res: Resource, msg: Message) -> Decision:
        """Its own Lease, in kube-node-lease, only."""
        others = {res.name, msg.lease.node_name or node} - {node}
        if res.namespace == LEASE_NAMESPACE and not others:
            return Verdict.ALLOW
        return Denied(
            res.type,
            f"node {node} may renew only Lease {LEASE_NAMESPACE}/{node}, "
            f"not {res.namespace}/{res.name} (for {msg.lease.node_name or res.name})",
        )

    def _bound_pod(self, node: str, res: Resource, msg: Message) -> Decision:
        """Pod status and pod gone: about a pod the cache shows bound to the node."""
        return self._pod_on(node, res, res.namespace, res.name, msg.pod_status.uid)

    def _pod_on(self, node: str, res: Resource, namespace: str, name: str, uid: str) -> Decision:
        """Whether pod namespace/name (of `uid`, if given) is, as the cache says, bound to
        the node; a pod the cache does not hold (or of another uid) is stale: ALLOW."""
        if self.pods is None or not self.pods.synced.is_set():
            return Verdict.WAIT
        pod = self.pods.pod(namespace, name)
        if pod is None or (uid and uid != (pod.get("metadata") or {}).get("uid")):
            return Verdict.ALLOW  # stale: edgecontroller drops it without writing
        bound = str((pod.get("spec") or {}).get("nodeName") or "")
        if bound == node:
            return Verdict.ALLOW
        return _elsewhere("pod", Resource(namespace, res.type, name), bound, node)

    def _own_event(self, node: str, res: Resource, msg: Message) -> Decision:
        """Events: about the node itself (namespace default) or a pod bound to it (in the
        pod's namespace), from source host N."""
        try:
            _, about, source = event_parts(msg.object.object_json)
        except BadMessage as exc:
            return Denied(res.type, exc.reason)
        kind, name = about.get("kind"), str(about.get("name") or "")
        namespace = str(about.get("namespace") or "")
        if source.get("host", node) != node:
            return Denied(res.type, f"node {node} may not write events of host {source['host']}")
        if kind == "Node" and name == node and res.namespace == NODE_EVENT_NAMESPACE:
            return Verdict.ALLOW
        if kind == "Pod" and namespace == res.namespace:
            return self._pod_on(node, res, namespace, name, str(about.get("uid") or ""))
        return Denied(
            res.type,
            f"node {node} may write events only about itself and its pods, not {kind} "
            f"{namespace}/{name} (in namespace {res.namespace})",
        )

    def _bound_device(self, node: str, res: Resource, msg: Message) -> Decision:
        """Twin and state reports: about a Device bound to the node."""
        if self.devices is None or not self.devices.synced.is_set():
            return Verdict.WAIT
        bound = self.devices.device_node(res.namespace, res.name)
        if bound is None or bound == node:
            return Verdict.ALLOW  # unknown: devicecontroller drops it without writing
        return _elsewhere("device", res, bound, node)

    def _referenced(self, node: str, res: Resource, msg: Message) -> Decision:
        """Reads: one configmap or secret, named, that a pod placed on the node references."""
        if self.pods is None or not self.pods.synced.is_set():
            return Verdict.WAIT
        q = msg.query
        named = (q.kind.lower() or res.type, q.namespace or res.namespace, q.name or res.name)
        if named != (res.type, res.namespace, res.name) or q.label_selector or q.field_selector:
            return Denied(res.type, f"a query may name {res} and nothing else")
        if self.pods.referenced_on(node, res.type, res.namespace, res.name):
            return Verdict.ALLOW
        return Denied(
            res.type, f"no pod on node {node} references {res.type} {res.namespace}/{res.name}"
        )


def _elsewhere(what: str, res: Resource, bound: str, node: str) -> Denied:
    """The refusal of a report about a pod or device bound to another node, or to none."""
    where = f"node {bound}" if bound else "no node"
    return Denied(
        res.type, f"{what} {res.namespace}/{res.name} is bound to {where}, not to node {node}"
    )
