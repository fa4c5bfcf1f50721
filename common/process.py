"""Running a process's modules: signals, the supervisor, orderly shutdown. Used by both mains."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal

from common.supervisor import Supervisor

log = logging.getLogger(__name__)


async def serve(supervisor: Supervisor, what: str) -> None:
    """Start every module and run until SIGINT/SIGTERM, then stop them in order."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await supervisor.start()
    log.info("%s running (modules: %s)", what, ", ".join(supervisor.bus.modules()))
    try:
        await stop.wait()
        log.info("%s stopping", what)
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(Exception):
                loop.remove_signal_handler(sig)
        await supervisor.stop()
        log.info("%s stopped", what)
