"""Small persistent records beside the instances: rule sets, provenance, the forward queue.

One tiny interface, two implementations: a table in the embedded store's SQLite file, or a MongoDB
collection per kind of record. Records are JSON-able dicts; each gets an ``id`` and a ``seq`` (insertion
order); filtering is by equality only. Most kinds are administrative data, a few thousand records at most;
provenance has a record per routed instance, and a table (a collection index) of its own: OWN_TABLES.
"""

from __future__ import annotations

import itertools
import json
import os
import sqlite3
import threading
import time
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, Sequence

from .sqlite_transaction import table_columns, write_transaction


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
    # 128 random bits (a uuid4 has 122): making the UUID object cost 11 us per routed instance in the store path.
    return os.urandom(16).hex()


# Kinds that grow with the archive (a provenance record per routed instance) have a SQLite table of their
# own, named after the kind, with the fields they are looked up by as columns (the first one indexed).
# In the shared table they cost every routed instance two more index pages in its commit, and a lookup
# read every record of the kind. Their ids (random, as everywhere) are not indexed: nothing looks these
# records up by id on the ingest path, and a lookup by another column than the first reads them all.
OWN_TABLES = {"provenance": ("sop_instance_uid", "received_sop_instance_uid")}

# A provenance record written together with its instance (``Backend.put``) goes into that instance's row of
# the embedded store (column ``instances.provenance``), not into the table: a row and an index entry of their
# own made every routed instance's commit write about three more database pages, a seventh of the routing
# overhead over DIMSE; the instance's row grows by one. It moves to the table when its instance's row goes
# (replaced, deleted). Records of this kind are read from both, ordered by their ``seq``, which for this kind
# is a time in nanoseconds (as on MongoDB), so that the two places interleave as they were written.
IN_INSTANCE_ROW = "provenance"


class JSONText(str):
    """A record's value given as its JSON text already (a provenance record's changes, whose parts are
    encoded once per process): written into the body as it is, parsed for MongoDB."""


def record_json(record: dict[str, Any], **extra: Any) -> str:
    """The JSON text of a record whose values may be JSONText, with ``extra`` fields (its id, its seq) added."""
    plain, given = {}, []
    for key, value in record.items():
        if type(value) is JSONText:
            given += (", ", json.dumps(key), ": ", value)
        else:
            plain[key] = value
    plain.update(extra)
    text = json.dumps(plain)
    if not given:
        return text
    if not plain:
        given[0] = ""  # no field before the first given one: no comma
    return "".join([text[:-1], *given, "}"])  # one copy of the given texts (a provenance record's changes: 3 KB)


def _parsed(record: dict[str, Any]) -> dict[str, Any]:
    return {key: json.loads(value) if type(value) is JSONText else value for key, value in record.items()}


def insert_sqlite_record(conn: sqlite3.Connection, kind: str, record: dict[str, Any]) -> str:
    """Insert a record through ``conn`` (within the caller's transaction, if any); returns its id."""
    record_id = record.get("id") or _new_id()
    columns = OWN_TABLES.get(kind)
    if columns is None:
        conn.execute("INSERT INTO records (kind, id, body) VALUES (?, ?, ?)",
                     (kind, record_id, record_json(record, id=record_id)))
        return record_id
    if kind == IN_INSTANCE_ROW:
        seq, body = _sequenced_body(record, record_id)
        # Later than every seq of the table too: its primary key, unique across the processes writing to it.
        seq_sql = f"max(?, (SELECT coalesce(max(seq), 0) + 1 FROM {kind}))"
    else:
        seq, body, seq_sql = None, record_json(record, id=record_id), "?"
    placeholders = ", ".join("?" * len(columns))
    conn.execute(f"INSERT INTO {kind} (seq, id, {', '.join(columns)}, body) VALUES ({seq_sql}, ?, {placeholders}, ?)",
                 (seq, record_id, *(record.get(c) for c in columns), body))
    return record_id


def instance_row_body(record: dict[str, Any]) -> str:
    """The JSON text of a record of IN_INSTANCE_ROW kept in its instance's row, with its id and seq."""
    return _sequenced_body(record, record.get("id") or _new_id())[1]


def _sequenced_body(record: dict[str, Any], record_id: str) -> tuple[int, str]:
    """A record of IN_INSTANCE_ROW given its id and a seq: the seq, and its JSON text."""
    seq = next_seq()
    return seq, record_json(record, id=record_id, seq=seq)


_last_seq = 0
_seq_lock = threading.Lock()


def next_seq() -> int:
    """A time in nanoseconds, later than the last one given in this process."""
    global _last_seq
    with _seq_lock:
        _last_seq = max(time.time_ns(), _last_seq + 1)
        return _last_seq


def move_from_instance_rows(conn: sqlite3.Connection, where: str, params: Sequence[Any] = ()) -> None:
    """Move the records kept in the rows of the instances ``where`` selects to their table (the instance is
    going, or the record changing), within the caller's transaction."""
    columns = OWN_TABLES[IN_INSTANCE_ROW]
    record = IN_INSTANCE_ROW
    fields = ", ".join(f"json_extract({record}, '$.{c}')" for c in columns)
    conn.execute(
        f"INSERT INTO {record} (seq, id, {', '.join(columns)}, body)"
        # its seq, unless the table has it already (then the next one)
        f" SELECT CASE WHEN EXISTS (SELECT 1 FROM {record} WHERE seq = json_extract(i.{record}, '$.seq')) THEN NULL"
        f" ELSE json_extract(i.{record}, '$.seq') END, json_extract({record}, '$.id'), {fields}, {record}"
        f" FROM instances AS i WHERE {record} IS NOT NULL AND {where}", params)
    conn.execute(f"UPDATE instances SET {record} = NULL WHERE {record} IS NOT NULL AND {where}", params)


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
        self._instance_rows = False
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

    def _in_instance_rows(self, kind: str) -> bool:
        """Whether records of ``kind`` may be kept in the rows of instances (see IN_INSTANCE_ROW): the file
        holds an archive's instances, not only records."""
        if kind != IN_INSTANCE_ROW:
            return False
        if not self._instance_rows:
            self._instance_rows = IN_INSTANCE_ROW in table_columns(self._conn, "instances")  # once there, it stays
        return self._instance_rows

    @staticmethod
    def _where_in_instance_rows(equal: dict[str, Any]) -> tuple[str, list[Any]]:
        """FROM and WHERE of a query on the records kept in the rows of instances."""
        sql, params = f" FROM instances WHERE {IN_INSTANCE_ROW} IS NOT NULL", []
        for name, value in equal.items():
            # The instance's own column (indexed) holds the record's sop_instance_uid: kept there only then.
            sql += " AND sop_instance_uid = ?" if name == "sop_instance_uid" else \
                f" AND json_extract({IN_INSTANCE_ROW}, '$.{name}') = ?"
            params.append(value)
        return sql, params

    def find(self, kind: str, **equal: Any) -> list[dict[str, Any]]:
        where, params = self._where(kind, equal)
        sql = f"SELECT body, seq{where}"
        if self._in_instance_rows(kind):
            in_rows, more = self._where_in_instance_rows(equal)
            sql += f" UNION ALL SELECT {IN_INSTANCE_ROW}, json_extract({IN_INSTANCE_ROW}, '$.seq'){in_rows}"
            params = params + more
        with self._lock:
            rows = self._conn.execute(f"{sql} ORDER BY 2", params).fetchall()
        return [{**json.loads(body), "seq": seq} for body, seq in rows]

    def update(self, kind: str, record_id: str, **fields: Any) -> bool:
        where, params = self._where(kind, {"id": record_id})
        with self._lock, write_transaction(self._conn) as conn:  # read and written as one
            if self._in_instance_rows(kind):  # changed, it is no longer what was written with the instance
                in_rows, more = self._where_in_instance_rows({"id": record_id})
                move_from_instance_rows(conn, f"id IN (SELECT id{in_rows})", more)
            row = conn.execute(f"SELECT seq, body{where}", params).fetchone()
            if row is None:
                return False
            body = {**json.loads(row[1]), **fields}
            columns = OWN_TABLES.get(kind, ())
            assignments = "".join(f", {c} = ?" for c in columns)  # the looked-up fields follow the body
            conn.execute(f"UPDATE {kind if columns else 'records'} SET body = ?{assignments} WHERE seq = ?",
                         (json.dumps(body), *(body.get(c) for c in columns), row[0]))
        return True

    def delete(self, kind: str, record_id: str) -> bool:
        where, params = self._where(kind, {"id": record_id})
        with self._lock:
            deleted = self._conn.execute(f"DELETE{where}", params).rowcount
            if self._in_instance_rows(kind):
                in_rows, more = self._where_in_instance_rows({"id": record_id})
                deleted += self._conn.execute(f"UPDATE instances SET {IN_INSTANCE_ROW} = NULL WHERE id IN "
                                              f"(SELECT id{in_rows})", more).rowcount
            return deleted > 0

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
