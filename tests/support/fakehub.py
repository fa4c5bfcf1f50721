"""A HubService double standing for a cloud that sends what the API server would refuse.

Some edge defences cannot be reached through the real API: kube-apiserver already rejects a
configMap item path `../x` or an absolute subPath, yet edgecore must refuse them too (what it
stored offline, or a tampered cloud, could carry them). This server speaks the real hub
protocol to a real edgecore: it sends the objects a test gives it (with keepalives), and
records and acknowledges every report the edge sends up.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import grpc
from kubeedge.hub.v1 import hub_pb2, hub_pb2_grpc

from common.envelope import Message, make_ack, new_message
from common.names import Group, Module, Operation

KEEPALIVE_EVERY = 0.3


def object_message(kind: str, obj: dict[str, Any]) -> Message:
    """A downstream object event as edgecontroller sends it on the wire (no node prefix)."""
    meta = obj["metadata"]
    rv = meta["resourceVersion"]
    msg = new_message(
        source=Module.EDGECONTROLLER,
        group=Group.META,
        operation=Operation.UPDATE,
        resource=f"{meta['namespace']}/{kind.lower()}/{meta['name']}",
        resource_version=rv,
    )
    event = msg.object
    event.api_version, event.kind = obj["apiVersion"], kind
    event.namespace, event.name, event.uid = meta["namespace"], meta["name"], meta["uid"]
    event.resource_version, event.object_json = rv, json.dumps(obj).encode()
    return msg


class FakeHub(hub_pb2_grpc.HubServiceServicer):  # type: ignore[misc]  # generated, untyped
    def __init__(self) -> None:
        self.to_send: list[Message] = []
        self.received: list[Message] = []
        self.port = 0
        self._server: grpc.aio.Server | None = None

    async def start(self) -> FakeHub:
        self._server = grpc.aio.server()
        hub_pb2_grpc.add_HubServiceServicer_to_server(self, self._server)
        self.port = self._server.add_insecure_port("127.0.0.1:0")
        await self._server.start()
        return self

    async def stop(self) -> None:
        if self._server is not None:
            await self._server.stop(0)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def send(self, kind: str, obj: dict[str, Any]) -> None:
        self.to_send.append(object_message(kind, obj))

    def pod_statuses(self, name: str) -> list[dict[str, Any]]:
        """Every status the edge reported for pod `name`, oldest first."""
        return [
            json.loads(m.pod_status.status_json)
            for m in self.received
            if m.WhichOneof("body") == "pod_status" and m.pod_status.name == name
        ]

    async def Connect(self, request_iterator: Any, context: Any) -> None:
        reader = asyncio.create_task(self._read(context), name="fakehub-read")
        try:
            while not reader.done():
                batch, self.to_send = [self._keepalive(), *self.to_send], []
                await context.write(hub_pb2.ConnectResponse(messages=batch))
                await asyncio.wait([reader], timeout=KEEPALIVE_EVERY)
        finally:
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)

    async def _read(self, context: Any) -> None:
        while (request := await context.read()) is not grpc.aio.EOF:
            for msg in request.messages:
                if not msg.header.parent_id and msg.route.operation != Operation.KEEPALIVE:
                    self.received.append(msg)
                    self.to_send.append(make_ack(msg, source=Module.CLOUDHUB))

    @staticmethod
    def _keepalive() -> Message:
        msg = new_message(source=Module.CLOUDHUB, group=Group.HUB, operation=Operation.KEEPALIVE)
        msg.keepalive.SetInParent()
        return msg
