"""edgecore plus a test producer, as a process the tests can SIGKILL.

Runs the real edgecore modules and a producer that queues `COUNT` upstream reports (payload:
the sequence number) into edgehub's durable outbox, printing "committed N" as they commit
and "producer done" at the end. Usage: python -m tests.support.edge_producer COUNT -- EDGECORE_FLAGS
"""

from __future__ import annotations

import asyncio
import sys

from common import logs, settings
from common.bus import Bus
from common.process import serve
from common.supervisor import Supervisor
from edge.hub.module import CLOUD, EdgeHub
from edge.main import open_database, register_modules
from edge.settings import EdgeSettings
from tests.support.modules import upload


class Producer:
    name = "test-producer"
    group = "test"

    def __init__(self, hub: EdgeHub, count: int) -> None:
        self.hub, self.count = hub, count

    async def run(self) -> None:
        sent = 0
        while sent < self.count:
            n = min(100, self.count - sent)
            await self.hub.outbox.put(CLOUD, [upload(sent + i) for i in range(n)])
            sent += n
            print(f"committed {sent}", flush=True)
        print("producer done", flush=True)
        await asyncio.Event().wait()

    async def close(self) -> None:
        return None


async def main() -> None:
    count = int(sys.argv[1])
    cfg = settings.load(EdgeSettings, sys.argv[3:], "edge_producer", __doc__ or "")
    logs.setup(cfg.log_level, "edgecore+producer")
    db = open_database(cfg)
    supervisor = Supervisor(Bus())
    hub = register_modules(supervisor, cfg, db, None)
    supervisor.add(Producer(hub, count))
    await serve(supervisor, "edgecore+producer")


if __name__ == "__main__":
    asyncio.run(main())
