"""DIMSE services: Verification, Storage, Query/Retrieve FIND, GET and MOVE.

Protocol code only: every request becomes a call on the archive service. Associations are accepted by
our own upper layer (``upper_layer/``); pynetdicom opens the associations we request (the C-MOVE
sub-association to the destination).
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import shutil
import socket
import tempfile
from pathlib import Path
from typing import Any, BinaryIO, Iterator

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filereader import read_dataset
from pydicom.filewriter import write_dataset
from pydicom.uid import AllTransferSyntaxes, ExplicitVRLittleEndian, ImplicitVRLittleEndian, UID
from pynetdicom import AE, _config, build_context, transport
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

from . import dimse_wakeups, part10
from .archive import COMPUTED, NOT_AUTHORIZED, OUT_OF_RESOURCES, ArchiveService, Source, computed_attributes
from .document import tag_key, to_dataset
from .matching import MatchOptions, Query, QueryError, parse_identifier
from .storage.base import Found, InstanceRecord, Level
from .upper_layer import commands as cmd
from .upper_layer.acceptor import (IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION, AcceptorServer,
                                   AcceptorSettings, Association, Message)
from .upper_layer.pdu import PeerClosed, ProtocolError, UserIdentity

log = logging.getLogger("dopamine.dimse")

PATIENT_ROOT = {
    PatientRootQueryRetrieveInformationModelFind,
    PatientRootQueryRetrieveInformationModelGet,
    PatientRootQueryRetrieveInformationModelMove,
}
FIND_CLASSES = {PatientRootQueryRetrieveInformationModelFind, StudyRootQueryRetrieveInformationModelFind}
GET_CLASSES = {PatientRootQueryRetrieveInformationModelGet, StudyRootQueryRetrieveInformationModelGet}
MOVE_CLASSES = {PatientRootQueryRetrieveInformationModelMove, StudyRootQueryRetrieveInformationModelMove}
QR_CLASSES = FIND_CLASSES | GET_CLASSES | MOVE_CLASSES
STORAGE_CLASSES = frozenset(str(cx.abstract_syntax) for cx in AllStoragePresentationContexts)
ALL_SYNTAXES = [str(ts) for ts in AllTransferSyntaxes]
QR_SYNTAXES = [ExplicitVRLittleEndian, ImplicitVRLittleEndian]
UNCOMPRESSED = (ExplicitVRLittleEndian, ImplicitVRLittleEndian)

# Statuses (PS3.4 C.4, PS3.7 C).
SUCCESS = 0x0000
PENDING = 0xFF00
CANCELLED = 0xFE00
IDENTIFIER_DOES_NOT_MATCH = 0xA900
UNABLE_TO_PROCESS = 0xC000
MOVE_DESTINATION_UNKNOWN = 0xA801
TOO_MANY_MATCHES = 0xA700
SUB_OPERATIONS_FAILED = 0xA702
SOME_SUB_OPERATIONS_FAILED = 0xB000
SOP_CLASS_NOT_SUPPORTED = 0x0122
UNRECOGNIZED_OPERATION = 0x0211
MAX_SUBOPERATIONS = 65535
MAX_CONTEXTS = 128
FAILED_SOP_INSTANCE_UID_LIST = 0x00080058


def enable_tcp_nodelay() -> None:
    """Set TCP_NODELAY on the sockets pynetdicom opens (our requests: C-MOVE sub-associations, forwarding).

    Without it a DICOM peer waits for the delayed ACK of each small PDU (about 40 ms a message).
    pynetdicom offers no socket-option hook, so its socket factory is wrapped, once.
    """
    if getattr(transport, "_dopamine_nodelay", False):
        return
    create = transport.AssociationSocket._create_socket

    def create_socket(self, address):
        sock = create(self, address)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock

    transport.AssociationSocket._create_socket = create_socket
    transport._dopamine_nodelay = True


class _Refused(Exception):
    def __init__(self, status: int, comment: str):
        super().__init__(comment)
        self.status = status
        self.comment = comment[:64]


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
        self.network_timeout = network_timeout
        self.settings = AcceptorSettings(aet=aet, incoming_dir=self.incoming_dir, max_associations=max_associations,
                                         network_timeout=network_timeout, part10_header=_file_header)
        enable_tcp_nodelay()
        dimse_wakeups.install()  # for the associations pynetdicom opens for us
        # C-MOVE sub-operations hand pynetdicom the stored file's path: with this it sends the data set's
        # bytes as they are; without it, it decodes and re-encodes them (not byte for byte).
        _config.STORE_SEND_CHUNKED_DATASET = True
        self._server: AcceptorServer | None = None
        self._handlers = {cmd.C_ECHO_RQ: self.on_echo, cmd.C_STORE_RQ: self.on_store, cmd.C_FIND_RQ: self.on_find,
                          cmd.C_GET_RQ: self.on_get, cmd.C_MOVE_RQ: self.on_move}

    def start(self) -> None:
        self._server = AcceptorServer(self.address, self.settings, self)
        self._server.start()
        log.info("DIMSE listening on %s:%d as %s", *self.address, self.aet)

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None

    # ------------------------------------------------------------------------ what the acceptor asks

    def transfer_syntaxes(self, abstract_syntax: str) -> list[str] | None:
        if abstract_syntax in STORAGE_CLASSES or abstract_syntax == Verification:
            return ALL_SYNTAXES
        if abstract_syntax in QR_CLASSES:
            return QR_SYNTAXES
        return None

    def authenticate(self, association: Association, identity: UserIdentity) -> tuple[bool, bytes | None]:
        accepted, who, response = self.access.authenticate_dimse(
            identity.kind, identity.primary, identity.secondary, calling_aet=association.calling_aet,
            peer_host=association.peer_host, peer_port=association.peer_port,
        )
        if accepted:
            association.identity = who
        return accepted, response

    def handle(self, association: Association, message: Message) -> None:
        handler = self._handlers.get(message.field)
        if message.field == cmd.C_CANCEL_RQ:
            return  # for an operation that already ended
        if handler is None:
            self._answer(association, message, UNRECOGNIZED_OPERATION, f"command field {message.field:#06x}")
            return
        try:
            handler(association, message)
        except (OSError, PeerClosed, ProtocolError):
            raise  # the connection or the peer: the acceptor ends (or aborts) the association
        except Exception as exc:  # a bug must cost one operation, not the association without an answer
            log.exception("%#06x from %s failed", message.field, association.calling_aet)
            self._answer(association, message, UNABLE_TO_PROCESS, f"internal error: {type(exc).__name__}")

    # ----------------------------------------------------------------------------------- access control

    def _decide(self, association: Association, service: Service):
        identity = association.identity
        if identity is None:
            identity = self.access.dimse_identity(association.calling_aet, association.peer_host, association.peer_port)
        return self.access.decide(identity, service)

    @staticmethod
    def _source(association: Association, identity) -> Source:
        """Where a C-STORE comes from, with the user the association authenticated (for routing rules
        on the user, and provenance)."""
        return Source(protocol="dimse", calling_aet=association.calling_aet, user=identity.user,
                      peer=f"{association.peer_host}:{association.peer_port}")

    # ----------------------------------------------------------------------------------------- services

    def on_echo(self, association: Association, message: Message) -> None:
        if self._decide(association, Service.ECHO).allowed:
            self._answer(association, message, SUCCESS)
            return
        # C-ECHO has no "not authorized" status that clients act on (echoscu exits 0 on any status):
        # the refusal is the end of the association.
        association.abort()

    def on_store(self, association: Association, message: Message) -> None:
        request = message.command
        sop_class = request.get(cmd.AFFECTED_SOP_CLASS, "")
        sop_instance = request.get(cmd.AFFECTED_SOP_INSTANCE, "")
        if message.failure is not None:
            log.error("could not write an incoming data set to disk: %s", message.failure)
            reason = f"out of resources: {message.failure.strerror or message.failure}"
            self._answer(association, message, OUT_OF_RESOURCES, reason)
            return
        context = association.contexts[message.context_id]
        if context.abstract_syntax != sop_class:
            self._answer(association, message, SOP_CLASS_NOT_SUPPORTED,
                         f"{sop_class} sent on the presentation context of {context.abstract_syntax}")
            return
        decision = self._decide(association, Service.STORE)
        if not decision.allowed:
            self._answer(association, message, NOT_AUTHORIZED, "not authorized to store")
            return
        source = self._source(association, decision.identity)
        permits = None if decision.unrestricted else decision.permits
        if message.path is not None:
            result = self.archive.store_file(message.path, source, take_ownership=True, expected_sop_class=sop_class,
                                             expected_sop_instance=sop_instance, permits=permits)
        else:
            header = _file_header(sop_class, sop_instance, context.transfer_syntax, association.calling_aet)
            result = self.archive.store_received(header, message.data or b"", context.transfer_syntax, source,
                                                 expected=(sop_class, sop_instance), permits=permits)
        association.outcomes[f"C-STORE {result.status}"] += 1
        comment = result.reason if result.reason and result.dimse_status != SUCCESS else None
        self._answer(association, message, result.dimse_status, comment)

    def on_find(self, association: Association, message: Message) -> None:
        try:
            decision = self._decide(association, Service.QUERY)
            if not decision.allowed:
                raise _Refused(NOT_AUTHORIZED, "not authorized to query")
            identifier = self._identifier(association, message)
            level, query = self._parse(association, message, identifier, FIND_CLASSES)
            # The access constraints go into the backend query: counts and results never see hidden data.
            found = self.archive.find(level, decision.restrict(query))
        except QueryError as exc:
            log.warning("C-FIND refused: %s", exc)
            self._answer(association, message, IDENTIFIER_DOES_NOT_MATCH, str(exc))
            return
        except _Refused as refused:
            self._answer(association, message, refused.status, refused.comment)
            return
        context = association.contexts[message.context_id]
        for answer in found:
            if association.cancel_requested(message.message_id):
                self._answer(association, message, CANCELLED)
                return
            response = _encode(self._response(identifier, level, answer), context.transfer_syntax)
            association.send(message.context_id, cmd.response(message.command, PENDING), data=response)
        self._answer(association, message, SUCCESS)

    def on_get(self, association: Association, message: Message) -> None:
        try:
            matches = self._retrieve_matches(association, message, GET_CLASSES)
        except _Refused as refused:
            self._answer(association, message, refused.status, refused.comment)
            return
        self._sub_operations(association, message, matches, lambda inst: self._store_back(association, message, inst))

    def on_move(self, association: Association, message: Message) -> None:
        destination = str(message.command.get(cmd.MOVE_DESTINATION, "")).strip()
        try:
            peer = self.archive.backend.get_peer(destination)
            if peer is None:
                log.warning("C-MOVE to unknown destination %r (add it with `dopamine peer add`)", destination)
                raise _Refused(MOVE_DESTINATION_UNKNOWN, f"unknown move destination {destination!r}")
            matches = self._retrieve_matches(association, message, MOVE_CLASSES)
        except _Refused as refused:
            self._answer(association, message, refused.status, refused.comment)
            return
        if not matches:
            self._answer(association, message, SUCCESS, extra=_counts(0, 0, 0, 0, final=True))
            return
        ae = AE(ae_title=self.aet)
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = self.network_timeout
        ae.requested_contexts = _contexts_for(matches)
        sub = ae.associate(peer["host"], peer["port"], ae_title=peer["aet"])
        if not sub.is_established:
            log.warning("C-MOVE: association with %s@%s:%s failed", peer["aet"], peer["host"], peer["port"])
            self._answer(association, message, MOVE_DESTINATION_UNKNOWN, f"cannot associate with {destination}")
            return
        try:
            self._sub_operations(association, message, matches,
                                 lambda inst: self._store_to(sub, inst, association.calling_aet, message.message_id))
        finally:
            if sub.is_established:
                sub.release()

    # --------------------------------------------------------------------------------- retrieval

    def _retrieve_matches(self, association: Association, message: Message, models: set) -> list[InstanceRecord]:
        """The instances a C-GET or C-MOVE may send: matching the identifier and the Retrieve rights."""
        decision = self._decide(association, Service.RETRIEVE)
        if not decision.allowed:
            raise _Refused(NOT_AUTHORIZED, "not authorized to retrieve")
        identifier = self._identifier(association, message)
        _, query = self._parse(association, message, identifier, models)
        query = Query(tuple(c for c in query.conditions if c.tag not in COMPUTED), query.return_tags)
        try:
            matches = list(self.archive.instances(decision.restrict(query)))
        except QueryError as exc:
            log.warning("retrieve refused: %s", exc)
            raise _Refused(IDENTIFIER_DOES_NOT_MATCH, str(exc)) from None
        if len(matches) > MAX_SUBOPERATIONS:
            raise _Refused(TOO_MANY_MATCHES, f"{len(matches)} instances match; at most {MAX_SUBOPERATIONS}")
        return matches

    def _sub_operations(self, association: Association, message: Message, matches: list, store) -> None:
        """Send each match with ``store`` (which returns the C-STORE status or None when it could not be
        sent), a pending response after each, and the final response with the counts (PS3.4 C.4.2/C.4.3)."""
        completed = failed = warning = 0
        failed_uids: list[str] = []
        cancelled = False
        for done, inst in enumerate(matches):
            if association.cancel_requested(message.message_id):
                cancelled = True
                break
            status = store(inst)
            if status == SUCCESS:
                completed += 1
            elif status is not None and status & 0xF000 == 0xB000:
                warning += 1
            else:
                failed += 1
                failed_uids.append(inst.sop_instance_uid)
            remaining = len(matches) - done - 1
            if remaining:
                self._answer(association, message, PENDING, extra=_counts(remaining, completed, failed, warning))
        if cancelled:
            status = CANCELLED
        elif failed == 0 and warning == 0:
            status = SUCCESS
        elif completed == 0 and warning == 0:
            status = SUB_OPERATIONS_FAILED
        else:
            status = SOME_SUB_OPERATIONS_FAILED
        data = None
        if failed_uids:
            ds = Dataset()
            ds.FailedSOPInstanceUIDList = failed_uids
            data = _encode(ds, association.contexts[message.context_id].transfer_syntax)
        association.send(message.context_id, cmd.response(message.command, status, extra=_counts(
            len(matches) - completed - failed - warning if cancelled else 0, completed, failed, warning, final=not cancelled)),
            data=data)

    def _store_back(self, association: Association, message: Message, inst: InstanceRecord) -> int | None:
        """A C-GET sub-operation: a C-STORE on the requestor's own association."""
        context = association.context_for(inst.sop_class_uid, _syntaxes_for(inst), as_scu=True)
        if context is None:
            log.warning("C-GET: %s not sent, the requestor accepted no context for %s in %s",
                        inst.sop_instance_uid, inst.sop_class_uid, inst.transfer_syntax_uid)
            return None
        sub_id = (message.message_id + 1 + association.sent_requests) & 0xFFFF
        association.sent_requests += 1
        request = {cmd.AFFECTED_SOP_CLASS: inst.sop_class_uid, cmd.COMMAND_FIELD: cmd.C_STORE_RQ,
                   cmd.MESSAGE_ID: sub_id, cmd.PRIORITY: 0, cmd.AFFECTED_SOP_INSTANCE: inst.sop_instance_uid}
        try:
            with self.archive.open_original(inst.sop_instance_uid) as original:
                if context.transfer_syntax == inst.transfer_syntax_uid:
                    part10.skip_file_meta(original)
                    association.send(context.id, request, stream=original)
                else:
                    association.send(context.id, request, data=_transcode(original, context.transfer_syntax))
        except (KeyError, OSError, ValueError) as exc:
            log.error("C-GET: cannot send %s: %s", inst.sop_instance_uid, exc)
            return None
        return self._await_store_response(association, sub_id)

    def _await_store_response(self, association: Association, sub_id: int) -> int | None:
        while True:
            reply = association.read_message()
            if reply is None:
                return None  # released under us: the final response will not be read anyway
            if reply.field == cmd.C_STORE_RQ | cmd.RESPONSE and reply.command.get(cmd.RESPONDING_TO) == sub_id:
                return reply.command.get(cmd.STATUS)
            if reply.field != cmd.C_CANCEL_RQ:  # a cancel is noted by the association, seen after this response
                association.keep_for_later(reply)

    def _store_to(self, sub, inst: InstanceRecord, originator: str, originator_id: int) -> int | None:
        """A C-MOVE sub-operation: a C-STORE to the destination, the stored bytes sent as they are."""
        try:
            with self._original_file(inst) as path:
                try:
                    status = sub.send_c_store(path, originator_aet=originator, originator_id=originator_id)
                except (ValueError, AttributeError):  # no context for the stored syntax: pynetdicom converts
                    status = sub.send_c_store(dcmread(path), originator_aet=originator, originator_id=originator_id)
        except (KeyError, OSError) as exc:
            log.error("C-MOVE: cannot send %s: %s", inst.sop_instance_uid, exc)
            return None
        return getattr(status, "Status", None)

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

    # ----------------------------------------------------------------------------------------- helpers

    def _answer(self, association: Association, message: Message, status: int, comment: str | None = None,
                extra: dict[int, Any] | None = None) -> None:
        fields = dict(extra or {})
        if comment:
            fields[cmd.ERROR_COMMENT] = comment[:64]
        association.send(message.context_id, cmd.response(message.command, status, extra=fields))

    def _identifier(self, association: Association, message: Message) -> Dataset:
        if message.data is None:
            raise _Refused(IDENTIFIER_DOES_NOT_MATCH, "no identifier")
        syntax = UID(association.contexts[message.context_id].transfer_syntax)
        try:
            return read_dataset(io.BytesIO(message.data), syntax.is_implicit_VR, syntax.is_little_endian)
        except Exception as exc:  # pydicom raises many types on bad data
            raise _Refused(IDENTIFIER_DOES_NOT_MATCH, f"cannot decode the identifier: {exc}") from None

    def _parse(self, association: Association, message: Message, identifier: Dataset, models: set) -> tuple[Level, Query]:
        model = association.contexts[message.context_id].abstract_syntax
        if model not in models:
            raise _Refused(SOP_CLASS_NOT_SUPPORTED, f"{model} is not a model for this request")
        try:
            level_text = str(identifier.get("QueryRetrieveLevel", "") or "").strip().upper()
            try:
                level = Level(level_text)
            except ValueError:
                raise QueryError(f"QueryRetrieveLevel {level_text!r} is not PATIENT, STUDY, SERIES or IMAGE") from None
            if level == Level.PATIENT and model not in PATIENT_ROOT:
                raise QueryError("PATIENT level is only defined for the Patient Root information model")
            return level, parse_identifier(identifier, self.match_options)
        except QueryError as exc:
            log.warning("C-FIND/GET/MOVE refused: %s", exc)
            raise _Refused(IDENTIFIER_DOES_NOT_MATCH, str(exc)) from None

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


def _file_header(sop_class: str, sop_instance: str, transfer_syntax: str, source_aet: str = "") -> bytes:
    return part10.file_header(sop_class, sop_instance, transfer_syntax, implementation_class_uid=IMPLEMENTATION_CLASS_UID,
                              implementation_version=IMPLEMENTATION_VERSION, source_aet=source_aet)


def _encode(ds: Dataset, transfer_syntax: str) -> bytes:
    syntax = UID(transfer_syntax)
    buffer = DicomBytesIO()
    buffer.is_little_endian = syntax.is_little_endian
    buffer.is_implicit_VR = syntax.is_implicit_VR
    write_dataset(buffer, ds)
    return buffer.getvalue()


def _transcode(original: BinaryIO, transfer_syntax: str) -> bytes:
    """The stored data set in another uncompressed syntax, for a C-GET requestor that accepted only that."""
    ds = dcmread(original)
    if ds.file_meta.TransferSyntaxUID.is_compressed:
        raise ValueError(f"stored compressed ({ds.file_meta.TransferSyntaxUID}), the requestor accepted only {transfer_syntax}")
    return _encode(ds, transfer_syntax)


def _syntaxes_for(inst: InstanceRecord) -> list[str]:
    return list(dict.fromkeys([inst.transfer_syntax_uid, *UNCOMPRESSED]))


def _counts(remaining: int, completed: int, failed: int, warning: int, final: bool = False) -> dict[int, int]:
    counts = {cmd.COMPLETED: completed, cmd.FAILED: failed, cmd.WARNING: warning}
    if not final:
        counts[cmd.REMAINING] = remaining
    return counts


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
        for ts in _syntaxes_for(inst):
            if ts not in syntaxes:
                syntaxes.append(ts)
    contexts = []
    for sop_class, syntaxes in wanted.items():
        for ts in syntaxes:
            if len(contexts) < MAX_CONTEXTS:
                contexts.append(build_context(sop_class, ts))
    return contexts
