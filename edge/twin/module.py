"""twin (KubeEdge's devicetwin): device twins in SQLite, served on MQTT, synced with the cloud.

What it does:
- downstream (group `twin` from edgehub): Device and DeviceModel objects and membership
  snapshots are stored in the node's SQLite file, then acked (ack after commit, like
  metamanager); then mappers hear about it on MQTT: membership/updated for added or removed
  devices, twin/update/document and twin/update/delta for changed desired values;
- MQTT requests (from eventbus): twin/update (reported values), twin/get, state/update and
  membership/get are answered on their `/result` topics; bad input gets a result with a code
  (400/404/409) and a reason and changes nothing (edge/twin/model.py has the rules);
- upstream: every change of a device's reported values (or of the desired values it holds)
  sends the cloud a full snapshot of the device's twin (`{ns}/twin/{name}`, body twin_update),
  and every state change the state (`{ns}/devicestate/{name}`, body device_state), through
  edgehub's durable outbox, which keeps the newest per device while the cloud is away; at
  each start it sends a snapshot of every device holding reported values, so a report that a
  crash (or a shutdown stopping edgehub first) kept between the twin's commit and the outbox
  still reaches the cloud.

It works with no cloud: requests are served from SQLite whatever the link does.
"""

from __future__ import annotations

import json
import logging

from common.bus import Bus
from common.envelope import Message, new_message, now_ms
from common.names import Group, Module, Operation, ResourceType
from common.sqlite import Database
from edge.eventbus.topics import mqtt_message
from edge.settings import EdgeSettings
from edge.twin import handlers, store
from edge.twin.handlers import Effects

log = logging.getLogger(__name__)

BATCH = 500


class DeviceTwin:
    name: str = Module.DEVICETWIN
    group: str = Group.TWIN

    def __init__(self, bus: Bus, settings: EdgeSettings, db: Database) -> None:
        self.bus = bus
        self.node = settings.node_name
        self.db = db
        db.run_blocking(store.create)
        self.handled = 0
        # Reports are committed here before they reach edgehub's durable outbox through the
        # in-memory bus; whatever a crash lost in between is reported again at the next start.
        self.resent = False

    async def run(self) -> None:
        if not self.resent:  # once per process start, before anything new
            now = now_ms()
            await self._carry_out(await self.db.run(lambda c: handlers.snapshot_all(c, now)))
            self.resent = True
        while True:
            batch = await self.bus.receive_batch(self.name, BATCH)
            await self.handle(batch)

    async def close(self) -> None:
        return None

    async def handle(self, batch: list[Message]) -> None:
        """Apply a batch in one transaction, then ack, publish and report what it changed."""
        now = now_ms()
        effects = await self.db.transaction(lambda c: handlers.process(c, self.node, batch, now))
        self.handled += len(batch)
        await self._carry_out(effects)

    async def _carry_out(self, fx: Effects) -> None:
        for reply in fx.replies:
            await self.bus.send(Module.EDGEHUB, reply)
        if fx.publish and self.bus.has_group(Group.BUS):
            for topic, payload in fx.publish:
                data = json.dumps(payload, separators=(",", ":")).encode()
                await self.bus.send(
                    Module.EVENTBUS, mqtt_message(self.name, topic, data, to_broker=True)
                )
        for device_id, report in fx.twin_reports.items():
            msg = self._upstream(ResourceType.TWIN, device_id)
            msg.twin_update.CopyFrom(report)
            await self.bus.send(Module.EDGEHUB, msg)
        for device_id, state in fx.state_reports.items():
            msg = self._upstream(ResourceType.DEVICE_STATE, device_id)
            msg.device_state.CopyFrom(state)
            await self.bus.send(Module.EDGEHUB, msg)

    def _upstream(self, type_: str, device_id: str) -> Message:
        namespace, name = device_id.split("/", 1)
        return new_message(
            source=self.name,
            group=Group.TWIN,
            operation=Operation.UPDATE,
            resource=f"{namespace}/{type_}/{name}",
        )
