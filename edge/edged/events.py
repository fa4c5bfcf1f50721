"""Kubernetes Events from edged, recorded as the kubelet records them (docs/protocol.md).

edged's pod workers and the module call `pod(...)` or `node(...)` with a reason and a message
in the kubelet's words (Pulled, Created, Started, Killing, BackOff, Unhealthy, Failed,
FailedCreatePodSandBox, FailedMount, ...; for the Node: ImageImportFailed). The recorder
builds the v1 Event — involvedObject the Pod (fieldPath `spec.containers{NAME}` or
`spec.initContainers{NAME}` when it is about a container) or the Node (uid = the node's name,
as the kubelet's node reference has it), source component "kubelet" on host NODE, as
KubeEdge's edged (the kubelet's own recorder) reports them — and hands it to edgehub as an
`insert` of `{ns}/event/{name}` (group resource, body `object`); edgehub keeps it in its
durable outbox like any report.

As the kubelet's EventCorrelator:
- the same event (involvedObject, type, reason, message) again within `window` of its last
  send is the same Event with `count` + 1 and a new `lastTimestamp`, sent as an `update`
  (queued updates of one Event collapse into the newest in edgehub's outbox);
- a spam filter: each involved object has a token bucket (`burst` events at once, then one
  per `refill` seconds; the kubelet's 25 and 5 minutes); an event without a token is dropped.
One more limit of our own, because a pod worker retries every second where the kubelet's
retries every ten: the same event within `repeat` seconds of its last send is only counted;
the count goes up with its next send.

What it does not do: block, or fail the caller. Events are best-effort in Kubernetes: one
that is rate-limited, or that edgehub's bus queue cannot take, is dropped (counted in
`dropped`, and the first drop of a run of full-queue drops logged); edgehub drops events too
when its outbox is backed up (edge/hub/module.py). Memory is bounded: at most `max_keys`
series and buckets, the oldest forgotten first. It does not aggregate similar events with
different messages, as the kubelet's aggregator does.
"""

from __future__ import annotations

import json
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from common.envelope import Message, new_message, resource
from common.names import (
    EVENT_SOURCE_COMPONENT,
    MAX_EVENT_MESSAGE,
    NODE_EVENT_NAMESPACE,
    Group,
    Module,
    Operation,
    ResourceType,
)
from edge.edged.node import rfc3339

log = logging.getLogger(__name__)

BURST = 25
REFILL = 300.0
WINDOW = 3600.0  # the API server's default --event-ttl: the Event an update names still exists
REPEAT = 10.0
MAX_KEYS = 4096  # the kubelet's LRU of event series
MAX_NAME = 253

Send = Callable[[Message], bool]  # hands a message to edgehub; False: its queue was full


@dataclass
class _Series:
    """One Event as sent: what an identical event makes an update of."""

    name: str
    event: dict[str, Any]
    sent_at: float


@dataclass
class _Bucket:
    tokens: float
    at: float


class EventRecorder:
    def __init__(
        self,
        node: str,
        send: Send,
        *,
        clock: Callable[[], float] = time.time,
        burst: int = BURST,
        refill: float = REFILL,
        window: float = WINDOW,
        repeat: float = REPEAT,
        max_keys: int = MAX_KEYS,
    ) -> None:
        self.node_name = node
        self.send = send
        self.clock = clock
        self.burst, self.refill, self.window, self.repeat = burst, refill, window, repeat
        self.max_keys = max_keys
        self.dropped = 0
        self._series: OrderedDict[str, _Series] = OrderedDict()
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()
        self._last_ns = 0
        self._queue_full = False

    def pod(
        self,
        pod: dict[str, Any],
        reason: str,
        message: str,
        *,
        container: str = "",
        warning: bool = False,
    ) -> bool:
        """An event about `pod` (or its container `container`); True when it was sent."""
        meta = pod.get("metadata") or {}
        ref = {
            "kind": "Pod",
            "namespace": meta.get("namespace", "default"),
            "name": meta.get("name", ""),
            "uid": meta.get("uid", ""),
            "apiVersion": "v1",
        }
        if container:
            inits = {c.get("name") for c in (pod.get("spec") or {}).get("initContainers") or []}
            ref["fieldPath"] = (
                f"spec.{'initContainers' if container in inits else 'containers'}{{{container}}}"
            )
        return self.record(ref, reason, message, warning=warning)

    def node(self, reason: str, message: str, *, warning: bool = False) -> bool:
        """An event about this node; True when it was sent."""
        ref = {"kind": "Node", "name": self.node_name, "uid": self.node_name}
        return self.record(ref, reason, message, warning=warning)

    def record(self, ref: dict[str, str], reason: str, message: str, *, warning: bool) -> bool:
        """Send the event `reason`/`message` about `ref`, or bump the count of its series."""
        now = self.clock()
        message = message[:MAX_EVENT_MESSAGE]
        kind = "Warning" if warning else "Normal"
        key = json.dumps([ref, kind, reason, message], sort_keys=True)
        series = self._series.get(key)
        if series is not None and now - series.sent_at > self.window:
            series = None
        if series is not None and now - series.sent_at < self.repeat:
            _bump(series, now)  # counted; sent with the next one
            self._series.move_to_end(key)
            return False
        if not self._take(ref, now):
            self.dropped += 1
            log.debug("edged: event %s about %s %s dropped: rate limit", reason, ref["kind"], ref)
            return False
        if series is None:
            series = self._new_series(key, ref, kind, reason, message, now)
            operation = Operation.INSERT
        else:
            _bump(series, now)
            self._series.move_to_end(key)
            operation = Operation.UPDATE
        series.sent_at = now
        return self._send(series, operation)

    def _new_series(
        self, key: str, ref: dict[str, str], kind: str, reason: str, message: str, now: float
    ) -> _Series:
        namespace = ref.get("namespace") or NODE_EVENT_NAMESPACE
        name = f"{ref['name'][: MAX_NAME - 17]}.{self._unique_ns(now):x}"
        event = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": name, "namespace": namespace},
            "involvedObject": ref,
            "reason": reason,
            "message": message,
            "type": kind,
            "source": {"component": EVENT_SOURCE_COMPONENT, "host": self.node_name},
            "firstTimestamp": _time(now),
            "lastTimestamp": _time(now),
            "count": 1,
        }
        series = _Series(name, event, now)
        _remember(self._series, key, series, self.max_keys)
        return series

    def _unique_ns(self, now: float) -> int:
        """The kubelet names an event `{object}.{unix nanoseconds in hex}`; never twice."""
        self._last_ns = max(int(now * 1e9), self._last_ns + 1)
        return self._last_ns

    def _take(self, ref: dict[str, str], now: float) -> bool:
        """A token from the object's bucket (the kubelet's spam filter), if it has one."""
        key = f"{ref['kind']}/{ref.get('namespace', '')}/{ref['name']}/{ref.get('uid', '')}"
        bucket = self._buckets.get(key) or _Bucket(float(self.burst), now)
        bucket.tokens = min(float(self.burst), bucket.tokens + (now - bucket.at) / self.refill)
        bucket.at = now
        _remember(self._buckets, key, bucket, self.max_keys)
        if bucket.tokens < 1:
            return False
        bucket.tokens -= 1
        return True

    def _send(self, series: _Series, operation: str) -> bool:
        meta = series.event["metadata"]
        msg = new_message(
            source=Module.EDGED,
            group=Group.RESOURCE,
            operation=operation,
            resource=resource(meta["namespace"], ResourceType.EVENT, series.name),
        )
        body = msg.object
        body.api_version, body.kind = "v1", "Event"
        body.namespace, body.name = meta["namespace"], series.name
        body.object_json = json.dumps(series.event).encode()
        if self.send(msg):
            self._queue_full = False
            return True
        self.dropped += 1
        if not self._queue_full:  # once per run of drops: the queue stays full a while
            self._queue_full = True
            log.warning("edged: edgehub's queue is full; dropping events until it takes one")
        return False


def _remember(store: OrderedDict[str, Any], key: str, value: Any, limit: int) -> None:
    """Put `value` as the newest entry, forgetting the oldest beyond `limit`."""
    store[key] = value
    store.move_to_end(key)
    while len(store) > limit:
        store.popitem(last=False)


def _bump(series: _Series, now: float) -> None:
    series.event["count"] += 1
    series.event["lastTimestamp"] = _time(now)


def _time(now: float) -> str:
    return rfc3339(datetime.fromtimestamp(now, UTC))
