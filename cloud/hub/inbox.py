"""cloudhub's durable record of upstream messages, so each is applied once.

An upstream message is inserted here (keyed by node and message id) before the edge gets its
ack. A resend of an already-recorded id is acknowledged again but not handed on. Rows keep the
envelope until it has been handed to the cloud module that serves its group; after a crash,
recorded but undelivered messages are handed on at start. Ids are kept for `retention`
seconds: far longer than any resend window, since an edge only resends what it has no ack for.
"""

from __future__ import annotations

import apsw

from common.envelope import Message, now_ms
from common.sqlite import Database

SCHEMA = """
CREATE TABLE IF NOT EXISTS inbox (
    node TEXT NOT NULL,
    msg_id TEXT NOT NULL,
    received_ms INTEGER NOT NULL,
    envelope BLOB,
    PRIMARY KEY (node, msg_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS inbox_received ON inbox (received_ms);
"""


class Inbox:
    def __init__(self, db: Database, retention: float) -> None:
        self.db = db
        self.retention_ms = int(retention * 1000)
        db.run_blocking(lambda c: c.execute(SCHEMA))

    async def record(self, node: str, msgs: list[Message]) -> list[Message]:
        """Record `msgs` from `node`; return those never seen before (to be handed on)."""

        def write(conn: apsw.Connection) -> list[Message]:
            fresh = []
            ts = now_ms()
            for msg in msgs:
                conn.execute(
                    "INSERT OR IGNORE INTO inbox (node, msg_id, received_ms, envelope) "
                    "VALUES (?, ?, ?, ?)",
                    (node, msg.header.id, ts, msg.SerializeToString()),
                )
                if conn.changes():
                    fresh.append(msg)
            return fresh

        return await self.db.transaction(write)

    async def mark_delivered(self, pairs: list[tuple[str, str]]) -> None:
        await self.db.transaction(
            lambda c: c.executemany(
                "UPDATE inbox SET envelope = NULL WHERE node = ? AND msg_id = ?", pairs
            )
        )

    def undelivered(self) -> list[tuple[str, Message]]:
        """Recorded messages that were never handed on (cloudcore stopped in between)."""
        rows = self.db.run_blocking(
            lambda c: list(
                c.execute(
                    "SELECT node, envelope FROM inbox WHERE envelope IS NOT NULL "
                    "ORDER BY received_ms"
                )
            )
        )
        return [(node, Message.FromString(blob)) for node, blob in rows]

    async def prune(self) -> int:
        cutoff = now_ms() - self.retention_ms

        def delete(conn: apsw.Connection) -> int:
            conn.execute("DELETE FROM inbox WHERE received_ms < ? AND envelope IS NULL", (cutoff,))
            return conn.changes()

        return await self.db.transaction(delete)

    async def count(self, node: str) -> int:
        rows = await self.db.run(
            lambda c: list(c.execute("SELECT count(*) FROM inbox WHERE node = ?", (node,)))
        )
        return int(rows[0][0])
