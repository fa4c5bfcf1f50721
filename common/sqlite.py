"""SQLite through apsw, for both sides: WAL mode, one writer thread, async callers.

Every database is used from one dedicated thread (an executor with one worker), so the event
loop never blocks on SQLite and writes are serialized without locks. `Database.run(fn)` runs
`fn(connection)` on that thread; `Database.transaction(fn)` wraps it in BEGIN IMMEDIATE/COMMIT.

The files hold what the peers sent (Secrets among them), so they are readable by their owner
only: the database is created 0600 before SQLite opens it, and SQLite gives the -wal, -shm and
-journal files it creates later the database's mode; files left looser by an older version are
tightened at open.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import apsw

T = TypeVar("T")

FILE_MODE = 0o600
SIDE_FILES = ("-wal", "-shm", "-journal")


def private_files(path: Path) -> None:
    """Create the database file 0600 if missing; tighten it and its side files to 0600."""
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, FILE_MODE))
    for name in (path.name, *(path.name + suffix for suffix in SIDE_FILES)):
        with contextlib.suppress(FileNotFoundError):
            if os.stat(path.parent / name).st_mode & 0o777 != FILE_MODE:
                os.chmod(path.parent / name, FILE_MODE)


class Database:
    def __init__(self, path: Path, schema: str, *, synchronous: str = "FULL") -> None:
        self.path = path
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        private_files(path)
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix=f"sqlite-{path.name}"
        )
        self._conn: apsw.Connection | None = None
        self._executor.submit(self._open, schema, synchronous).result()

    def _open(self, schema: str, synchronous: str) -> None:
        conn = apsw.Connection(str(self.path))
        conn.set_busy_timeout(5_000)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={synchronous}")
        with conn:
            conn.execute(schema)
        self._conn = conn

    @property
    def conn(self) -> apsw.Connection:
        assert self._conn is not None, "database used after close"
        return self._conn

    async def run(self, fn: Callable[[apsw.Connection], T]) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, fn, self.conn)

    async def transaction(self, fn: Callable[[apsw.Connection], T]) -> T:
        def wrapped(conn: apsw.Connection) -> T:
            with conn:  # apsw: a savepoint/transaction committed on success, rolled back on error
                result = fn(conn)
            return result

        return await self.run(wrapped)

    def run_blocking(self, fn: Callable[[apsw.Connection], T]) -> T:
        """For start-up code outside the event loop."""
        return self._executor.submit(fn, self.conn).result()

    def close(self) -> None:
        def _close() -> None:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

        self._executor.submit(_close).result()
        self._executor.shutdown(wait=True)
