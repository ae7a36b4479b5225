"""DIMSE services over pynetdicom: Verification, Storage, Query/Retrieve FIND, GET and MOVE.

Protocol code only: every request becomes a call on the archive service.
"""

from __future__ import annotations

import logging
import socket
import tempfile
from pathlib import Path
from typing import Any, Iterator

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import AllTransferSyntaxes, ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE, _config, build_context, evt
from pynetdicom import transport
from pynetdicom.presentation import AllStoragePresentationContexts
from pynetdicom.sop_class import (
    PatientRootQueryRetrieveInformationModelFind,
    PatientRootQueryRetrieveInformationModelGet,
    PatientRootQueryRetrieveInformationModelMove,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
    Verification,
)

from .archive import COMPUTED, ArchiveService, Source, computed_attributes
from .document import tag_key, to_dataset
from .matching import MatchOptions, Query, QueryError, parse_identifier
from .storage.base import Found, Level

log = logging.getLogger("dopamine.dimse")

PATIENT_ROOT = {
    PatientRootQueryRetrieveInformationModelFind,
    PatientRootQueryRetrieveInformationModelGet,
    PatientRootQueryRetrieveInformationModelMove,
}
QR_CLASSES = PATIENT_ROOT | {
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
}
LEVEL_KEYS = {
    Level.PATIENT: 0x00100020,
    Level.STUDY: 0x0020000D,
    Level.SERIES: 0x0020000E,
    Level.IMAGE: 0x00080018,
}

# Q/R statuses (PS3.4 C.4).
PENDING = 0xFF00
CANCELLED = 0xFE00
IDENTIFIER_DOES_NOT_MATCH = 0xA900
UNABLE_TO_PROCESS = 0xC000
MOVE_DESTINATION_UNKNOWN = 0xA801
TOO_MANY_MATCHES = 0xA700
MAX_SUBOPERATIONS = 65535
MAX_CONTEXTS = 128


def enable_tcp_nodelay() -> None:
    """Set TCP_NODELAY on every DIMSE socket, accepted or opened.

    Without it a DICOM peer waits for the delayed ACK of each small PDU (about 40 ms a message).
    pynetdicom offers no socket-option hook, so its two socket factories are wrapped, once.
    """
    if getattr(transport, "_dopamine_nodelay", False):
        return
    accept = transport.AssociationServer.get_request
    create = transport.AssociationSocket._create_socket

    def get_request(self):
        sock, address = accept(self)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock, address

    def create_socket(self, address):
        sock = create(self, address)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock

    transport.AssociationServer.get_request = get_request
    transport.AssociationSocket._create_socket = create_socket
    transport._dopamine_nodelay = True


class DimseServer:
    def __init__(self, archive: ArchiveService, *, aet: str, host: str, port: int,
                 incoming_dir: Path, match_options: MatchOptions = MatchOptions(),
                 max_associations: int = 32, network_timeout: int = 60) -> None:
        self.archive = archive
        self.aet = aet
        self.address = (host, port)
        self.match_options = match_options
        self.incoming_dir = Path(incoming_dir)
        self.incoming_dir.mkdir(parents=True, exist_ok=True)
        self.ae = self._make_ae(max_associations, network_timeout)
        self._server = None

    def _make_ae(self, max_associations: int, network_timeout: int) -> AE:
        enable_tcp_nodelay()
        # Received data sets are written to disk as they arrive, never held whole in memory.
        _config.STORE_RECV_CHUNKED_DATASET = True
        # Files received land beside the store, so that a large one is moved into place, not copied.
        tempfile.tempdir = str(self.incoming_dir)
        ae = AE(ae_title=self.aet)
        ae.require_called_aet = True
        ae.maximum_associations = max_associations
        ae.network_timeout = network_timeout
        ae.dimse_timeout = network_timeout
        ae.acse_timeout = network_timeout
        ae.maximum_pdu_size = 0  # no limit on what we receive
        transfer_syntaxes = list(AllTransferSyntaxes)
        ae.add_supported_context(Verification, transfer_syntaxes)
        for cx in AllStoragePresentationContexts:
            # Roles accepted as proposed: a C-GET requestor asks to be the storage SCP.
            ae.add_supported_context(cx.abstract_syntax, transfer_syntaxes, scu_role=True, scp_role=True)
        for sop_class in QR_CLASSES:
            ae.add_supported_context(sop_class, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
        return ae

    @property
    def handlers(self) -> list[tuple[Any, Any]]:
        return [
            (evt.EVT_C_ECHO, self.on_echo),
            (evt.EVT_C_STORE, self.on_store),
            (evt.EVT_C_FIND, self.on_find),
            (evt.EVT_C_GET, self.on_get),
            (evt.EVT_C_MOVE, self.on_move),
        ]

    def start(self) -> None:
        self._server = self.ae.start_server(self.address, block=False, evt_handlers=self.handlers)
        log.info("DIMSE listening on %s:%d as %s", *self.address, self.aet)

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server = None

    # ---------------------------------------------------------------------------------------- services

    @staticmethod
    def _source(event) -> Source:
        assoc = event.assoc
        return Source(
            protocol="dimse",
            calling_aet=str(assoc.requestor.ae_title).strip(),
            peer=f"{assoc.requestor.address}:{assoc.requestor.port}",
        )

    def on_echo(self, event) -> int:
        return 0x0000

    def on_store(self, event) -> Dataset:
        request = event.request
        result = self.archive.store_file(
            event.dataset_path,
            self._source(event),
            take_ownership=True,
            expected_sop_class=str(request.AffectedSOPClassUID),
            expected_sop_instance=str(request.AffectedSOPInstanceUID),
        )
        status = Dataset()
        status.Status = result.dimse_status
        if result.reason and result.dimse_status != 0x0000:
            status.ErrorComment = result.reason[:64]
        return status

    def on_find(self, event) -> Iterator[tuple[int, Dataset | None]]:
        try:
            level, query = self._parse(event)
            found = self.archive.find(level, query)
        except QueryError as exc:
            log.warning("C-FIND refused: %s", exc)
            yield _failure(IDENTIFIER_DOES_NOT_MATCH, str(exc))
            return
        requested = event.identifier
        for answer in found:
            if event.is_cancelled:
                yield CANCELLED, None
                return
            yield PENDING, self._response(requested, level, answer)

    def on_get(self, event) -> Iterator[Any]:
        try:
            _, query = self._parse(event, retrieve=True)
            matches = list(self.archive.instances(query))
        except QueryError as exc:
            log.warning("C-GET refused: %s", exc)
            yield _failure(IDENTIFIER_DOES_NOT_MATCH, str(exc))
            return
        if len(matches) > MAX_SUBOPERATIONS:
            yield _failure(TOO_MANY_MATCHES, f"{len(matches)} instances match; at most {MAX_SUBOPERATIONS} per C-GET")
            return
        yield len(matches)
        yield from self._send(event, matches)

    def on_move(self, event) -> Iterator[Any]:
        destination = event.move_destination
        destination = destination.decode("ascii", "replace") if isinstance(destination, bytes) else str(destination)
        destination = destination.strip()
        peer = self.archive.backend.get_peer(destination)
        if peer is None:
            log.warning("C-MOVE to unknown destination %r (add it with `dopamine peer add`)", destination)
            yield None, None
            return
        try:
            _, query = self._parse(event, retrieve=True)
            matches = list(self.archive.instances(query))
        except QueryError as exc:
            log.warning("C-MOVE refused: %s", exc)
            yield peer["host"], peer["port"]
            yield _failure(IDENTIFIER_DOES_NOT_MATCH, str(exc))
            return
        if len(matches) > MAX_SUBOPERATIONS:
            yield peer["host"], peer["port"]
            yield _failure(TOO_MANY_MATCHES, f"{len(matches)} instances match; at most {MAX_SUBOPERATIONS} per C-MOVE")
            return
        yield peer["host"], peer["port"], {"contexts": _contexts_for(matches)}
        yield len(matches)
        yield from self._send(event, matches)

    # ----------------------------------------------------------------------------------------- helpers

    def _parse(self, event, retrieve: bool = False) -> tuple[Level, Query]:
        identifier = event.identifier
        level_text = str(identifier.get("QueryRetrieveLevel", "") or "").strip().upper()
        try:
            level = Level(level_text)
        except ValueError:
            raise QueryError(f"QueryRetrieveLevel {level_text!r} is not PATIENT, STUDY, SERIES or IMAGE") from None
        model = str(event.request.AffectedSOPClassUID)
        if level == Level.PATIENT and model not in PATIENT_ROOT:
            raise QueryError("PATIENT level is only defined for the Patient Root information model")
        query = parse_identifier(identifier, self.match_options)
        if retrieve:
            query = Query(tuple(c for c in query.conditions if c.tag not in COMPUTED), query.return_tags)
        return level, query

    def _response(self, requested: Dataset, level: Level, answer: Found) -> Dataset:
        document = dict(answer.document)
        document.update(computed_attributes(answer, level))
        wanted: dict[str, Any] = {}
        for elem in requested:
            if elem.tag.group in (0x0000, 0x0002) or elem.tag in (0x00080005, 0x00080052):
                continue
            key = tag_key(int(elem.tag))
            stored = document.get(key)
            if stored is None:
                wanted[key] = {"vr": elem.VR}
            elif elem.VR == "SQ" and elem.value and len(elem.value[0]):
                wanted[key] = _restrict_items(stored, elem.value[0])
            else:
                wanted[key] = stored
        response = to_dataset(wanted)
        response.QueryRetrieveLevel = level.value
        response.RetrieveAETitle = self.aet
        if any(_has_non_ascii(e) for e in wanted.values()):
            response.SpecificCharacterSet = "ISO_IR 192"
        return response

    def _send(self, event, matches) -> Iterator[tuple[int, Dataset | None]]:
        for inst in matches:
            if event.is_cancelled:
                yield CANCELLED, None
                return
            try:
                with self.archive.open_original(inst.sop_instance_uid) as f:
                    ds = dcmread(f)
            except (KeyError, OSError) as exc:
                log.error("cannot read %s for retrieval: %s", inst.sop_instance_uid, exc)
                continue
            yield PENDING, ds


def _failure(status: int, comment: str) -> tuple[int, Dataset]:
    identifier = Dataset()
    identifier.ErrorComment = comment[:64]
    return status, identifier


def _restrict_items(stored: dict[str, Any], requested_item: Dataset) -> dict[str, Any]:
    keys = {tag_key(int(e.tag)) for e in requested_item}
    items = [{k: v for k, v in item.items() if k in keys} for item in stored.get("Value") or []]
    return {"vr": "SQ", "Value": items} if items else {"vr": "SQ"}


def _has_non_ascii(elem: dict[str, Any]) -> bool:
    for value in elem.get("Value") or []:
        if isinstance(value, str) and not value.isascii():
            return True
        if isinstance(value, dict) and any(
            (isinstance(v, str) and not v.isascii()) or (isinstance(v, dict) and _has_non_ascii(v)) for v in value.values()
        ):
            return True
    return False


def _contexts_for(matches) -> list:
    """Presentation contexts for a C-MOVE sub-association: each stored (SOP class, transfer syntax) pair,
    with the uncompressed syntaxes as fallbacks, within the 128 contexts one association can carry."""
    wanted: dict[str, list[str]] = {}
    for inst in matches:
        syntaxes = wanted.setdefault(inst.sop_class_uid, [])
        for ts in (inst.transfer_syntax_uid, ExplicitVRLittleEndian, ImplicitVRLittleEndian):
            if ts not in syntaxes:
                syntaxes.append(ts)
    contexts = []
    for sop_class, syntaxes in wanted.items():
        for ts in syntaxes:
            if len(contexts) < MAX_CONTEXTS:
                contexts.append(build_context(sop_class, ts))
    return contexts
