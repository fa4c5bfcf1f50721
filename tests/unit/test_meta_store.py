"""metamanager's store on real SQLite: what a delete removes."""

from __future__ import annotations

from pathlib import Path

from common.envelope import Message, new_message
from common.names import Group, Module, Operation
from common.sqlite import Database
from edge.meta.store import MetaStore


def pod(op: str, uid: str, rv: str) -> Message:
    msg = new_message(
        source=Module.EDGECONTROLLER,
        group=Group.META,
        operation=op,
        resource="default/pod/web",
        resource_version=rv,
    )
    msg.object.name, msg.object.uid, msg.object.resource_version = "web", uid, rv
    msg.object.object_json = b"{}"
    return msg


async def test_a_late_delete_of_an_older_pod_leaves_the_newer_one(tmp_path: Path) -> None:
    """Regression (issue 10): a resent delete of uid-1 arriving after uid-2 (same name) was
    stored removed uid-2 from the store."""
    db = Database(tmp_path / "edge.db", "SELECT 1")
    try:
        store = MetaStore(db)
        assert await store.apply([pod(Operation.INSERT, "uid-2", "12")]) == [True]
        assert await store.apply([pod(Operation.DELETE, "uid-1", "10")]) == [False]
        stored = await store.get("default/pod/web")
        assert stored is not None and stored.uid == "uid-2"
        assert await store.apply([pod(Operation.DELETE, "uid-2", "14")]) == [True]
        assert await store.get("default/pod/web") is None
        await store.apply([pod(Operation.INSERT, "uid-3", "15")])
        bare = pod(Operation.DELETE, "", "16")  # a delete that names no uid removes the name
        assert await store.apply([bare]) == [True]
    finally:
        db.close()
