"""cloudcore plus a test producer, as a process the tests can SIGKILL.

Runs the real cloudcore modules and a producer that sends `--count` configmap events to
`--node` through cloudhub, in batches, printing "committed N" after each batch is durable.
Events cycle over `--objects` names with increasing resourceVersions, so queued updates
collapse. Usage: python -m tests.support.cloud_producer NODE COUNT OBJECTS -- CLOUDCORE_FLAGS
(--kubeconfig among them: cloudcore works on a real cluster).
"""

from __future__ import annotations

import asyncio
import sys

from cloud.hub.module import CloudHub
from cloud.main import register_modules
from cloud.settings import CloudSettings
from common import logs, settings
from common.bus import Bus
from common.process import serve
from common.supervisor import Supervisor
from tests.support.modules import object_event


class Producer:
    name = "test-producer"
    group = "test"

    def __init__(self, hub: CloudHub, node: str, count: int, objects: int) -> None:
        self.hub, self.node, self.count, self.objects = hub, node, count, objects

    async def run(self) -> None:
        await self.hub.started.wait()
        sent = 0
        while sent < self.count:
            n = min(20, self.count - sent)
            batch = [
                object_event(self.node, f"cm-{(sent + i) % self.objects}", sent + i + 1)
                for i in range(n)
            ]
            await self.hub.send_to_nodes(batch)
            sent += n
            print(f"committed {sent}", flush=True)
            await asyncio.sleep(0.01)
        print("producer done", flush=True)
        await asyncio.Event().wait()

    async def close(self) -> None:
        return None


async def main() -> None:
    node, count, objects = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    cfg = settings.load(CloudSettings, sys.argv[5:], "cloud_producer", __doc__ or "")
    logs.setup(cfg.log_level, "cloudcore+producer")
    supervisor = Supervisor(Bus())
    hub = register_modules(supervisor, cfg)
    supervisor.add(Producer(hub, node, count, objects))
    await serve(supervisor, "cloudcore+producer")


if __name__ == "__main__":
    asyncio.run(main())
