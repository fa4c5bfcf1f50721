"""Remove everything edged made on this machine: pods, the private containerd, its bridge.

Used by `keadm reset` (python -m edge.edged.reset --data-dir DIR). Pods are removed through the
CRI (so CNI releases their addresses and network namespaces), then the private containerd is
stopped, leftover mounts under DIR are unmounted and the node's bridge is deleted. An edgecore
that uses an existing containerd (--runtime-endpoint) is left alone: we did not start it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import subprocess
from pathlib import Path

from cri.runtime.v1 import api_pb2 as cri

from edge.edged.containerd import ManagedContainerd, pid_alive
from edge.edged.cri import CRI, CRIError
from edge.edged.podspec import MANAGED_BY

log = logging.getLogger(__name__)


def _bridge(state_dir: Path) -> tuple[str, str]:
    """The bridge name and subnet recorded in the private containerd's CNI config."""
    for conf in sorted((state_dir / "cni" / "net.d").glob("*.conflist")):
        data = json.loads(conf.read_text())
        for plugin in data.get("plugins", []):
            if plugin.get("type") == "bridge":
                subnet = plugin["ipam"]["ranges"][0][0]["subnet"]
                return str(plugin["bridge"]), str(subnet)
    return "", ""


async def reset(data_dir: Path) -> int:
    """Remove the node's pods and runtime; returns how many pod sandboxes were removed."""
    state_dir = data_dir / "containerd"
    bridge, subnet = _bridge(state_dir)
    if not bridge:
        return 0
    managed = ManagedContainerd(state_dir, bridge=bridge, pod_cidr=subnet)
    removed = 0
    pid_text = managed.pid_path.read_text().strip() if managed.pid_path.exists() else ""
    if pid_text.isdigit() and pid_alive(int(pid_text)):
        runtime = CRI()
        await runtime.connect(managed.endpoint)
        try:
            sandboxes = await runtime.list_pod_sandbox(
                cri.PodSandboxFilter(label_selector={MANAGED_BY: "true"})
            )
            for sandbox in sandboxes:
                with contextlib.suppress(CRIError):
                    await runtime.stop_pod_sandbox(sandbox.id)
                    await runtime.remove_pod_sandbox(sandbox.id)
                    removed += 1
        finally:
            await runtime.close()
        managed.pid = int(pid_text)
        await managed.stop()
    await asyncio.to_thread(_clean_host, data_dir, bridge)
    return removed


def _clean_host(data_dir: Path, bridge: str) -> None:
    _unmount_under(data_dir)
    subprocess.run(["ip", "link", "del", bridge], capture_output=True, check=False)


def _unmount_under(path: Path) -> None:
    try:
        mounts = [ln.split()[1] for ln in Path("/proc/self/mounts").read_text().splitlines()]
    except OSError:
        return
    for mount in sorted(
        (m for m in mounts if m.startswith(str(path.resolve()))), key=len, reverse=True
    ):
        subprocess.run(["umount", "-l", mount], capture_output=True, check=False)


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m edge.edged.reset", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--data-dir", type=Path, required=True, help="the edgecore's data dir")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    removed = asyncio.run(reset(args.data_dir))
    print(f"edge reset: removed {removed} pod sandbox(es) and the node's runtime")


if __name__ == "__main__":
    main()
