"""The API server's storage: objects and a bounded event history in SQLite (apsw, WAL).

One cluster-wide resourceVersion sequence: every write takes the next number, stores the
object with it and appends a watch event with the same number, in one transaction. Writes run
on the database's single thread (serialized); reads run there too but are cheap. Watchers get
events from the history table first (so a watch can start at any kept version) and then live,
from an in-memory fan-out fed after each commit. The history keeps the newest `history_size`
events; a watch from an older version gets `Gone` (HTTP 410), as etcd compaction causes in
Kubernetes.

Storage knows nothing of Kubernetes semantics beyond names and versions: the handlers fill
uid, timestamps, generation, and decide what a write means.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import apsw

from common.sqlite import Database

log = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS objects (
    resource TEXT NOT NULL,
    namespace TEXT NOT NULL,
    name TEXT NOT NULL,
    rv INTEGER NOT NULL,
    value BLOB NOT NULL,
    PRIMARY KEY (resource, namespace, name)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS history (
    rv INTEGER PRIMARY KEY,
    resource TEXT NOT NULL,
    namespace TEXT NOT NULL,
    type TEXT NOT NULL,
    value BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
INSERT OR IGNORE INTO counters VALUES ('rv', 0);
"""

Obj = dict[str, Any]


class StorageError(Exception):
    """Base of storage outcomes the handlers turn into HTTP statuses."""


class NotFound(StorageError):
    pass


class AlreadyExists(StorageError):
    pass


class Conflict(StorageError):
    pass


class Gone(StorageError):
    pass


@dataclass(frozen=True, slots=True)
class WatchEvent:
    type: str  # ADDED, MODIFIED, DELETED
    rv: int
    resource: str
    namespace: str
    object: Obj


def _rv_of(obj: Obj) -> str:
    return str(obj.get("metadata", {}).get("resourceVersion", "") or "")


class Storage:
    def __init__(self, path: Path, history_size: int = 10_000) -> None:
        self.db = Database(path, SCHEMA)
        self.history_size = history_size
        self._watchers: set[asyncio.Queue[WatchEvent | None]] = set()
        self._writes_since_compaction = 0

    def end_watches(self) -> None:
        """End every open watch (each gets a final None), e.g. before the server stops."""
        for q in self._watchers:
            q.put_nowait(None)

    def close(self) -> None:
        self.end_watches()
        self.db.close()

    # -- reads -----------------------------------------------------------------------------

    async def current_rv(self) -> int:
        rows = await self.db.run(
            lambda c: list(c.execute("SELECT value FROM counters WHERE name = 'rv'"))
        )
        return int(rows[0][0])

    async def get(self, resource: str, namespace: str, name: str) -> Obj:
        rows = await self.db.run(
            lambda c: list(
                c.execute(
                    "SELECT value FROM objects WHERE resource = ? AND namespace = ? AND name = ?",
                    (resource, namespace, name),
                )
            )
        )
        if not rows:
            raise NotFound(name)
        return dict(json.loads(rows[0][0]))

    async def list_objects(
        self,
        resource: str,
        namespace: str | None,
        *,
        limit: int = 0,
        continue_token: str = "",
    ) -> tuple[list[Obj], int, str]:
        """Objects in key order, the list's resourceVersion, and a continue token (or "")."""
        after_ns, after_name = ("", "")
        list_rv = 0
        if continue_token:
            list_rv, after_ns, after_name = decode_continue(continue_token)

        def read(conn: apsw.Connection) -> tuple[list[Obj], int]:
            rv = int(next(iter(conn.execute("SELECT value FROM counters WHERE name = 'rv'")))[0])
            sql = "SELECT namespace, name, value FROM objects WHERE resource = ?"
            args: list[Any] = [resource]
            if namespace is not None:
                sql += " AND namespace = ?"
                args.append(namespace)
            if continue_token:
                sql += " AND (namespace, name) > (?, ?)"
                args += [after_ns, after_name]
            sql += " ORDER BY namespace, name"
            if limit:
                sql += " LIMIT ?"
                args.append(limit + 1)
            return [json.loads(r[2]) for r in conn.execute(sql, args)], rv

        items, rv = await self.db.run(read)
        token = ""
        if limit and len(items) > limit:
            items = items[:limit]
            last = items[-1]["metadata"]
            token = encode_continue(list_rv or rv, last.get("namespace", ""), last["name"])
        return items, list_rv or rv, token

    # -- writes ----------------------------------------------------------------------------

    async def create(self, resource: str, namespace: str, name: str, obj: Obj) -> Obj:
        def write(conn: apsw.Connection) -> WatchEvent:
            exists = list(
                conn.execute(
                    "SELECT 1 FROM objects WHERE resource = ? AND namespace = ? AND name = ?",
                    (resource, namespace, name),
                )
            )
            if exists:
                raise AlreadyExists(name)
            return self._put(conn, "ADDED", resource, namespace, name, obj)

        return (await self._write(write)).object

    async def update(
        self, resource: str, namespace: str, name: str, obj: Obj, *, expect_rv: str = ""
    ) -> Obj:
        """Replace an object; `expect_rv` (when given) must equal the stored version."""

        def write(conn: apsw.Connection) -> WatchEvent:
            self._check(conn, resource, namespace, name, expect_rv)
            return self._put(conn, "MODIFIED", resource, namespace, name, obj)

        return (await self._write(write)).object

    async def delete(self, resource: str, namespace: str, name: str, *, expect_rv: str = "") -> Obj:
        def write(conn: apsw.Connection) -> WatchEvent:
            current = self._check(conn, resource, namespace, name, expect_rv)
            conn.execute(
                "DELETE FROM objects WHERE resource = ? AND namespace = ? AND name = ?",
                (resource, namespace, name),
            )
            return self._record(conn, "DELETED", resource, namespace, current)

        return (await self._write(write)).object

    def _check(
        self, conn: apsw.Connection, resource: str, namespace: str, name: str, expect_rv: str
    ) -> Obj:
        rows = list(
            conn.execute(
                "SELECT rv, value FROM objects WHERE resource = ? AND namespace = ? AND name = ?",
                (resource, namespace, name),
            )
        )
        if not rows:
            raise NotFound(name)
        if expect_rv and str(rows[0][0]) != expect_rv:
            raise Conflict(
                f"the object has been modified; please apply your changes to the latest "
                f"version and try again (have {expect_rv}, stored {rows[0][0]})"
            )
        return dict(json.loads(rows[0][1]))

    def _next_rv(self, conn: apsw.Connection) -> int:
        conn.execute("UPDATE counters SET value = value + 1 WHERE name = 'rv'")
        return int(next(iter(conn.execute("SELECT value FROM counters WHERE name = 'rv'")))[0])

    def _put(
        self, conn: apsw.Connection, type_: str, resource: str, namespace: str, name: str, obj: Obj
    ) -> WatchEvent:
        rv = self._next_rv(conn)
        obj = {**obj, "metadata": {**obj.get("metadata", {}), "resourceVersion": str(rv)}}
        blob = json.dumps(obj, separators=(",", ":")).encode()
        conn.execute(
            "INSERT INTO objects (resource, namespace, name, rv, value) VALUES (?, ?, ?, ?, ?) "
            "ON CONFLICT (resource, namespace, name) DO UPDATE SET rv = excluded.rv, "
            "value = excluded.value",
            (resource, namespace, name, rv, blob),
        )
        conn.execute(
            "INSERT INTO history (rv, resource, namespace, type, value) VALUES (?, ?, ?, ?, ?)",
            (rv, resource, namespace, type_, blob),
        )
        return WatchEvent(type_, rv, resource, namespace, obj)

    def _record(
        self, conn: apsw.Connection, type_: str, resource: str, namespace: str, obj: Obj
    ) -> WatchEvent:
        rv = self._next_rv(conn)
        obj = {**obj, "metadata": {**obj.get("metadata", {}), "resourceVersion": str(rv)}}
        blob = json.dumps(obj, separators=(",", ":")).encode()
        conn.execute(
            "INSERT INTO history (rv, resource, namespace, type, value) VALUES (?, ?, ?, ?, ?)",
            (rv, resource, namespace, type_, blob),
        )
        return WatchEvent(type_, rv, resource, namespace, obj)

    async def _write(self, fn: Any) -> WatchEvent:
        event: WatchEvent = await self.db.transaction(fn)
        for q in self._watchers:
            q.put_nowait(event)
        self._writes_since_compaction += 1
        if self._writes_since_compaction >= max(100, self.history_size // 10):
            self._writes_since_compaction = 0
            await self.compact()
        return event

    async def compact(self) -> None:
        """Drop history older than the newest `history_size` events."""
        keep = self.history_size

        def prune(conn: apsw.Connection) -> None:
            conn.execute(
                "DELETE FROM history WHERE rv <= (SELECT value FROM counters WHERE name='rv') - ?",
                (keep,),
            )

        await self.db.transaction(prune)

    # -- watch -----------------------------------------------------------------------------

    async def watch(
        self, resource: str, namespace: str | None, since_rv: int
    ) -> AsyncGenerator[WatchEvent, None]:
        """Events for `resource` (in `namespace` if given) after `since_rv`, then live ones."""
        queue: asyncio.Queue[WatchEvent | None] = asyncio.Queue()
        self._watchers.add(queue)
        try:
            backlog = await self._history(resource, namespace, since_rv)
            last = since_rv
            for past in backlog:
                last = past.rv
                yield past
            while True:
                live = await queue.get()
                if live is None:
                    return
                if live.rv <= last or live.resource != resource:
                    continue
                if namespace is not None and live.namespace != namespace:
                    continue
                last = live.rv
                yield live
        finally:
            self._watchers.discard(queue)

    async def _history(
        self, resource: str, namespace: str | None, since_rv: int
    ) -> list[WatchEvent]:
        def read(conn: apsw.Connection) -> list[WatchEvent]:
            current = int(
                next(iter(conn.execute("SELECT value FROM counters WHERE name = 'rv'")))[0]
            )
            oldest_row = list(conn.execute("SELECT min(rv) FROM history"))
            oldest = oldest_row[0][0]
            if since_rv < current and (oldest is None or since_rv < oldest - 1):
                raise Gone(
                    f"too old resource version: {since_rv} (oldest kept: {oldest or current})"
                )
            sql = "SELECT rv, namespace, type, value FROM history WHERE rv > ? AND resource = ?"
            args: list[Any] = [since_rv, resource]
            if namespace is not None:
                sql += " AND namespace = ?"
                args.append(namespace)
            return [
                WatchEvent(t, rv, resource, ns, json.loads(v))
                for rv, ns, t, v in conn.execute(sql + " ORDER BY rv", args)
            ]

        return await self.db.run(read)


def encode_continue(rv: int, namespace: str, name: str) -> str:
    raw = json.dumps({"rv": rv, "ns": namespace, "name": name}).encode()
    return base64.urlsafe_b64encode(raw).decode()


def decode_continue(token: str) -> tuple[int, str, str]:
    try:
        data = json.loads(base64.urlsafe_b64decode(token.encode()))
        return int(data["rv"]), str(data["ns"]), str(data["name"])
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"invalid continue token {token!r}") from exc
