"""STOW-RS (PS3.18 10.5): store instances sent as multipart/related.

Each part is kept in memory up to ``IN_MEMORY_PART`` bytes and written to a file as it arrives beyond
(the request is never held in memory), then stored through ``archive.store_bytes`` or ``store_file``, the
ingest path of C-STORE. The response lists every instance as stored
(ReferencedSOPSequence) or not (FailedSOPSequence with its FailureReason).
"""

from __future__ import annotations

import io
import json
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from dopamine_py.archive import Source, StoreResult

from .errors import BadRequest, DicomWebError, NotAcceptable, UnsupportedMediaType
from .json_model import dumps
from .media import accept_of, parse_media_type
from .multipart import MultipartParser, PartData, PartEnd, PartStart
from .resources import base_url, check_uid, instance_url, study_url
from .xml_model import to_xml

log = logging.getLogger("dopamine.dicomweb")

# Failure Reason values (PS3.18 Table I.2-2, and ours, listed in docs/dicomweb-conformance.md).
PROCESSING_FAILURE = 0x0110
SOP_CLASS_NOT_SUPPORTED = 0x0122
CANNOT_UNDERSTAND = 0xC000
STUDY_UID_MISMATCH = 0xC409  # implementation-specific, in the Cxxx "cannot understand" range
DUPLICATE_REJECTED = 0x0111  # the DIMSE "duplicate SOP instance" status
NOT_AUTHORIZED = 0x0124  # outside the sender's Store rules (the DIMSE "refused: not authorized" status)
UNSUPPORTED_PART = 0xC001  # implementation-specific: a part that is not application/dicom

IN_MEMORY_PART = 4 << 20  # as the DIMSE acceptor: a typical instance never touches the disk before the store

DICOM = "application/dicom"
DICOM_JSON = "application/dicom+json"


@dataclass
class Outcome:
    sop_class: str | None
    sop_instance: str | None
    study: str | None
    series: str | None
    failure: int | None = None
    reason: str | None = None


async def store_instances(archive, settings, request: Request) -> Response:
    study = request.path_params.get("study")
    if study:
        check_uid(study, "Study Instance UID")
    respond_xml = _response_as_xml(request)
    content_type = request.headers.get("content-type")
    if not content_type:
        raise UnsupportedMediaType('a STOW-RS request needs Content-Type: multipart/related; type="application/dicom"')
    media = parse_media_type(content_type)
    if media.type != "multipart/related":
        raise UnsupportedMediaType(f'STOW-RS takes multipart/related; type="application/dicom", not {media.type}')
    related = media.related_type or DICOM
    if related not in (DICOM, DICOM_JSON):
        raise UnsupportedMediaType(f"STOW-RS takes parts of type application/dicom (or application/dicom+json "
                                   f"with bulk data), not {related}")
    boundary = media.params.get("boundary")
    if not boundary:
        raise BadRequest("the multipart/related Content-Type has no boundary parameter")
    incoming = Path(settings.data_dir) / "incoming"
    incoming.mkdir(parents=True, exist_ok=True)
    receiver = Receiver(archive, request, study, incoming, related)
    try:
        await receiver.receive(MultipartParser(boundary))
    finally:
        receiver.discard_files()
    return receiver.response(respond_xml)


class Receiver:
    def __init__(self, archive, request: Request, study: str | None, incoming: Path, related: str) -> None:
        self.archive = archive
        self.request = request
        self.study = study
        self.incoming = incoming
        self.related = related
        self.outcomes: list[Outcome] = []
        self.files: list[Path] = []  # parts on disk not yet handed to the archive
        self.bulk: dict[str, Path] = {}  # Content-Location -> file, for the JSON metadata form
        self.metadata: list[dict[str, Any]] = []
        # The archive is the request's ScopedArchive, which knows who logged in.
        self.source = Source(protocol="stow", user=getattr(archive, "user", None), peer=_peer(request))

    async def receive(self, parser: MultipartParser) -> None:
        part: dict[str, Any] | None = None
        try:
            async for chunk in self.request.stream():
                for event in parser.feed(chunk):
                    part = await self._on(event, part)
            for event in parser.close():
                part = await self._on(event, part)
        except ClientDisconnect:
            log.warning("STOW-RS: client went away after %d part(s)", len(self.outcomes))
            raise DicomWebError("client disconnected", 400) from None
        except BadRequest as exc:
            if self.outcomes:
                await run_in_threadpool(self._make_durable)  # the message below acknowledges them
                stored = sum(1 for o in self.outcomes if o.failure is None)
                raise BadRequest(f"{exc}; {stored} instance(s) received before it were stored") from None
            raise
        if self.related == DICOM_JSON:
            await run_in_threadpool(self._store_json_form)
        await run_in_threadpool(self._make_durable)

    def _make_durable(self) -> None:
        """One flush to disk for the whole request, before the response acknowledges any instance
        (each was committed without its own: that fsync was a quarter of the time per instance)."""
        if not any(o.failure is None for o in self.outcomes):
            return
        try:
            self.archive.sync()
        except OSError as exc:
            log.error("STOW-RS: the instances of this request could not be flushed to disk: %s", exc)
            for outcome in self.outcomes:
                if outcome.failure is None:
                    outcome.failure, outcome.reason = PROCESSING_FAILURE, f"not durably stored: {exc}"

    async def _on(self, event, part: dict[str, Any] | None) -> dict[str, Any] | None:
        if isinstance(event, PartStart):
            part = {"headers": event.headers, "data": bytearray(), "path": None, "file": None}
            if self.related == DICOM_JSON:  # the metadata form reads its parts back as files
                self._spill(part)
            return part
        assert part is not None
        if isinstance(event, PartData):
            if part["file"] is None and len(part["data"]) + len(event.data) > IN_MEMORY_PART:
                self._spill(part)
            if part["file"] is None:
                part["data"] += event.data
            else:
                part["file"].write(event.data)
            return part
        assert isinstance(event, PartEnd)
        if part["file"] is not None:
            part["file"].close()
        await run_in_threadpool(self._on_part, part)
        return None

    def _spill(self, part: dict[str, Any]) -> None:
        fd, name = tempfile.mkstemp(prefix="stow-", suffix=".part", dir=self.incoming)
        part["path"] = Path(name)
        self.files.append(part["path"])
        part["file"] = os.fdopen(fd, "wb")
        part["file"].write(part["data"])
        part["data"] = bytearray()

    # ------------------------------------------------------------------------------------ one part each

    def _on_part(self, part: dict[str, Any]) -> None:
        headers, path = part["headers"], part["path"]
        part_type = (headers.get("content-type") or self.related).split(";")[0].strip().lower()
        if self.related == DICOM_JSON:
            if part_type in (DICOM_JSON, "application/json") and not self.metadata and not self.bulk:
                self.metadata = _load_json(path)
            else:
                self.bulk[headers.get("content-location", "")] = path
            return
        if part_type != DICOM:
            self.outcomes.append(Outcome(None, None, None, None, UNSUPPORTED_PART,
                                         f"part {len(self.outcomes) + 1} is {part_type}, not application/dicom"))
            return
        if path is None:
            self._store_bytes(bytes(part["data"]))
        else:
            self._store_file(path)

    def _store_file(self, path: Path) -> None:
        def header() -> tuple:
            with open(path, "rb") as f:
                return _header(f)

        outcome = self._outcome(header, lambda: self.archive.store_file(path, self.source, take_ownership=True,
                                                                         sync=False))
        path.unlink(missing_ok=True)
        self.files.remove(path)
        self.outcomes.append(outcome)

    def _store_bytes(self, data: bytes) -> None:
        outcome = self._outcome(lambda: _header(io.BytesIO(data)), lambda: self.archive.store_bytes(
            data, self.source, name=f"STOW-RS part {len(self.outcomes) + 1}", sync=False))
        self.outcomes.append(outcome)

    def _outcome(self, header, store) -> Outcome:
        """The outcome of storing one part. Its UIDs come from the archive, which parsed it; the part is
        read here only to check its study first (POST /studies/{study}) or when the archive could not parse it."""
        if self.study:
            uids = header()
            if uids[2] and uids[2] != self.study:
                return Outcome(*uids, STUDY_UID_MISMATCH, f"instance of study {uids[2]}, not of {self.study}")
        result = store()
        outcome = Outcome(*(result.received or header()))
        _apply(outcome, result)
        return outcome

    def _store_json_form(self) -> None:
        """The metadata + bulk data form: each JSON data set becomes a Part 10 file, then is stored as one."""
        if not isinstance(self.metadata, list) or not self.metadata:
            raise BadRequest("the first part of an application/dicom+json request must be a JSON array of data sets")
        for item in self.metadata:
            path = self._encode(item)
            if path is None:
                continue
            self.files.append(path)
            self._store_file(path)

    def _encode(self, item: dict[str, Any]) -> Path | None:
        def bulk(tag: str, vr: str, uri: str) -> bytes:
            if uri not in self.bulk:
                raise KeyError(f"no part with Content-Location {uri}")
            return self.bulk[uri].read_bytes()

        try:
            # File Meta Information may come with the data set; it goes into the file's header, not the data set.
            ds = Dataset.from_json({k: v for k, v in item.items() if not k.startswith("0002")},
                                   bulk_data_uri_handler=bulk)
            meta = FileMetaDataset()
            meta.TransferSyntaxUID = _ts_of(item)
            meta.MediaStorageSOPClassUID = ds.SOPClassUID
            meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
            ds.file_meta = meta
            fd, name = tempfile.mkstemp(prefix="stow-", suffix=".dcm", dir=self.incoming)
            with os.fdopen(fd, "wb") as f:
                ds.save_as(f, enforce_file_format=True)
            return Path(name)
        except Exception as exc:  # pydicom raises many types for a bad JSON data set
            uid = (item.get("00080018", {}).get("Value") or [None])[0] if isinstance(item, dict) else None
            self.outcomes.append(Outcome(None, uid, None, None, CANNOT_UNDERSTAND,
                                         f"cannot build a data set from the JSON metadata: {exc}"))
            return None

    def discard_files(self) -> None:
        for part in self.files:
            part.unlink(missing_ok=True)
        for path in self.bulk.values():
            path.unlink(missing_ok=True)

    # ------------------------------------------------------------------------------------------ answer

    def response(self, as_xml: bool) -> Response:
        if not self.outcomes:
            raise BadRequest("the request holds no instance")
        base = base_url(self.request)
        stored = [o for o in self.outcomes if o.failure is None]
        failed = [o for o in self.outcomes if o.failure is not None]
        answer: dict[str, Any] = {}
        studies = {o.study for o in stored}
        if self.study or len(studies) == 1:
            answer["00081190"] = {"vr": "UR", "Value": [study_url(base, self.study or studies.pop())]}
        if failed:
            answer["00081198"] = {"vr": "SQ", "Value": [_item(o, base, failed=True) for o in failed]}
        if stored:
            answer["00081199"] = {"vr": "SQ", "Value": [_item(o, base, failed=False) for o in stored]}
        status = 200 if not failed else 202 if stored else 409
        for o in failed:
            log.warning("STOW-RS from %s: %s not stored: %s", self.source.peer, o.sop_instance or "part", o.reason)
        if as_xml:
            return Response(to_xml(answer), status_code=status, media_type="application/dicom+xml")
        return Response(dumps(answer), status_code=status, media_type="application/dicom+json")


def _item(o: Outcome, base: str, failed: bool) -> dict[str, Any]:
    item: dict[str, Any] = {}
    if o.sop_class:
        item["00081150"] = {"vr": "UI", "Value": [o.sop_class]}
    if o.sop_instance:
        item["00081155"] = {"vr": "UI", "Value": [o.sop_instance]}
    if failed:
        item["00081197"] = {"vr": "US", "Value": [o.failure]}
    elif o.study and o.series and o.sop_instance:
        item["00081190"] = {"vr": "UR", "Value": [instance_url(base, o.study, o.series, o.sop_instance)]}
    return dict(sorted(item.items()))


def _apply(outcome: Outcome, result: StoreResult) -> None:
    if result.ok:
        return
    outcome.reason = result.reason or result.status
    # Rejections carry their DIMSE status: duplicate (0x0111) or outside the Store rules (0x0124).
    outcome.failure = result.dimse_status or (DUPLICATE_REJECTED if result.status == "rejected" else PROCESSING_FAILURE)


def _header(source: BinaryIO) -> tuple[str | None, str | None, str | None, str | None]:
    """SOP Class, SOP Instance, Study and Series UIDs, read without the pixel data; Nones if unreadable."""
    try:
        ds = dcmread(source, stop_before_pixels=True, specific_tags=[0x00080016, 0x00080018, 0x0020000D, 0x0020000E])
    except Exception:  # the archive's parser reports what is wrong with the file
        return None, None, None, None
    return tuple(str(ds.get(t).value) if ds.get(t) is not None and ds.get(t).value else None  # type: ignore[return-value]
                 for t in (0x00080016, 0x00080018, 0x0020000D, 0x0020000E))


def _ts_of(item: dict[str, Any]) -> str:
    values = (item.get("00020010") or {}).get("Value") or []
    return values[0] if values else "1.2.840.10008.1.2.1"


def _load_json(path: Path) -> Any:
    try:
        return json.loads(path.read_bytes())
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest(f"the metadata part is not valid JSON: {exc}") from None


def _peer(request: Request) -> str | None:
    client = request.client
    return f"{client.host}:{client.port}" if client else None


def _response_as_xml(request: Request) -> bool:
    for r in accept_of(request):
        if r.covers("application/dicom+json") or r.covers("application/json"):
            return False
        if r.covers("application/dicom+xml"):
            return True
    raise NotAcceptable("STOW-RS answers in application/dicom+json or application/dicom+xml")
