"""edged's Event recorder: the v1 Event it sends, series (count) instead of copies, the
per-object rate limit, and dropping rather than waiting when edgehub's queue is full."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest

from common.envelope import Message
from common.names import Group, Operation
from edge.edged.events import EventRecorder

NODE = "edge-1"
POD = {
    "metadata": {"name": "web", "namespace": "shop", "uid": "u-1"},
    "spec": {"initContainers": [{"name": "setup"}], "containers": [{"name": "app"}]},
}


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


class Link:
    """edgehub's bus queue: takes messages until `full`."""

    def __init__(self) -> None:
        self.sent: list[Message] = []
        self.full = False

    def __call__(self, msg: Message) -> bool:
        if self.full:
            return False
        self.sent.append(msg)
        return True

    def events(self) -> list[dict[str, Any]]:
        return [json.loads(m.object.object_json) for m in self.sent]


def recorder(**limits: Any) -> tuple[EventRecorder, Link, Clock]:
    link, clock = Link(), Clock()
    return EventRecorder(NODE, link, clock=clock, **limits), link, clock


def test_a_pod_container_event_is_a_v1_event_insert() -> None:
    """A container's event goes up as an insert of {ns}/event/{name} (group resource) carrying
    the v1 Event: involvedObject the Pod with the container's fieldPath, source kubelet on
    this node, count 1, first = last timestamp."""
    events, link, _ = recorder()
    assert events.pod(POD, "BackOff", "Back-off restarting", container="app", warning=True)
    (msg,) = link.sent
    event = json.loads(msg.object.object_json)
    name = event["metadata"]["name"]
    assert name.startswith("web.") and int(name[4:], 16) > 0
    assert (msg.route.group, msg.route.operation) == (Group.RESOURCE, Operation.INSERT)
    assert msg.route.resource == f"shop/event/{name}"
    assert (msg.object.kind, msg.object.namespace, msg.object.name) == ("Event", "shop", name)
    assert not msg.object.uid  # so edgehub's outbox collapses the updates of one Event
    assert event["involvedObject"] == {
        "kind": "Pod",
        "namespace": "shop",
        "name": "web",
        "uid": "u-1",
        "apiVersion": "v1",
        "fieldPath": "spec.containers{app}",
    }
    assert event["source"] == {"component": "kubelet", "host": NODE}
    assert (event["reason"], event["type"], event["count"]) == ("BackOff", "Warning", 1)
    assert event["firstTimestamp"] == event["lastTimestamp"] == "2023-11-14T22:13:20Z"
    assert event["metadata"]["namespace"] == "shop"


def test_init_container_and_node_references() -> None:
    """An init container's fieldPath names initContainers; the Node's event lives in
    namespace default, its uid being the node's name (the kubelet's node reference)."""
    events, link, _ = recorder()
    events.pod(POD, "Started", "Started container setup", container="setup")
    events.node("ImageImportFailed", "image archive bad.tar skipped", warning=True)
    pod_event, node_event = link.events()
    assert pod_event["involvedObject"]["fieldPath"] == "spec.initContainers{setup}"
    assert node_event["involvedObject"] == {"kind": "Node", "name": NODE, "uid": NODE}
    assert node_event["metadata"]["namespace"] == "default"
    assert link.sent[1].route.resource.startswith(f"default/event/{NODE}.")


def test_a_repeat_bumps_the_count_of_one_event() -> None:
    """The same event again is an update of the same Event with count + 1; repeats within
    `repeat` seconds are counted and go up with the next send; another message is another
    Event; after `window` the same event starts a new Event."""
    events, link, clock = recorder(repeat=10, window=3600)
    events.pod(POD, "Unhealthy", "Liveness probe failed", container="app", warning=True)
    clock.now += 1
    assert not events.pod(POD, "Unhealthy", "Liveness probe failed", container="app", warning=True)
    clock.now += 10
    assert events.pod(POD, "Unhealthy", "Liveness probe failed", container="app", warning=True)
    first, update = link.events()
    assert link.sent[1].route.operation == Operation.UPDATE
    assert link.sent[1].route.resource == link.sent[0].route.resource
    assert update["metadata"]["name"] == first["metadata"]["name"]
    assert (update["count"], update["firstTimestamp"]) == (3, first["firstTimestamp"])
    assert update["lastTimestamp"] == "2023-11-14T22:13:31Z"
    events.pod(POD, "Unhealthy", "Readiness probe failed", container="app", warning=True)
    clock.now += 3601
    events.pod(POD, "Unhealthy", "Liveness probe failed", container="app", warning=True)
    names = [e["metadata"]["name"] for e in link.events()]
    assert len(set(names)) == 3
    assert [m.route.operation for m in link.sent[2:]] == [Operation.INSERT, Operation.INSERT]


def test_each_object_has_a_token_bucket() -> None:
    """A burst of events about one pod passes, then its events are dropped until tokens come
    back (one per `refill` seconds); other objects are not held back by it."""
    events, link, clock = recorder(burst=3, refill=300)
    sent = [events.pod(POD, "BackOff", f"crash {i}", container="app") for i in range(5)]
    assert sent == [True, True, True, False, False]
    assert events.dropped == 2
    other = {"metadata": {"name": "db", "namespace": "shop", "uid": "u-2"}}
    assert events.pod(other, "Started", "Started container db")
    assert events.node("ImageImportFailed", "bad archive")
    clock.now += 299
    assert not events.pod(POD, "BackOff", "crash 5", container="app")
    clock.now += 2
    assert events.pod(POD, "BackOff", "crash 6", container="app")
    assert len(link.sent) == 6


def test_a_full_queue_drops_events_and_says_so_once(caplog: pytest.LogCaptureFixture) -> None:
    """When edgehub's queue is full events are dropped, never waited for: counted, with one
    log line for the run of drops; the next event it takes goes up."""
    events, link, _ = recorder()
    link.full = True
    for i in range(3):
        assert not events.pod(POD, "Killing", f"Stopping container {i}")
    assert events.dropped == 3
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "full" in warnings[0].getMessage()
    link.full = False
    assert events.pod(POD, "Killing", "Stopping container app")


def test_memory_is_bounded() -> None:
    """At most max_keys series and buckets are kept, the oldest forgotten first."""
    events, _, _ = recorder(max_keys=10)
    for i in range(50):
        events.pod({"metadata": {"name": f"p{i}", "uid": str(i)}}, "Started", f"m{i}")
    assert len(events._series) == 10 and len(events._buckets) == 10


def test_long_names_and_messages_are_cut_to_the_api_limits() -> None:
    """An Event's name stays a DNS subdomain (<= 253) and its message <= 1024 characters."""
    events, link, _ = recorder()
    pod = {"metadata": {"name": "p" * 253, "namespace": "shop", "uid": "u"}}
    events.pod(pod, "Failed", "x" * 5000, warning=True)
    (event,) = link.events()
    assert len(event["metadata"]["name"]) <= 253 and len(event["message"]) == 1024
