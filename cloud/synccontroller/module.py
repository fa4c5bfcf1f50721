"""synccontroller: what each edge node acknowledged, and the loop that makes nodes consistent.

What it does:
- owns the Ledger (ledger.py): ObjectSync / ClusterObjectSync records, loaded at start,
  moved by cloudhub's ack notices (this module's inbox, group sync), written in the
  background with bursts coalesced;
- every --sync-period, once the modules that own the kinds have their first listings, hands
  each record to its owner (edgecontroller for Pod, ConfigMap, Secret and Node), which
  compares it with the API: an object that moved past the acked version is resent through
  the owner's one send path (so status-only changes stay unsent), one that is gone or no
  longer belongs on the node is deleted there. After a cloudcore restart or a long
  disconnect, the edge ends consistent and only changed objects travel.

What it does not: build or send messages, or decide what belongs on a node.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Protocol

from cloud.kube import Kube
from cloud.kubeerrors import KubeAPIError
from cloud.settings import CloudSettings
from cloud.synccontroller.ledger import Ledger, Record
from common.bus import Bus
from common.names import Group, Module
from common.supervisor import together

log = logging.getLogger(__name__)


class Reconciler(Protocol):
    """A module that sends objects of `kinds` to nodes and can make one record consistent."""

    kinds: frozenset[str]

    @property
    def synced(self) -> asyncio.Event: ...

    async def reconcile(self, record: Record) -> None: ...


class SyncController:
    name: str = Module.SYNCCONTROLLER
    group: str = Group.SYNC

    def __init__(
        self,
        bus: Bus,
        settings: CloudSettings,
        *,
        kubeconfig: Path,
    ) -> None:
        self.bus = bus
        self.settings = settings
        self.kube = Kube(
            kubeconfig,
            name="synccontroller",
            watch_timeout=settings.kube_watch_timeout,
        )
        self.ledger = Ledger(self.kube, settings.objectsync_qps, settings.objectsync_burst)
        self.reconcilers: list[Reconciler] = []
        self.rounds = 0  # completed comparison rounds

    async def run(self) -> None:
        await self.kube.connect()
        if not self.ledger.loaded.is_set():
            await self.ledger.load()
        await together(
            sync_acks=self._acks(),
            sync_flush=self.ledger.flush_forever(),
            sync_compare=self._compare_forever(),
        )

    async def close(self) -> None:
        # Acks recorded in memory but not yet written would make a restart resend objects
        # the node already holds: write them before the client goes (bounded by stop_grace).
        try:
            await asyncio.wait_for(self.ledger.flush(), self.settings.stop_grace)
        except Exception:
            log.warning(
                "synccontroller: could not write every record before stopping", exc_info=True
            )
        await self.kube.close()

    async def _acks(self) -> None:
        while True:
            self.ledger.on_ack(await self.bus.receive(self.name))

    async def _compare_forever(self) -> None:
        for reconciler in self.reconcilers:
            await reconciler.synced.wait()
        while True:
            await self.compare()
            await asyncio.sleep(self.settings.sync_period)

    async def compare(self) -> None:
        """One round: every record to the module that owns its kind."""
        owners = {kind: r for r in self.reconcilers for kind in r.kinds}
        for record in self.ledger.records():
            owner = owners.get(record.ref.kind)
            if owner is None:
                continue
            try:
                await owner.reconcile(record)
            except KubeAPIError as exc:
                log.warning("synccontroller: %s on %s: %s", record.cr_name, record.node, exc)
        self.rounds += 1
