"""The in-process message bus (KubeEdge's beehive): modules talk only through it.

Each registered module owns an inbox queue. `send` delivers to one module, `send_to_group` to
every module of a group, `send_sync` waits for the reply whose parent id is the request's id,
and `respond` completes such a wait (returning False when nobody waits, so the caller can
route the reply itself). The bus carries the generated protobuf envelope itself. It is made
once per process and passed to every module; there is no global bus.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict

from common.envelope import Message
from common.errors import ResponseTimeout, UnknownModule

log = logging.getLogger(__name__)


class Bus:
    def __init__(self, queue_size: int = 10_000) -> None:
        self._queue_size = queue_size
        self._inboxes: dict[str, asyncio.Queue[Message]] = {}
        self._groups: dict[str, list[str]] = defaultdict(list)
        self._waiting: dict[str, asyncio.Future[Message]] = {}

    def register(self, module: str, group: str) -> None:
        """Give `module` an inbox and make it a member of `group`."""
        if module in self._inboxes:
            raise ValueError(f"module {module!r} is already registered")
        self._inboxes[module] = asyncio.Queue(self._queue_size)
        self._groups[group].append(module)

    def has_group(self, group: str) -> bool:
        return bool(self._groups.get(group))

    def modules(self) -> list[str]:
        return list(self._inboxes)

    def _inbox(self, module: str) -> asyncio.Queue[Message]:
        try:
            return self._inboxes[module]
        except KeyError:
            raise UnknownModule(f"no module named {module!r} on the bus") from None

    async def send(self, module: str, msg: Message) -> None:
        """Deliver to one module; waits while its inbox is full (backpressure)."""
        await self._inbox(module).put(msg)

    def send_nowait(self, module: str, msg: Message) -> None:
        """Deliver to one module from sync code; raises asyncio.QueueFull when it is full."""
        self._inbox(module).put_nowait(msg)

    def send_nowait_group(self, group: str, msg: Message) -> None:
        """Deliver to every module in `group` from sync code; raises asyncio.QueueFull."""
        for module in self._groups.get(group, ()):
            self._inbox(module).put_nowait(msg)

    async def send_to_group(self, group: str, msg: Message) -> None:
        """Deliver the same message to every module in `group`."""
        members = self._groups.get(group)
        if not members:
            raise UnknownModule(f"no module in group {group!r}")
        for module in members:
            await self._inbox(module).put(msg)

    async def send_sync(self, module: str, msg: Message, timeout: float) -> Message:
        """Deliver and wait for the reply (matched by parent id) for at most `timeout` seconds."""
        msg.header.sync = True
        fut: asyncio.Future[Message] = asyncio.get_running_loop().create_future()
        self._waiting[msg.header.id] = fut
        try:
            await self.send(module, msg)
            return await asyncio.wait_for(fut, timeout)
        except TimeoutError:
            raise ResponseTimeout(
                f"no reply from {module} to {msg.header.id} within {timeout}s"
            ) from None
        finally:
            self._waiting.pop(msg.header.id, None)

    def respond(self, reply: Message) -> bool:
        """Complete the send_sync waiting for this reply; True when someone was waiting."""
        fut = self._waiting.pop(reply.header.parent_id, None)
        if fut is None or fut.done():
            return False
        fut.set_result(reply)
        return True

    async def receive(self, module: str) -> Message:
        return await self._inbox(module).get()

    async def receive_batch(self, module: str, limit: int) -> list[Message]:
        """Wait for one message, then take whatever else is queued, up to `limit` in all."""
        inbox = self._inbox(module)
        batch = [await inbox.get()]
        while len(batch) < limit and not inbox.empty():
            batch.append(inbox.get_nowait())
        return batch

    def receive_nowait(self, module: str) -> Message:
        """The next message without waiting; raises asyncio.QueueEmpty."""
        return self._inbox(module).get_nowait()
