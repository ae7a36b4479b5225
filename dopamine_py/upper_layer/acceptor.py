"""The association acceptor: a listening socket, one thread and one blocking loop per association.

Negotiation (PS3.8 section 7.1), then DIMSE messages assembled from P-DATA fragments and handed to the
services one at a time (no asynchronous operations window is negotiated, so a peer waits for each
response). A C-CANCEL or an abort arriving while a service sends its responses is seen between two of
them (``cancel_requested``). Data sets are kept in memory up to ``spill_size`` and written to a file
beyond, so a multi-gigabyte instance never sits whole in memory.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import select
import socket
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Callable, Protocol

from . import commands, pdu
from .commands import CommandError

log = logging.getLogger("dopamine.dimse")

OUR_MAX_PDU = 1 << 20  # what we tell requestors to send at most; larger PDUs cost no more to read
LARGEST_PDU_READ = 64 << 20  # a peer ignoring our maximum is still read, up to this
UNLIMITED_SEND = 1 << 20  # the fragment size we send to a peer that sets no maximum
IMPLEMENTATION_CLASS_UID = "2.25.299962414593249423238838985947784477140"  # a UUID-derived UID (PS3.5 B.2)
IMPLEMENTATION_VERSION = "DOPAMINE_PY_1"


@dataclass
class Message:
    context_id: int
    command: dict[int, Any]
    data: bytes | None = None  # the data set, when it stayed in memory
    path: Path | None = None  # the data set as a Part 10 file, when it was spilled to disk
    failure: OSError | None = None  # the spill file could not be written: the data set is lost

    @property
    def field(self) -> int:
        return self.command[commands.COMMAND_FIELD]

    @property
    def message_id(self) -> int:
        return self.command.get(commands.MESSAGE_ID, 0)


class Services(Protocol):
    """What the acceptor asks of the DIMSE services (dopamine_py/dimse.py)."""

    def transfer_syntaxes(self, abstract_syntax: str) -> list[str] | None: ...

    def authenticate(self, association: "Association", identity: pdu.UserIdentity) -> tuple[bool, bytes | None]: ...

    def handle(self, association: "Association", message: Message) -> None: ...


@dataclass
class AcceptorSettings:
    aet: str
    incoming_dir: Path
    max_associations: int = 32
    network_timeout: float = 60
    spill_size: int = 4 << 20
    part10_header: Callable[..., bytes] | None = None  # (SOP class, instance, syntax, source AET) -> header


@dataclass
class Context:
    id: int
    abstract_syntax: str
    transfer_syntax: str


class Association:
    """One accepted association, as the services see it."""

    def __init__(self, sock: socket.socket, address: tuple[str, int], settings: AcceptorSettings) -> None:
        self.sock = sock
        self.peer_host, self.peer_port = address[0], address[1]
        self.settings = settings
        self.calling_aet = ""
        self.contexts: dict[int, Context] = {}
        self.roles: dict[str, tuple[bool, bool]] = {}
        self.peer_max_pdu = 0
        self.identity: Any = None  # set by the services when a user identity was accepted
        self.release_requested = False
        self.outcomes: collections.Counter[str] = collections.Counter()  # what the services did, for the log
        self.sent_requests = 0  # C-STORE requests we sent on it (C-GET sub-operations), for their message IDs
        self._waiting: list[Message] = []  # messages read during an operation, handled after it
        self._cancelled: set[int] = set()  # message IDs a C-CANCEL asked to stop, during the current operation

    # ---------------------------------------------------------------------------------- negotiation

    def negotiate(self, services: Services, active: int) -> bool:
        kind, body = pdu.read_pdu(self.sock, LARGEST_PDU_READ)
        if kind != pdu.ASSOCIATE_RQ:
            raise pdu.ProtocolError(f"expected an A-ASSOCIATE-RQ, got PDU type {kind}")
        request = pdu.parse_associate_request(body)
        self.calling_aet = request.calling_aet
        self.peer_max_pdu = request.max_length
        refusal = None
        if not request.protocol_version & 1:
            refusal = (pdu.REJECTED_PERMANENT, pdu.SERVICE_PROVIDER_ACSE, pdu.PROTOCOL_VERSION_NOT_SUPPORTED)
        elif request.application_context != pdu.APPLICATION_CONTEXT:
            refusal = (pdu.REJECTED_PERMANENT, pdu.SERVICE_USER, pdu.APPLICATION_CONTEXT_NOT_SUPPORTED)
        elif request.called_aet != self.settings.aet:
            refusal = (pdu.REJECTED_PERMANENT, pdu.SERVICE_USER, pdu.CALLED_AE_NOT_RECOGNIZED)
        elif active > self.settings.max_associations:
            refusal = (pdu.REJECTED_TRANSIENT, pdu.SERVICE_PROVIDER_PRESENTATION, pdu.LOCAL_LIMIT_EXCEEDED)
        identity_response = None
        if refusal is None and request.identity is not None:
            accepted, identity_response = services.authenticate(self, request.identity)
            if not accepted:
                refusal = (pdu.REJECTED_PERMANENT, pdu.SERVICE_USER, pdu.NO_REASON)
            elif not request.identity.wants_response:
                identity_response = None
        if refusal is not None:
            log.warning("association from %s (%s:%d) to %r rejected: result %d, source %d, reason %d",
                        request.calling_aet, self.peer_host, self.peer_port, request.called_aet, *refusal)
            self.sock.sendall(pdu.associate_rj(*refusal))
            return False
        results = []
        for proposed in request.contexts:
            ours = services.transfer_syntaxes(proposed.abstract_syntax)
            if ours is None:
                results.append(pdu.ContextResult(proposed.id, proposed.abstract_syntax, pdu.ABSTRACT_SYNTAX_NOT_SUPPORTED, None))
                continue
            # The requestor's order wins: an archive keeps data as the sender prefers to send it.
            chosen = next((ts for ts in proposed.transfer_syntaxes if ts in ours), None)
            if chosen is None:
                results.append(pdu.ContextResult(proposed.id, proposed.abstract_syntax, pdu.TRANSFER_SYNTAXES_NOT_SUPPORTED, None))
                continue
            results.append(pdu.ContextResult(proposed.id, proposed.abstract_syntax, pdu.ACCEPTANCE, chosen))
            self.contexts[proposed.id] = Context(proposed.id, proposed.abstract_syntax, chosen)
        # Roles as proposed, for the SOP classes we accepted (a C-GET requestor asks to be the storage SCP).
        accepted_classes = {c.abstract_syntax for c in self.contexts.values()}
        self.roles = {uid: roles for uid, roles in request.roles.items() if uid in accepted_classes}
        self.sock.sendall(pdu.associate_ac(request, results, OUR_MAX_PDU, IMPLEMENTATION_CLASS_UID,
                                           IMPLEMENTATION_VERSION, self.roles, identity_response))
        log.info("association from %s (%s:%d) accepted, %d of %d presentation contexts",
                 self.calling_aet, self.peer_host, self.peer_port, len(self.contexts), len(request.contexts))
        return True

    # ------------------------------------------------------------------------------------- receiving

    def receive(self) -> Message | None:
        """The next DIMSE message to handle, or None once the peer asked to release the association."""
        if self._waiting:
            return self._waiting.pop(0)
        return self.read_message()

    def read_message(self) -> Message | None:
        """The next message off the socket (None after a release request). A C-CANCEL is also noted, so
        that ``cancel_requested`` sees it whoever read it."""
        if self.release_requested:
            return None
        message = self._read()
        if message is not None and message.field == commands.C_CANCEL_RQ:
            self._cancelled.add(message.command.get(commands.RESPONDING_TO))
        return message

    def keep_for_later(self, message: Message) -> None:
        """A message read during an operation that is not part of it: handled once the operation ends."""
        self._waiting.append(message)

    def operation_ended(self, message: Message) -> None:
        self._cancelled.clear()  # message IDs may be used again; a cancel never outlives its operation
        if message.path is not None:  # the spilled data set, unless the services moved it into the store
            with contextlib.suppress(OSError):
                message.path.unlink(missing_ok=True)

    def _read(self) -> Message | None:
        command = bytearray()
        message: Message | None = None
        incoming: _Incoming | None = None
        try:
            while True:
                kind, body = pdu.read_pdu(self.sock, LARGEST_PDU_READ)
                if kind == pdu.RELEASE_RQ:
                    self.release_requested = True
                    return None
                if kind == pdu.ABORT:
                    raise pdu.PeerClosed()
                if kind != pdu.P_DATA_TF:
                    raise pdu.ProtocolError(f"unexpected PDU type {kind} on an established association")
                for context_id, flags, fragment in pdu.pdvs(body):
                    if context_id not in self.contexts:
                        raise pdu.ProtocolError(f"data on presentation context {context_id}, which was not accepted")
                    if flags & pdu.COMMAND:
                        if message is not None:
                            raise pdu.ProtocolError("a command fragment inside a data set")
                        command += fragment
                        if flags & pdu.LAST_FRAGMENT:
                            message = Message(context_id, commands.decode(bytes(command)))
                            if message.command.get(commands.DATA_SET_TYPE, commands.NO_DATA_SET) == commands.NO_DATA_SET:
                                return message
                            incoming = _Incoming(self.settings, message, self.contexts[context_id].transfer_syntax,
                                                 self.calling_aet)
                        continue
                    if message is None or context_id != message.context_id:
                        raise pdu.ProtocolError("a data set fragment without its command")
                    incoming.write(fragment)
                    if flags & pdu.LAST_FRAGMENT:
                        incoming.finish()
                        incoming = None
                        return message
        except CommandError as exc:
            raise pdu.ProtocolError(str(exc)) from None
        finally:
            if incoming is not None:  # the association ended inside a data set
                incoming.discard()

    def cancel_requested(self, message_id: int) -> bool:
        """Whether the peer sent a C-CANCEL for this operation. Reads only what has already arrived;
        other messages are kept for later, a release request is answered after the operation."""
        while message_id not in self._cancelled and not self.release_requested:
            readable, _, _ = select.select([self.sock], [], [], 0)
            if not readable:
                break
            message = self.read_message()
            if message is not None and message.field != commands.C_CANCEL_RQ:
                self.keep_for_later(message)
        return message_id in self._cancelled

    # --------------------------------------------------------------------------------------- sending

    def send(self, context_id: int, command: dict[int, Any], data: bytes | None = None,
             stream: BinaryIO | None = None) -> None:
        """A DIMSE message: its command set, then its data set from ``data`` or read from ``stream``."""
        if data is not None or stream is not None:
            command[commands.DATA_SET_TYPE] = commands.DATA_SET_PRESENT
        else:
            command[commands.DATA_SET_TYPE] = commands.NO_DATA_SET
        size = (self.peer_max_pdu or UNLIMITED_SEND) - 6
        pdus = list(_fragments(context_id, commands.encode(command), size, pdu.COMMAND))
        if data is not None:
            pdus += _fragments(context_id, data, size, 0)
        self.sock.sendall(b"".join(pdus))
        if stream is not None:
            chunk = stream.read(size)
            while chunk:
                following = stream.read(size)
                self.sock.sendall(pdu.p_data(context_id, 0 if following else pdu.LAST_FRAGMENT, chunk))
                chunk = following

    def context_for(self, abstract_syntax: str, transfer_syntaxes: list[str], *, as_scu: bool = False) -> Context | None:
        """An accepted context for sending this SOP class in one of these syntaxes (in that order).
        ``as_scu``: we send requests on it (C-GET sub-operations), so the peer must have taken the SCP role."""
        if as_scu and not self.roles.get(abstract_syntax, (True, False))[1]:
            return None
        for syntax in transfer_syntaxes:
            for context in self.contexts.values():
                if context.abstract_syntax == abstract_syntax and context.transfer_syntax == syntax:
                    return context
        return None

    def abort(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.sendall(pdu.abort())
        self.close()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(OSError):
            self.sock.close()


def _fragments(context_id: int, data: bytes, size: int, flags: int):
    view = memoryview(data)
    if not data:
        yield pdu.p_data(context_id, flags | pdu.LAST_FRAGMENT, b"")
    for start in range(0, len(data), size):
        last = pdu.LAST_FRAGMENT if start + size >= len(data) else 0
        yield pdu.p_data(context_id, flags | last, view[start:start + size])


class _Incoming:
    """A data set being received: in memory, then in a Part 10 file once larger than ``spill_size``.
    A failed write (full disk) is remembered and the rest of the data set dropped, so that the service
    answers 'out of resources' and the association goes on."""

    def __init__(self, settings: AcceptorSettings, message: Message, transfer_syntax: str, source_aet: str) -> None:
        self.settings = settings
        self.source_aet = source_aet
        self.message = message
        self.transfer_syntax = transfer_syntax
        self.buffer = bytearray()
        self.file: BinaryIO | None = None

    def write(self, fragment: memoryview) -> None:
        if self.message.failure is not None:
            return
        if self.file is None and len(self.buffer) + len(fragment) <= self.settings.spill_size:
            self.buffer += fragment
            return
        try:
            if self.file is None:
                self._spill()
            self.file.write(fragment)
        except OSError as exc:
            self.message.failure = exc
            self.discard()

    def _spill(self) -> None:
        handle, name = tempfile.mkstemp(dir=self.settings.incoming_dir, suffix=".dcm")
        self.file = os.fdopen(handle, "wb")
        self.message.path = Path(name)
        command = self.message.command
        self.file.write(self.settings.part10_header(
            command.get(commands.AFFECTED_SOP_CLASS, ""), command.get(commands.AFFECTED_SOP_INSTANCE, ""),
            self.transfer_syntax, self.source_aet))
        self.file.write(self.buffer)
        self.buffer = bytearray()

    def finish(self) -> None:
        if self.message.failure is not None:
            return
        if self.file is None:
            self.message.data = bytes(self.buffer)
            return
        try:
            self.file.close()
        except OSError as exc:
            self.message.failure = exc
            self.discard()

    def discard(self) -> None:
        if self.file is not None:
            with contextlib.suppress(OSError):
                self.file.close()
        if self.message.path is not None:
            with contextlib.suppress(OSError):
                self.message.path.unlink()
            self.message.path = None
        self.buffer = bytearray()


class AcceptorServer:
    """Listens, and runs each accepted association in a thread of its own."""

    def __init__(self, address: tuple[str, int], settings: AcceptorSettings, services: Services) -> None:
        self.settings = settings
        self.services = services
        self.listener = socket.create_server(address, reuse_port=False)
        self._active: set[Association] = set()
        self._lock = threading.Lock()
        self._stopping = False
        self._thread = threading.Thread(target=self._accept_loop, name="dimse-acceptor", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopping = True
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(OSError):
            self.listener.close()
        with self._lock:
            active = list(self._active)
        for association in active:
            association.abort()
        self._thread.join(timeout=5)

    def _accept_loop(self) -> None:
        while not self._stopping:
            try:
                sock, address = self.listener.accept()
            except OSError:
                if self._stopping:
                    return
                continue
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.settimeout(self.settings.network_timeout)
            association = Association(sock, address, self.settings)
            threading.Thread(target=self._serve, args=(association,), name=f"dimse-{address[0]}:{address[1]}",
                             daemon=True).start()

    def _serve(self, association: Association) -> None:
        with self._lock:
            self._active.add(association)
            active = len(self._active)
        try:
            if not association.negotiate(self.services, active):
                return
            while True:
                message = association.receive()
                if message is None:
                    break
                try:
                    self.services.handle(association, message)
                finally:
                    association.operation_ended(message)
            association.sock.sendall(pdu.release_rp())
            log.info("association from %s (%s:%d) released%s", association.calling_aet, association.peer_host,
                     association.peer_port, _summary(association.outcomes))
        except pdu.PeerClosed:
            log.info("association from %s (%s:%d) closed by the peer%s", association.calling_aet,
                     association.peer_host, association.peer_port, _summary(association.outcomes))
        except pdu.ProtocolError as exc:
            log.warning("aborting the association from %s (%s:%d): %s", association.calling_aet,
                        association.peer_host, association.peer_port, exc)
            association.abort()
        except socket.timeout:
            log.warning("aborting the association from %s (%s:%d): no data for %ss", association.calling_aet,
                        association.peer_host, association.peer_port, self.settings.network_timeout)
            association.abort()
        except OSError as exc:
            log.info("association from %s (%s:%d) ended: %s", association.calling_aet, association.peer_host,
                     association.peer_port, exc)
        finally:
            association.close()
            with self._lock:
                self._active.discard(association)


def _summary(outcomes: collections.Counter) -> str:
    return (": " + ", ".join(f"{count} {what}" for what, count in sorted(outcomes.items()))) if outcomes else ""
