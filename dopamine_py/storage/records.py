"""Small persistent records beside the instances: rule sets, provenance, the forward queue.

One tiny interface, two implementations: a table in the embedded store's SQLite file, or a MongoDB
collection per kind of record. Records are JSON-able dicts; each gets an ``id`` and a ``seq`` (insertion
order). These are administrative data, a few thousand at most: filtering is by equality only.
"""

from __future__ import annotations

import itertools
import json
import sqlite3
import threading
import time
import uuid
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any


class RecordStore(ABC):
    @abstractmethod
    def insert(self, kind: str, record: dict[str, Any]) -> str:
        """Store a record durably; returns its id."""

    def kept_with(self, backend: Any) -> bool:
        """Whether ``backend.put`` writes records where this store reads them (``extra_records``), so that a
        record can be stored together with its instance."""
        return False

    @abstractmethod
    def get(self, kind: str, record_id: str) -> dict[str, Any] | None: ...

    @abstractmethod
    def find(self, kind: str, **equal: Any) -> list[dict[str, Any]]:
        """Records whose fields equal the given values, oldest first."""

    @abstractmethod
    def update(self, kind: str, record_id: str, **fields: Any) -> bool: ...

    @abstractmethod
    def delete(self, kind: str, record_id: str) -> bool: ...


def _new_id() -> str:
    return uuid.uuid4().hex


def sqlite_row(kind: str, record: dict[str, Any]) -> tuple[str, str, str]:
    """(kind, id, body) of a record in the SQLite table ``records``."""
    record_id = record.get("id") or _new_id()
    return kind, record_id, json.dumps({**record, "id": record_id})


INSERT_SQLITE_ROW = "INSERT INTO records (kind, id, body) VALUES (?, ?, ?)"
_mongo_counter = itertools.count()


def mongo_collection(kind: str) -> str:
    return f"records_{kind}"


def mongo_document(record: dict[str, Any]) -> dict[str, Any]:
    record_id = record.get("id") or _new_id()
    # Nanoseconds plus a counter: an order of insertion that survives restarts and several nodes.
    seq = time.time_ns() + next(_mongo_counter) % 1000
    return {**record, "_id": record_id, "id": record_id, "seq": seq}


class SQLiteRecords(RecordStore):
    SCHEMA = """
    CREATE TABLE IF NOT EXISTS records (
        seq INTEGER PRIMARY KEY,
        kind TEXT NOT NULL,
        id TEXT NOT NULL UNIQUE,
        body TEXT NOT NULL
    );
    CREATE INDEX IF NOT EXISTS records_kind ON records(kind);
    """

    def __init__(self, db_path: Path) -> None:
        self.db_path = Path(db_path)
        self._conn = sqlite3.connect(db_path, isolation_level=None, check_same_thread=False, timeout=60)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=FULL")
        self._conn.executescript(self.SCHEMA)
        self._lock = threading.Lock()

    def insert(self, kind: str, record: dict[str, Any]) -> str:
        row = sqlite_row(kind, record)
        with self._lock:
            self._conn.execute(INSERT_SQLITE_ROW, row)
        return row[1]

    def kept_with(self, backend: Any) -> bool:
        return getattr(backend, "db_path", None) == self.db_path

    def get(self, kind: str, record_id: str) -> dict[str, Any] | None:
        with self._lock:
            row = self._conn.execute("SELECT body, seq FROM records WHERE kind = ? AND id = ?", (kind, record_id)).fetchone()
        return {**json.loads(row[0]), "seq": row[1]} if row else None

    def find(self, kind: str, **equal: Any) -> list[dict[str, Any]]:
        sql = "SELECT body, seq FROM records WHERE kind = ?"
        params: list[Any] = [kind]
        for name, value in equal.items():
            sql += f" AND json_extract(body, '$.{name}') = ?"
            params.append(value)
        with self._lock:
            rows = self._conn.execute(sql + " ORDER BY seq", params).fetchall()
        return [{**json.loads(body), "seq": seq} for body, seq in rows]

    def update(self, kind: str, record_id: str, **fields: Any) -> bool:
        with self._lock:
            row = self._conn.execute("SELECT body FROM records WHERE kind = ? AND id = ?", (kind, record_id)).fetchone()
            if row is None:
                return False
            body = {**json.loads(row[0]), **fields}
            self._conn.execute("UPDATE records SET body = ? WHERE kind = ? AND id = ?", (json.dumps(body), kind, record_id))
        return True

    def delete(self, kind: str, record_id: str) -> bool:
        with self._lock:
            return self._conn.execute("DELETE FROM records WHERE kind = ? AND id = ?", (kind, record_id)).rowcount > 0

    def close(self) -> None:
        self._conn.close()


class MongoRecords(RecordStore):
    """One collection per kind (``records_<kind>``), acknowledged by a majority with journal."""

    def __init__(self, database) -> None:
        self._db = database

    def kept_with(self, backend: Any) -> bool:
        return getattr(backend, "database", None) is self._db

    def _collection(self, kind: str):
        collection = self._db[mongo_collection(kind)]
        try:
            from pymongo import WriteConcern

            return collection.with_options(write_concern=WriteConcern(w="majority", j=True))
        except (ImportError, TypeError, AttributeError):  # mongomock accepts no write concern
            return collection

    def insert(self, kind: str, record: dict[str, Any]) -> str:
        document = mongo_document(record)
        self._collection(kind).insert_one(document)
        return document["id"]

    def get(self, kind: str, record_id: str) -> dict[str, Any] | None:
        doc = self._collection(kind).find_one({"_id": record_id})
        return _plain(doc)

    def find(self, kind: str, **equal: Any) -> list[dict[str, Any]]:
        return [_plain(d) for d in self._collection(kind).find(equal).sort("seq", 1)]

    def update(self, kind: str, record_id: str, **fields: Any) -> bool:
        return self._collection(kind).update_one({"_id": record_id}, {"$set": fields}).matched_count > 0

    def delete(self, kind: str, record_id: str) -> bool:
        return self._collection(kind).delete_one({"_id": record_id}).deleted_count > 0


def _plain(doc: dict[str, Any] | None) -> dict[str, Any] | None:
    if doc is None:
        return None
    doc = dict(doc)
    doc.pop("_id", None)
    return doc
