"""Logging setup shared by cloudcore and edgecore: one line per record, context fields appended.

Modules use `logging.getLogger(__name__)` with lazy %-formatting; context such as the node name
or a message id goes in `extra={"node": ..., "msg_id": ...}` and is printed as key=value.
"""

from __future__ import annotations

import logging
import sys

_CONTEXT_KEYS = ("node", "msg_id")


class _ContextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        extras = [f"{k}={getattr(record, k)}" for k in _CONTEXT_KEYS if hasattr(record, k)]
        return f"{line} {' '.join(extras)}" if extras else line


def setup(level: str = "INFO", process: str = "") -> None:
    """Configure the root logger once, writing to stderr."""
    handler = logging.StreamHandler(sys.stderr)
    prefix = f"{process} " if process else ""
    handler.setFormatter(
        _ContextFormatter(f"%(asctime)s {prefix}%(levelname)s %(name)s: %(message)s")
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # grpc and asyncio are chatty at DEBUG; keep them at WARNING unless asked otherwise.
    for noisy in ("asyncio", "grpc"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
