"""DIMSE services over pynetdicom: Verification, Storage, Query/Retrieve FIND, GET and MOVE.

Protocol code only: every request becomes a call on the archive service.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import socket
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import AllTransferSyntaxes, ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE, _config, acse, build_context, dimse_messages, evt
from pynetdicom.association import Association
from pynetdicom.presentation import PresentationContext
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

from acl import AccessControl, Service

from . import dimse_wakeups
from .archive import COMPUTED, NOT_AUTHORIZED, OUT_OF_RESOURCES, ArchiveService, Source, computed_attributes
from .document import tag_key, to_dataset
from .matching import MatchOptions, Query, QueryError, parse_identifier
from .storage.base import Found, Level

log = logging.getLogger("dopamine.dimse")
_NamedTemporaryFile = tempfile.NamedTemporaryFile

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
SEND_QUEUE_DEPTH = 8  # C-FIND responses queued ahead of the socket (see _wait_while_send_queue_full)
SEND_QUEUE_POLL = 0.0002


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


def prefer_requestor_transfer_syntax() -> None:
    """Accept, for each proposed context, the first transfer syntax the *requestor* listed that we support.

    pynetdicom picks by the acceptor's order, so a sender proposing JPEG 2000 then explicit VR would see
    its data transcoded. An archive keeps data as sent: the sender's preference wins. Each proposed
    context is negotiated on its own against a copy of our context, its syntaxes in the sender's order.
    """
    if getattr(acse, "_dopamine_prefers_requestor", False):
        return
    negotiate = acse.negotiate_as_acceptor

    def negotiate_as_acceptor(rq_contexts, ac_contexts, roles=None):
        supported = {cx.abstract_syntax: cx for cx in ac_contexts}
        accepted, replies = [], {}
        for rq in rq_contexts:
            ours = supported.get(rq.abstract_syntax)
            if ours is not None:
                preferred = [ts for ts in rq.transfer_syntax if ts in ours.transfer_syntax]
                copy = PresentationContext()
                copy.abstract_syntax = ours.abstract_syntax
                copy.transfer_syntax = preferred or list(ours.transfer_syntax)
                copy.scu_role, copy.scp_role = ours.scu_role, ours.scp_role
                ours = [copy]
            contexts, role_items = negotiate([rq], ours or [], roles)
            accepted += contexts
            replies.update({item.sop_class_uid: item for item in role_items})
        accepted.sort(key=lambda cx: cx.context_id)
        return accepted, sorted(replies.values(), key=lambda item: item.sop_class_uid)

    acse.negotiate_as_acceptor = negotiate_as_acceptor
    acse._dopamine_prefers_requestor = True


class ReceivedFile:
    """The file pynetdicom writes an incoming data set to, made to survive a full disk.

    pynetdicom writes each fragment as it arrives, in its connection thread; a failed write there kills
    the connection and the sender never gets an answer. This wrapper remembers the failure, frees what
    was written and drops the rest of the data set, so that the C-STORE handler can answer 'out of
    resources' (A700H) and the association goes on.
    """

    def __init__(self, *args, **kwargs):
        self._file = _NamedTemporaryFile(*args, **kwargs)
        self.name = self._file.name
        self.failure: OSError | None = None

    def write(self, data) -> int:
        if self.failure is None:
            try:
                return self._file.write(data)
            except OSError as exc:
                self.failure = exc
                with contextlib.suppress(OSError):
                    self._file.truncate(0)
        return len(data)

    @property
    def file(self):
        return self

    def flush(self) -> None:
        if self.failure is None:
            try:
                self._file.flush()
            except OSError as exc:
                self.failure = exc

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._file.close()


def survive_full_disk_while_receiving() -> None:
    if dimse_messages.NamedTemporaryFile is not ReceivedFile:
        dimse_messages.NamedTemporaryFile = ReceivedFile


ORIGINAL_PATH = "_dopamine_original_path"


def send_originals_unchanged() -> None:
    """Make C-STORE sub-operations send the stored bytes themselves.

    pynetdicom's C-GET and C-MOVE loops take only ``Dataset`` objects, which it re-encodes with pydicom:
    not always byte for byte (character sets, padding). The retrieve handlers yield a small marker data
    set naming the stored file; this wrapper sends that file raw (pynetdicom's chunked file send, which
    never decodes it) when the peer accepted the stored transfer syntax, and only otherwise reads the
    data set so that pynetdicom can convert it.
    """
    if getattr(Association, "_dopamine_sends_originals", False):
        return
    send = Association.send_c_store
    _config.STORE_SEND_CHUNKED_DATASET = True  # applies to sends from a file path only, which only we use

    def send_c_store(self, dataset, *args, **kwargs):
        path = getattr(dataset, ORIGINAL_PATH, None) if isinstance(dataset, Dataset) else None
        if path is None:
            return send(self, dataset, *args, **kwargs)
        try:
            return send(self, path, *args, **kwargs)
        except (ValueError, AttributeError):  # no context for the stored syntax, or an incomplete file meta
            return send(self, dcmread(path), *args, **kwargs)

    Association.send_c_store = send_c_store
    Association._dopamine_sends_originals = True


class DimseServer:
    def __init__(self, archive: ArchiveService, access: AccessControl, *, aet: str, host: str, port: int,
                 incoming_dir: Path, match_options: MatchOptions = MatchOptions(),
                 max_associations: int = 32, network_timeout: int = 60) -> None:
        self.archive = archive
        self.access = access
        self.aet = aet
        self.address = (host, port)
        self.match_options = match_options
        self.incoming_dir = Path(incoming_dir)
        self.incoming_dir.mkdir(parents=True, exist_ok=True)
        self.ae = self._make_ae(max_associations, network_timeout)
        self._server = None

    def _make_ae(self, max_associations: int, network_timeout: int) -> AE:
        enable_tcp_nodelay()
        dimse_wakeups.install()
        send_originals_unchanged()
        prefer_requestor_transfer_syntax()
        survive_full_disk_while_receiving()
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
            (evt.EVT_USER_ID, self.on_user_identity),
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
    def _source(event, identity) -> Source:
        """Where a C-STORE comes from, with the user the association authenticated (for routing rules
        on the user, and provenance)."""
        requestor = event.assoc.requestor
        return Source(
            protocol="dimse",
            calling_aet=str(requestor.ae_title).strip(),
            user=identity.user,
            peer=f"{requestor.address}:{requestor.port}",
        )

    # ----------------------------------------------------------------------------------- access control

    def on_user_identity(self, event) -> tuple[bool, bytes | None]:
        requestor = event.assoc.requestor
        accepted, identity, response = self.access.authenticate_dimse(
            event.user_id_type, event.primary_field, event.secondary_field,
            calling_aet=str(requestor.ae_title).strip(), peer_host=requestor.address, peer_port=requestor.port,
        )
        if accepted:
            # Kept on the association itself: it goes away with it.
            event.assoc.dopamine_identity = identity
        return accepted, response

    def _decide(self, event, service: Service):
        identity = getattr(event.assoc, "dopamine_identity", None)
        if identity is None:
            requestor = event.assoc.requestor
            identity = self.access.dimse_identity(str(requestor.ae_title).strip(), requestor.address, requestor.port)
        return self.access.decide(identity, service)

    # ----------------------------------------------------------------------------------------- services

    def on_echo(self, event) -> int:
        if self._decide(event, Service.ECHO).allowed:
            return 0x0000
        # C-ECHO has no "not authorized" status that clients act on (echoscu exits 0 on any status):
        # the refusal is the end of the association.
        event.assoc.abort()
        return NOT_AUTHORIZED

    def on_store(self, event) -> Dataset:
        request = event.request
        status = Dataset()
        received = getattr(request, "_dataset_file", None)
        if isinstance(received, ReceivedFile) and received.failure is not None:
            log.error("could not write an incoming data set to disk: %s", received.failure)
            status.Status = OUT_OF_RESOURCES
            status.ErrorComment = f"out of resources: {received.failure.strerror or received.failure}"[:64]
            return status
        decision = self._decide(event, Service.STORE)
        if not decision.allowed:
            status.Status = NOT_AUTHORIZED
            status.ErrorComment = "not authorized to store"
            return status
        result = self.archive.store_file(
            event.dataset_path,
            self._source(event, decision.identity),
            take_ownership=True,
            expected_sop_class=str(request.AffectedSOPClassUID),
            expected_sop_instance=str(request.AffectedSOPInstanceUID),
            permits=None if decision.unrestricted else decision.permits,
        )
        status.Status = result.dimse_status
        if result.reason and result.dimse_status != 0x0000:
            status.ErrorComment = result.reason[:64]
        return status

    def on_find(self, event) -> Iterator[tuple[int, Dataset | None]]:
        decision = self._decide(event, Service.QUERY)
        if not decision.allowed:
            yield _failure(NOT_AUTHORIZED, "not authorized to query")
            return
        try:
            level, query = self._parse(event)
            # The access constraints go into the backend query: counts and results never see hidden data.
            found = self.archive.find(level, decision.restrict(query))
        except QueryError as exc:
            log.warning("C-FIND refused: %s", exc)
            yield _failure(IDENTIFIER_DOES_NOT_MATCH, str(exc))
            return
        requested = event.identifier
        for answer in found:
            _wait_while_send_queue_full(event.assoc)
            if event.is_cancelled:
                yield CANCELLED, None
                return
            yield PENDING, self._response(requested, level, answer)

    def on_get(self, event) -> Iterator[Any]:
        # pynetdicom wants the number of sub-operations first, even before a failure status.
        try:
            matches = self._retrieve_matches(event)
        except _Refused as refused:
            yield 1
            yield refused.status
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
            matches = self._retrieve_matches(event)
        except _Refused as refused:
            # pynetdicom needs the destination and a count before it takes a failure status.
            yield peer["host"], peer["port"]
            yield 1
            yield refused.status
            return
        yield peer["host"], peer["port"], {"contexts": _contexts_for(matches)}
        yield len(matches)
        yield from self._send(event, matches)

    def _retrieve_matches(self, event) -> list:
        """The instances a C-GET or C-MOVE may send: matching the identifier and the Retrieve rights."""
        decision = self._decide(event, Service.RETRIEVE)
        if not decision.allowed:
            raise _Refused(_failure(NOT_AUTHORIZED, "not authorized to retrieve"))
        try:
            _, query = self._parse(event, retrieve=True)
            matches = list(self.archive.instances(decision.restrict(query)))
        except QueryError as exc:
            log.warning("retrieve refused: %s", exc)
            raise _Refused(_failure(IDENTIFIER_DOES_NOT_MATCH, str(exc))) from None
        if len(matches) > MAX_SUBOPERATIONS:
            raise _Refused(_failure(TOO_MANY_MATCHES, f"{len(matches)} instances match; at most {MAX_SUBOPERATIONS}"))
        return matches

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
        """Yield a marker per instance; pynetdicom sends each before asking for the next."""
        for inst in matches:
            if event.is_cancelled:
                yield CANCELLED, None
                return
            try:
                with self._original_file(inst) as path:
                    marker = Dataset()
                    marker.SOPClassUID = inst.sop_class_uid
                    marker.SOPInstanceUID = inst.sop_instance_uid
                    setattr(marker, ORIGINAL_PATH, path)
                    yield PENDING, marker
            except (KeyError, OSError) as exc:
                log.error("cannot read %s for retrieval: %s", inst.sop_instance_uid, exc)

    @contextlib.contextmanager
    def _original_file(self, inst) -> Iterator[Path]:
        """The stored bytes as a file: the stored file itself, or a temporary copy of inline bytes."""
        with self.archive.open_original(inst.sop_instance_uid) as source:
            name = getattr(source, "name", None)
            if isinstance(name, str) and os.path.isfile(name):
                yield Path(name)
                return
            with tempfile.NamedTemporaryFile(dir=self.incoming_dir, suffix=".dcm") as copy:
                shutil.copyfileobj(source, copy)
                copy.flush()
                yield Path(copy.name)


class _Refused(Exception):
    def __init__(self, status: tuple[Dataset, None]):
        self.status = status


def _wait_while_send_queue_full(assoc: Association) -> None:
    """Hold the next C-FIND response while a few are still waiting to be sent.

    pynetdicom queues responses without limit: without this wait a large result would sit in memory as
    encoded PDUs, and a C-CANCEL would be seen only after the whole result had been queued."""
    pending = assoc.dul.to_provider_queue
    while pending.qsize() > SEND_QUEUE_DEPTH and assoc.is_established:
        time.sleep(SEND_QUEUE_POLL)


def _failure(status: int, comment: str) -> tuple[Dataset, None]:
    """A failure response: the status and its Error Comment go in the command set (PS3.7 C.4), which
    pynetdicom builds from a status data set."""
    status_set = Dataset()
    status_set.Status = status
    status_set.ErrorComment = comment[:64]
    return status_set, None


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
