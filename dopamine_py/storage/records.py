"""Small persistent records beside the instances: rule sets, provenance, the forward queue.

One tiny interface, two implementations: a table in the embedded store's SQLite file, or a MongoDB
collection per kind of record. Records are JSON-able dicts; each gets an ``id`` and a ``seq`` (insertion
order); filtering is by equality only. Most kinds are administrative data, a few thousand records at most;
provenance has a record per routed instance, and a table (a collection index) of its own: OWN_TABLES.
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

from .sqlite_transaction import write_transaction


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


# Kinds that grow with the archive (a provenance record per routed instance) have a SQLite table of their
# own, named after the kind, with the fields they are looked up by as columns (the first one indexed).
# In the shared table they cost every routed instance two more index pages in its commit, and a lookup
# read every record of the kind. Their ids (random, as everywhere) are not indexed: nothing looks these
# records up by id on the ingest path, and a lookup by another column than the first reads them all.
OWN_TABLES = {"provenance": ("sop_instance_uid", "received_sop_instance_uid")}


class JSONText(str):
    """A record's value given as its JSON text already (a provenance record's changes, whose parts are
    encoded once per process): written into the body as it is, parsed for MongoDB."""


def record_json(record: dict[str, Any]) -> str:
    """The JSON text of a record whose values may be JSONText."""
    given = {key: value for key, value in record.items() if type(value) is JSONText}
    if not given:
        return json.dumps(record)
    rest = json.dumps({key: value for key, value in record.items() if key not in given})
    parts = [f"{json.dumps(key)}: {value}" for key, value in given.items()]
    return "{" + ", ".join(([rest[1:-1]] if rest != "{}" else []) + parts) + "}"


def _parsed(record: dict[str, Any]) -> dict[str, Any]:
    return {key: json.loads(value) if type(value) is JSONText else value for key, value in record.items()}


def insert_sqlite_record(conn: sqlite3.Connection, kind: str, record: dict[str, Any]) -> str:
    """Insert a record through ``conn`` (within the caller's transaction, if any); returns its id."""
    record_id = record.get("id") or _new_id()
    body = record_json({**record, "id": record_id})
    columns = OWN_TABLES.get(kind)
    if columns is None:
        conn.execute("INSERT INTO records (kind, id, body) VALUES (?, ?, ?)", (kind, record_id, body))
    else:
        placeholders = ", ".join("?" * len(columns))
        conn.execute(f"INSERT INTO {kind} (id, {', '.join(columns)}, body) VALUES (?, {placeholders}, ?)",
                     (record_id, *(record.get(c) for c in columns), body))
    return record_id


_mongo_counter = itertools.count()


def mongo_collection(kind: str) -> str:
    return f"records_{kind}"


def mongo_records(database, kind: str):
    """The collection of the records of ``kind``, its writes acknowledged by a majority with journal."""
    collection = database[mongo_collection(kind)]
    try:
        from pymongo import WriteConcern

        return collection.with_options(write_concern=WriteConcern(w="majority", j=True))
    except (ImportError, TypeError, AttributeError):  # mongomock accepts no write concern
        return collection


def insert_mongo_record(database, kind: str, record: dict[str, Any]) -> str:
    """Insert a record durably; returns its id (for MongoRecords, and for a backend's put)."""
    record_id = record.get("id") or _new_id()
    # Nanoseconds plus a counter: an order of insertion that survives restarts and several nodes.
    seq = time.time_ns() + next(_mongo_counter) % 1000
    mongo_records(database, kind).insert_one({**_parsed(record), "_id": record_id, "id": record_id, "seq": seq})
    return record_id


class SQLiteRecords(RecordStore):
    SCHEMA = """
    CREATE TABLE IF NOT EXISTS records (
        seq INTEGER PRIMARY KEY,
        kind TEXT NOT NULL,
        id TEXT NOT NULL UNIQUE,
        body TEXT NOT NULL
    );
    CREATE INDEX IF NOT EXISTS records_kind ON records(kind);
    """ + "".join(f"""
    CREATE TABLE IF NOT EXISTS {kind} (
        seq INTEGER PRIMARY KEY,
        id TEXT NOT NULL,
        {" TEXT, ".join(columns)} TEXT,
        body TEXT NOT NULL
    );
    CREATE INDEX IF NOT EXISTS {kind}_{columns[0]} ON {kind}({columns[0]});
    """ for kind, columns in OWN_TABLES.items())

    def __init__(self, db_path: Path) -> None:
        self.db_path = Path(db_path)
        self._conn = sqlite3.connect(db_path, isolation_level=None, check_same_thread=False, timeout=60)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=FULL")
        self._conn.executescript(self.SCHEMA)
        self._lock = threading.Lock()
        self._move_to_own_tables()

    def _move_to_own_tables(self) -> None:
        """Records written to the shared table before their kind had a table of its own."""
        for kind, columns in OWN_TABLES.items():
            if self._conn.execute("SELECT 1 FROM records WHERE kind = ? LIMIT 1", (kind,)).fetchone() is None:
                continue
            extracted = ", ".join(f"json_extract(body, '$.{c}')" for c in columns)
            with self._lock, write_transaction(self._conn) as conn:
                conn.execute(f"INSERT INTO {kind} (id, {', '.join(columns)}, body) SELECT id, "
                             f"{extracted}, body FROM records WHERE kind = ? ORDER BY seq", (kind,))
                conn.execute("DELETE FROM records WHERE kind = ?", (kind,))

    def _where(self, kind: str, equal: dict[str, Any]) -> tuple[str, list[Any]]:
        """FROM and WHERE of a query on records of ``kind`` whose fields equal ``equal``."""
        columns = OWN_TABLES.get(kind, ())
        sql, params = (f" FROM {kind} WHERE 1", []) if columns else (" FROM records WHERE kind = ?", [kind])
        for name, value in equal.items():
            sql += f" AND {name} = ?" if name in columns or name == "id" else f" AND json_extract(body, '$.{name}') = ?"
            params.append(value)
        return sql, params

    def insert(self, kind: str, record: dict[str, Any]) -> str:
        with self._lock:
            return insert_sqlite_record(self._conn, kind, record)

    def kept_with(self, backend: Any) -> bool:
        return getattr(backend, "db_path", None) == self.db_path

    def get(self, kind: str, record_id: str) -> dict[str, Any] | None:
        found = self.find(kind, id=record_id)
        return found[0] if found else None

    def find(self, kind: str, **equal: Any) -> list[dict[str, Any]]:
        where, params = self._where(kind, equal)
        with self._lock:
            rows = self._conn.execute(f"SELECT body, seq{where} ORDER BY seq", params).fetchall()
        return [{**json.loads(body), "seq": seq} for body, seq in rows]

    def update(self, kind: str, record_id: str, **fields: Any) -> bool:
        where, params = self._where(kind, {"id": record_id})
        with self._lock:
            row = self._conn.execute(f"SELECT seq, body{where}", params).fetchone()
            if row is None:
                return False
            body = {**json.loads(row[1]), **fields}
            columns = OWN_TABLES.get(kind, ())
            assignments = "".join(f", {c} = ?" for c in columns)  # the looked-up fields follow the body
            self._conn.execute(f"UPDATE {kind if columns else 'records'} SET body = ?{assignments} WHERE seq = ?",
                               (json.dumps(body), *(body.get(c) for c in columns), row[0]))
        return True

    def delete(self, kind: str, record_id: str) -> bool:
        where, params = self._where(kind, {"id": record_id})
        with self._lock:
            return self._conn.execute(f"DELETE{where}", params).rowcount > 0

    def close(self) -> None:
        self._conn.close()


class MongoRecords(RecordStore):
    """One collection per kind (``records_<kind>``), acknowledged by a majority with journal."""

    def __init__(self, database) -> None:
        self._db = database
        for kind, columns in OWN_TABLES.items():  # the kinds that grow with the archive, looked up by these
            database[mongo_collection(kind)].create_index(columns[0])

    def kept_with(self, backend: Any) -> bool:
        return getattr(backend, "database", None) is self._db

    def _collection(self, kind: str):
        return mongo_records(self._db, kind)

    def insert(self, kind: str, record: dict[str, Any]) -> str:
        return insert_mongo_record(self._db, kind, record)

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
