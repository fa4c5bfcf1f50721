"""Node liveness: an edge node that stops renewing its Lease while it has no hub stream here
gets its conditions set to Unknown (reason NodeStatusUnknown), as Kubernetes' node lifecycle
controller does for kubelets.

Both signals are needed: a node connected to this cloudcore is alive even if a Lease write
lagged, and a node connected to another cloudcore keeps renewing its Lease. The next status
the node reports (Ready=True) makes it Ready again; nothing here undoes the mark.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import UTC, datetime

from cloud.edgecontroller.objects import meta
from cloud.edgecontroller.upstream import SMP, now_rfc3339
from cloud.kube import Kube, Obj
from cloud.kubeerrors import KubeAPIError, NotFound
from common.names import LEASE_NAMESPACE

log = logging.getLogger(__name__)

REASON = "NodeStatusUnknown"
MESSAGE = "edgecore stopped posting node status"


def parse_time(value: object) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


class NodeMonitor:
    def __init__(
        self,
        kube: Kube,
        edge_nodes: Callable[[], dict[str, Obj]],
        connected: Callable[[str], bool],
        *,
        grace: float,
        period: float,
    ) -> None:
        self.kube = kube
        self.edge_nodes = edge_nodes
        self.connected = connected
        self.grace = grace
        self.period = period

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.period)
            try:
                await self.check()
            except KubeAPIError as exc:
                log.warning("edgecontroller: node liveness check failed: %s", exc)

    async def check(self) -> list[str]:
        """Mark every silent, disconnected edge node; returns the nodes marked now."""
        nodes = self.edge_nodes()
        if not nodes:
            return []
        leases = await self.kube.list_all(
            self.kube.coordination.list_namespaced_lease, LEASE_NAMESPACE
        )
        renewed = {
            meta(lease).get("name"): parse_time((lease.get("spec") or {}).get("renewTime"))
            for lease in leases
        }
        now = datetime.now(UTC)
        marked = []
        for name, node in sorted(nodes.items()):
            if self.connected(name):
                continue
            last = renewed.get(name) or parse_time(meta(node).get("creationTimestamp"))
            if last is not None and (now - last).total_seconds() < self.grace:
                continue
            if await self._mark_unknown(name, node):
                marked.append(name)
        return marked

    async def _mark_unknown(self, name: str, node: Obj) -> bool:
        conditions = (node.get("status") or {}).get("conditions") or []
        if any(c.get("type") == "Ready" and c.get("status") == "Unknown" for c in conditions):
            return False
        now = now_rfc3339()
        known = conditions or [{"type": "Ready"}]
        unknown = [
            {
                "type": c.get("type"),
                "status": "Unknown",
                "reason": REASON,
                "message": MESSAGE,
                "lastHeartbeatTime": c.get("lastHeartbeatTime") or now,
                "lastTransitionTime": now,
            }
            for c in known
        ]
        if not any(c["type"] == "Ready" for c in unknown):
            unknown.append(
                {
                    "type": "Ready",
                    "status": "Unknown",
                    "reason": REASON,
                    "message": MESSAGE,
                    "lastHeartbeatTime": now,
                    "lastTransitionTime": now,
                }
            )
        try:
            await self.kube.call(
                self.kube.core.patch_node_status,
                name,
                {"status": {"conditions": unknown}},
                _content_type=SMP,
            )
        except NotFound:
            return False
        log.warning("edgecontroller: node %s stopped posting status; Ready is Unknown", name)
        return True
