"""The archive service: one ingest path, one query path and one retrieve path for every protocol.

DIMSE, DICOMweb, ``dopamine import`` and the Bruker converter all call this module; protocol code only
translates requests and statuses.
"""

from __future__ import annotations

import dataclasses
import io
import logging
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterator

from pydicom import dcmread
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset, FileDataset
from pydicom.errors import InvalidDicomError
from pydicom.filereader import read_dataset
from pydicom.uid import UID

from routing.encoding import encode_routed

from . import part10, raw_values
from .document import DocumentOptions, first_value, tag_key, to_document
from .matching import Either, Query, QueryError, Universal
from .router import PROVENANCE, RuleApplicationError, provenance_record
from .storage.base import (
    Backend,
    DuplicatePolicy,
    Found,
    InstanceRecord,
    Level,
    Original,
    PutOutcome,
    StorageFull,
    StoredInstance,
)

log = logging.getLogger("dopamine.archive")

# DIMSE statuses the ingest path can produce (PS3.4 B.2.3, PS3.7 C).
SUCCESS = 0x0000
DUPLICATE_SOP_INSTANCE = 0x0111
NOT_AUTHORIZED = 0x0124
REFUSED = 0x0124  # a routing rule refused it: the archive's policy, like an access right
QUARANTINE = "quarantine"  # record kind of the quarantine list
OUTSIDE_STORE_RIGHTS = "not authorized: the data set matches none of the sender's Store rules"
OUT_OF_RESOURCES = 0xA700
DATA_SET_DOES_NOT_MATCH = 0xA900
CANNOT_UNDERSTAND = 0xC000

# Files up to this size are read once into memory; larger ones are parsed in place and streamed.
IN_MEMORY_LIMIT = 16 * 1024 * 1024

REQUIRED_UIDS = {
    "SOPClassUID": 0x00080016,
    "SOPInstanceUID": 0x00080018,
    "StudyInstanceUID": 0x0020000D,
    "SeriesInstanceUID": 0x0020000E,
}

# Computed attributes (PS3.4 C.3.4): returned by the archive, never stored in a document.
COMPUTED = {
    0x00201200: "NumberOfPatientRelatedStudies",
    0x00201202: "NumberOfPatientRelatedSeries",
    0x00201204: "NumberOfPatientRelatedInstances",
    0x00201206: "NumberOfStudyRelatedSeries",
    0x00201208: "NumberOfStudyRelatedInstances",
    0x00201209: "NumberOfSeriesRelatedInstances",
    0x00080061: "ModalitiesInStudy",
    0x00080062: "SOPClassesInStudy",
}
# Computed attributes that can be matched: a group qualifies when one of its instances has the value.
MATCHED_THROUGH = {0x00080061: 0x00080060, 0x00080062: 0x00080016}


# The sender's Store right: whether a data set (its document, as it would be stored) may be stored.
Permits = Callable[[dict[str, Any]], bool]


@dataclass(frozen=True)
class Source:
    """Where an instance came from; recorded with it and used by routing and access control."""

    protocol: str  # "dimse", "stow", "import", "bruker"
    calling_aet: str | None = None
    user: str | None = None
    peer: str | None = None


@dataclass
class StoreResult:
    status: str  # "stored", "duplicate", "rejected", "failed"
    sop_instance_uid: str | None
    reason: str | None = None
    dimse_status: int = SUCCESS
    outcome: PutOutcome | None = None
    # The REQUIRED_UIDS (SOP Class, SOP Instance, Study, Series) of the data set as received, before routing
    received: tuple[str, ...] | None = None

    @property
    def ok(self) -> bool:
        """Acknowledged: the sender may forget it (quarantined instances are durably kept too)."""
        return self.status in ("stored", "duplicate", "quarantined")


class BadInstance(ValueError):
    def __init__(self, message: str, dimse_status: int = CANNOT_UNDERSTAND):
        super().__init__(message)
        self.dimse_status = dimse_status


def _now() -> str:
    return datetime.now(timezone.utc).isoformat()


@dataclass
class Routing:
    """What the archive needs to route incoming data sets (see router.py). All optional pieces of the
    archive: without a router nothing is routed; without a forward queue Forward decisions are logged."""

    router: Any  # router.Router
    quarantine: Backend  # a store of its own: quarantined data never shows in queries
    records: Any  # storage.records.RecordStore: provenance and the quarantine list
    forward: Any = None  # forwarding.ForwardQueue
    on_error: str = "reject"  # or "quarantine": what a data set on which a rule failed becomes
    keep_original_values: bool = True


class ArchiveService:
    def __init__(self, backend: Backend, *, duplicate_policy: DuplicatePolicy = DuplicatePolicy.KEEP_FIRST,
                 document_options: DocumentOptions = DocumentOptions(), routing: Routing | None = None) -> None:
        self.backend = backend
        self.duplicate_policy = duplicate_policy
        self.document_options = document_options
        self.routing = routing

    # ------------------------------------------------------------------------------------------- ingest

    def store_file(self, path: str | Path, source: Source, *, take_ownership: bool = False,
                   expected_sop_class: str | None = None, expected_sop_instance: str | None = None,
                   permits: Permits | None = None, sync: bool = True) -> StoreResult:
        """Store a DICOM file. With ``take_ownership`` the backend may move the file instead of copying it.

        ``expected_*`` are what the sender announced (the C-STORE request); a data set that says otherwise
        is refused. ``permits`` is the sender's access right: the data set, as it would be stored, must
        satisfy it or nothing is stored. ``sync=False``: committed but not yet flushed to disk, for a caller
        that stores several instances before acknowledging any; it must call ``sync()`` before it does.
        """
        path = Path(path)
        expected = (expected_sop_class, expected_sop_instance)
        try:
            size = path.stat().st_size
            if size <= IN_MEMORY_LIMIT:
                return self.store_bytes(path.read_bytes(), source, name=str(path), expected=expected, permits=permits,
                                        sync=sync)
            with open(path, "rb") as f:
                ds = self._parse(f, size, expected)
        except BadInstance as exc:
            return self._failed(None, str(exc), exc.dimse_status, source, str(path))
        except OSError as exc:
            return self._failed(None, f"cannot read the file: {exc.strerror or exc}", OUT_OF_RESOURCES, source, str(path))
        return self._store(ds, Original(path=path, owned=take_ownership), source, permits, sync)

    def store_bytes(self, data: bytes, source: Source, name: str = "data set",
                    expected: tuple[str | None, str | None] = (None, None), permits: Permits | None = None,
                    sync: bool = True) -> StoreResult:
        try:
            ds = self._parse(io.BytesIO(data), len(data), expected)
        except BadInstance as exc:
            return self._failed(None, str(exc), exc.dimse_status, source, name)
        return self._store(ds, Original(data=data), source, permits, sync)

    def store_dataset(self, ds: Dataset, source: Source, permits: Permits | None = None) -> StoreResult:
        """Store a data set built in memory (conversion, tests); it is encoded as a Part 10 file first."""
        try:
            data = part10.encode_part10(ds)
        except Exception as exc:  # pydicom raises several types for unencodable data sets
            return self._failed(getattr(ds, "SOPInstanceUID", None), f"cannot encode data set: {exc}", CANNOT_UNDERSTAND, source)
        return self.store_bytes(data, source, permits=permits)

    def _parse(self, f: BinaryIO, size: int, expected: tuple[str | None, str | None] = (None, None)) -> Dataset:
        threshold = self.document_options.bulk_data_threshold
        try:
            # Large values are not read: the document skips them and the original keeps them.
            ds = dcmread(f, defer_size=max(threshold, 1024), force=False)
        except InvalidDicomError as exc:
            raise BadInstance(f"not a DICOM file with File Meta Information ({exc})") from None
        except Exception as exc:  # truncated or corrupt: pydicom raises many types
            raise BadInstance(f"cannot parse DICOM data ({type(exc).__name__}: {exc})") from None
        ts = ds.file_meta.get("TransferSyntaxUID")
        if not ts:
            raise BadInstance("File Meta Information has no Transfer Syntax UID")
        if not UID(ts).is_transfer_syntax:
            raise BadInstance(f"unknown transfer syntax {ts}")
        _validate(ds, size, expected)
        return ds

    def store_received(self, header: bytes, data: bytes, transfer_syntax: str, source: Source, *,
                       expected: tuple[str, str], permits: Permits | None = None) -> StoreResult:
        """Store a data set received over the network, without File Meta Information; ``header`` is the
        Part 10 header written for it. Parsed from the data set alone: reading the header back cost a
        tenth of the time spent storing a small instance."""
        syntax = UID(transfer_syntax)
        name = f"data set {expected[1]}"
        if not syntax.is_transfer_syntax or syntax.is_deflated:
            return self.store_bytes(header + data, source, name=name, expected=expected, permits=permits)
        try:
            ds = read_received(header, data, syntax, defer_size=max(self.document_options.bulk_data_threshold, 1024))
            _validate(ds, len(data), expected)
        except BadInstance as exc:
            return self._failed(None, str(exc), exc.dimse_status, source, name)
        except Exception as exc:  # truncated or corrupt: pydicom raises many types
            return self._failed(None, f"cannot parse DICOM data ({type(exc).__name__}: {exc})", CANNOT_UNDERSTAND,
                                source, name)
        return self._store(ds, Original(data=header + data), source, permits)

    def sync(self) -> None:
        """Make every instance stored with ``sync=False`` durable (raises OSError when the disk refuses)."""
        self.backend.sync()
        if self.routing is not None:
            self.routing.quarantine.sync()

    def _store(self, ds: Dataset, original: Original, source: Source, permits: Permits | None = None,
               sync: bool = True) -> StoreResult:
        received = tuple(uid_of(ds, tag) for tag in REQUIRED_UIDS.values())  # before any rule changes them
        result = self._route_and_keep(ds, original, source, permits, sync, received_uid=received[1])
        result.received = received
        return result

    def _route_and_keep(self, ds: Dataset, original: Original, source: Source, permits: Permits | None,
                        sync: bool, received_uid: str) -> StoreResult:
        """Route (when routing is configured), then keep: in the archive, or in the quarantine."""
        outcome = None
        if self.routing is not None:
            try:
                outcome = self.routing.router.route(ds, source)
            except RuleApplicationError as exc:
                reason = f"routing rule failed: {exc}"
                if self.routing.on_error == "quarantine":
                    # The data set as received: never half-processed.
                    return self._keep(ds, original, source, permits, quarantine_reason=reason, sync=sync)
                return self._refused(received_uid, reason, REFUSED, source)
            if outcome is not None:
                if outcome.decision == "reject":
                    return self._refused(received_uid, f"rejected by rule: {outcome.reason or 'no reason given'}",
                                         REFUSED, source)
                if outcome.modified:
                    received, ds = ds, outcome.dataset
                    try:
                        original = Original(data=encode_routed(ds, received))
                    except Exception as exc:  # pydicom raises several types for data sets it cannot encode
                        return self._failed(received_uid, f"cannot encode the routed data set: {exc}",
                                            CANNOT_UNDERSTAND, source)
        reason = None
        if outcome is not None and outcome.decision == "quarantine":
            reason = outcome.reason or "quarantined by rule"
        return self._keep(ds, original, source, permits, quarantine_reason=reason, outcome=outcome, sync=sync,
                          received_uid=received_uid)

    def _keep(self, ds: Dataset, original: Original, source: Source, permits: Permits | None, *,
              quarantine_reason: str | None = None, outcome: Any = None, received_uid: str | None = None,
              sync: bool = True) -> StoreResult:
        """Store in the archive, or in the quarantine when there is a reason to."""
        sop_uid = uid_of(ds, 0x00080018)
        try:
            document = to_document(ds, self.document_options)
        except Exception as exc:  # a value pydicom cannot decode
            return self._failed(sop_uid, f"cannot decode data set: {type(exc).__name__}: {exc}", CANNOT_UNDERSTAND, source)
        if permits is not None and not permits(document):
            return self._refused(sop_uid, OUTSIDE_STORE_RIGHTS, NOT_AUTHORIZED, source)
        record = InstanceRecord(
            sop_instance_uid=sop_uid,
            sop_class_uid=uid_of(ds, 0x00080016),
            study_instance_uid=uid_of(ds, 0x0020000D),
            series_instance_uid=uid_of(ds, 0x0020000E),
            patient_id=str(first_value(document, 0x00100020) or ""),
            modality=str(first_value(document, 0x00080060) or ""),
            transfer_syntax_uid=uid_of(ds.file_meta, 0x00020010),  # read encoded: decoding cost 10 us
            document=document,
            size=original.size,
            sha256=original.sha256(),
            received_at=_now(),
            source=dataclasses.asdict(source),
        )
        to_quarantine = bool(quarantine_reason and self.routing)
        store = self.routing.quarantine if to_quarantine else self.backend
        provenance = self._provenance(record, outcome, source, received_uid)
        together = provenance is not None and self.routing.records.kept_with(store)  # one commit for all
        with_instance = [provenance] if together else []
        forwards = []
        if together and not to_quarantine and self.routing.forward is not None:
            forwards = [self.routing.forward.entry(sop_uid, destination) for destination in outcome.forward]
        try:
            put = store.put(record, original, self.duplicate_policy, with_instance, when_stored=forwards, sync=sync)
        except StorageFull as exc:
            return self._failed(sop_uid, f"storage full: {exc}", OUT_OF_RESOURCES, source)
        except (OSError, OverflowError) as exc:
            return self._failed(sop_uid, f"storage error: {exc}", OUT_OF_RESOURCES, source)
        if put == PutOutcome.REJECTED_DUPLICATE and permits is not None:
            existing = store.get_document(sop_uid)
            if existing is None or not permits(existing):
                # A duplicate status would tell the sender that data outside its rights exist.
                return self._refused(sop_uid, OUTSIDE_STORE_RIGHTS, NOT_AUTHORIZED, source)
        if to_quarantine:
            self.routing.records.insert(QUARANTINE, {"sop_instance_uid": sop_uid, "reason": quarantine_reason,
                                                     "at": _now(), "source": dataclasses.asdict(source)})
            log.warning("quarantined %s from %s: %s", sop_uid, source.protocol, quarantine_reason)
            result = StoreResult("quarantined", sop_uid, quarantine_reason, SUCCESS, put)
        else:
            result = self._result(record, put, source)
        if outcome is not None and result.ok:
            self._after_routing(record, outcome, None if with_instance else provenance, result, bool(forwards))
        return result

    def _provenance(self, record: InstanceRecord, outcome: Any, source: Source,
                    received_uid: str | None) -> tuple[str, dict[str, Any]] | None:
        """The provenance record of a routed instance, to be stored with it (one commit for both)."""
        if outcome is None:
            return None
        return PROVENANCE, provenance_record(record.sop_instance_uid, received_uid or record.sop_instance_uid,
                                             source, outcome, self.routing.keep_original_values,
                                             at=record.received_at)  # the same moment, formatted once

    def _after_routing(self, record: InstanceRecord, outcome: Any, provenance: tuple[str, dict[str, Any]] | None,
                       result: StoreResult, forwards_stored: bool) -> None:
        if provenance is not None:  # not stored with the instance (the quarantine is a database of its own)
            self.routing.records.insert(*provenance)
        if result.status == "quarantined" or result.outcome == PutOutcome.IDENTICAL_DUPLICATE:
            return
        if forwards_stored:  # written with the instance
            self.routing.forward.wake()
            return
        for destination in outcome.forward:
            if self.routing.forward is None:
                log.error("cannot forward %s to %s: no forward queue", record.sop_instance_uid, destination)
            else:
                self.routing.forward.enqueue(record.sop_instance_uid, destination)

    def _refused(self, uid: str, reason: str, status: int, source: Source) -> StoreResult:
        log.warning("refused %s from %s: %s", uid, source.protocol, reason)
        return StoreResult("rejected", uid, reason, status)

    # ----------------------------------------------------------------------------------------- quarantine

    def quarantined(self) -> list[dict[str, Any]]:
        """The quarantine list (for admins): SOP Instance UID, reason, when, from where."""
        return self.routing.records.find(QUARANTINE) if self.routing else []

    def release(self, sop_instance_uid: str, actor: str) -> StoreResult:
        """Move a quarantined instance into the archive, as it is (its rules already ran)."""
        if self.routing is None:
            raise KeyError(sop_instance_uid)
        with self.routing.quarantine.open_original(sop_instance_uid) as f:
            data = f.read()
        ds = self._parse(io.BytesIO(data), len(data))
        result = self._keep(ds, Original(data=data), Source(protocol="quarantine-release", user=actor), None)
        if result.ok:
            self.discard(sop_instance_uid, actor, released=True)
        return result

    def discard(self, sop_instance_uid: str, actor: str, released: bool = False) -> bool:
        if self.routing is None:
            return False
        removed = self.routing.quarantine.delete_instance(sop_instance_uid)
        for entry in self.routing.records.find(QUARANTINE, sop_instance_uid=sop_instance_uid):
            self.routing.records.delete(QUARANTINE, entry["id"])
        log.warning("%s %s from quarantine by %s", "released" if released else "discarded", sop_instance_uid, actor)
        return removed

    def _result(self, record: InstanceRecord, outcome: PutOutcome, source: Source) -> StoreResult:
        uid = record.sop_instance_uid
        where = f"from {source.protocol}" + (f" {source.calling_aet}" if source.calling_aet else "")
        if outcome == PutOutcome.STORED:
            # One line per instance is debug output: at info it cost 8% of the ingest time. The DIMSE
            # acceptor logs what each association stored when it ends.
            log.debug("stored %s %s", uid, where)
            return StoreResult("stored", uid, outcome=outcome)
        if outcome == PutOutcome.REJECTED_DUPLICATE:
            reason = "duplicate SOP Instance UID with different content (policy: reject)"
            log.warning("rejected %s %s: %s", uid, where, reason)
            return StoreResult("rejected", uid, reason, DUPLICATE_SOP_INSTANCE, outcome)
        reasons = {
            PutOutcome.IDENTICAL_DUPLICATE: "identical copy of a stored instance; nothing to keep",
            PutOutcome.KEPT_FIRST: "different content under a stored SOP Instance UID: stored version kept, newcomer kept aside",
            PutOutcome.REPLACED: "different content under a stored SOP Instance UID: replaced, previous version kept aside",
        }
        log.warning("duplicate %s %s: %s", uid, where, reasons[outcome])
        return StoreResult("duplicate" if outcome != PutOutcome.REPLACED else "stored", uid, reasons[outcome], SUCCESS, outcome)

    def _failed(self, uid: str | None, reason: str, status: int, source: Source, name: str | None = None) -> StoreResult:
        """A refusal. ``reason`` is for the sender (DIMSE Error Comment, STOW, import summary): it names no
        local file; the log line adds which file or data set it was."""
        log.error("refused %s from %s: %s", uid or name or "data set", source.protocol, reason)
        return StoreResult("failed", uid, reason, status)

    # -------------------------------------------------------------------------------------------- query

    def find(self, level: Level, query: Query, limit: int | None = None, offset: int = 0) -> list[Found]:
        """Groups at ``level`` matching ``query``. Computed attributes in the query are matched on the group."""
        instance_query, having = split_computed(query)
        return self.backend.find(level, instance_query, having, limit, offset)

    def count(self, level: Level, query: Query) -> int:
        instance_query, having = split_computed(query)
        return self.backend.count(level, instance_query, having)

    # ----------------------------------------------------------------------------------------- retrieve

    def instances(self, query: Query) -> Iterator[StoredInstance]:
        instance_query, having = split_computed(query)
        if having is not None:
            raise QueryError("ModalitiesInStudy and SOPClassesInStudy cannot select instances to retrieve")
        return self.backend.instances(instance_query)

    def open_original(self, sop_instance_uid: str) -> BinaryIO:
        return self.backend.open_original(sop_instance_uid)

    def get_document(self, sop_instance_uid: str) -> dict[str, Any] | None:
        return self.backend.get_document(sop_instance_uid)

    def get_documents(self, sop_instance_uids: list[str]) -> dict[str, dict[str, Any]]:
        return self.backend.get_documents(sop_instance_uids)


def split_computed(query: Query) -> tuple[Query, Query | None]:
    """Separate the conditions on computed attributes from those on stored ones."""
    stored, having = [], []
    for c in query.conditions:
        if c.tag not in COMPUTED:
            stored.append(c)
        elif isinstance(c, Universal):
            continue
        elif c.tag in MATCHED_THROUGH:
            having.append(_retag(c, MATCHED_THROUGH[c.tag]))
        else:
            raise QueryError(f"{COMPUTED[c.tag]} is computed by the archive: it can be returned, not matched")
    if having:
        # Access constraints (the Either that Decision.restrict adds) also bind the instance that makes a
        # group qualify: a hidden CT instance must not make a study match ModalitiesInStudy=CT.
        having += [c for c in stored if isinstance(c, Either)]
    return Query(tuple(stored), query.return_tags), (Query(tuple(having)) if having else None)


def _retag(c: Any, tag: int) -> Any:
    if hasattr(c, "alternatives"):
        return dataclasses.replace(c, tag=tag, alternatives=tuple(_retag(a, tag) for a in c.alternatives))
    return dataclasses.replace(c, tag=tag)


def computed_attributes(found: Found, level: Level) -> dict[str, dict[str, Any]]:
    """The computed attributes of a level answer, as document elements."""
    def number(n: int) -> dict[str, Any]:
        return {"vr": "IS", "Value": [n]}

    out: dict[str, dict[str, Any]] = {}
    if level == Level.PATIENT:
        out[tag_key(0x00201200)] = number(found.studies)
        out[tag_key(0x00201202)] = number(found.series)
        out[tag_key(0x00201204)] = number(found.instances)
    if level == Level.STUDY:
        out[tag_key(0x00201206)] = number(found.series)
        out[tag_key(0x00201208)] = number(found.instances)
        out[tag_key(0x00080061)] = {"vr": "CS", "Value": found.modalities} if found.modalities else {"vr": "CS"}
        out[tag_key(0x00080062)] = {"vr": "UI", "Value": found.sop_classes}
    if level == Level.SERIES:
        out[tag_key(0x00201209)] = number(found.instances)
    return out


def read_received(header: bytes, data: bytes, syntax: UID, defer_size: int) -> FileDataset:
    """A data set received over the network (``data``, in ``syntax``, not deflated), with the File Meta
    Information of its Part 10 ``header`` (see part10.file_header), as ``store_received`` reads it."""
    buffer = io.BytesIO(data)
    elements = read_dataset(buffer, syntax.is_implicit_VR, syntax.is_little_endian, defer_size=defer_size)
    # A FileDataset over the data set's own bytes: deferred (large) values are read from there.
    ds = FileDataset(buffer, elements, preamble=header[:128], file_meta=part10.file_meta(header),
                     is_implicit_VR=syntax.is_implicit_VR, is_little_endian=syntax.is_little_endian)
    # As read, so that a routed data set's untouched elements are written back as they came.
    ds.set_original_encoding(syntax.is_implicit_VR, syntax.is_little_endian, elements.original_character_set)
    return ds


def _validate(ds: Dataset, size: int, expected: tuple[str | None, str | None]) -> None:
    """Complete, with its identifying UIDs, and the SOP instance the sender announced."""
    _check_complete(ds, size)
    missing = [k for k, t in REQUIRED_UIDS.items() if not uid_of(ds, t)]
    if missing:
        raise BadInstance(f"missing {', '.join(missing)}", DATA_SET_DOES_NOT_MATCH)
    sop_class, sop_instance = expected
    if sop_class and uid_of(ds, 0x00080016) != sop_class:
        raise BadInstance(f"SOP Class UID not the announced one: {uid_of(ds, 0x00080016)}, announced {sop_class}",
                          DATA_SET_DOES_NOT_MATCH)
    if sop_instance and uid_of(ds, 0x00080018) != sop_instance:
        raise BadInstance(f"SOP Instance UID not the announced one: {uid_of(ds, 0x00080018)}, announced {sop_instance}",
                          DATA_SET_DOES_NOT_MATCH)


def uid_of(ds: Dataset, tag: int) -> str:
    """A UID attribute's (first) value, read from its encoded bytes when it has not been converted yet."""
    raw = ds.get_item(tag)
    if raw is None:
        return ""
    if isinstance(raw, RawDataElement):
        element = raw_values.element(raw, raw_values.DEFAULT_ENCODING)  # UI values do not depend on the character set
        if element is not None:
            return (element.get("Value") or [""])[0]
    value = ds[tag].value
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        value = value[0] if len(value) else ""
    return str(value or "")


def _check_complete(ds: Dataset, size: int) -> None:
    """Refuse a truncated data set: pydicom reads a short last value without complaint."""
    for tag in ds.keys():
        raw = ds.get_item(tag, keep_deferred=True)  # never read a deferred (large) value
        if isinstance(raw, RawDataElement):
            if raw.length != 0xFFFFFFFF and raw.value_tell + raw.length > size:
                raise BadInstance(f"truncated: element {tag} runs past the end of the data")
    pixels = ds.get_item(0x7FE00010, keep_deferred=True)
    if pixels is not None and not isinstance(pixels, RawDataElement) and isinstance(pixels.value, bytes):
        if not ds.file_meta.TransferSyntaxUID.is_compressed:
            expected = _native_pixel_bytes(ds)
            if expected and len(pixels.value) < expected:
                raise BadInstance(f"truncated: Pixel Data has {len(pixels.value)} of {expected} bytes")


def _native_pixel_bytes(ds: Dataset) -> int | None:
    try:
        bits = int(ds.BitsAllocated)
        count = int(ds.Rows) * int(ds.Columns) * int(ds.get("SamplesPerPixel", 1)) * int(ds.get("NumberOfFrames", 1) or 1)
    except (AttributeError, TypeError, ValueError):
        return None
    return (count * bits + 7) // 8
