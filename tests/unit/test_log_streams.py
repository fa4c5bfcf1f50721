"""`kubectl logs -f` at the edge: every stream ends, and nothing piles up for a gone client.

Regressions (issue 10): a follow stream never ended for an exited container, hung when the pod
was deleted, tailed forever after the client left, and its frames piled up in an unbounded
queue while the link was down. The pod worker here is a real PodWorker whose runtime is never
called; its last reported status is set by hand, as the worker's sync would set it."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path
from typing import Any

from common.bus import Bus
from common.envelope import Message, make_stream_cancel, new_message
from common.link import LinkFeeder
from common.names import Group, Module, Operation
from common.outbox import Outbox
from common.sqlite import Database
from edge.edged import volumes
from edge.edged.logserver import LogServer
from edge.edged.worker import PodWorker
from edge.hub.module import EdgeHub
from edge.settings import EdgeSettings
from tests.support.waiting import eventually

UID = "1234-uid"
LINE = "2026-12-02T10:00:00.000000000Z stdout F {}\n"


def running(name: str) -> dict[str, Any]:
    return {"containerStatuses": [{"name": name, "state": {"running": {}}}]}


def exited(name: str) -> dict[str, Any]:
    return {"containerStatuses": [{"name": name, "state": {"terminated": {"exitCode": 0}}}]}


class Node:
    """A LogServer over one pod with container `app`, and the frames it sends up."""

    def __init__(self, root: Path, max_streams: int = 4) -> None:
        self.worker = PodWorker(
            pod={
                "metadata": {"name": "web", "namespace": "default", "uid": UID},
                "spec": {"containers": [{"name": "app", "image": "busybox"}]},
            },
            runtime=None,  # type: ignore[arg-type]
            root=root,
            node_name="edge-1",
            lookup=lambda kind, ns, name: None,
            report=self._ignore,
            gone=self._ignore,
        )
        self.worker._last_status = running("app")
        self.log = volumes.pod_dir(root, UID) / "logs" / "app" / "0.log"
        self.log.parent.mkdir(parents=True)
        self.log.write_text(LINE.format("first"))
        self.sent: list[Message] = []
        self.server = LogServer(root, self.find, self.send_up, max_streams=max_streams, poll=0.02)

    def find(self, namespace: str, name: str) -> PodWorker | None:
        return self.worker if (namespace, name) == ("default", "web") else None

    async def send_up(self, msg: Message) -> None:
        self.sent.append(msg)

    async def _ignore(self, *args: Any) -> None:
        return None

    def text(self) -> str:
        return b"".join(m.stream_frame.data for m in self.sent).decode()

    def ended(self) -> bool:
        return any(m.stream_frame.end for m in self.sent)


def query(*, follow: bool, pod: str = "web") -> Message:
    msg = new_message(
        source=Module.EDGECONTROLLER,
        group=Group.EDGED,
        operation=Operation.QUERY,
        resource=f"default/log/{pod}",
    )
    msg.log_query.namespace, msg.log_query.pod, msg.log_query.follow = "default", pod, follow
    return msg


async def test_follow_ends_when_the_container_exits(tmp_path: Path) -> None:
    node = Node(tmp_path)
    await node.server.open(query(follow=True))
    await eventually(lambda: node.text() == "first\n", what="the log so far")
    with node.log.open("a") as f:
        f.write(LINE.format("last words"))
    await eventually(lambda: "last words" in node.text(), what="the appended line")
    assert not node.ended()
    node.worker._last_status = exited("app")
    await eventually(node.ended, what="the last frame")
    assert node.text() == "first\nlast words\n"
    assert not node.server.streams


async def test_follow_ends_when_the_pod_is_deleted(tmp_path: Path) -> None:
    """The pod's folder goes with it: the stream ends, no task fails on the missing log."""
    node = Node(tmp_path)
    await node.server.open(query(follow=True))
    await eventually(lambda: node.text() == "first\n", what="the log so far")
    node.worker.update(None)
    shutil.rmtree(volumes.pod_dir(tmp_path, UID))
    await eventually(node.ended, what="the last frame")
    assert not node.server.streams


async def test_a_cancelled_stream_stops_at_once(tmp_path: Path) -> None:
    node = Node(tmp_path)
    opened = query(follow=True)
    await node.server.open(opened)
    await eventually(lambda: node.text() == "first\n", what="the log so far")
    cancel = make_stream_cancel(
        source=Module.EDGEHUB,
        resource=opened.route.resource,
        stream_id=opened.header.id,
        reason="the link to the cloud is down",
    )
    await node.server.cancel(cancel)
    assert not node.server.streams
    (err,) = [m for m in node.sent if m.WhichOneof("body") == "error"]
    assert err.header.parent_id == opened.header.id and err.error.code == 503
    assert "the link to the cloud is down" in err.error.message  # a waiting client learns why
    count = len(node.sent)
    with node.log.open("a") as f:
        f.write(LINE.format("nobody reads this"))
    await asyncio.sleep(0.1)
    assert len(node.sent) == count and not node.ended()


async def test_a_silent_container_still_gets_a_first_frame_at_once(tmp_path: Path) -> None:
    """A follow of an empty log answers with an empty first frame, so the cloud does not time
    out waiting for the node's answer (it used to, after --log-timeout)."""
    node = Node(tmp_path)
    node.log.write_text("")
    opened = query(follow=True)
    await node.server.open(opened)
    await eventually(lambda: node.sent, what="a first frame")
    first = node.sent[0]
    assert first.stream_frame.stream_id == opened.header.id and first.stream_frame.data == b""
    assert not first.stream_frame.end
    await node.server.close()


async def test_a_stream_that_fails_is_answered_not_left_hanging(tmp_path: Path) -> None:
    node = Node(tmp_path)
    node.log.unlink()  # a folder where the log should be: reading it fails
    node.log.mkdir()
    await node.server.open(query(follow=False))
    await eventually(lambda: not node.server.streams, what="the stream over")
    (err,) = [m for m in node.sent if m.WhichOneof("body") == "error"]
    assert err.error.code == 500 and "serving the log failed" in err.error.message


def test_the_stream_lane_is_bounded_by_bytes_and_yields_to_control(tmp_path: Path) -> None:
    db = Database(tmp_path / "o.db", "SELECT 1")
    try:
        outbox = Outbox(db, resend_interval=1, max_inflight=10, max_envelope_bytes=1 << 20)
        feeder = LinkFeeder(
            outbox, "cloud", batch_size=10, max_frame_bytes=1 << 20, max_stream_bytes=3000
        )
        frame = query(follow=True)
        frame.ClearField("log_query")
        frame.stream_frame.data = b"x" * 1000
        assert [feeder.push_frame(frame) for _ in range(4)] == [True, True, False, False]
        ack = new_message(source="x", group="g", operation="ack")
        assert feeder.push(ack)
        batch = feeder._collect()
        assert batch[0] is ack and len(batch) == 3  # control first, then the frames
        assert feeder.push_frame(frame)  # the lane drained: room again
    finally:
        db.close()


async def test_streams_are_bounded_and_errors_are_answered(tmp_path: Path) -> None:
    node = Node(tmp_path, max_streams=2)
    for _ in range(2):
        await node.server.open(query(follow=True))
    await node.server.open(query(follow=True))
    await node.server.open(query(follow=False, pod="nope"))
    errors = [m.error for m in node.sent if m.WhichOneof("body") == "error"]
    await node.server.close()  # edged stopping ends every stream
    assert not node.server.streams
    assert [e.code for e in errors] == [429, 429]
    assert "too many log streams" in errors[0].message
    await node.server.open(query(follow=False, pod="nope"))
    await eventually(lambda: not node.server.streams, what="the refused stream gone")
    codes = [m.error.code for m in node.sent if m.WhichOneof("body") == "error"]
    assert codes == [429, 429, 404]


def test_the_link_queue_of_control_messages_is_bounded(tmp_path: Path) -> None:
    db = Database(tmp_path / "o.db", "SELECT 1")
    try:
        outbox = Outbox(db, resend_interval=1, max_inflight=10, max_envelope_bytes=1 << 20)
        feeder = LinkFeeder(outbox, "cloud", batch_size=10, max_frame_bytes=1 << 20, max_control=3)
        pushed = [
            feeder.push(new_message(source="x", group="g", operation="ack")) for _ in range(5)
        ]
        assert pushed == [True, True, True, False, False]
    finally:
        db.close()


async def test_frames_with_no_link_cancel_their_stream_instead_of_piling_up(
    tmp_path: Path,
) -> None:
    settings = EdgeSettings(data_dir=tmp_path, node_name="edge-1", insecure_hub=True)
    db = Database(tmp_path / "edge.db", "SELECT 1")
    bus = Bus()
    bus.register(Module.EDGED, Group.EDGED)
    hub = EdgeHub(bus, settings, db, None)
    try:
        opened = query(follow=True)
        frame = new_message(
            source=Module.EDGED,
            group=Group.RESOURCE,
            operation=Operation.RESPONSE,
            resource=opened.route.resource,
            parent_id=opened.header.id,
        )
        frame.stream_frame.stream_id = opened.header.id
        hub._push_reply(frame)  # the link is down: not queued
        cancel = bus.receive_nowait(Module.EDGED)
        assert cancel.stream_cancel.stream_id == opened.header.id
        assert "link to the cloud is down" in cancel.stream_cancel.reason
        assert not hub.feeder._control
    finally:
        db.close()
