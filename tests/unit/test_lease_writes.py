"""How edgecontroller writes a node's Lease, as kube-controller-manager's node lifecycle
controller needs it: born renewed and owned by its Node in one server-side apply, renewed by
merge patches whose renewTime only moves forward, the owner riding on a renewal when the Node
registered after the Lease. (A Lease version whose renewTime did not move forward made the
controller stop judging the node: see docs/reliability.md.)

The API here is a fake at the Kube seam (LeaseAPI) that keeps one Lease and records each
write with its keyword arguments; the real API server is in
tests/integration/test_edgecontroller.py::test_lease_is_created_then_renewed."""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Callable
from typing import Any, cast

from cloud.edgecontroller.upstream import APPLY, FIELD_MANAGER, MERGE, Upstream
from cloud.kube import Kube, Obj
from cloud.kubeerrors import NotFound
from common.envelope import with_node
from tests.support.controllers import report

N = "edge-a"
T = 1_700_000_000_000  # a whole second: the MicroTime still carries its microseconds


class LeaseAPI:
    """One Lease (or none), one Node (or none); `writes` holds (content type, body, kwargs)."""

    def __init__(self, node_uid: str | None) -> None:
        self.core = self.coordination = self
        self.node_uid = node_uid
        self.lease: Obj | None = None
        self.writes: list[tuple[str, Obj, dict[str, Any]]] = []

    async def call(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        return fn(*args, **kwargs)

    read = call

    def read_node(self, name: str) -> Obj:
        if self.node_uid is None:
            raise NotFound("404", 404)
        return {"metadata": {"name": name, "uid": self.node_uid}}

    def patch_namespaced_lease(
        self, name: str, namespace: str, body: Obj, *, _content_type: str, **kwargs: Any
    ) -> None:
        assert (name, namespace) == (N, "kube-node-lease")
        if _content_type == MERGE and self.lease is None:
            raise NotFound("404", 404)
        self.writes.append((_content_type, copy.deepcopy(body), kwargs))
        lease = self.lease or {"metadata": {}, "spec": {}}
        lease["metadata"].update(body.get("metadata", {}))
        lease["spec"].update(body["spec"])
        self.lease = lease


def upstream_on(api: LeaseAPI, cached_uid: str | None = None) -> Upstream:
    cached = None if cached_uid is None else {"metadata": {"name": N, "uid": cached_uid}}
    return Upstream(cast(Kube, api), lambda name: cached, lambda ns, name: None, asyncio.Event())


async def renew(upstream: Upstream, ms: int) -> None:
    msg = report(with_node(N, f"kube-node-lease/lease/{N}"))
    msg.lease.node_name, msg.lease.renew_time_ms, msg.lease.lease_duration_seconds = N, ms, 40
    await upstream.lease(N, N, msg.lease)


async def test_a_new_lease_is_born_renewed_and_owned_in_one_apply() -> None:
    api = LeaseAPI(node_uid="uid-1")
    upstream = upstream_on(api, cached_uid="uid-1")
    await renew(upstream, T)
    [(kind, body, kwargs)] = api.writes
    assert kind == APPLY
    assert kwargs == {"field_manager": FIELD_MANAGER, "force": True}
    assert body["kind"] == "Lease" and body["metadata"]["name"] == N
    assert body["spec"] == {
        "holderIdentity": N,
        "leaseDurationSeconds": 40,
        "renewTime": "2023-11-14T22:13:20.000000Z",
    }
    assert [o["uid"] for o in body["metadata"]["ownerReferences"]] == ["uid-1"]

    await renew(upstream, T + 10_000)
    kind, body, kwargs = api.writes[-1]
    assert (kind, kwargs) == (MERGE, {})
    assert body["spec"]["renewTime"] == "2023-11-14T22:13:30.000000Z"
    assert "metadata" not in body  # owned already: a renewal carries the spec only


async def test_a_renewal_that_is_not_newer_is_not_written() -> None:
    """A resend or backlog landing after a newer renewal is dropped; one older by more than a
    lease's duration is the node's clock set back, and is written."""
    api = LeaseAPI(node_uid="uid-1")
    upstream = upstream_on(api, cached_uid="uid-1")
    await renew(upstream, T)
    await renew(upstream, T + 10_000)
    await renew(upstream, T + 5_000)
    await renew(upstream, T + 10_000)
    assert len(api.writes) == 2
    assert api.lease is not None
    assert api.lease["spec"]["renewTime"] == "2023-11-14T22:13:30.000000Z"
    await renew(upstream, T - 3_600_000)
    assert len(api.writes) == 3
    assert api.lease["spec"]["renewTime"] == "2023-11-14T21:13:20.000000Z"


async def test_the_owner_rides_on_a_renewal_when_the_node_registers_later() -> None:
    """The Lease came before the Node (not in the cache, not in the API): it is created
    without an owner; the first renewal after the Node exists carries the owner, read from
    the API while the cache does not have it yet; later renewals carry the spec only."""
    api = LeaseAPI(node_uid=None)
    upstream = upstream_on(api)
    await renew(upstream, T)
    assert "ownerReferences" not in api.writes[-1][1]["metadata"]
    api.node_uid = "uid-2"
    await renew(upstream, T + 10_000)
    kind, body, _ = api.writes[-1]
    assert kind == MERGE
    assert [o["uid"] for o in body["metadata"]["ownerReferences"]] == ["uid-2"]
    await renew(upstream, T + 20_000)
    assert "metadata" not in api.writes[-1][1]


async def test_a_lease_deleted_under_an_owned_node_is_created_owned_again() -> None:
    api = LeaseAPI(node_uid="uid-1")
    upstream = upstream_on(api, cached_uid="uid-1")
    await renew(upstream, T)
    api.lease = None  # deleted by hand, or with an earlier Node of this name
    await renew(upstream, T + 10_000)
    kind, body, _ = api.writes[-1]
    assert kind == APPLY
    assert [o["uid"] for o in body["metadata"]["ownerReferences"]] == ["uid-1"]
