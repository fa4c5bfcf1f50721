"""What feeds one hub stream, on either end: control messages first, then outbox batches.

Control messages (acks, errors, keepalives, replies) are small, never stored and never
resent; they go out ahead of data so acks are not stuck behind a long queue. Data comes from
the durable Outbox for this link's target. A frame holds at most `batch_size` envelopes and
stays under `max_frame_bytes`, so one stream message carries many envelopes without ever
tripping the peer's size limit. At most `max_control` control messages wait at a time: one
pushed beyond that is refused (push returns False) and its sender decides what that means.

Stream frames (kubectl logs) have a lane of their own between control messages and data, bounded
by bytes (`max_stream_bytes`): a busy log stream never delays an ack or a keepalive, and one
that outruns the link is refused (push_frame returns False) instead of filling memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque

from common.envelope import Message
from common.outbox import Outbox

log = logging.getLogger(__name__)

# Room left in a frame for the repeated-field framing of each envelope.
_PER_ENVELOPE_OVERHEAD = 8


class LinkFeeder:
    def __init__(
        self,
        outbox: Outbox,
        target: str,
        *,
        batch_size: int,
        max_frame_bytes: int,
        max_control: int = 10_000,
        max_stream_bytes: int = 8 << 20,
    ) -> None:
        self.outbox = outbox
        self.target = target
        self.batch_size = batch_size
        self.max_frame_bytes = max_frame_bytes
        self.max_control = max_control
        self.dropped = 0  # control messages refused since the queue was last not full
        self.max_stream_bytes = max_stream_bytes
        self._frames: deque[Message] = deque()
        self._frame_bytes = 0
        self._control: deque[Message] = deque()
        self._held: deque[Message] = deque()

    def push(self, msg: Message) -> bool:
        """Queue a control message for the next frame; False when the queue is full."""
        if len(self._control) >= self.max_control:
            if not self.dropped:  # once per overload, not once per message
                log.warning(
                    "link to %s: %d control messages waiting; dropping more (acks and replies "
                    "are resent or asked again)",
                    self.target,
                    len(self._control),
                )
            self.dropped += 1
            return False
        self.dropped = 0
        self._control.append(msg)
        self.outbox.ready_event(self.target).set()
        return True

    def push_frame(self, msg: Message) -> bool:
        """Queue a stream frame; False when the stream lane holds its byte budget already."""
        size = msg.ByteSize()
        if self._frames and self._frame_bytes + size > self.max_stream_bytes:
            return False
        self._frames.append(msg)
        self._frame_bytes += size
        self.outbox.ready_event(self.target).set()
        return True

    def _collect(self) -> list[Message]:
        batch: list[Message] = []
        size = 0
        sources = (self._control, self._frames, self._held)
        for source in sources:
            while source and len(batch) < self.batch_size:
                msg = source[0]
                msg_size = msg.ByteSize() + _PER_ENVELOPE_OVERHEAD
                if batch and size + msg_size > self.max_frame_bytes:
                    return batch
                source.popleft()
                if source is self._frames:
                    self._frame_bytes -= msg_size - _PER_ENVELOPE_OVERHEAD
                batch.append(msg)
                size += msg_size
        if len(batch) < self.batch_size:
            for msg in self.outbox.take(self.target, self.batch_size - len(batch)):
                msg_size = msg.ByteSize() + _PER_ENVELOPE_OVERHEAD
                if batch and size + msg_size > self.max_frame_bytes:
                    self._held.append(msg)
                    continue
                batch.append(msg)
                size += msg_size
        return batch

    async def next_frame(self) -> list[Message]:
        """Wait until something is due, then return the next batch of envelopes."""
        ready = self.outbox.ready_event(self.target)
        while True:
            batch = self._collect()
            if batch:
                return batch
            if self._held or self._control or self._frames:
                continue
            timeout = self.outbox.next_resend_in(self.target)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(ready.wait(), timeout)
