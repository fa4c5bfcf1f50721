"""A pod worker when the runtime fails: the failure shows in the pod's status, and a pod's
clean-up releases nothing until the runtime let go of it.

The runtime here is a fake at the CRI seam (FlakyRuntime): containerd cannot be made to fail
RunPodSandbox or StopPodSandbox on demand, so this stands in for a CNI plugin that is broken
or busy for a while."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import grpc
import pytest
from cri.runtime.v1 import api_pb2 as cri

from edge.edged import podspec, quantity, volumes
from edge.edged.cri import CRIPermanentError, CRITemporaryError
from edge.edged.events import EventRecorder
from edge.edged.worker import (
    PodWorker,
    Timing,
    api_restart_count,
    build_pod_status,
    keep_transition_times,
    next_backoff,
)


class FlakyRuntime:
    """Fake CRI: one sandbox, no containers; StopPodSandbox fails `failures` times."""

    def __init__(self, failures: int, pod_dir: Path) -> None:
        self.failures = failures
        self.pod_dir = pod_dir
        self.calls: list[str] = []

    async def list_pod_sandbox(self, _filter: Any) -> list[Any]:
        return [SimpleNamespace(id="sandbox-1")]

    async def list_containers(self, _filter: Any) -> list[Any]:
        return []

    async def stop_pod_sandbox(self, sandbox_id: str) -> None:
        self.calls.append("stop")
        assert self.pod_dir.exists(), "the pod's folders went before its sandbox"
        if self.failures:
            self.failures -= 1
            raise CRITemporaryError("StopPodSandbox", grpc.StatusCode.UNKNOWN, "cni: busy")

    async def remove_pod_sandbox(self, sandbox_id: str) -> None:
        self.calls.append("remove")

    async def run_pod_sandbox(self, config: Any) -> str:
        raise CRITemporaryError("RunPodSandbox", grpc.StatusCode.UNKNOWN, "cni: no IP left")


def worker_for(runtime: FlakyRuntime, root: Path, uid: str, **changes: Any) -> PodWorker:
    async def report(pod: dict[str, Any], status: dict[str, Any]) -> None:
        runtime.calls.append("report")

    async def gone(pod: dict[str, Any]) -> None:
        runtime.calls.append("gone")

    pod = {
        "metadata": {"name": "web", "namespace": "default", "uid": uid},
        "spec": {"containers": [{"name": "app", "image": "busybox"}]},
    }
    return PodWorker(
        pod=pod,
        runtime=runtime,  # type: ignore[arg-type]
        root=root,
        node_name="edge-1",
        lookup=lambda kind, ns, name: None,
        report=report,
        gone=gone,
        timing=Timing(sync_interval=0.01, backoff_max=0.05),
        **changes,
    )


async def test_a_sandbox_that_will_not_stop_is_retried_before_anything_is_released(
    tmp_path: Path,
) -> None:
    """Regression (issue 10): StopPodSandbox failures were ignored, the volumes deleted and
    the pod reported gone, leaking the sandbox and its IP. Now clean-up is retried, and only
    after the sandbox is stopped and removed are the folders removed and the pod reported;
    each failure is a FailedKillPod Event about the pod (counted, as the kubelet's)."""
    uid = "0f0f0f0f-uid"
    pod_dir = volumes.pod_dir(tmp_path, uid)
    (pod_dir / "volumes" / "data").mkdir(parents=True)
    runtime = FlakyRuntime(failures=2, pod_dir=pod_dir)
    reported: list[str] = []

    async def gone(pod: dict[str, Any]) -> None:
        assert runtime.calls[-1] == "remove" and not pod_dir.exists()
        reported.append(pod["metadata"]["uid"])

    async def report(pod: dict[str, Any], status: dict[str, Any]) -> None:
        raise AssertionError("a pod being removed reports no status")

    worker = PodWorker(
        pod={"metadata": {"name": "web", "namespace": "default", "uid": uid}, "spec": {}},
        runtime=runtime,  # type: ignore[arg-type]
        root=tmp_path,
        node_name="edge-1",
        lookup=lambda kind, ns, name: None,
        report=report,
        gone=gone,
        timing=Timing(sync_interval=0.01, backoff_max=0.05),
        deleted=True,
        events=EventRecorder("edge-1", lambda msg: sent.append(msg) or True),
    )
    sent: list[Any] = []
    await asyncio.wait_for(worker.run(), 5)
    assert runtime.calls == ["stop", "stop", "stop", "remove"]
    assert reported == [uid]
    events = [json.loads(msg.object.object_json) for msg in sent]
    assert [(e["reason"], e["type"]) for e in events] == [("FailedKillPod", "Warning")]
    assert "cni: busy" in events[0]["message"]
    assert events[0]["involvedObject"]["uid"] == uid


async def test_a_sandbox_that_will_not_start_shows_in_the_pod_status(tmp_path: Path) -> None:
    """Regression (issue 10): a RunPodSandbox failure left the pod ContainerCreating with no
    reason; its containers now wait with CreatePodSandboxError and the runtime's message."""
    status = await status_with_no_sandbox(tmp_path, "1a1a1a1a-uid", init=False)
    (container,) = status["containerStatuses"]
    waiting = container["state"]["waiting"]
    assert waiting["reason"] == "CreatePodSandboxError"
    assert "cni: no IP left" in waiting["message"]


async def test_a_sandbox_failure_shows_on_init_containers_too(tmp_path: Path) -> None:
    """kubectl shows a pod with init containers by their state: they wait with the sandbox's
    reason too, not a bare PodInitializing (Init:0/1 with no why)."""
    status = await status_with_no_sandbox(tmp_path, "1b1b1b1b-uid", init=True)
    (init,) = status["initContainerStatuses"]
    assert init["state"]["waiting"]["reason"] == "CreatePodSandboxError"


async def status_with_no_sandbox(tmp_path: Path, uid: str, *, init: bool) -> dict[str, Any]:
    """The status a worker reports when RunPodSandbox keeps failing."""
    runtime = FlakyRuntime(failures=0, pod_dir=tmp_path)
    runtime.list_pod_sandbox = _none  # type: ignore[method-assign]
    worker = worker_for(runtime, tmp_path, uid)
    if init:
        worker.pod["spec"]["initContainers"] = [{"name": "setup", "image": "busybox"}]
    task = asyncio.create_task(worker.run())
    try:
        for _ in range(100):
            if "report" in runtime.calls:
                break
            await asyncio.sleep(0.01)
        return await worker.status()
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def _none(_filter: Any) -> list[Any]:
    return []


async def test_an_unexpected_error_gets_the_pod_a_reason_and_one_traceback(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Regression (issue 10): an error outside the expected set ended in a traceback every
    round and no status; now the worker keeps going, logs it once, and the pod says it."""
    runtime = FlakyRuntime(failures=0, pod_dir=tmp_path)

    async def broken(_filter: Any) -> list[Any]:
        raise RuntimeError("something nobody expected")

    runtime.list_pod_sandbox = broken  # type: ignore[method-assign]
    worker = worker_for(runtime, tmp_path, "2b2b2b2b-uid")
    task = asyncio.create_task(worker.run())
    try:
        await asyncio.sleep(0.2)  # ~20 rounds
        assert not task.done(), "the worker died"
        status = await worker.status()
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    waiting = status["containerStatuses"][0]["state"]["waiting"]
    assert waiting["reason"] == "RunContainerError"
    assert "something nobody expected" in waiting["message"]
    tracebacks = [r for r in caplog.records if r.exc_info and "unexpected" in r.getMessage()]
    assert len(tracebacks) == 1


def test_a_bad_cpu_quantity_or_base64_is_a_clear_error(tmp_path: Path) -> None:
    """What the API server would refuse but a tampered or old store may hold: `cpu: xm`, a
    secret whose data is not base64. Each is an error naming the problem, not a crash."""
    with pytest.raises(quantity.BadQuantity, match="invalid cpu quantity 'xm'"):
        quantity.cpu_millis("xm")
    pod = {
        "metadata": {"name": "web", "namespace": "default", "uid": "3c3c3c3c-uid"},
        "spec": {"volumes": [{"name": "s", "secret": {"secretName": "bad"}}]},
    }
    bad = {"metadata": {"name": "bad"}, "data": {"key": "not base64!"}}
    with pytest.raises(volumes.VolumeError, match="volume 's'"):
        volumes.prepare(tmp_path, pod, lambda kind, ns, name: bad)


def test_crash_back_off_doubles_and_forgets_after_a_long_healthy_run() -> None:
    """Regression (issue 10): the back-off never reset, so a container that crashed once a
    day waited the maximum forever. Now it doubles up to the maximum, and a failure more than
    twice the maximum after the last one starts again from the initial delay."""
    timing = Timing(backoff_initial=10, backoff_max=300)
    delays, backoff, at = [], 0.0, 0.0
    for now in (0, 20, 50, 100, 200, 400, 800):
        backoff = next_backoff(backoff, at, now, timing)
        at = now
        delays.append(backoff)
    assert delays == [10, 20, 40, 80, 160, 300, 300]
    assert next_backoff(300, at, at + 601, timing) == 10  # quiet for over 2 x 300 s


class PullFails(FlakyRuntime):
    """Fake CRI: a ready sandbox, no containers, an image that is absent and cannot be pulled."""

    pulls = 0

    async def list_pod_sandbox(self, _filter: Any) -> list[Any]:
        return [SimpleNamespace(id="sandbox-1", state=cri.SANDBOX_READY)]

    async def pod_sandbox_status(self, sandbox_id: str) -> Any:
        return SimpleNamespace(
            state=cri.SANDBOX_READY, network=SimpleNamespace(ip="10.1.1.5"), created_at=0
        )

    async def image_status(self, image: Any) -> None:
        return None

    async def pull_image(self, image: Any) -> None:
        self.pulls += 1
        raise CRIPermanentError("PullImage", grpc.StatusCode.NOT_FOUND, "no such registry")


async def test_a_failing_pull_backs_off_as_image_pull_back_off(tmp_path: Path) -> None:
    """Regression (issue 10): a pull that fails was retried on every sync (every second);
    now it waits backoff_initial (doubling), and the container says ImagePullBackOff."""
    runtime = PullFails(failures=0, pod_dir=tmp_path)
    worker = worker_for(runtime, tmp_path, "4d4d4d4d-uid")
    worker.timing = Timing(sync_interval=0.01, backoff_initial=60, backoff_max=300)
    task = asyncio.create_task(worker.run())
    try:
        await asyncio.sleep(0.3)  # ~30 rounds
        status = await worker.status()
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert runtime.pulls == 1
    waiting = status["containerStatuses"][0]["state"]["waiting"]
    assert waiting == {
        "reason": "ImagePullBackOff",
        "message": 'Back-off pulling image "busybox"',
    }


async def events_of(runtime: FlakyRuntime, root: Path, uid: str) -> list[dict[str, Any]]:
    """The Events a worker records in ~20 rounds over `runtime`."""
    sent: list[dict[str, Any]] = []

    def link(msg: Any) -> bool:
        sent.append(json.loads(msg.object.object_json))
        return True

    worker = worker_for(runtime, root, uid, events=EventRecorder("edge-1", link))
    task = asyncio.create_task(worker.run())
    try:
        await asyncio.sleep(0.2)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    return sent


async def test_runtime_failures_are_events_about_the_pod(tmp_path: Path) -> None:
    """Issue 10: a sandbox that will not start is a FailedCreatePodSandBox Event about the pod;
    a failing pull is Pulling, Failed (with the runtime's error) and BackOff about the
    container; repeats every round are counted in one Event, not sent again."""
    runtime = FlakyRuntime(failures=0, pod_dir=tmp_path)
    runtime.list_pod_sandbox = _none  # type: ignore[method-assign]
    (sandbox,) = await events_of(runtime, tmp_path, "5e5e5e5e-uid")
    assert (sandbox["reason"], sandbox["type"]) == ("FailedCreatePodSandBox", "Warning")
    assert "cni: no IP left" in sandbox["message"]
    assert sandbox["involvedObject"]["uid"] == "5e5e5e5e-uid"
    pulls = await events_of(PullFails(failures=0, pod_dir=tmp_path), tmp_path, "6f6f6f6f-uid")
    assert [e["reason"] for e in pulls] == ["Pulling", "Failed", "BackOff"]
    assert "no such registry" in pulls[1]["message"]
    assert {e["involvedObject"].get("fieldPath") for e in pulls} == {"spec.containers{app}"}


def test_a_condition_keeps_its_transition_time_until_it_changes() -> None:
    """Regression (issue 10): every report rewrote every condition's lastTransitionTime."""
    running = {"name": "c", "ready": True, "restartCount": 0, "state": {"running": {}}}
    first = build_pod_status({}, [running], pod_ip="", started_at="")
    for c in first["conditions"]:
        c["lastTransitionTime"] = "2026-01-01T00:00:00Z"
    later = build_pod_status({}, [{**running, "ready": False}], pod_ip="", started_at="")
    keep_transition_times(later, first)
    times = {c["type"]: c["lastTransitionTime"] for c in later["conditions"]}
    assert times["PodScheduled"] == times["Initialized"] == "2026-01-01T00:00:00Z"
    assert times["Ready"] != "2026-01-01T00:00:00Z"  # Ready went True -> False: now
    assert times["ContainersReady"] == times["Ready"]


def test_the_restart_count_goes_on_in_a_new_sandbox() -> None:
    """Regression (issue 10): a recreated sandbox started its containers at attempt 0, so
    restartCount went back to 0. The count goes on from the last container — remembered, or
    after an edgecore restart read from the pod status the API holds."""
    status = {
        "containerStatuses": [{"name": "app", "containerID": "containerd://x", "restartCount": 4}]
    }
    assert api_restart_count(status, "app") == 4
    assert api_restart_count(status, "other") == -1
    never = {"containerStatuses": [{"name": "app", "restartCount": 0}]}  # waiting, no container
    assert api_restart_count(never, "app") == -1


APP = {"name": "app", "image": "busybox", "readinessProbe": {
    "exec": {"command": ["true"]}, "initialDelaySeconds": 3600, "periodSeconds": 3600,
}}  # fmt: skip


class Adopted(PullFails):
    """Fake CRI: a ready sandbox with one running container `c-1` edged did not start."""

    async def list_containers(self, _filter: Any) -> list[Any]:
        return [
            SimpleNamespace(
                id="c-1",
                state=cri.CONTAINER_RUNNING,
                created_at=1,
                metadata=SimpleNamespace(name="app", attempt=0),
                annotations={podspec.CONTAINER_HASH: podspec.container_hash(APP)},
            )
        ]

    async def container_status(self, container_id: str) -> Any:
        return cri.ContainerStatus(id=container_id, state=cri.CONTAINER_RUNNING, image_ref="x")


async def test_an_adopted_ready_container_stays_ready(tmp_path: Path) -> None:
    """Regression (issue 10): after an edgecore restart, probes started from scratch, so every
    pod with a readiness probe went NotReady until the probe passed again. A running container
    that the last reported status called ready stays ready — that status is saved on the node
    (the pod the node holds may carry an older status), else taken from the API's."""
    uid = "5e5e5e5e-uid"
    ready_c1 = {
        "containerStatuses": [
            {"name": "app", "containerID": "containerd://c-1", "ready": True, "started": True}
        ]
    }

    async def ready_after_adoption(saved: dict[str, Any] | None, api: dict[str, Any]) -> bool:
        status_file = volumes.pod_dir(tmp_path, uid) / "status.json"
        status_file.unlink(missing_ok=True)
        if saved is not None:
            status_file.parent.mkdir(parents=True, exist_ok=True)
            status_file.write_text(json.dumps(saved))
        worker = worker_for(Adopted(failures=0, pod_dir=tmp_path), tmp_path, uid)
        worker.pod["spec"]["containers"] = [APP]
        worker.pod["status"] = api
        await worker._sync()
        return bool((await worker.status())["containerStatuses"][0]["ready"])

    assert await ready_after_adoption(ready_c1, {})  # saved on the node; the API's is stale
    assert await ready_after_adoption(None, ready_c1)  # nothing saved: the API's
    other = json.loads(json.dumps(ready_c1).replace("c-1", "c-0"))
    assert not await ready_after_adoption(other, other)  # about another container: probe first
