"""The embedded backend: SQLite in WAL mode, documents as JSON, expression indexes on chosen attributes.

Layout of ``<data_dir>``:
- ``dopamine.sqlite``: tables ``instances`` (keys + document, and the provenance record written with the
  instance: see records.IN_INSTANCE_ROW), ``summaries`` (the patient, study and series
  attributes of the instances, one row per series as a rule: see ``SUMMARY_TAGS``), ``originals`` (original
  bytes of instances whose stored document fits MongoDB's 16 MiB limit), ``superseded`` (versions displaced
  by the duplicate policy), ``peers``;
- ``blobs/``: original bytes of the larger instances, one file each (MongoDB keeps those in GridFS).

Durability: ``synchronous=FULL`` and files fsync'ed before the row that names them is committed, so a
store acknowledged to a sender survives a crash of the process or of the machine.
"""

from __future__ import annotations

import base64
import contextlib
import errno
import io
import json
import logging
import os
import queue
import sqlite3
import threading
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, BinaryIO, Iterator, Sequence

from ..document import PN_GROUPS, parse_tag, single_valued, tag_key, vr_for_tag
from ..matching import Query, fold
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
from .records import IN_INSTANCE_ROW, SQLiteRecords, insert_sqlite_record, instance_row_body, move_from_instance_rows
from .sqlite_query import FOLD_FUNCTION, compile_query, first_value_expr, split_query
from .sqlite_transaction import table_columns, write_transaction

log = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS instances (
    id INTEGER PRIMARY KEY,
    sop_instance_uid TEXT NOT NULL UNIQUE,
    sop_class_uid TEXT NOT NULL,
    patient_id TEXT NOT NULL,
    study_instance_uid TEXT NOT NULL,
    series_instance_uid TEXT NOT NULL,
    modality TEXT NOT NULL,
    transfer_syntax_uid TEXT NOT NULL,
    size INTEGER NOT NULL,
    sha256 TEXT NOT NULL,
    received_at TEXT NOT NULL,
    source TEXT NOT NULL,
    blob_path TEXT,               -- NULL: the original is in table originals
    doc TEXT NOT NULL,
    summary_id INTEGER NOT NULL,  -- summaries.id
    provenance TEXT               -- the provenance record written with it (records.IN_INSTANCE_ROW), or NULL
);
-- One row per distinct (keys, elements of SUMMARY_TAGS) among the stored instances: one per series when
-- its instances agree, as they should. Kept in the transaction that adds or removes an instance.
CREATE TABLE IF NOT EXISTS summaries (
    id INTEGER PRIMARY KEY,
    patient_id TEXT NOT NULL,
    study_instance_uid TEXT NOT NULL,
    series_instance_uid TEXT NOT NULL,
    modality TEXT NOT NULL,
    sop_class_uid TEXT NOT NULL,
    doc TEXT NOT NULL,            -- the instances' elements of SUMMARY_TAGS
    n_instances INTEGER NOT NULL,
    first_id INTEGER NOT NULL     -- the lowest instances.id among them
);
CREATE INDEX IF NOT EXISTS summaries_patient ON summaries(patient_id);
CREATE INDEX IF NOT EXISTS summaries_study ON summaries(study_instance_uid);
CREATE INDEX IF NOT EXISTS summaries_series ON summaries(series_instance_uid);
CREATE INDEX IF NOT EXISTS instances_study ON instances(study_instance_uid);
CREATE INDEX IF NOT EXISTS instances_series ON instances(series_instance_uid);
CREATE TABLE IF NOT EXISTS originals (
    instance_id INTEGER PRIMARY KEY REFERENCES instances(id) ON DELETE CASCADE,
    data BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS superseded (
    id INTEGER PRIMARY KEY,
    sop_instance_uid TEXT NOT NULL,
    reason TEXT NOT NULL,
    at TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    doc TEXT NOT NULL,
    blob_path TEXT,
    data BLOB
);
CREATE INDEX IF NOT EXISTS superseded_sop ON superseded(sop_instance_uid);
CREATE TABLE IF NOT EXISTS peers (
    aet TEXT PRIMARY KEY,
    host TEXT NOT NULL,
    port INTEGER NOT NULL
);
"""

# Tags with a column of their own: the compiler reads the column, which has a plain index.
KEY_COLUMNS = {
    0x00100020: "patient_id",
    0x0020000D: "study_instance_uid",
    0x0020000E: "series_instance_uid",
    0x00080018: "sop_instance_uid",
    0x00080016: "sop_class_uid",
    0x00080060: "modality",
}
SUMMARY_COLUMNS = {tag: column for tag, column in KEY_COLUMNS.items() if tag != 0x00080018}

# The attributes of the patient, the study and the series (PS3.3 Patient, Patient Study, General Study,
# General Series and General Equipment modules, PS3.4 C.6.1.1.2 to C.6.1.1.4), copied into the summaries.
# A condition on them is evaluated on the summaries, a few rows per series, instead of on every instance;
# being exact, the copy makes no assumption that a series' instances agree: those that disagree make more
# summaries. Attributes that vary within a series would only make that table as long as the instances one.
SUMMARY_KEYWORDS = """
    PatientName PatientID IssuerOfPatientID IssuerOfPatientIDQualifiersSequence TypeOfPatientID PatientBirthDate
    PatientBirthTime PatientSex OtherPatientIDs OtherPatientIDsSequence OtherPatientNames PatientBirthName
    PatientMotherBirthName EthnicGroup PatientComments PatientSpeciesDescription PatientBreedDescription
    ResponsiblePerson ResponsibleOrganization PatientIdentityRemoved DeidentificationMethod
    DeidentificationMethodCodeSequence QualityControlSubject PatientAge PatientSize PatientWeight Occupation
    AdditionalPatientHistory AdmittingDiagnosesDescription MedicalAlerts Allergies SmokingStatus PregnancyStatus
    StudyInstanceUID StudyDate StudyTime ReferringPhysicianName StudyID AccessionNumber IssuerOfAccessionNumberSequence
    StudyDescription PhysiciansOfRecord NameOfPhysiciansReadingStudy ProcedureCodeSequence ReferencedStudySequence
    RequestingPhysician RequestedProcedureDescription
    Modality SeriesInstanceUID SeriesNumber Laterality SeriesDate SeriesTime PerformingPhysicianName ProtocolName
    SeriesDescription OperatorsName BodyPartExamined PatientPosition PerformedProcedureStepStartDate
    PerformedProcedureStepStartTime PerformedProcedureStepID PerformedProcedureStepDescription RequestAttributesSequence
    Manufacturer InstitutionName StationName ManufacturerModelName InstitutionalDepartmentName DeviceSerialNumber
    SoftwareVersions SOPClassUID
""".split()
SUMMARY_TAGS = frozenset(parse_tag(k) for k in SUMMARY_KEYWORDS)
_SUMMARY_KEYS = sorted(tag_key(t) for t in SUMMARY_TAGS)


def _json_default(value: Any) -> Any:
    # SQLite's JSON cannot hold bytes: small binary values become the standard's Base64 InlineBinary.
    if isinstance(value, (bytes, bytearray)):
        return base64.b64encode(value).decode("ascii")
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


def dump_document(doc: dict[str, Any]) -> str:
    return json.dumps(doc, ensure_ascii=False, separators=(",", ":"), default=_json_default)


def _binary_back(obj: dict[str, Any]) -> dict[str, Any]:
    inline = obj.get("InlineBinary")
    if isinstance(inline, str) and "vr" in obj:
        obj["InlineBinary"] = base64.b64decode(inline)
    return obj


def summary_of(doc: dict[str, Any]) -> str:
    """The JSON text of the summary elements of a document (as stored or as loaded back: the same text)."""
    return dump_document({key: doc[key] for key in _SUMMARY_KEYS if key in doc})


def load_document(text: str) -> dict[str, Any]:
    """A document as the archive handed it over: InlineBinary values are bytes again."""
    if '"InlineBinary"' not in text:
        return json.loads(text)  # no per-object hook for the many documents without a binary value
    return json.loads(text, object_hook=_binary_back)


def _record_for_row(extra_records: Sequence[tuple[str, dict[str, Any]]], sop_instance_uid: str):
    """The (kind, record) of ``extra_records`` kept in the row of the instance stored with them, if any: the
    first of kind IN_INSTANCE_ROW about that very instance."""
    for entry in extra_records:
        if entry[0] == IN_INSTANCE_ROW and entry[1].get("sop_instance_uid") == sop_instance_uid:
            return entry
    return None


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat()


class SQLiteBackend(Backend):
    name = "embedded"

    def __init__(self, data_dir: Path, indexed_attributes: list[str] = ()) -> None:
        self.data_dir = Path(data_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.blob_dir = self.data_dir / "blobs"
        self.blob_dir.mkdir(exist_ok=True)
        self.db_path = self.data_dir / "dopamine.sqlite"
        # One writer, serialized by a lock (SQLite has one writer anyway); readers from a pool, because
        # every DIMSE association is a new thread and per-thread connections would pile up.
        self._write_lock = threading.Lock()
        self._writer = self._connect()
        self._readers: queue.SimpleQueue[sqlite3.Connection] = queue.SimpleQueue()
        self._all: list[sqlite3.Connection] = [self._writer]
        self._all_lock = threading.Lock()
        # The records' tables too: an instance's row going moves the record it keeps to theirs.
        self._writer.executescript(SCHEMA + SQLiteRecords.SCHEMA)
        self._add_summaries(self._writer)
        self._add_provenance_column(self._writer)
        self._create_attribute_indexes(self._writer, indexed_attributes)

    # ------------------------------------------------------------------------------------------ plumbing

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.db_path, isolation_level=None, check_same_thread=False, timeout=60)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA foreign_keys=ON")
        conn.create_function(FOLD_FUNCTION, 1, lambda s: fold(s) if isinstance(s, str) else s, deterministic=True)
        return conn

    @contextlib.contextmanager
    def _reader(self) -> Iterator[sqlite3.Connection]:
        try:
            conn = self._readers.get_nowait()
        except queue.Empty:
            conn = self._connect()
            with self._all_lock:
                self._all.append(conn)
        try:
            yield conn
        finally:
            self._readers.put(conn)

    def _read(self, sql: str, params=()) -> list[tuple]:
        with self._reader() as conn:
            return conn.execute(sql, params).fetchall()

    def _add_summaries(self, conn: sqlite3.Connection) -> None:
        """Give a store made before the summaries existed its summaries (once, in one transaction)."""
        with write_transaction(conn):  # another process opening the same store waits, then finds it done
            if "summary_id" not in table_columns(conn, "instances"):
                log.warning("adding patient, study and series summaries to %s (once)", self.db_path)
                conn.execute("ALTER TABLE instances ADD COLUMN summary_id INTEGER NOT NULL DEFAULT 0")
                rows = conn.execute("SELECT id, patient_id, study_instance_uid, series_instance_uid, modality,"
                                    " sop_class_uid, doc FROM instances ORDER BY id").fetchall()
                for instance_id, *keys, doc_json in rows:
                    summary_id = self._summary_id(conn, *keys, summary_of(json.loads(doc_json)))
                    self._count_in_summary(conn, summary_id, instance_id)
                    conn.execute("UPDATE instances SET summary_id = ? WHERE id = ?", (summary_id, instance_id))
                # Conditions on these columns are answered by the summaries now.
                for name in ("instances_patient", "instances_modality", "instances_sop_class"):
                    conn.execute(f"DROP INDEX IF EXISTS {name}")
            conn.execute("CREATE INDEX IF NOT EXISTS instances_summary ON instances(summary_id)")

    @staticmethod
    def _add_provenance_column(conn: sqlite3.Connection) -> None:
        with write_transaction(conn):
            if IN_INSTANCE_ROW not in table_columns(conn, "instances"):
                conn.execute(f"ALTER TABLE instances ADD COLUMN {IN_INSTANCE_ROW} TEXT")

    def _create_attribute_indexes(self, conn: sqlite3.Connection, keywords: list[str]) -> None:
        for keyword in keywords:
            tag = parse_tag(keyword)
            if tag in KEY_COLUMNS:
                continue
            if not single_valued(tag):
                log.warning("not indexing %s: only attributes of VM 1 get an expression index", keyword)
                continue
            # A summary attribute is matched on the summaries; an index on the instances would cost every
            # insert a parse of the document and serve no query (stores made before the summaries had them).
            table = "summaries" if tag in SUMMARY_TAGS else "instances"
            # A name without "=" matches any component group: each needs its index for the OR to use them.
            members = [f".{g}" for g in PN_GROUPS] if vr_for_tag(tag) == "PN" else [""]
            for member in members:
                name = f"attr_{tag:08X}{member.replace('.', '_')}"
                expr = first_value_expr("doc", tag, member)
                if table == "summaries":
                    conn.execute(f"DROP INDEX IF EXISTS {name}")
                    name = f"summary_{name}"
                conn.execute(f"CREATE INDEX IF NOT EXISTS {name} ON {table}({expr})")

    def close(self) -> None:
        with self._all_lock:
            for conn in self._all:
                conn.close()
            self._all.clear()

    # ----------------------------------------------------------------------------------------------- put

    def put(self, record: InstanceRecord, original: Original, policy: DuplicatePolicy,
            extra_records: Sequence[tuple[str, dict[str, Any]]] = (), *,
            when_stored: Sequence[tuple[str, dict[str, Any]]] = (), sync: bool = True) -> PutOutcome:
        conn = self._writer
        doc_json = dump_document(record.document)
        summary_json = summary_of(record.document)
        inline = fits_inline(record, original.size)
        with self._write_lock:
            existing = conn.execute(
                "SELECT id, sha256 FROM instances WHERE sop_instance_uid = ?", (record.sop_instance_uid,)
            ).fetchone()
            identical = existing is not None and existing[1] == record.sha256
            if identical and not extra_records:
                return PutOutcome.IDENTICAL_DUPLICATE
            if existing and not identical and policy == DuplicatePolicy.REJECT:
                return PutOutcome.REJECTED_DUPLICATE
            blob_path = None if inline or identical else self._place_blob(record, original)
            data = original.read() if inline and not identical else None
            try:
                if not sync:
                    # Written to the WAL, its fsync left to sync(): FULL would flush it at this commit.
                    conn.execute("PRAGMA synchronous=NORMAL")
                conn.execute("BEGIN IMMEDIATE")
                if identical:
                    outcome = PutOutcome.IDENTICAL_DUPLICATE
                elif existing and policy == DuplicatePolicy.KEEP_FIRST:
                    self._insert_superseded(conn, record.sop_instance_uid, "duplicate kept aside (keep-first)",
                                            record.sha256, doc_json, blob_path, data)
                    outcome = PutOutcome.KEPT_FIRST
                else:
                    if existing:
                        self._supersede_existing(conn, existing[0], "replaced by a newer version (replace)")
                    in_row = _record_for_row(extra_records, record.sop_instance_uid)
                    if in_row is not None:
                        extra_records = [r for r in extra_records if r is not in_row]
                    self._insert_instance(conn, record, doc_json, summary_json, blob_path, data,
                                          instance_row_body(in_row[1]) if in_row is not None else None)
                    outcome = PutOutcome.REPLACED if existing else PutOutcome.STORED
                for kind, body in (*extra_records, *(when_stored if outcome in STORED_OUTCOMES else ())):
                    insert_sqlite_record(conn, kind, body)
                conn.execute("COMMIT")
            except sqlite3.OperationalError as exc:
                conn.execute("ROLLBACK") if conn.in_transaction else None
                if blob_path:
                    (self.data_dir / blob_path).unlink(missing_ok=True)
                if "full" in str(exc).lower():
                    raise StorageFull(errno.ENOSPC, str(exc)) from exc
                raise OSError(errno.EIO, f"database write failed: {exc}") from exc
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                if blob_path:
                    (self.data_dir / blob_path).unlink(missing_ok=True)
                raise
            finally:
                if not sync:
                    conn.execute("PRAGMA synchronous=FULL")
        return outcome

    def sync(self) -> None:
        """fsync the write-ahead log: the commits made with ``sync=False`` are in it (a checkpoint that moved
        them into the database file synced that file first), so they are now as durable as with FULL."""
        with self._write_lock:
            try:
                fd = os.open(f"{self.db_path}-wal", os.O_RDONLY)
            except FileNotFoundError:
                return
            try:
                os.fsync(fd)
            finally:
                os.close(fd)

    def _place_blob(self, record: InstanceRecord, original: Original) -> str:
        """Put a large original under blobs/, durably, and return its path relative to the data dir."""
        relative = Path("blobs") / record.sha256[:2] / f"{record.sop_instance_uid}-{record.sha256[:16]}.dcm"
        target = self.data_dir / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            if original.owned and original.path.stat().st_dev == self.data_dir.stat().st_dev:
                with open(original.path, "rb") as f:
                    os.fsync(f.fileno())
                os.replace(original.path, target)
            else:
                tmp = target.with_suffix(".tmp")
                with original.open() as src, open(tmp, "wb") as dst:
                    for chunk in iter(lambda: src.read(1 << 20), b""):
                        dst.write(chunk)
                    dst.flush()
                    os.fsync(dst.fileno())
                os.replace(tmp, target)
            _fsync_dir(target.parent)
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise StorageFull(exc.errno, f"no space left for {record.sop_instance_uid}") from exc
            raise
        return str(relative)

    def _insert_instance(self, conn, record: InstanceRecord, doc_json: str, summary_json: str,
                         blob_path: str | None, data: bytes | None, provenance: str | None = None) -> None:
        summary_id = self._summary_id(conn, record.patient_id, record.study_instance_uid, record.series_instance_uid,
                                      record.modality, record.sop_class_uid, summary_json)
        cur = conn.execute(
            "INSERT INTO instances (sop_instance_uid, sop_class_uid, patient_id, study_instance_uid, "
            "series_instance_uid, modality, transfer_syntax_uid, size, sha256, received_at, source, blob_path, doc, "
            f"summary_id, {IN_INSTANCE_ROW}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (record.sop_instance_uid, record.sop_class_uid, record.patient_id, record.study_instance_uid,
             record.series_instance_uid, record.modality, record.transfer_syntax_uid, record.size, record.sha256,
             record.received_at, json.dumps(record.source), blob_path, doc_json, summary_id, provenance),
        )
        self._count_in_summary(conn, summary_id, cur.lastrowid)
        if data is not None:
            conn.execute("INSERT INTO originals (instance_id, data) VALUES (?, ?)", (cur.lastrowid, data))

    @staticmethod
    def _summary_id(conn, patient_id: str, study: str, series: str, modality: str, sop_class: str,
                    summary_json: str) -> int:
        """The summary of an instance with these keys and summary elements; made (counting none) if new."""
        row = conn.execute(
            "SELECT id FROM summaries WHERE series_instance_uid = ? AND patient_id = ? AND study_instance_uid = ?"
            " AND modality = ? AND sop_class_uid = ? AND doc = ?",
            (series, patient_id, study, modality, sop_class, summary_json),
        ).fetchone()
        if row is not None:
            return row[0]
        return conn.execute(
            "INSERT INTO summaries (patient_id, study_instance_uid, series_instance_uid, modality, sop_class_uid, doc,"
            " n_instances, first_id) VALUES (?,?,?,?,?,?,0,0)", (patient_id, study, series, modality, sop_class, summary_json)
        ).lastrowid

    @staticmethod
    def _count_in_summary(conn, summary_id: int, instance_id: int) -> None:
        conn.execute("UPDATE summaries SET first_id = CASE WHEN n_instances = 0 THEN ?1 ELSE MIN(first_id, ?1) END,"
                     " n_instances = n_instances + 1 WHERE id = ?2", (instance_id, summary_id))

    @staticmethod
    def _delete_instance_row(conn, instance_id: int) -> None:
        """Delete an instance (its original with it: ON DELETE CASCADE) and uncount it from its summary."""
        (summary_id,) = conn.execute("SELECT summary_id FROM instances WHERE id = ?", (instance_id,)).fetchone()
        move_from_instance_rows(conn, "id = ?", (instance_id,))  # the record of what routing did outlives it
        conn.execute("DELETE FROM instances WHERE id = ?", (instance_id,))
        conn.execute(
            "UPDATE summaries SET n_instances = n_instances - 1,"
            " first_id = (SELECT coalesce(MIN(id), 0) FROM instances WHERE summary_id = summaries.id) WHERE id = ?",
            (summary_id,))
        conn.execute("DELETE FROM summaries WHERE id = ? AND n_instances = 0", (summary_id,))

    def _insert_superseded(self, conn, sop_uid, reason, sha256, doc_json, blob_path, data) -> None:
        conn.execute(
            "INSERT INTO superseded (sop_instance_uid, reason, at, sha256, doc, blob_path, data) VALUES (?,?,?,?,?,?,?)",
            (sop_uid, reason, _now(), sha256, doc_json, blob_path, data),
        )

    def _supersede_existing(self, conn, instance_id: int, reason: str) -> None:
        sop_uid, sha256, doc_json, blob_path = conn.execute(
            "SELECT sop_instance_uid, sha256, doc, blob_path FROM instances WHERE id = ?", (instance_id,)
        ).fetchone()
        row = conn.execute("SELECT data FROM originals WHERE instance_id = ?", (instance_id,)).fetchone()
        self._insert_superseded(conn, sop_uid, reason, sha256, doc_json, blob_path, row[0] if row else None)
        self._delete_instance_row(conn, instance_id)

    # --------------------------------------------------------------------------------------------- query

    def _where(self, query: Query) -> tuple[str, list[Any]]:
        """The WHERE clause over instances; the conditions on summary attributes select summaries."""
        on_summaries, rest = split_query(query, SUMMARY_TAGS)
        if not on_summaries.conditions:
            return compile_query(rest, "doc", KEY_COLUMNS)
        sql, params = compile_query(on_summaries, "doc", SUMMARY_COLUMNS)
        where = f"summary_id IN (SELECT id FROM summaries WHERE {sql})"
        if rest.conditions:
            rest_sql, rest_params = compile_query(rest, "doc", KEY_COLUMNS)
            where, params = f"{where} AND ({rest_sql})", params + rest_params
        return where, params

    def _groups(self, level: Level, query: Query, having: Query | None) -> tuple[str, str, list[Any]]:
        """The table to group (summaries when every condition is on them), and its WHERE clause."""
        key = LEVEL_KEY[level]
        if key in SUMMARY_COLUMNS.values() and not split_query(query, SUMMARY_TAGS)[1].conditions:
            table, (where, params) = "summaries", compile_query(query, "doc", SUMMARY_COLUMNS)
        else:
            table, (where, params) = "instances", self._where(query)
        if having is not None and having.constraining:
            having_table, having_sql, having_params = self._groups(level, having, None)
            where = f"({where}) AND {key} IN (SELECT {key} FROM {having_table} WHERE {having_sql})"
            params = params + having_params
        return table, where, params

    def find(self, level: Level, query: Query, having: Query | None = None,
             limit: int | None = None, offset: int = 0) -> list[Found]:
        key = LEVEL_KEY[level]
        table, where, params = self._groups(level, query, having)
        page = " LIMIT ? OFFSET ?" if limit is not None or offset else ""
        page_params = [-1 if limit is None else limit, offset] if page else []
        first, n_instances = ("MIN(first_id)", "SUM(n_instances)") if table == "summaries" else ("MIN(id)", "COUNT(*)")
        sql = (
            "SELECT i.doc, g.n_instances, g.n_series, g.n_studies, g.modalities, g.sop_classes FROM ("
            f" SELECT {key} AS k, {first} AS first_id, {n_instances} AS n_instances,"
            " COUNT(DISTINCT series_instance_uid) AS n_series, COUNT(DISTINCT study_instance_uid) AS n_studies,"
            " group_concat(DISTINCT NULLIF(modality, '')) AS modalities,"
            " group_concat(DISTINCT sop_class_uid) AS sop_classes"
            f" FROM {table} WHERE {where} GROUP BY {key} ORDER BY {key}{page}"
            ") AS g JOIN instances AS i ON i.id = g.first_id ORDER BY g.k"
        )
        rows = self._read(sql, params + page_params)
        return [
            Found(load_document(doc), n_inst, n_series, n_studies,
                  sorted(modalities.split(",")) if modalities else [], sorted(classes.split(",")) if classes else [])
            for doc, n_inst, n_series, n_studies, modalities, classes in rows
        ]

    def count(self, level: Level, query: Query, having: Query | None = None) -> int:
        key = LEVEL_KEY[level]
        table, where, params = self._groups(level, query, having)
        return self._read(f"SELECT COUNT(DISTINCT {key}) FROM {table} WHERE {where}", params)[0][0]

    def instances(self, query: Query) -> Iterator[StoredInstance]:
        where, params = self._where(query)
        rows = self._read(
            "SELECT sop_instance_uid, sop_class_uid, study_instance_uid, series_instance_uid, transfer_syntax_uid, size"
            f" FROM instances WHERE {where} ORDER BY study_instance_uid, series_instance_uid, sop_instance_uid",
            params,
        )
        for row in rows:
            yield StoredInstance(*row)

    def open_original(self, sop_instance_uid: str) -> BinaryIO:
        rows = self._read(
            "SELECT i.blob_path, o.data FROM instances AS i LEFT JOIN originals AS o ON o.instance_id = i.id"
            " WHERE i.sop_instance_uid = ?",
            (sop_instance_uid,),
        )
        if not rows:
            raise KeyError(sop_instance_uid)
        blob_path, data = rows[0]
        return io.BytesIO(data) if blob_path is None else open(self.data_dir / blob_path, "rb")

    def get_document(self, sop_instance_uid: str) -> dict[str, Any] | None:
        rows = self._read("SELECT doc FROM instances WHERE sop_instance_uid = ?", (sop_instance_uid,))
        return load_document(rows[0][0]) if rows else None

    def get_documents(self, sop_instance_uids: list[str]) -> dict[str, dict[str, Any]]:
        return {uid: load_document(text) for uid, text in self.get_document_texts(sop_instance_uids).items()}

    def get_document_texts(self, sop_instance_uids: list[str]) -> dict[str, str]:
        """The stored documents as the JSON text of ``dump_document`` (small binary values in Base64), for
        readers that can use the text as it is (DICOMweb metadata)."""
        found = {}
        for start in range(0, len(sop_instance_uids), 500):  # under SQLite's limit on parameters
            batch = sop_instance_uids[start:start + 500]
            marks = ",".join("?" * len(batch))
            found.update(self._read(f"SELECT sop_instance_uid, doc FROM instances WHERE sop_instance_uid IN ({marks})", batch))
        return found

    def storage_of(self, sop_instance_uid: str) -> str:
        """'inline' or 'file': where the original bytes of an instance are (for tests and diagnostics)."""
        rows = self._read("SELECT blob_path FROM instances WHERE sop_instance_uid = ?", (sop_instance_uid,))
        if not rows:
            raise KeyError(sop_instance_uid)
        return "inline" if rows[0][0] is None else "file"

    def delete_instance(self, sop_instance_uid: str) -> bool:
        conn = self._writer
        with self._write_lock:
            row = conn.execute("SELECT id, blob_path FROM instances WHERE sop_instance_uid = ?",
                               (sop_instance_uid,)).fetchone()
            if row is None:
                return False
            with write_transaction(conn):
                self._delete_instance_row(conn, row[0])
            blob_path = row[1]
            if blob_path and not conn.execute("SELECT 1 FROM superseded WHERE blob_path = ?", (blob_path,)).fetchone():
                (self.data_dir / blob_path).unlink(missing_ok=True)
        return True

    def superseded_versions(self, sop_instance_uid: str) -> list[dict[str, Any]]:
        rows = self._read(
            "SELECT sha256, reason, at FROM superseded WHERE sop_instance_uid = ? ORDER BY id", (sop_instance_uid,)
        )
        return [{"sha256": s, "reason": r, "at": a} for s, r, a in rows]

    # --------------------------------------------------------------------------------------------- peers

    def put_peer(self, aet: str, host: str, port: int) -> None:
        with self._write_lock:
            self._writer.execute(
                "INSERT INTO peers (aet, host, port) VALUES (?, ?, ?) "
                "ON CONFLICT(aet) DO UPDATE SET host = excluded.host, port = excluded.port",
                (aet, host, port),
            )

    def get_peer(self, aet: str) -> dict[str, Any] | None:
        rows = self._read("SELECT aet, host, port FROM peers WHERE aet = ?", (aet,))
        return {"aet": rows[0][0], "host": rows[0][1], "port": rows[0][2]} if rows else None

    def list_peers(self) -> list[dict[str, Any]]:
        rows = self._read("SELECT aet, host, port FROM peers ORDER BY aet")
        return [{"aet": a, "host": h, "port": p} for a, h, p in rows]

    def remove_peer(self, aet: str) -> bool:
        with self._write_lock:
            return self._writer.execute("DELETE FROM peers WHERE aet = ?", (aet,)).rowcount > 0
