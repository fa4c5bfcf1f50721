"""An informer's thread hands watch events to a bounded queue: while a controller is behind,
the thread (and so its watch) waits instead of piling events up in memory; stopping the
informer releases a waiting thread."""

from __future__ import annotations

import asyncio
import threading

from cloud.kube import Informer, event_queue
from tests.support.waiting import eventually


def informer(queue: asyncio.Queue) -> Informer:  # type: ignore[type-arg]
    return Informer("Pod", "v1", lambda **_: None, queue, watch_timeout=1, selectors={})


async def test_a_full_queue_holds_the_informer_thread_until_there_is_room() -> None:
    queue = event_queue(2)
    inf = informer(queue)
    inf._loop = asyncio.get_running_loop()
    emitted = []

    def watch_thread() -> None:
        for n in range(5):
            inf._emit({"type": "ADDED", "object": {"n": n}})
            emitted.append(n)

    thread = threading.Thread(target=watch_thread)
    thread.start()
    await eventually(lambda: queue.qsize() == 2 and emitted == [0, 1], 5, "two events queued")
    await asyncio.sleep(0.3)
    assert queue.qsize() == 2 and emitted == [0, 1]  # the third waits for room
    got = [(await queue.get())[1]["object"]["n"] for _ in range(5)]
    await asyncio.to_thread(thread.join, 5)
    assert got == [0, 1, 2, 3, 4] and emitted == [0, 1, 2, 3, 4]


async def test_stopping_releases_a_thread_waiting_for_room() -> None:
    queue = event_queue(1)
    inf = informer(queue)
    inf._loop = asyncio.get_running_loop()
    thread = threading.Thread(target=lambda: [inf._emit({"type": "ADDED"}) for _ in range(3)])
    thread.start()
    await asyncio.sleep(0.3)
    inf.stop()
    await asyncio.to_thread(thread.join, 5)
    assert not thread.is_alive() and queue.qsize() == 1
