"""The official kubernetes client against the embedded API server (in a cloudcore process)."""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import json
import ssl
import threading
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client, config, watch
from kubernetes.client.rest import ApiException

from tests.support.cluster import Cluster, start_cluster


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[Cluster]:
    c = await start_cluster(tmp_path / "cloud", "--watch-history", "50")
    yield c
    await c.proc.terminate()


def core(cluster: Cluster) -> client.CoreV1Api:
    api_client = config.new_client_from_config(config_file=str(cluster.kubeconfig))
    return client.CoreV1Api(api_client)


def cm(name: str, value: str = "0") -> dict[str, Any]:
    return {"metadata": {"name": name}, "data": {"v": value}}


async def in_thread(fn: Any, *args: Any, **kwargs: Any) -> Any:
    return await asyncio.get_running_loop().run_in_executor(None, lambda: fn(*args, **kwargs))


async def test_list_then_watch_misses_nothing(cluster: Cluster) -> None:
    """A watch from a list's resourceVersion sees every write made after the list, in order,
    while another writer keeps writing."""
    api = core(cluster)
    for i in range(5):
        await in_thread(api.create_namespaced_config_map, "default", cm(f"pre-{i}"))
    writes = 40

    def writer() -> None:
        for i in range(writes):
            api.create_namespaced_config_map("default", cm(f"w-{i}"))

    listing = await in_thread(api.list_namespaced_config_map, "default")
    assert len(listing.items) == 5
    seen: list[str] = []

    def watcher() -> None:
        w = watch.Watch()
        for event in w.stream(
            api.list_namespaced_config_map,
            "default",
            resource_version=listing.metadata.resource_version,
            timeout_seconds=30,
        ):
            seen.append(event["object"].metadata.name)
            if len(seen) == writes:
                w.stop()

    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        watching = pool.submit(watcher)
        await in_thread(pool.submit(writer).result, 30)
        await in_thread(watching.result, 30)
    assert seen == [f"w-{i}" for i in range(writes)]


async def test_watch_from_compacted_version_is_gone_and_relist_recovers(cluster: Cluster) -> None:
    """After more writes than the history keeps, a watch from an old version gets 410; a
    fresh list and a watch from its version work."""
    api = core(cluster)
    await in_thread(api.create_namespaced_config_map, "default", cm("hot"))
    old = (await in_thread(api.list_namespaced_config_map, "default")).metadata.resource_version
    for i in range(120):  # history holds 50 events
        await in_thread(api.patch_namespaced_config_map, "hot", "default", {"data": {"v": str(i)}})

    def watch_old() -> None:
        for _ in watch.Watch().stream(
            api.list_namespaced_config_map, "default", resource_version=old, timeout_seconds=5
        ):
            pass

    with pytest.raises(ApiException) as err:
        await in_thread(watch_old)
    assert err.value.status == 410
    fresh = await in_thread(api.list_namespaced_config_map, "default")
    got: list[str] = []

    def watch_new() -> None:
        w = watch.Watch()
        for event in w.stream(
            api.list_namespaced_config_map,
            "default",
            resource_version=fresh.metadata.resource_version,
            timeout_seconds=10,
        ):
            got.append(event["object"].data["v"])
            w.stop()

    thread = threading.Thread(target=watch_new)
    thread.start()
    await asyncio.sleep(0.3)
    await in_thread(api.patch_namespaced_config_map, "hot", "default", {"data": {"v": "new"}})
    await in_thread(thread.join, 15)
    assert got == ["new"]


async def test_racing_writers_exactly_one_wins(cluster: Cluster) -> None:
    """Two updates from the same resourceVersion: one succeeds, the other gets 409 Conflict."""
    api = core(cluster)
    await in_thread(api.create_namespaced_config_map, "default", cm("race"))
    base = await in_thread(api.read_namespaced_config_map, "race", "default")
    barrier = threading.Barrier(2)

    def update(value: str) -> int:
        body = client.V1ConfigMap(
            metadata=client.V1ObjectMeta(
                name="race", resource_version=base.metadata.resource_version
            ),
            data={"v": value},
        )
        barrier.wait()
        try:
            api.replace_namespaced_config_map("race", "default", body)
            return 200
        except ApiException as exc:
            return int(exc.status)

    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        codes = sorted(
            await asyncio.gather(
                in_thread(pool.submit(update, "a").result),
                in_thread(pool.submit(update, "b").result),
            )
        )
    assert codes == [200, 409]


async def test_pod_on_existing_node_waits_for_the_node(cluster: Cluster) -> None:
    """Deleting a pod bound to an existing node marks it; the node's final delete removes it.
    A pod bound to a node that does not exist is removed at once."""
    api = core(cluster)
    await in_thread(api.create_node, {"metadata": {"name": "edge-x"}})
    pod = {
        "metadata": {"name": "p"},
        "spec": {"nodeName": "edge-x", "containers": [{"name": "c", "image": "busybox"}]},
    }
    await in_thread(api.create_namespaced_pod, "default", pod)
    await in_thread(api.delete_namespaced_pod, "p", "default")
    marked = await in_thread(api.read_namespaced_pod, "p", "default")
    assert marked.metadata.deletion_timestamp is not None
    assert marked.metadata.deletion_grace_period_seconds == 30
    await in_thread(api.delete_namespaced_pod, "p", "default", grace_period_seconds=0)
    with pytest.raises(ApiException) as err:
        await in_thread(api.read_namespaced_pod, "p", "default")
    assert err.value.status == 404
    orphan = {**pod, "metadata": {"name": "q"}, "spec": {**pod["spec"], "nodeName": "nowhere"}}
    await in_thread(api.create_namespaced_pod, "default", orphan)
    await in_thread(api.delete_namespaced_pod, "q", "default")
    with pytest.raises(ApiException):
        await in_thread(api.read_namespaced_pod, "q", "default")


async def test_pagination_walks_every_object_once(cluster: Cluster) -> None:
    """limit/continue pages through a list without repeats or gaps."""
    api = core(cluster)
    for i in range(23):
        await in_thread(api.create_namespaced_config_map, "default", cm(f"page-{i:02d}"))
    names: list[str] = []
    token = None
    while True:
        page = await in_thread(api.list_namespaced_config_map, "default", limit=5, _continue=token)
        assert len(page.items) <= 5
        names += [i.metadata.name for i in page.items]
        token = page.metadata._continue
        if not token:
            break
    assert names == sorted(f"page-{i:02d}" for i in range(23))


def raw(
    cluster: Cluster,
    method: str,
    path: str,
    body: bytes | None,
    content_type: str = "application/json",
    token: str | None = "",
) -> tuple[int, dict[str, Any]]:
    """One HTTPS request with the kubeconfig's token and CA, returning (status, JSON body)."""
    status, _, payload = request(cluster, method, path, body, content_type, token)
    return status, payload


def request(
    cluster: Cluster,
    method: str,
    path: str,
    body: bytes | None,
    content_type: str = "application/json",
    token: str | None = "",
) -> tuple[int, dict[str, str], dict[str, Any]]:
    """Like raw(), also returning the response headers. token "" means the kubeconfig's."""
    kc = yaml.safe_load(cluster.kubeconfig.read_text())
    server = kc["clusters"][0]["cluster"]
    ca = base64.b64decode(server["certificate-authority-data"]).decode()
    if token == "":
        token = kc["users"][0]["user"]["token"]
    headers = {"Content-Type": content_type}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    req = urllib.request.Request(server["server"] + path, data=body, method=method, headers=headers)
    ctx = ssl.create_default_context(cadata=ca)
    try:
        with urllib.request.urlopen(req, context=ctx, timeout=10) as resp:
            return resp.status, dict(resp.headers), json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), json.loads(exc.read())


BAD = [
    pytest.param(
        "POST",
        "/api/v1/namespaces/default/configmaps",
        b"{not json",
        400,
        "BadRequest",
        id="malformed-json",
    ),
    pytest.param(
        "POST",
        "/api/v1/namespaces/default/configmaps",
        b"a: [unclosed",
        400,
        "BadRequest",
        id="malformed-yaml",
    ),
    pytest.param(
        "POST",
        "/api/v1/namespaces/default/configmaps",
        b'{"apiVersion":"v1","kind":"ConfigMap","metadata":{}}',
        422,
        "Invalid",
        id="no-name",
    ),
    pytest.param(
        "POST",
        "/api/v1/namespaces/default/configmaps",
        b'{"apiVersion":"v1","kind":"Secret","metadata":{"name":"x"}}',
        400,
        "BadRequest",
        id="wrong-kind",
    ),
    pytest.param(
        "GET", "/api/v1/namespaces/default/gizmos", None, 404, "NotFound", id="unknown-resource"
    ),
    pytest.param(
        "POST",
        "/api/v1/namespaces/default/configmaps",
        b'{"metadata":{"name":"big"},"data":{"x":"' + b"y" * (4 * 1024 * 1024) + b'"}}',
        413,
        "RequestEntityTooLarge",
        id="too-large",
    ),
    pytest.param(
        "PATCH",
        "/api/v1/namespaces/default/configmaps/keep",
        b'[{"op":"test","path":"/data/v","value":"nope"}]',
        422,
        "Invalid",
        id="failing-json-patch",
    ),
]


@pytest.mark.parametrize(("method", "path", "body", "code", "reason"), BAD)
async def test_bad_input_gets_status_and_changes_nothing(
    cluster: Cluster, method: str, path: str, body: bytes | None, code: int, reason: str
) -> None:
    """Each bad request gets its HTTP code and a Status body; stored objects are unchanged."""
    api = core(cluster)
    await in_thread(api.create_namespaced_config_map, "default", cm("keep", "original"))
    before = await in_thread(api.list_namespaced_config_map, "default")
    ctype = (
        "application/json-patch+json"
        if method == "PATCH"
        else ("application/yaml" if body and body.startswith(b"a:") else "application/json")
    )
    status, payload = await in_thread(raw, cluster, method, path, body, ctype)
    assert status == code
    assert payload["kind"] == "Status" and payload["reason"] == reason and payload["code"] == code
    after = await in_thread(api.list_namespaced_config_map, "default")
    assert [(i.metadata.name, i.data, i.metadata.resource_version) for i in after.items] == [
        (i.metadata.name, i.data, i.metadata.resource_version) for i in before.items
    ]


@pytest.mark.parametrize("token", [pytest.param(None, id="none"), pytest.param("x", id="wrong")])
async def test_requests_without_credentials_get_401(cluster: Cluster, token: str | None) -> None:
    """No token, or a wrong one, is refused with 401 and a Status body."""
    status, body = await in_thread(
        raw, cluster, "GET", "/api/v1/namespaces", None, "application/json", token
    )
    assert status == 401 and body["reason"] == "Unauthorized"


async def test_state_survives_sigkill(cluster: Cluster) -> None:
    """Objects, their resourceVersions and CRDs survive a SIGKILL of cloudcore."""
    api = core(cluster)
    created = await in_thread(api.create_namespaced_config_map, "default", cm("durable", "1"))
    crd = {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "gadgets.example.com"},
        "spec": {
            "group": "example.com",
            "scope": "Namespaced",
            "names": {"kind": "Gadget", "plural": "gadgets"},
            "versions": [{"name": "v1", "served": True, "storage": True}],
        },
    }
    await cluster.kubectl("apply", "-f", "-", stdin=json.dumps(crd))
    gadget = {
        "apiVersion": "example.com/v1",
        "kind": "Gadget",
        "metadata": {"name": "g1", "namespace": "default"},
        "spec": {"n": 1},
    }
    await cluster.kubectl("apply", "-f", "-", stdin=json.dumps(gadget))
    rv_before = (
        await in_thread(api.list_namespaced_config_map, "default")
    ).metadata.resource_version
    await cluster.restart(kill=True)
    api = core(cluster)
    again = await in_thread(api.read_namespaced_config_map, "durable", "default")
    assert again.metadata.resource_version == created.metadata.resource_version
    assert again.metadata.uid == created.metadata.uid and again.data == {"v": "1"}
    assert (await cluster.get_json("gadget", "g1"))["spec"] == {"n": 1}
    nxt = await in_thread(api.create_namespaced_config_map, "default", cm("after"))
    assert int(nxt.metadata.resource_version) > int(rv_before)


@pytest.mark.parametrize(
    ("mode", "code", "kept", "warned"),
    [
        pytest.param("Strict", 400, None, False, id="strict-refuses"),
        pytest.param("Warn", 201, False, True, id="warn-drops-and-warns"),
        pytest.param("Ignore", 201, False, False, id="ignore-drops-silently"),
    ],
)
async def test_field_validation_modes(
    cluster: Cluster, mode: str, code: int, kept: bool | None, warned: bool
) -> None:
    """fieldValidation: Strict refuses an unknown field, Warn stores without it and says so in
    a Warning header, Ignore stores without it silently."""
    body = json.dumps(
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "bogus": 1,
            "metadata": {"name": f"fv-{mode.lower()}"},
            "data": {"a": "b"},
        }
    ).encode()
    status, headers, payload = await in_thread(
        request,
        cluster,
        "POST",
        f"/api/v1/namespaces/default/configmaps?fieldValidation={mode}",
        body,
    )
    assert status == code
    if code == 400:
        assert 'unknown field "bogus"' in payload["message"]
        return
    assert ("bogus" in payload) is kept
    assert ('unknown field \\"bogus\\"' in headers.get("Warning", "")) is warned
