"""edgecontroller's upstream: its queues are bounded (a report waits to be queued, as
backpressure onto cloudhub, instead of piling up in memory while the API is slow or the caches
list; an Event is dropped instead); no report, however shaped, ends a worker; an Event is
written only about the node's own objects, normalized, and never over another's Event."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import pytest

from cloud.edgecontroller.upstream import Upstream
from cloud.kube import Kube, Obj
from cloud.kubeerrors import APIUnavailable, Conflict, NotFound
from cloud.metrics import CloudMetrics
from common.envelope import Message, with_node
from common.names import Operation
from tests.support.controllers import report
from tests.support.waiting import eventually


async def test_a_full_shard_makes_submit_wait(tmp_path: Path) -> None:
    """Regression (issue 10 review): the per-shard queues were unbounded. With the workers
    not taking (caches still listing), the shard of one resource takes `queue_size` reports;
    the next submit waits until there is room."""
    kube = Kube(tmp_path / "no-kubeconfig")
    upstream = Upstream(
        kube, lambda name: None, lambda ns, name: None, asyncio.Event(), queue_size=3
    )
    reports: list[Message] = [report("default/podstatus/web") for _ in range(4)]
    try:
        for msg in reports[:3]:
            await asyncio.wait_for(upstream.submit(msg), 1)
        waiting = asyncio.create_task(upstream.submit(reports[3]))
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(asyncio.shield(waiting), 0.2)
        shard = next(q for q in upstream._shards if q.qsize())
        assert shard.get_nowait() is reports[0]  # room for one: the waiting report goes in
        await asyncio.wait_for(waiting, 1)
        assert [shard.get_nowait() for _ in range(3)] == reports[1:]
    finally:
        await kube.close()


# -- Events and bad reports, against a fake API ---------------------------------------------

N = "edge-a"
DEEP = b"[" * 100_000 + b"]" * 100_000  # deeper than the JSON parser's recursion goes
UPSTREAM = "kubeedge_edgecontroller_upstream_messages_total"


class FakeAPI:
    """The Kube seam: Events in a dict, every call recorded by method name. A method named in
    `failing` raises that exception; one named in `held` waits until `release` is set."""

    def __init__(self) -> None:
        self.core = self.coordination = self
        self.events: dict[tuple[str, str], Obj] = {}
        self.calls: list[tuple[str, tuple[Any, ...]]] = []
        self.failing: dict[str, Exception] = {}
        self.held: set[str] = set()
        self.release = asyncio.Event()

    async def call(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        self.calls.append((fn.__name__, args))
        if fn.__name__ in self.held:
            await self.release.wait()
        if fn.__name__ in self.failing:
            raise self.failing[fn.__name__]
        return fn(*args)

    read = call

    def named(self, method: str) -> list[tuple[Any, ...]]:
        return [args for name, args in self.calls if name == method]

    def create_namespaced_event(self, namespace: str, body: Obj) -> None:
        key = (namespace, body["metadata"]["name"])
        if key in self.events:
            raise Conflict("409 already exists", 409)
        self.events[key] = copy.deepcopy(body)
        self.events[key]["metadata"]["resourceVersion"] = "1"

    def read_namespaced_event(self, name: str, namespace: str) -> Obj:
        if (namespace, name) not in self.events:
            raise NotFound("404", 404)
        return copy.deepcopy(self.events[(namespace, name)])

    def patch_namespaced_event(self, name: str, namespace: str, patch: Obj) -> None:
        there = self.events[(namespace, name)]
        version = patch.get("metadata", {}).get("resourceVersion")
        if version not in (None, there["metadata"]["resourceVersion"]):
            raise Conflict("409 the object has been modified", 409)
        there.update({k: v for k, v in patch.items() if k != "metadata"})

    def patch_namespaced_lease(self, name: str, namespace: str, patch: Obj) -> None:
        pass

    def read_node(self, name: str) -> Obj:
        raise NotFound("404", 404)  # no Node: Leases are written without an owner


PODS: dict[tuple[str, str], Obj] = {
    ("ns", "mine"): {"metadata": {"uid": "u1"}, "spec": {"nodeName": N}},
    ("ns", "theirs"): {"metadata": {"uid": "u2"}, "spec": {"nodeName": "edge-b"}},
}


def upstream_on(api: FakeAPI, **kwargs: Any) -> tuple[Upstream, CloudMetrics]:
    """An Upstream on `api` whose caches are listed: PODS, and no nodes."""
    metrics = CloudMetrics()
    ready = asyncio.Event()
    ready.set()
    kube = cast(Kube, api)

    def pods(namespace: str, name: str) -> Obj | None:
        return PODS.get((namespace, name))

    return Upstream(kube, lambda name: None, pods, ready, metrics, **kwargs), metrics


def counted(metrics: CloudMetrics, type_: str, result: str) -> float:
    return metrics.registry.get_sample_value(UPSTREAM, {"type": type_, "result": result}) or 0


def object_report(
    res: str, body: Any, op: str = Operation.INSERT, *, raw: bytes | None = None
) -> Message:
    """A report with an `object` body (JSON of `body`, or `raw`) from node N, as cloudhub
    hands it on (node/N/{res})."""
    msg = report(with_node(N, res), op)
    msg.object.object_json = raw if raw is not None else json.dumps(body).encode()
    return msg


def node_status_report(raw: bytes) -> Message:
    msg = report(with_node(N, f"null/nodestatus/{N}"))
    msg.node_status.status_json = raw
    return msg


def pod_event(name: str = "mine", uid: str = "u1", **fields: Any) -> Obj:
    about = {"kind": "Pod", "name": name, "namespace": "ns", "uid": uid}
    return {"involvedObject": about, "source": {"component": "kubelet", "host": N}, **fields}


def lease_report() -> Message:
    msg = report(with_node(N, f"kube-node-lease/lease/{N}"))
    msg.lease.node_name = N
    return msg


async def running(upstream: Upstream) -> asyncio.Task[None]:
    task = asyncio.create_task(upstream.run(), name="upstream")
    await asyncio.sleep(0)
    return task


async def stopped(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


@pytest.mark.parametrize(
    "msg",
    [
        pytest.param(
            object_report("ns/event/e", {"involvedObject": [["kind", "Node"], ["name", N]]}),
            id="involved-object-pairs",
        ),
        pytest.param(
            object_report("ns/event/e", {**pod_event(), "source": [["host", N]]}), id="source-list"
        ),
        pytest.param(object_report("ns/event/e", [pod_event()]), id="event-list"),
        pytest.param(object_report("ns/event/e", None, raw=DEEP), id="event-deep"),
        pytest.param(
            object_report(f"null/node/{N}", None, Operation.UPDATE, raw=DEEP), id="node-deep"
        ),
        pytest.param(
            object_report(f"null/node/{N}", ["x"], Operation.UPDATE), id="node-not-object"
        ),
        pytest.param(node_status_report(b'{"conditions": [1]}'), id="conditions-not-objects"),
        pytest.param(node_status_report(DEEP), id="node-status-deep"),
    ],
)
async def test_a_badly_shaped_report_is_refused_not_raised(msg: Message) -> None:
    """Regression (issue 10 review): an Event whose involvedObject was a list of pairs, or
    JSON nested too deep, raised out of apply_with_retries (AttributeError, RecursionError),
    which ended the worker and took edgecontroller down. Now: refused, counted, nothing
    written."""
    api = FakeAPI()
    upstream, metrics = upstream_on(api)
    await upstream.apply_with_retries(msg)
    kind = msg.route.resource.split("/")[3]
    assert counted(metrics, kind, "refused") == 1
    assert api.calls == []


async def test_any_exception_is_counted_and_the_worker_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The last resort: an exception nobody foresaw (here from the pod cache) is logged once
    with its traceback and counted "failed"; the worker applies the next report."""
    api = FakeAPI()
    upstream, metrics = upstream_on(api)
    upstream.pod_lookup = lambda ns, name: 1 / 0  # type: ignore[assignment, return-value]
    task = await running(upstream)
    try:
        status = report(with_node(N, "ns/podstatus/mine"))
        status.pod_status.uid = "u1"
        await upstream.submit(status)
        await eventually(lambda: counted(metrics, "podstatus", "failed") == 1, 5, "the failure")
        await upstream.submit(lease_report())
        await eventually(lambda: api.named("patch_namespaced_lease"), 5, "the lease applied")
    finally:
        await stopped(task)
    tracebacks = [r for r in caplog.records if r.exc_info]
    assert len(tracebacks) == 1 and "ns/podstatus/mine" in tracebacks[0].getMessage()


async def test_a_full_event_queue_drops_events_without_waiting(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Events are best-effort: with the workers not taking, `submit` of an Event returns at
    once; past the queue's size the Event is dropped, counted "dropped", and the run of
    drops is logged once."""
    api = FakeAPI()
    upstream, metrics = upstream_on(api, event_queue_size=3)
    for i in range(6):
        await asyncio.wait_for(upstream.submit(object_report(f"ns/event/e{i}", pod_event())), 0.5)
    assert counted(metrics, "event", "dropped") == 3
    assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == 1


async def test_events_never_delay_a_lease() -> None:
    """While the API holds every Event write, a Lease renewal is still applied: Events have
    their own queue and worker, not the shards Leases and statuses go through."""
    api = FakeAPI()
    api.held.add("create_namespaced_event")
    upstream, _ = upstream_on(api)
    task = await running(upstream)
    try:
        for i in range(16):  # names that spread over every shard
            await upstream.submit(object_report(f"ns/event/e{i}", pod_event()))
        await asyncio.wait_for(upstream.submit(lease_report()), 1)
        await eventually(lambda: api.named("patch_namespaced_lease"), 5, "the lease applied")
    finally:
        api.release.set()
        await stopped(task)


async def test_an_event_the_api_cannot_take_is_tried_twice_at_most() -> None:
    """An Event write that fails with APIUnavailable is tried once more, then counted
    "failed" (not the five attempts with back-off other reports get)."""
    api = FakeAPI()
    api.failing["create_namespaced_event"] = APIUnavailable("503", 503)
    upstream, metrics = upstream_on(api)
    task = await running(upstream)
    try:
        await upstream.submit(object_report("ns/event/e", pod_event()))
        await eventually(lambda: counted(metrics, "event", "failed") == 1, 2, "the give-up")
    finally:
        await stopped(task)
    assert len(api.named("create_namespaced_event")) == 2


STRANGERS = {
    "another pod": {"kind": "Pod", "name": "theirs", "namespace": "ns", "uid": "u2"},
    "another uid": {"kind": "Pod", "name": "mine", "namespace": "ns", "uid": "u0"},
}


@pytest.mark.parametrize("op", [Operation.INSERT, Operation.UPDATE])
@pytest.mark.parametrize(
    ("about", "host"),
    [
        pytest.param(STRANGERS["another pod"], "edge-b", id="other-pod-other-host"),
        pytest.param(STRANGERS["another uid"], N, id="older-pod"),
        pytest.param(pod_event()["involvedObject"], "edge-b", id="other-host"),
    ],
)
async def test_an_event_of_another_object_or_host_is_not_overwritten(
    op: str, about: Obj, host: str
) -> None:
    """Regression (issue 10 review): an update (or an insert's 409) merge-patched whatever
    Event had the name. Now the Event there must be about the same object (uid, kind,
    name) from the node itself, else the report is refused and the Event left as it was."""
    api = FakeAPI()
    theirs = {"metadata": {"name": "e"}, "involvedObject": about, "source": {"host": host}}
    api.create_namespaced_event("ns", {**theirs, "count": 1, "message": "theirs"})
    upstream, metrics = upstream_on(api)
    await upstream.apply_with_retries(object_report("ns/event/e", pod_event(count=9), op))
    assert counted(metrics, "event", "refused") == 1
    assert api.named("patch_namespaced_event") == []
    assert (api.events[("ns", "e")]["count"], api.events[("ns", "e")]["message"]) == (1, "theirs")


async def test_an_update_patches_the_same_event_at_the_version_read() -> None:
    """An update of the node's own Event patches count, lastTimestamp and message, with the
    resourceVersion it read (a change in between is a 409, not an overwrite)."""
    api = FakeAPI()
    upstream, metrics = upstream_on(api)
    await upstream.apply_with_retries(object_report("ns/event/e", pod_event(count=1)))
    again = pod_event(count=2, lastTimestamp="later", message="m", reason="r2")
    await upstream.apply_with_retries(object_report("ns/event/e", again, Operation.UPDATE))
    assert counted(metrics, "event", "applied") == 2
    (patch,) = [args[2] for args in api.named("patch_namespaced_event")]
    expected = {"count": 2, "lastTimestamp": "later", "message": "m"}
    assert patch == {**expected, "metadata": {"resourceVersion": "1"}}


async def test_the_event_written_is_normalized() -> None:
    """What a node's Event may not say is not written: source is the kubelet on the node,
    related/series/eventTime/action/reporting* are dropped, message and reason are cut."""
    api = FakeAPI()
    upstream, _ = upstream_on(api)
    sent = pod_event(
        message="m" * 5000,
        reason="r" * 500,
        related={"kind": "Pod", "name": "theirs"},
        series={"count": 3},
        eventTime="2026-01-01T00:00:00.000000Z",
        action="Doing",
        reportingController="kubernetes.io/someone-else",
        reportingInstance="someone",
        type="Warning",
    )
    sent["source"] = {"component": "scheduler"}
    await upstream.apply_with_retries(object_report("ns/event/e", sent))
    ((_, body),) = api.named("create_namespaced_event")
    assert body["source"] == {"component": "kubelet", "host": N}
    dropped = {"related", "series", "eventTime", "action", "reportingController"}
    assert not (dropped | {"reportingInstance"}) & body.keys()
    assert (len(body["message"]), len(body["reason"]), body["type"]) == (1024, 128, "Warning")


@pytest.mark.parametrize(
    ("res", "event"),
    [
        pytest.param(
            "ns/event/e",
            {"involvedObject": {"kind": "Node", "name": N}, "source": {"host": N}},
            id="node-event-not-in-default",
        ),
        pytest.param(
            "default/event/e",
            {"involvedObject": {"kind": "Node", "name": N}, "source": {"host": "edge-b"}},
            id="node-event-of-other-host",
        ),
        pytest.param("ns/event/e", pod_event(source={"host": "edge-b"}), id="pod-event-other-host"),
    ],
)
async def test_without_node_authorization_upstream_checks_namespace_and_host(
    res: str, event: Obj
) -> None:
    """With --no-node-authorization, edgecontroller's own checks refuse what the authorizer
    would: a Node event outside namespace default, or one from another source host."""
    api = FakeAPI()
    upstream, metrics = upstream_on(api)
    await upstream.apply_with_retries(object_report(res, event))
    assert counted(metrics, "event", "refused") == 1
    assert api.calls == []
