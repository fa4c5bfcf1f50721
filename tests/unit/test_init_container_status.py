"""The pod status edged builds for a pod with init containers: phase, the Initialized condition
and the QoS class as the kubelet and the API server derive them (issue 10)."""

from __future__ import annotations

from typing import Any

import pytest

from edge.edged.worker import api_restart_count, build_pod_status


def status_of(
    name: str, state: dict[str, Any], *, ready: bool = False, **more: Any
) -> dict[str, Any]:
    return {"name": name, "ready": ready, "restartCount": 0, "state": state, **more}


DONE = {"terminated": {"exitCode": 0, "reason": "Completed"}}
FAILED = {"terminated": {"exitCode": 3, "reason": "Error"}}
BACK_OFF = {"waiting": {"reason": "CrashLoopBackOff"}}
INITIALIZING = {"waiting": {"reason": "PodInitializing"}}
RUNNING = {"running": {"startedAt": "2026-01-01T00:00:00Z"}}


def build(
    init: list[dict[str, Any]], containers: list[dict[str, Any]], policy: str = "Always"
) -> dict[str, Any]:
    spec = {"restartPolicy": policy}
    return build_pod_status(spec, containers, init_containers=init, pod_ip="", started_at="")


def initialized(status: dict[str, Any]) -> dict[str, Any]:
    return next(c for c in status["conditions"] if c["type"] == "Initialized")


@pytest.mark.parametrize(
    ("init", "policy", "phase"),
    [
        pytest.param(
            [status_of("a", DONE, ready=True), status_of("b", RUNNING)],
            "Always",
            "Pending",
            id="second-init-running",
        ),
        pytest.param(
            [status_of("a", BACK_OFF, lastState=FAILED, restartCount=2)],
            "Always",
            "Pending",
            id="init-in-back-off",
        ),
        pytest.param(
            [status_of("a", BACK_OFF, lastState=FAILED, restartCount=2)],
            "OnFailure",
            "Pending",
            id="init-in-back-off-on-failure",
        ),
        pytest.param([status_of("a", FAILED)], "Never", "Failed", id="init-failed-never"),
        pytest.param(
            [status_of("a", DONE, ready=True), status_of("b", FAILED)],
            "Never",
            "Failed",
            id="second-init-failed-never",
        ),
    ],
)
def test_a_pod_initializing_is_pending_or_failed(
    init: list[dict[str, Any]], policy: str, phase: str
) -> None:
    """While init containers run or back off the pod is Pending and not Initialized; a failed
    one under restartPolicy Never fails the pod."""
    status = build(init, [status_of("main", INITIALIZING)], policy)
    assert status["phase"] == phase
    assert status["initContainerStatuses"] == init
    condition = initialized(status)
    assert condition["status"] == "False"
    assert condition["reason"] == "ContainersNotInitialized"
    incomplete = " ".join(c["name"] for c in init if not c["ready"])
    assert condition["message"] == f"containers with incomplete status: [{incomplete}]"


def test_a_pod_whose_init_containers_completed_is_initialized() -> None:
    """Every init container Completed and ready: Initialized True (no reason), the pod Running."""
    init = [status_of("a", DONE, ready=True), status_of("b", DONE, ready=True)]
    status = build(init, [status_of("main", RUNNING, ready=True)])
    assert status["phase"] == "Running"
    assert initialized(status)["status"] == "True"
    assert "reason" not in initialized(status)


def test_a_started_container_means_initialized_before() -> None:
    """A container that ran shows the pod was initialized, even when its init containers'
    statuses are gone (a new sandbox not yet made, pruned containers): the kubelet's rule."""
    status = build([status_of("a", INITIALIZING)], [status_of("main", RUNNING)])
    assert initialized(status)["status"] == "True"


def test_a_pod_without_init_containers_has_no_init_statuses() -> None:
    status = build([], [status_of("main", RUNNING, ready=True)])
    assert "initContainerStatuses" not in status
    assert initialized(status)["status"] == "True"


@pytest.mark.parametrize(
    ("init_resources", "qos"),
    [
        pytest.param({}, "BestEffort", id="none"),
        pytest.param({"requests": {"cpu": "100m"}}, "Burstable", id="init-requests-only"),
    ],
)
def test_init_containers_count_for_the_qos_class(init_resources: dict[str, Any], qos: str) -> None:
    """The API server counts init containers' resources in the QoS class; so does edged."""
    spec = {
        "initContainers": [{"name": "a", "resources": init_resources}],
        "containers": [{"name": "main"}],
    }
    assert build_pod_status(spec, [], pod_ip="", started_at="")["qosClass"] == qos


def test_an_init_containers_restart_count_goes_on_after_an_edgecore_restart() -> None:
    """The attempt number of an init container is read from initContainerStatuses too."""
    status = {
        "initContainerStatuses": [
            {"name": "setup", "containerID": "containerd://x", "restartCount": 5}
        ]
    }
    assert api_restart_count(status, "setup") == 5
