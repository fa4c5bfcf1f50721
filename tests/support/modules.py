"""Test modules that sit on a real bus next to the real ones: recorders and producers.

Named as test doubles: they stand where later issues put real controllers (edgecontroller,
edged), so the hub can be tested end to end before those exist.
"""

from __future__ import annotations

import asyncio
from collections import Counter

from common.bus import Bus
from common.envelope import Message, new_message, with_node
from common.names import Group, Module, Operation


class Recorder:
    """Receives what the bus delivers to its group and remembers it, in order."""

    def __init__(self, bus: Bus, name: str, group: str) -> None:
        self.bus = bus
        self.name = name
        self.group = group
        self.messages: list[Message] = []
        self.changed = asyncio.Event()

    async def run(self) -> None:
        while True:
            self.messages.append(await self.bus.receive(self.name))
            self.changed.set()

    async def close(self) -> None:
        return None

    async def wait_for(self, count: int, timeout: float) -> None:
        async with asyncio.timeout(timeout):
            while len(self.messages) < count:
                self.changed.clear()
                await self.changed.wait()

    def payloads(self) -> Counter[bytes]:
        return Counter(m.opaque.data for m in self.messages)


def object_event(
    node: str | None, name: str, rv: int, *, op: str = Operation.UPDATE, data: bytes = b"{}"
) -> Message:
    """A configmap event as edgecontroller will send it (node-prefixed when `node` is given)."""
    res = f"default/configmap/{name}"
    msg = new_message(
        source=Module.EDGECONTROLLER,
        group=Group.META,
        operation=op,
        resource=with_node(node, res) if node else res,
        resource_version=str(rv),
    )
    obj = msg.object
    obj.api_version, obj.kind, obj.namespace, obj.name = "v1", "ConfigMap", "default", name
    obj.uid, obj.resource_version, obj.object_json = f"uid-{name}", str(rv), data
    return msg


def upload(seq: int) -> Message:
    """An upstream report an edge module would send (application data, group user)."""
    msg = new_message(
        source="test-producer",
        group=Group.USER,
        operation=Operation.UPLOAD,
        resource=f"default/upload/seq-{seq}",
    )
    msg.opaque.content_type = "text/plain"
    msg.opaque.data = str(seq).encode()
    return msg
