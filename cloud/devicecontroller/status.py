"""Device status from what edges report, and the batching writer that puts it in the API.

An edge reports a full snapshot of a device's twin (reported and desired values of every
property) and, separately, the device's state. Each becomes part of a merge patch of the
Device's status subresource: `twins` (a list, replaced whole — which is why the edge sends a
snapshot), `state` and `lastOnlineTime`. Every reported value is written, whatever the
property's reportToCloud says.

StatusWriter gathers patches for `interval` seconds, merging those of one device (the newest
wins), then writes each device once, devices in parallel, one write per device at a time (so
two writes of one device never race). A failed write is retried with the newer data merged
over it; a Device that no longer exists is skipped. Merge patches are idempotent, so a report
handed on twice (after a cloudcore crash) writes the same status twice.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from kubeedge.twin.v1 import twin_pb2

from cloud.kubeerrors import KubeAPIError, NotFound

log = logging.getLogger(__name__)

Status = dict[str, Any]
Writer = Callable[[str, str, Status], Awaitable[None]]

RETRY_INITIAL, RETRY_MAX = 0.2, 10.0


def twins_status(update: twin_pb2.TwinUpdate) -> Status:
    """status.twins from a twin snapshot: reported and observedDesired per property."""
    twins = []
    for name in sorted(update.twin):
        twin = update.twin[name]
        entry: dict[str, Any] = {"propertyName": name}
        if twin.HasField("actual"):
            meta = {"timestamp": str(twin.actual.timestamp_ms)}
            if twin.type:
                meta["type"] = twin.type
            entry["reported"] = {"value": twin.actual.value, "metadata": meta}
        if twin.HasField("expected"):
            entry["observedDesired"] = {
                "value": twin.expected.value,
                "metadata": {"timestamp": str(twin.expected.timestamp_ms)},
            }
        if len(entry) > 1:
            twins.append(entry)
    return {"twins": twins}


def state_status(state: twin_pb2.DeviceState) -> Status:
    status: Status = {"state": state.state}
    if state.last_online_ms > 0:
        when = datetime.fromtimestamp(state.last_online_ms / 1000, UTC)
        status["lastOnlineTime"] = when.strftime("%Y-%m-%dT%H:%M:%SZ")
    return status


class StatusWriter:
    def __init__(self, interval: float) -> None:
        self.interval = interval
        self.written = 0
        self._pending: dict[str, Status] = {}
        self._wake = asyncio.Event()

    def put(self, device_key: str, status: Status) -> None:
        """Queue a status change of `{namespace}/{name}`; newer keys win over queued ones."""
        self._pending.setdefault(device_key, {}).update(status)
        self._wake.set()

    def pending(self) -> int:
        return len(self._pending)

    async def run(self, write: Writer) -> None:
        delay = RETRY_INITIAL
        while True:
            await self._wake.wait()
            if self.interval > 0:
                await asyncio.sleep(self.interval)
            self._wake.clear()
            batch, self._pending = self._pending, {}
            results = await asyncio.gather(*(self._write(write, k, s) for k, s in batch.items()))
            if all(results):
                delay = RETRY_INITIAL
                continue
            await asyncio.sleep(delay)
            delay = min(delay * 2, RETRY_MAX)

    async def _write(self, write: Writer, key: str, status: Status) -> bool:
        namespace, name = key.split("/", 1)
        try:
            await write(namespace, name, status)
        except KubeAPIError as exc:
            if isinstance(exc, NotFound):
                log.debug("devicecontroller: device %s is gone; status dropped", key)
                return True
            log.warning("devicecontroller: writing status of %s failed: %s", key, exc)
            newer = self._pending.get(key, {})
            self._pending[key] = {**status, **newer}
            self._wake.set()
            return False
        self.written += 1
        return True
