"""The MongoDB backend: one document per instance, originals inline or in GridFS (see docs/mongodb.md).

Collections of the database:
- ``instances``: ``_id`` = SOP Instance UID, the extracted keys of ``InstanceRecord.keys()``, ``seq`` (arrival
  order), ``ds`` (the document; binary values as BSON Binary) and either ``original`` (BSON Binary) when
  the whole document fits MongoDB's 16 MiB limit, or ``gridfs_id`` into the GridFS bucket ``originals``;
- ``superseded``: versions displaced by the duplicate policy, same shape plus ``reason`` and ``at``;
- ``peers``: ``_id`` = AE title, ``host``, ``port``;
- ``counters``: the ``seq`` counter.

Semantics are those of ``sqlite.py``, the reference backend. Durability: instance writes use write
concern ``majority`` with journaling, so a store that returns has been acknowledged by the server.
"""

from __future__ import annotations

import errno
import io
import logging
import re
import threading
import types
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import Any, BinaryIO, Iterator, Sequence

import gridfs
import pymongo
from bson.errors import InvalidDocument
from pymongo import ASCENDING, MongoClient, ReturnDocument
from pymongo.database import Database
from pymongo.errors import (
    ConnectionFailure,
    DocumentTooLarge,
    DuplicateKeyError,
    PyMongoError,
    WriteConcernError,
)
from pymongo.write_concern import WriteConcern

from ..document import PN_GROUPS, parse_tag, single_valued, vr_for_tag
from ..matching import Query
from .base import (
    LEVEL_KEY,
    Backend,
    DuplicatePolicy,
    Found,
    InstanceRecord,
    Level,
    Original,
    STORED_OUTCOMES,
    PutOutcome,
    StorageFull,
    StoredInstance,
    fits_inline,
)
from .mongo_query import compile_query, first_value_path
from .records import insert_mongo_record, mongo_records

log = logging.getLogger(__name__)

DURABLE = WriteConcern(w="majority", j=True)
CONNECT_TIMEOUT_MS = 5000
GRIDFS_BUCKET = "originals"
# Retries of a store that raced with another store of the same SOP Instance UID.
RACE_ATTEMPTS = 5
FETCH_BATCH = 1000

# Tags with a top-level field of their own: the compiler reads the field, which has a plain index.
KEY_FIELDS = {
    0x00100020: "patient_id",
    0x0020000D: "study_instance_uid",
    0x0020000E: "series_instance_uid",
    0x00080018: "_id",
    0x00080016: "sop_class_uid",
    0x00080060: "modality",
}
# The field a level groups on; instances are grouped on their _id, which is the SOP Instance UID.
LEVEL_FIELD = {**LEVEL_KEY, Level.IMAGE: "_id"}
STUDY_ORDER = [("study_instance_uid", ASCENDING), ("series_instance_uid", ASCENDING), ("_id", ASCENDING)]
# Server error codes (names) meaning the disk or the quota is full.
OUT_OF_SPACE_CODES = {14031, 12501}
OUT_OF_SPACE_WORDS = ("no space left", "outofdiskspace", "space quota", "quotaexceeded", "disk full")


class MongoUnavailable(ConnectionError):
    """The configured MongoDB server cannot be reached; the message names the URI (password hidden)."""


def redact_uri(uri: str) -> str:
    """The URI with any password replaced, fit for messages and logs."""
    return re.sub(r"(//[^:/@]+):[^@/]*@", r"\1:***@", uri)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat()


def _is_mongomock(database: Any) -> bool:
    return type(database).__module__.startswith("mongomock")


_standin_lock = threading.Lock()
_standin_ready = False


def _prepare_standin(database: Any) -> None:
    """Let pymongo's gridfs run on a mongomock database (the stand-in of the tests).

    gridfs checks its arguments' types, which ``enable_gridfs_integration`` widens, and reads
    ``client.options.timeout``, which mongomock's client lacks (its attribute lookup would hand back a
    collection named 'options'): give it pymongo's default, no timeout.
    """
    global _standin_ready
    import mongomock.gridfs

    with _standin_lock:
        if not _standin_ready:
            mongomock.gridfs.enable_gridfs_integration()
            _standin_ready = True
    client = database.client
    if "options" not in vars(client):
        client.options = types.SimpleNamespace(timeout=None)


def _storage_error(uid: str, exc: PyMongoError) -> OSError:
    """An OSError the archive reports as 'out of resources', naming what failed."""
    message = str(exc)
    details = getattr(exc, "details", None) or {}
    code = getattr(exc, "code", None)
    if code in OUT_OF_SPACE_CODES or any(w in message.lower() or w in str(details.get("codeName", "")).lower()
                                         for w in OUT_OF_SPACE_WORDS):
        return StorageFull(errno.ENOSPC, f"MongoDB is out of space storing {uid}: {message}")
    if isinstance(exc, WriteConcernError):
        return OSError(errno.EIO, f"MongoDB did not confirm {uid} on a majority of members: {message}")
    if isinstance(exc, ConnectionFailure):
        return OSError(errno.EIO, f"MongoDB unreachable while storing {uid}: {message}")
    return OSError(errno.EIO, f"MongoDB refused {uid}: {message}")


@contextmanager
def _as_os_errors(uid: str):
    try:
        yield
    except DocumentTooLarge as exc:
        raise OSError(errno.EFBIG, f"{uid}: its queryable document alone exceeds MongoDB's 16 MiB limit ({exc}); "
                                   "exclude large attributes (document.exclude_attributes)") from exc
    except (InvalidDocument, OverflowError) as exc:  # e.g. a UV value beyond BSON's signed 64-bit integers
        raise OSError(errno.EINVAL, f"{uid}: its document cannot be encoded as BSON: {exc}") from exc
    except PyMongoError as exc:
        raise _storage_error(uid, exc) from exc


class MongoBackend(Backend):
    name = "mongodb"

    def __init__(self, database: Database, indexed_attributes: list[str] = ()) -> None:
        if _is_mongomock(database):
            _prepare_standin(database)
        self.database = database
        self._owned_client: MongoClient | None = None
        self._instances = database.get_collection("instances", write_concern=DURABLE)
        self._superseded = database.get_collection("superseded", write_concern=DURABLE)
        self._peers = database.get_collection("peers", write_concern=DURABLE)
        # Only an ordering hint: a counter lost in a fail-over gives ties, broken by the UID.
        self._counters = database.get_collection("counters")
        self._bucket = gridfs.GridFSBucket(database, bucket_name=GRIDFS_BUCKET, write_concern=DURABLE)
        self._create_indexes(list(indexed_attributes))

    @classmethod
    def connect(cls, uri: str, database: str, indexed_attributes: list[str],
                timeout_ms: int = CONNECT_TIMEOUT_MS) -> "MongoBackend":
        """A backend on the server at ``uri``; MongoUnavailable when it does not answer in time."""
        shown = redact_uri(uri)
        try:
            # Default selection timeout (30 s) for the archive's own operations, so that they ride out an
            # election; only the first ping is held to ``timeout_ms``.
            client = MongoClient(uri, connectTimeoutMS=timeout_ms, appname="dopamine")
        except (PyMongoError, ValueError) as exc:  # pymongo raises both for a malformed URI
            raise MongoUnavailable(f"invalid MongoDB URI {shown}: {exc}") from None
        try:
            with pymongo.timeout(timeout_ms / 1000):
                client.admin.command("ping")
            backend = cls(client[database], indexed_attributes)
        except ConnectionFailure as exc:
            client.close()
            raise MongoUnavailable(f"MongoDB at {shown} does not answer (waited {timeout_ms / 1000:g} s): {exc}") from None
        except PyMongoError as exc:  # reached, but refused: authentication, authorization
            client.close()
            raise MongoUnavailable(f"MongoDB at {shown} refused to set up database {database!r}: {exc}") from None
        backend._owned_client = client
        return backend

    def _create_indexes(self, keywords: list[str]) -> None:
        self._instances.create_index("patient_id")
        self._instances.create_index(STUDY_ORDER, name="study_series_sop")
        self._instances.create_index("series_instance_uid")
        self._instances.create_index("modality")
        self._instances.create_index("sop_class_uid")
        self._instances.create_index("seq")
        self._superseded.create_index([("sop_instance_uid", ASCENDING), ("seq", ASCENDING)])
        for keyword in keywords:
            tag = parse_tag(keyword)
            if tag in KEY_FIELDS:
                continue
            if not single_valued(tag):
                log.warning("not indexing %s: only attributes of VM 1 get an index", keyword)
                continue
            path = first_value_path("ds.", tag)
            if vr_for_tag(tag) == "PN":
                path += f".{PN_GROUPS[0]}"
            self._instances.create_index(path, name=f"attr_{path[3:].replace('.', '_')}")

    def close(self) -> None:
        if self._owned_client is not None:
            self._owned_client.close()
            self._owned_client = None

    # ----------------------------------------------------------------------------------------------- put

    def put(self, record: InstanceRecord, original: Original, policy: DuplicatePolicy,
            extra_records: Sequence[tuple[str, dict[str, Any]]] = (), *,
            when_stored: Sequence[tuple[str, dict[str, Any]]] = (), sync: bool = True) -> PutOutcome:
        # Every write is acknowledged by a majority, journaled: ``sync`` has nothing to defer here.
        uid = record.sop_instance_uid
        with _as_os_errors(uid):
            existing = self._instances.find_one({"_id": uid}, {"sha256": 1})
            early = self._duplicate_outcome(existing, record, policy)
            if early == PutOutcome.REJECTED_DUPLICATE:
                return early
            # The records first, durably, so that a stored instance never lacks them; a failure after them
            # leaves records of a store its sender is not told succeeded (removed when possible).
            written = self._insert_records(extra_records)
            if early is not None:
                return early
            # Written before the instance too (a crash in between leaves a forward of an instance that is
            # not there, which fails visibly, rather than a stored instance never forwarded).
            conditional = self._insert_records(when_stored)
            placed = self._place_original(record, original)
            try:
                outcome = self._write(record, placed, policy, existing)
            except BaseException:
                self._discard(placed, uid)
                self._remove_records(written + conditional, uid)
                raise
            if outcome in (PutOutcome.IDENTICAL_DUPLICATE, PutOutcome.REJECTED_DUPLICATE):
                self._discard(placed, uid)  # lost a race: the bytes are not referenced
            if outcome == PutOutcome.REJECTED_DUPLICATE:
                self._remove_records(written, uid)
            if outcome not in STORED_OUTCOMES:
                self._remove_records(conditional, uid)
            return outcome

    def _insert_records(self, extra_records: Sequence[tuple[str, dict[str, Any]]]) -> list[tuple[str, str]]:
        """(kind, id) of each record written."""
        return [(kind, insert_mongo_record(self.database, kind, body)) for kind, body in extra_records]

    def _remove_records(self, written: list[tuple[str, str]], uid: str) -> None:
        try:
            for kind, record_id in written:
                mongo_records(self.database, kind).delete_one({"_id": record_id})
        except PyMongoError as exc:  # the original failure matters more; say what may be left behind
            log.error("records %s of %s may be left behind by a failed store: %s", written, uid, exc)

    @staticmethod
    def _duplicate_outcome(existing: dict | None, record: InstanceRecord, policy: DuplicatePolicy) -> PutOutcome | None:
        if existing and existing["sha256"] == record.sha256:
            return PutOutcome.IDENTICAL_DUPLICATE
        if existing and policy == DuplicatePolicy.REJECT:
            return PutOutcome.REJECTED_DUPLICATE
        return None

    def _place_original(self, record: InstanceRecord, original: Original) -> dict[str, Any]:
        """The fields naming the original: the bytes inline, or a GridFS file streamed from the source."""
        if fits_inline(record, original.size):
            return {"original": original.read()}
        with original.open() as source:
            file_id = self._bucket.upload_from_stream(
                f"{record.sop_instance_uid}.dcm", source,
                metadata={"sop_instance_uid": record.sop_instance_uid, "sha256": record.sha256})
        return {"gridfs_id": file_id}

    def _discard(self, placed: dict[str, Any], uid: str) -> None:
        """Delete a GridFS file no document names, so that a failed store leaves no orphan.

        A write that failed on its write concern (or lost its connection) may still have been applied:
        the file is kept whenever a document refers to it, as an orphan is better than a dangling reference.
        """
        file_id = placed.get("gridfs_id")
        if file_id is None:
            return
        try:
            if (self._instances.find_one({"_id": uid, "gridfs_id": file_id}, {"_id": 1}) is None
                    and self._superseded.find_one({"sop_instance_uid": uid, "gridfs_id": file_id}, {"_id": 1}) is None):
                self._bucket.delete(file_id)
        except PyMongoError as exc:  # the original failure matters more; say what may be left behind
            log.error("GridFS file %s of %s may be left unreferenced after a failed store: %s", file_id, uid, exc)

    def _next_seq(self) -> int:
        counter = self._counters.find_one_and_update(
            {"_id": "seq"}, {"$inc": {"n": 1}}, upsert=True, return_document=ReturnDocument.AFTER)
        return counter["n"]

    def _new_document(self, record: InstanceRecord, placed: dict[str, Any]) -> dict[str, Any]:
        return {"_id": record.sop_instance_uid, **record.keys(), "seq": self._next_seq(), "ds": record.document, **placed}

    def _write(self, record: InstanceRecord, placed: dict[str, Any], policy: DuplicatePolicy,
               existing: dict | None) -> PutOutcome:
        uid = record.sop_instance_uid
        for _ in range(RACE_ATTEMPTS):
            early = self._duplicate_outcome(existing, record, policy)
            if early is not None:
                return early
            if existing is None:
                try:
                    self._instances.insert_one(self._new_document(record, placed))
                    return PutOutcome.STORED
                except DuplicateKeyError:  # another store of this UID got there first
                    existing = self._instances.find_one({"_id": uid}, {"sha256": 1})
                    continue
            if policy == DuplicatePolicy.KEEP_FIRST:
                newcomer = self._new_document(record, placed)
                self._insert_superseded(newcomer, "duplicate kept aside (keep-first)")
                return PutOutcome.KEPT_FIRST
            # Replace: copy the previous version aside first, so that a crash between the two writes
            # leaves an extra copy, never a lost version.
            previous = self._instances.find_one({"_id": uid})
            if previous is None:
                existing = None
                continue
            aside = self._insert_superseded(previous, "replaced by a newer version (replace)")
            result = self._instances.replace_one({"_id": uid, "seq": previous["seq"]}, self._new_document(record, placed))
            if result.matched_count:
                return PutOutcome.REPLACED
            self._superseded.delete_one({"_id": aside})  # someone else replaced it meanwhile: look again
            existing = self._instances.find_one({"_id": uid}, {"sha256": 1})
        raise OSError(errno.EAGAIN, f"{uid}: stored concurrently by other senders; gave up after {RACE_ATTEMPTS} attempts")

    def _insert_superseded(self, version: dict[str, Any], reason: str) -> Any:
        aside = {k: v for k, v in version.items() if k != "_id"}
        aside.update(sop_instance_uid=version["_id"], reason=reason, at=_now(), seq=self._next_seq())
        return self._superseded.insert_one(aside).inserted_id

    # --------------------------------------------------------------------------------------------- query

    def _filter(self, query: Query) -> dict[str, Any]:
        return compile_query(query, KEY_FIELDS)

    def _group_filter(self, level: Level, query: Query, having: Query | None) -> dict[str, Any]:
        selected = self._filter(query)
        if having is None or not having.constraining:
            return selected
        field = LEVEL_FIELD[level]
        # The groups holding at least one instance that matches `having`.
        keys = [g["_id"] for g in self._instances.aggregate(
            [{"$match": self._filter(having)}, {"$group": {"_id": f"${field}"}}], allowDiskUse=True)]
        qualifying = {field: {"$in": keys}}
        return {"$and": [selected, qualifying]} if selected else qualifying

    def find(self, level: Level, query: Query, having: Query | None = None,
             limit: int | None = None, offset: int = 0) -> list[Found]:
        field = LEVEL_FIELD[level]
        pipeline: list[dict[str, Any]] = [
            {"$match": self._group_filter(level, query, having)},
            {"$sort": {"seq": 1, "_id": 1}},  # so that $first is the group's first arrival, as in SQLite
            {"$group": {
                "_id": f"${field}",
                "first": {"$first": "$_id"},
                "instances": {"$sum": 1},
                "series": {"$addToSet": "$series_instance_uid"},
                "studies": {"$addToSet": "$study_instance_uid"},
                "modalities": {"$addToSet": "$modality"},
                "sop_classes": {"$addToSet": "$sop_class_uid"},
            }},
            {"$sort": {"_id": 1}},
        ]
        # As SQLite reads LIMIT and OFFSET: a negative limit means none, a negative offset is 0;
        # MongoDB refuses those values, and a $limit of 0.
        if limit == 0:
            return []
        if offset > 0:
            pipeline.append({"$skip": offset})
        if limit is not None and limit > 0:
            pipeline.append({"$limit": limit})
        groups = list(self._instances.aggregate(pipeline, allowDiskUse=True))
        documents = self._documents([g["first"] for g in groups])
        return [
            Found(documents[g["first"]], g["instances"], len(set(g["series"])), len(set(g["studies"])),
                  sorted({m for m in g["modalities"] if m}), sorted(set(g["sop_classes"])))
            for g in groups
        ]

    def _documents(self, uids: list[str]) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for start in range(0, len(uids), FETCH_BATCH):
            for doc in self._instances.find({"_id": {"$in": uids[start:start + FETCH_BATCH]}}, {"ds": 1}):
                out[doc["_id"]] = doc["ds"]
        return out

    def count(self, level: Level, query: Query, having: Query | None = None) -> int:
        pipeline = [
            {"$match": self._group_filter(level, query, having)},
            {"$group": {"_id": f"${LEVEL_FIELD[level]}"}},
            {"$count": "n"},
        ]
        # MongoDB returns no document when nothing matches (mongomock returns n = 0).
        return next((r["n"] for r in self._instances.aggregate(pipeline, allowDiskUse=True)), 0)

    def instances(self, query: Query) -> Iterator[StoredInstance]:
        projection = {"sop_class_uid": 1, "study_instance_uid": 1, "series_instance_uid": 1,
                      "transfer_syntax_uid": 1, "size": 1}
        # Read them all first, as SQLite does: a retrieve may outlast a server-side cursor's idle timeout.
        rows = list(self._instances.find(self._filter(query), projection).sort(STUDY_ORDER))
        for row in rows:
            yield StoredInstance(row["_id"], row["sop_class_uid"], row["study_instance_uid"],
                                 row["series_instance_uid"], row["transfer_syntax_uid"], row["size"])

    def open_original(self, sop_instance_uid: str) -> BinaryIO:
        row = self._instances.find_one({"_id": sop_instance_uid}, {"original": 1, "gridfs_id": 1})
        if row is None:
            raise KeyError(sop_instance_uid)
        if row.get("gridfs_id") is not None:
            return self._bucket.open_download_stream(row["gridfs_id"])
        return io.BytesIO(bytes(row["original"]))

    def get_document(self, sop_instance_uid: str) -> dict[str, Any] | None:
        row = self._instances.find_one({"_id": sop_instance_uid}, {"ds": 1})
        return row["ds"] if row else None

    def get_documents(self, sop_instance_uids: list[str]) -> dict[str, dict[str, Any]]:
        found = {}
        for start in range(0, len(sop_instance_uids), FETCH_BATCH):
            batch = sop_instance_uids[start:start + FETCH_BATCH]
            found.update((row["_id"], row["ds"]) for row in self._instances.find({"_id": {"$in": batch}}, {"ds": 1}))
        return found

    def storage_of(self, sop_instance_uid: str) -> str:
        """'inline' or 'gridfs': where the original bytes of an instance are (for tests and diagnostics)."""
        row = self._instances.find_one({"_id": sop_instance_uid}, {"gridfs_id": 1})
        if row is None:
            raise KeyError(sop_instance_uid)
        return "gridfs" if row.get("gridfs_id") is not None else "inline"

    def delete_instance(self, sop_instance_uid: str) -> bool:
        row = self._instances.find_one_and_delete({"_id": sop_instance_uid}, {"gridfs_id": 1})
        if row is None:
            return False
        file_id = row.get("gridfs_id")
        if file_id is not None and self._superseded.find_one({"gridfs_id": file_id}, {"_id": 1}) is None:
            self._bucket.delete(file_id)
        return True

    def superseded_versions(self, sop_instance_uid: str) -> list[dict[str, Any]]:
        rows = self._superseded.find({"sop_instance_uid": sop_instance_uid}, {"sha256": 1, "reason": 1, "at": 1})
        return [{"sha256": r["sha256"], "reason": r["reason"], "at": r["at"]}
                for r in rows.sort([("seq", ASCENDING), ("_id", ASCENDING)])]

    # --------------------------------------------------------------------------------------------- peers

    def put_peer(self, aet: str, host: str, port: int) -> None:
        self._peers.replace_one({"_id": aet}, {"_id": aet, "host": host, "port": port}, upsert=True)

    def get_peer(self, aet: str) -> dict[str, Any] | None:
        row = self._peers.find_one({"_id": aet})
        return {"aet": row["_id"], "host": row["host"], "port": row["port"]} if row else None

    def list_peers(self) -> list[dict[str, Any]]:
        return [{"aet": r["_id"], "host": r["host"], "port": r["port"]}
                for r in self._peers.find().sort("_id", ASCENDING)]

    def remove_peer(self, aet: str) -> bool:
        return self._peers.delete_one({"_id": aet}).deleted_count > 0
