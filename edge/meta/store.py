"""The edge's SQLite store of every object the cloud sent (KubeEdge's `meta` table, typed).

Rows are keyed by the wire resource string `{namespace}/{type}/{name}`. An update never
replaces a newer resourceVersion with an older one (a resend racing a newer version loses);
a delete removes the row whatever its version. The store is what edged reads when the cloud
is away, so it is the node's memory across restarts.
"""

from __future__ import annotations

from dataclasses import dataclass

import apsw

from common.envelope import Message, rv_older
from common.names import Operation
from common.sqlite import Database

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    type TEXT NOT NULL,
    namespace TEXT NOT NULL,
    name TEXT NOT NULL,
    uid TEXT NOT NULL,
    resource_version TEXT NOT NULL,
    value BLOB NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS meta_type ON meta (type, namespace);
"""


@dataclass(frozen=True, slots=True)
class StoredObject:
    key: str
    type: str
    namespace: str
    name: str
    uid: str
    resource_version: str
    value: bytes


class MetaStore:
    def __init__(self, db: Database) -> None:
        self.db = db
        db.run_blocking(lambda c: c.execute(SCHEMA))

    async def apply(self, msgs: list[Message]) -> list[bool]:
        """Apply object events in one transaction; per message, True when it changed the store
        (False: an older or equal version than the one stored, or a delete of nothing)."""

        def write(conn: apsw.Connection) -> list[bool]:
            return [self._apply_one(conn, m) for m in msgs]

        return await self.db.transaction(write)

    @staticmethod
    def _apply_one(conn: apsw.Connection, msg: Message) -> bool:
        key = msg.route.resource
        rv = msg.header.resource_version or msg.object.resource_version
        if msg.route.operation == Operation.DELETE:
            # A late delete of an older object of this name leaves the newer one alone.
            uid = msg.object.uid if msg.WhichOneof("body") == "object" else ""
            conn.execute("DELETE FROM meta WHERE key = ? AND (? = '' OR uid = ?)", (key, uid, uid))
            return conn.changes() > 0
        row = list(conn.execute("SELECT resource_version FROM meta WHERE key = ?", (key,)))
        if row and (row[0][0] == rv or rv_older(rv, row[0][0])):
            return False
        namespace, type_, _ = key.split("/", 2)
        obj = msg.object
        conn.execute(
            "INSERT INTO meta (key, type, namespace, name, uid, resource_version, value) "
            "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (key) DO UPDATE SET "
            "uid = excluded.uid, resource_version = excluded.resource_version, "
            "value = excluded.value",
            (key, type_, namespace, obj.name, obj.uid, rv, obj.object_json),
        )
        return True

    async def get(self, key: str) -> StoredObject | None:
        rows = await self.db.run(
            lambda c: list(c.execute("SELECT * FROM meta WHERE key = ?", (key,)))
        )
        return StoredObject(*rows[0]) if rows else None

    async def list(self, type_: str, namespace: str | None = None) -> list[StoredObject]:
        if namespace is None:
            sql, args = "SELECT * FROM meta WHERE type = ? ORDER BY key", (type_,)
        else:
            sql = "SELECT * FROM meta WHERE type = ? AND namespace = ? ORDER BY key"
            args = (type_, namespace)  # type: ignore[assignment]
        rows = await self.db.run(lambda c: list(c.execute(sql, args)))
        return [StoredObject(*r) for r in rows]
