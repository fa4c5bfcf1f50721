"""Fixtures the end-to-end pod tests share: the demo images and a cloud + edge stack."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.support.cluster import Cluster, start_cluster
from tests.support.controlplane import TestControlPlane
from tests.support.edgenode import FAST_CLOUD, Node, build_images, node_ready, start_node
from tests.support.waiting import eventually, free_port


@pytest.fixture(scope="session")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo OCI images (busybox, pause), built once for the session."""
    return build_images(tmp_path_factory.mktemp("images"))


@pytest.fixture
async def cloud(tmp_path: Path, kube: TestControlPlane) -> AsyncIterator[tuple[Cluster, str]]:
    """A cloudcore process on the real control plane, and its hub's address."""
    hub = f"127.0.0.1:{free_port()}"
    cluster = await start_cluster(tmp_path / "cloud", kube, "--hub-listen", hub, *FAST_CLOUD)
    yield cluster, hub
    await cluster.proc.terminate()


@pytest.fixture
async def stack(
    tmp_path: Path, images: Path, kube: TestControlPlane
) -> AsyncIterator[tuple[Cluster, Node]]:
    """A cloudcore process on the real control plane and one edgecore `edge-1`, Ready."""
    hub_port = free_port()
    cluster = await start_cluster(
        tmp_path / "cloud", kube, "--hub-listen", f"127.0.0.1:{hub_port}", *FAST_CLOUD
    )
    node = await start_node(
        "edge-1",
        tmp_path / "edge",
        f"127.0.0.1:{hub_port}",
        images,
        *await cluster.join_flags("edge-1"),
    )
    try:
        await eventually(lambda: node_ready(cluster), 60, "edge-1 Ready")
        yield cluster, node
    finally:
        await node.stop_and_reset()
        await cluster.proc.terminate()
