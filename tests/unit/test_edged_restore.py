"""edged's start-up sweep: the folder of a pod the node no longer runs is removed, its tmpfs
unmounted first (edgecore died after removing the pod's sandbox, before removing its folder:
a Memory emptyDir would otherwise hold RAM, and its Secrets stay on disk)."""

from __future__ import annotations

from pathlib import Path

from common.bus import Bus
from edge.edged import subpaths, volumes
from edge.edged.module import Edged
from edge.settings import EdgeSettings


def test_folders_of_gone_pods_are_removed_and_their_tmpfs_unmounted(tmp_path: Path) -> None:
    edged = Edged(Bus(), EdgeSettings(data_dir=tmp_path, node_name="edge-1", insecure_hub=True))
    gone = volumes.pod_dir(tmp_path, "uid-gone") / "volumes" / "cache"
    kept = volumes.pod_dir(tmp_path, "uid-kept") / "volumes" / "data"
    for folder in (gone, kept):
        folder.mkdir(parents=True)
        (folder / "file").write_text("x")
    subpaths.mount_tmpfs(gone, "size=1m,mode=700")
    try:
        edged._sweep_folders({"uid-kept"})
        assert not subpaths.is_mounted(gone)
        assert not volumes.pod_dir(tmp_path, "uid-gone").exists()
        assert (kept / "file").read_text() == "x"
    finally:
        subpaths.unmount(gone)
