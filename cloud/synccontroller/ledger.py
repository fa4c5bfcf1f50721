"""The ledger of what each edge node holds: ObjectSync / ClusterObjectSync, mirrored in memory.

One record per node and object UID, stored as `reliablesyncs.kubeedge.io/v1alpha1` ObjectSync
(namespaced objects) or ClusterObjectSync (cluster-scoped), named `{node}.{uid}`, with spec
{objectAPIVersion, objectKind, objectName} and status {objectResourceVersion} = the version
the node acknowledged ("0": intended, never acked). An annotation keeps the digest of the
acked content, so that after a restart a status-only change is not mistaken for news.

- `ensure()` is awaited before an object is first sent to a node: its record exists in the
  API before the message can leave, so the intent survives a cloudcore restart;
- `sent()` records the message now queued for a node and resource (only the newest can be
  acked: cloudhub's queue collapses older ones); `holding()` answers from it until the ack;
- `on_ack()` takes cloudhub's notice (group sync): the record's version moves, or, for an
  acked delete, the record goes;
- API writes are coalesced per record and made in the background by `flush_forever()`, at
  most `write_qps` per second: a burst of acks (50 pods started at once, a node back from a
  long outage) becomes a steady trickle of ObjectSync writes instead of a flood that would
  crowd a real API server's watch cache and starve the informers of every other client. The
  in-memory ledger is what cloudcore acts on; the API copy only has to survive a restart,
  and a record written late costs at most one extra resend.

What it does not: decide what a node should hold, or send anything (edgecontroller does).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from typing import Any

from cloud.kube import Kube, Obj
from cloud.kubeerrors import APIRejected, APIUnavailable, Conflict, NotFound
from common.envelope import Message, resource, rv_older, split_node
from common.errors import BadMessage, ConfigError
from common.names import Operation

log = logging.getLogger(__name__)

GROUP = "reliablesyncs.kubeedge.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
DIGEST_ANNOTATION = "reliablesyncs.kubeedge.io/content-digest"
WRITERS = 4
COALESCE_DELAY = 0.05


@dataclass(frozen=True)
class ObjectRef:
    """The identity of an object a node holds."""

    api_version: str
    kind: str
    namespace: str | None  # None: cluster-scoped
    name: str
    uid: str

    @property
    def resource(self) -> str:
        """The wire resource string (the type is the kind in lower case, as KubeEdge spells it)."""
        return resource(self.namespace, self.kind.lower(), self.name)


@dataclass
class Record:
    """One ObjectSync: what `node` acknowledged of object `ref`."""

    node: str
    ref: ObjectRef
    rv: str = "0"
    digest: str = ""
    written_rv: str | None = None  # what the API holds; None: unknown or absent
    written_digest: str = ""
    persistent: bool = True  # False when the API refused the record for good

    @property
    def cr_name(self) -> str:
        return f"{self.node}.{self.ref.uid}"


@dataclass(frozen=True)
class Holding:
    """What a node holds, or will once its queue drains, at one resource."""

    uid: str
    rv: str
    digest: str
    deleting: bool


@dataclass(frozen=True)
class _Sent:
    msg_id: str
    uid: str
    rv: str
    digest: str
    deleting: bool


class RateLimit:
    """A token bucket: on average `rate` takes per second, up to `burst` at once."""

    def __init__(self, rate: float, burst: int) -> None:
        if rate <= 0:
            raise ConfigError(f"--objectsync-qps must be above 0, got {rate}")
        self.rate = rate
        self.burst = max(1, burst)
        self._tokens = float(self.burst)
        self._stamp: float | None = None

    async def take(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            now = loop.time()
            if self._stamp is not None:
                self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
            self._stamp = now
            if self._tokens >= 1:
                self._tokens -= 1
                return
            await asyncio.sleep((1 - self._tokens) / self.rate)


class Ledger:
    def __init__(self, kube: Kube, write_qps: float = 50.0, write_burst: int = 100) -> None:
        self.kube = kube
        self.limit = RateLimit(write_qps, write_burst)
        self.loaded = asyncio.Event()
        self._records: dict[tuple[str, str], Record] = {}
        self._by_resource: dict[tuple[str, str], set[str]] = {}
        self._sent: dict[tuple[str, str], _Sent] = {}
        self._dirty: dict[tuple[str, str], None] = {}
        self._doomed: dict[tuple[str, str], Record] = {}
        self._wake = asyncio.Event()

    # -- reading ---------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._records)

    def records(self) -> list[Record]:
        return list(self._records.values())

    def get(self, node: str, uid: str) -> Record | None:
        return self._records.get((node, uid))

    def holding(self, node: str, res: str) -> Holding | None:
        sent = self._sent.get((node, res))
        if sent is not None:
            return Holding(sent.uid, sent.rv, sent.digest, sent.deleting)
        uids = self._by_resource.get((node, res))
        if not uids:
            return None
        best = max((self._records[(node, uid)] for uid in uids), key=lambda r: _rv_int(r.rv))
        return Holding(best.ref.uid, best.rv, best.digest, False)

    # -- loading ---------------------------------------------------------------------------

    async def load(self) -> None:
        """Read every ObjectSync and ClusterObjectSync into memory (once, at start)."""
        custom = self.kube.custom
        items: list[Obj] = []
        for plural in ("objectsyncs", "clusterobjectsyncs"):
            items += await self.kube.list_all(
                custom.list_cluster_custom_object, GROUP, VERSION, plural
            )
        for item in items:
            record = _from_api(item)
            if record is not None:
                self._add(record)
        log.info("synccontroller: %d object sync record(s) loaded", len(self._records))
        self.loaded.set()

    # -- what edgecontroller tells -----------------------------------------------------------

    async def ensure(self, node: str, ref: ObjectRef) -> None:
        """Make sure the record of `ref` on `node` exists in the API (RV "0" when new)."""
        key = (node, ref.uid)
        if key in self._records:
            return
        self._doomed.pop(key, None)
        record = Record(node, ref)
        self._add(record)
        try:
            created = await self.kube.call(self._create_fn(record), *self._create_args(record))
            record.written_rv = _status_rv(created)
        except Conflict:
            record.written_rv = None  # it exists already: the writer sets its status
        except APIUnavailable as exc:
            log.warning(
                "synccontroller: cannot record %s yet (%s); will retry", record.cr_name, exc
            )
        except APIRejected as exc:
            log.error("synccontroller: the API refused record %s: %s", record.cr_name, exc)
            record.persistent = False
        self._mark(record)

    def sent(
        self, node: str, msg_id: str, ref: ObjectRef, rv: str, digest: str, *, deleting: bool
    ) -> None:
        """The message `msg_id` about `ref` is queued for `node`; it supersedes earlier ones."""
        self._sent[(node, ref.resource)] = _Sent(msg_id, ref.uid, rv, digest, deleting)

    def forget(self, node: str, uid: str) -> None:
        """`node` no longer holds object `uid`, and needs no delete for it."""
        record = self._records.get((node, uid))
        if record is not None:
            sent = self._sent.get((node, record.ref.resource))
            if sent is not None and sent.uid == uid:
                del self._sent[(node, record.ref.resource)]
            self._drop(record)

    def forget_node(self, node: str) -> None:
        """The node is gone: drop all it held."""
        for record in [r for r in self._records.values() if r.node == node]:
            self.forget(node, record.ref.uid)
        for key in [k for k in self._sent if k[0] == node]:
            del self._sent[key]

    # -- what cloudhub tells ---------------------------------------------------------------

    def on_ack(self, notice: Message) -> None:
        """A node applied a message (cloudhub's notice: resource, operation, RV, parent id)."""
        try:
            node, res = split_node(notice.route.resource)
        except BadMessage:
            return
        sent = self._sent.get((node, res))
        digest: str | None = None
        if sent is not None and sent.msg_id == notice.header.parent_id:
            del self._sent[(node, res)]
            uid, digest = sent.uid, sent.digest
        else:  # an ack for a message sent before a restart: only an unambiguous one counts
            uids = self._by_resource.get((node, res)) or set()
            if len(uids) != 1:
                return
            uid = next(iter(uids))
        record = self._records.get((node, uid))
        if record is None:
            return
        if notice.route.operation == Operation.DELETE:
            self._drop(record)
            return
        version = notice.ack.resource_version
        if version and not rv_older(version, record.rv):
            record.rv = version
            if digest is not None:
                record.digest = digest
            self._mark(record)

    # -- bookkeeping -----------------------------------------------------------------------

    def _add(self, record: Record) -> None:
        self._records[(record.node, record.ref.uid)] = record
        self._by_resource.setdefault((record.node, record.ref.resource), set()).add(record.ref.uid)

    def _drop(self, record: Record) -> None:
        key = (record.node, record.ref.uid)
        self._records.pop(key, None)
        self._dirty.pop(key, None)
        uids = self._by_resource.get((record.node, record.ref.resource))
        if uids is not None:
            uids.discard(record.ref.uid)
            if not uids:
                del self._by_resource[(record.node, record.ref.resource)]
        if record.persistent:
            self._doomed[key] = record
            self._wake.set()

    def _mark(self, record: Record) -> None:
        if record.persistent:
            self._dirty[(record.node, record.ref.uid)] = None
            self._wake.set()

    # -- writing ---------------------------------------------------------------------------

    async def flush_forever(self) -> None:
        """Write changed records and delete dropped ones, coalescing bursts of acks."""
        delay = 0.2
        while True:
            await self._wake.wait()
            await asyncio.sleep(COALESCE_DELAY)
            self._wake.clear()
            if await self.flush():
                delay = 0.2
                continue
            await asyncio.sleep(delay)  # the API is failing: retry the leftovers later
            delay = min(delay * 2, 10.0)
            self._wake.set()

    async def flush(self) -> bool:
        """One round of writes; False when some failed (they stay due)."""
        dirty = [self._records[k] for k in self._dirty if k in self._records]
        doomed = list(self._doomed.values())
        self._dirty.clear()
        self._doomed.clear()
        gate = asyncio.Semaphore(WRITERS)

        async def guarded(record: Record, *, delete: bool) -> bool:
            async with gate:
                await self.limit.take()
                try:
                    await (self._delete(record) if delete else self._write(record))
                    return True
                except APIUnavailable as exc:
                    log.warning("synccontroller: writing %s failed: %s", record.cr_name, exc)
                except APIRejected as exc:
                    log.error("synccontroller: the API refused %s: %s", record.cr_name, exc)
                    return True
            if not delete:
                self._mark(record)
            elif (record.node, record.ref.uid) not in self._records:
                self._doomed[(record.node, record.ref.uid)] = record
            return False

        results = await asyncio.gather(
            *(guarded(r, delete=False) for r in dirty),
            *(guarded(r, delete=True) for r in doomed),
        )
        return all(results)

    async def _write(self, record: Record) -> None:
        rv, digest = record.rv, record.digest
        # The digest first: once the acked version is visible, so is what that version held.
        if record.written_digest != digest:
            body = {"metadata": {"annotations": {DIGEST_ANNOTATION: digest or None}}}
            try:
                await self.kube.call(self._patch_fn(record), *self._object_args(record), body)
            except NotFound:
                await self.kube.call(self._create_fn(record), *self._create_args(record))
                await self.kube.call(self._patch_fn(record), *self._object_args(record), body)
            record.written_digest = digest
        if record.written_rv != rv:
            try:
                await self._patch_status(record, rv)
            except NotFound:
                await self.kube.call(self._create_fn(record), *self._create_args(record))
                await self._patch_status(record, rv)
            record.written_rv = rv

    async def _patch_status(self, record: Record, rv: str) -> None:
        body = {"status": {"objectResourceVersion": rv}}
        custom = self.kube.custom
        fn = (
            custom.patch_namespaced_custom_object_status
            if record.ref.namespace
            else custom.patch_cluster_custom_object_status
        )
        await self.kube.call(fn, *self._object_args(record), body)

    async def _delete(self, record: Record) -> None:
        custom = self.kube.custom
        fn = (
            custom.delete_namespaced_custom_object
            if record.ref.namespace
            else custom.delete_cluster_custom_object
        )
        with contextlib.suppress(NotFound):
            await self.kube.call(fn, *self._object_args(record))
        again = self._records.get((record.node, record.ref.uid))
        if again is not None:  # sent again while its old record was being deleted
            again.written_rv = None
            self._mark(again)

    def _create_fn(self, record: Record) -> Any:
        custom = self.kube.custom
        if record.ref.namespace:
            return custom.create_namespaced_custom_object
        return custom.create_cluster_custom_object

    def _create_args(self, record: Record) -> tuple[Any, ...]:
        ref = record.ref
        body: Obj = {
            "apiVersion": API_VERSION,
            "kind": "ObjectSync" if ref.namespace else "ClusterObjectSync",
            "metadata": {"name": record.cr_name},
            "spec": {
                "objectAPIVersion": ref.api_version,
                "objectKind": ref.kind,
                "objectName": ref.name,
            },
            "status": {"objectResourceVersion": record.rv},
        }
        if ref.namespace:
            body["metadata"]["namespace"] = ref.namespace
            return (GROUP, VERSION, ref.namespace, "objectsyncs", body)
        return (GROUP, VERSION, "clusterobjectsyncs", body)

    def _patch_fn(self, record: Record) -> Any:
        custom = self.kube.custom
        if record.ref.namespace:
            return custom.patch_namespaced_custom_object
        return custom.patch_cluster_custom_object

    @staticmethod
    def _object_args(record: Record) -> tuple[str, ...]:
        if record.ref.namespace:
            return (GROUP, VERSION, record.ref.namespace, "objectsyncs", record.cr_name)
        return (GROUP, VERSION, "clusterobjectsyncs", record.cr_name)


def _status_rv(obj: Any) -> str | None:
    if isinstance(obj, dict):
        rv = (obj.get("status") or {}).get("objectResourceVersion")
        return str(rv) if rv else None
    return None


def _rv_int(rv: str) -> int:
    try:
        return int(rv)
    except ValueError:
        return 0


def _from_api(item: Obj) -> Record | None:
    meta = item.get("metadata") or {}
    spec = item.get("spec") or {}
    node, dot, uid = str(meta.get("name") or "").rpartition(".")
    if not dot or not node or not uid or not spec.get("objectKind"):
        log.warning("synccontroller: ignoring malformed record %s", meta.get("name"))
        return None
    ref = ObjectRef(
        api_version=str(spec.get("objectAPIVersion") or "v1"),
        kind=str(spec["objectKind"]),
        namespace=meta.get("namespace") or None,
        name=str(spec.get("objectName") or ""),
        uid=uid,
    )
    rv = str((item.get("status") or {}).get("objectResourceVersion") or "0")
    digest = str((meta.get("annotations") or {}).get(DIGEST_ANNOTATION) or "")
    return Record(node, ref, rv=rv, digest=digest, written_rv=rv, written_digest=digest)
