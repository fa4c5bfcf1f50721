"""edgecore's state is readable by root only: DATA_DIR 0700, the SQLite files 0600."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import apsw

from tests.support.stack import start_edge
from tests.support.waiting import free_port

SQLITE_FILES = ("edge.db", "edge.db-wal", "edge.db-shm")


def modes(data_dir: Path) -> dict[str, int]:
    """DATA_DIR's mode (as '.') and each SQLite file's."""
    paths = {".": data_dir, **{name: data_dir / name for name in SQLITE_FILES}}
    return {name: stat.S_IMODE(os.stat(path).st_mode) for name, path in paths.items()}


PRIVATE = {".": 0o700, "edge.db": 0o600, "edge.db-wal": 0o600, "edge.db-shm": 0o600}


async def test_a_new_data_dir_and_its_sqlite_files_are_private(tmp_path: Path) -> None:
    """A fresh edgecore makes DATA_DIR 0700 and its database, -wal and -shm 0600 (SQLite
    gives its side files the database's mode), whatever the umask."""
    old = os.umask(0o022)
    try:
        edge = await start_edge(tmp_path / "edge", "edge-1", f"127.0.0.1:{free_port()}")
    finally:
        os.umask(old)
    try:
        await edge.db.run(lambda c: c.execute("CREATE TABLE IF NOT EXISTS probe(x)"))
        assert modes(tmp_path / "edge") == PRIVATE
    finally:
        await edge.stop()


async def test_state_left_readable_by_an_older_edgecore_is_tightened(tmp_path: Path) -> None:
    """A DATA_DIR 0755 with a 0644 database and side files (an older edgecore's) is
    tightened when edgecore starts."""
    data_dir = tmp_path / "edge"
    data_dir.mkdir(mode=0o755)
    data_dir.chmod(0o755)
    old = os.umask(0o022)
    try:
        older = apsw.Connection(str(data_dir / "edge.db"))
        older.execute("PRAGMA journal_mode=WAL")
        older.execute("CREATE TABLE earlier(x)")
    finally:
        os.umask(old)
    try:
        assert set(modes(data_dir).values()) == {0o755, 0o644}
        edge = await start_edge(data_dir, "edge-1", f"127.0.0.1:{free_port()}")
        try:
            assert modes(data_dir) == PRIVATE
        finally:
            await edge.stop()
    finally:
        older.close()
