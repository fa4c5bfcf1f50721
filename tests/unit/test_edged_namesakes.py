"""edged keys pods by uid, and a pod name belongs to one pod at a time: when a pod arrives
under a name another uid holds, the older pod's worker is retired (its delete was lost or comes
late), and a late delete of the older uid leaves the newer pod alone (issue 10: a queued DELETE
replaced by the next INSERT of that name left the old pod's containers running).

The workers here are never run (no runtime): what is checked is which of them edged tells to
stop, and what `lookup` (the objects pods' volumes read) keeps."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from common.bus import Bus
from edge.edged.module import Edged
from edge.edged.worker import PodWorker, Timing
from edge.settings import EdgeSettings

NODE = "edge-1"


def pod(uid: str, name: str = "web", namespace: str = "default") -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": namespace, "uid": uid},
        "spec": {"nodeName": NODE, "containers": [{"name": "app", "image": "busybox"}]},
    }


def held_uid(edged: Edged) -> str | None:
    """The uid of the pod `web` that edged's objects hold (what its volumes would read)."""
    held = edged.lookup("pod", "default", "web")
    return None if held is None else str(held["metadata"]["uid"])


@pytest.fixture
def edged(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Edged:
    edged = Edged(Bus(), EdgeSettings(data_dir=tmp_path, node_name=NODE, insecure_hub=True))

    def start_idle_worker(spec: dict[str, Any]) -> None:
        worker = PodWorker(
            pod=spec,
            runtime=None,  # type: ignore[arg-type]
            root=tmp_path,
            node_name=NODE,
            lookup=edged.lookup,
            report=edged._report_pod,
            gone=edged._pod_gone,
            timing=Timing(),
        )
        edged.workers[worker.uid] = worker

    monkeypatch.setattr(edged, "_start_worker", start_idle_worker)
    return edged


def test_a_new_uid_under_a_name_retires_the_older_pods_worker(edged: Edged) -> None:
    edged._on_pod(pod("uid-1"), deleted=False)
    edged._on_pod(pod("uid-other", namespace="team-b"), deleted=False)  # same name elsewhere
    edged._on_pod(pod("uid-1"), deleted=False)  # an update of the same pod retires nothing
    assert not edged.workers["uid-1"].deleted

    edged._on_pod(pod("uid-2"), deleted=False)  # uid-1's delete never came
    assert edged.workers["uid-1"].deleted
    assert not edged.workers["uid-2"].deleted
    assert not edged.workers["uid-other"].deleted
    assert held_uid(edged) == "uid-2"
    worker = edged._worker_of("default", "web")
    assert worker is not None and worker.uid == "uid-2"


def test_a_late_delete_of_the_older_uid_leaves_the_newer_pod(edged: Edged) -> None:
    edged._on_pod(pod("uid-1"), deleted=False)
    edged._on_pod(pod("uid-2"), deleted=False)
    edged._on_pod(pod("uid-1"), deleted=True)  # the older pod's delete, arriving late
    assert not edged.workers["uid-2"].deleted
    assert held_uid(edged) == "uid-2"
    edged._on_pod(pod("uid-2"), deleted=True)
    assert edged.workers["uid-2"].deleted
    assert held_uid(edged) is None
