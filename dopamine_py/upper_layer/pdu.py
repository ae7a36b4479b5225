"""Upper layer PDUs (PS3.8 section 9.3), as an association acceptor reads and writes them."""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass, field
from typing import Iterator

ASSOCIATE_RQ, ASSOCIATE_AC, ASSOCIATE_RJ, P_DATA_TF, RELEASE_RQ, RELEASE_RP, ABORT = range(1, 8)
APPLICATION_CONTEXT = "1.2.840.10008.3.1.1.1"

# A-ASSOCIATE-RJ (PS3.8 9.3.4): result, source, reason
REJECTED_PERMANENT, REJECTED_TRANSIENT = 1, 2
SERVICE_USER, SERVICE_PROVIDER_ACSE, SERVICE_PROVIDER_PRESENTATION = 1, 2, 3
NO_REASON, APPLICATION_CONTEXT_NOT_SUPPORTED, CALLED_AE_NOT_RECOGNIZED = 1, 2, 7
PROTOCOL_VERSION_NOT_SUPPORTED, LOCAL_LIMIT_EXCEEDED = 2, 2

# Presentation context results (PS3.8 9.3.3.2)
ACCEPTANCE, ABSTRACT_SYNTAX_NOT_SUPPORTED, TRANSFER_SYNTAXES_NOT_SUPPORTED = 0, 3, 4

# A-ABORT sources and reasons (PS3.8 9.3.8)
ABORT_BY_USER, ABORT_BY_PROVIDER = 0, 2
UNEXPECTED_PDU, UNRECOGNIZED_PDU_PARAMETER = 2, 6

COMMAND, LAST_FRAGMENT = 0x01, 0x02  # PDV message control header bits


class ProtocolError(Exception):
    """The peer broke the upper layer protocol: the association is aborted."""


class PeerClosed(Exception):
    """The peer closed the connection."""


def recv_exact(sock: socket.socket, size: int) -> bytes:
    chunks, missing = [], size
    while missing:
        chunk = sock.recv(min(missing, 1 << 20))
        if not chunk:
            raise PeerClosed()
        chunks.append(chunk)
        missing -= len(chunk)
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def read_pdu(sock: socket.socket, max_length: int) -> tuple[int, bytes]:
    """One PDU: its type and its body (after the 6-byte header)."""
    kind, _, length = struct.unpack(">BBI", recv_exact(sock, 6))
    if kind not in range(1, 8):
        raise ProtocolError(f"unknown PDU type {kind:#04x}")
    if length > max_length:
        raise ProtocolError(f"PDU of {length} bytes, more than the {max_length} we accept")
    return kind, recv_exact(sock, length) if length else b""


def _items(data: bytes) -> Iterator[tuple[int, bytes]]:
    """Sub-items of variable fields: type (1 byte), reserved (1), length (2), value."""
    offset = 0
    while offset + 4 <= len(data):
        kind, length = data[offset], struct.unpack_from(">H", data, offset + 2)[0]
        yield kind, data[offset + 4:offset + 4 + length]
        offset += 4 + length
    if offset != len(data):
        raise ProtocolError("truncated item in A-ASSOCIATE-RQ")


def _item(kind: int, value: bytes) -> bytes:
    return struct.pack(">BBH", kind, 0, len(value)) + value


def _uid(value: bytes) -> str:
    return value.rstrip(b"\0 ").decode("ascii", "replace")


def _ae_title(value: bytes) -> str:
    """Spaces around an AE title are not part of it (PS3.8 9.3.2); some peers pad it with NULs instead."""
    return value.decode("ascii", "replace").strip(" \0")


@dataclass
class ProposedContext:
    id: int
    abstract_syntax: str
    transfer_syntaxes: list[str]


@dataclass
class UserIdentity:
    kind: int  # 1 username, 2 username and passcode, 3 Kerberos, 4 SAML, 5 JWT
    wants_response: bool
    primary: bytes
    secondary: bytes


@dataclass
class AssociateRequest:
    protocol_version: int
    called_aet: str
    calling_aet: str
    application_context: str = ""
    contexts: list[ProposedContext] = field(default_factory=list)
    max_length: int = 0  # of the P-DATA-TF PDUs the requestor accepts; 0: no limit
    implementation_class_uid: str = ""
    implementation_version: str = ""
    roles: dict[str, tuple[bool, bool]] = field(default_factory=dict)  # SOP class -> (SCU role, SCP role)
    identity: UserIdentity | None = None


def parse_associate_request(body: bytes) -> AssociateRequest:
    if len(body) < 68:
        raise ProtocolError("A-ASSOCIATE-RQ shorter than its fixed fields")
    request = AssociateRequest(
        protocol_version=struct.unpack_from(">H", body, 0)[0],
        called_aet=_ae_title(body[4:20]),
        calling_aet=_ae_title(body[20:36]),
    )
    for kind, value in _items(body[68:]):
        if kind == 0x10:
            request.application_context = _uid(value)
        elif kind == 0x20:
            syntaxes, abstract = [], ""
            for sub_kind, sub_value in _items(value[4:]):
                if sub_kind == 0x30:
                    abstract = _uid(sub_value)
                elif sub_kind == 0x40:
                    syntaxes.append(_uid(sub_value))
            request.contexts.append(ProposedContext(value[0], abstract, syntaxes))
        elif kind == 0x50:
            _parse_user_information(value, request)
    return request


def _parse_user_information(data: bytes, request: AssociateRequest) -> None:
    for kind, value in _items(data):
        if kind == 0x51 and len(value) >= 4:
            request.max_length = struct.unpack_from(">I", value)[0]
        elif kind == 0x52:
            request.implementation_class_uid = _uid(value)
        elif kind == 0x55:
            request.implementation_version = value.decode("ascii", "replace").strip()
        elif kind == 0x54 and len(value) >= 2:
            length = struct.unpack_from(">H", value)[0]
            uid = _uid(value[2:2 + length])
            request.roles[uid] = (bool(value[2 + length]), bool(value[3 + length]))
        elif kind == 0x58 and len(value) >= 4:
            primary_length = struct.unpack_from(">H", value, 2)[0]
            primary = value[4:4 + primary_length]
            rest = value[4 + primary_length:]
            secondary = rest[2:2 + struct.unpack_from(">H", rest)[0]] if len(rest) >= 2 else b""
            request.identity = UserIdentity(value[0], bool(value[1]), primary, secondary)
        # 0x53 asynchronous operations window: not negotiated, so operations stay one at a time (the
        # default). 0x56/0x57 extended negotiation: no reply means none of it is supported.


@dataclass
class ContextResult:
    id: int
    abstract_syntax: str
    result: int
    transfer_syntax: str | None


def associate_ac(request: AssociateRequest, results: list[ContextResult], max_length: int,
                 implementation_class_uid: str, implementation_version: str,
                 roles: dict[str, tuple[bool, bool]], identity_response: bytes | None) -> bytes:
    body = bytearray(struct.pack(">HH", 1, 0))
    body += request.called_aet.encode("ascii", "replace").ljust(16)[:16]
    body += request.calling_aet.encode("ascii", "replace").ljust(16)[:16]
    body += bytes(32)
    body += _item(0x10, APPLICATION_CONTEXT.encode())
    for context in results:
        # A rejected context still carries a transfer syntax sub-item, whose value is not significant.
        syntax = (context.transfer_syntax or "").encode()
        body += _item(0x21, bytes((context.id, 0, context.result, 0)) + _item(0x40, syntax))
    user = _item(0x51, struct.pack(">I", max_length)) + _item(0x52, implementation_class_uid.encode())
    for uid, (scu, scp) in roles.items():
        encoded = uid.encode()
        user += _item(0x54, struct.pack(">H", len(encoded)) + encoded + bytes((scu, scp)))
    user += _item(0x55, implementation_version.encode())
    if identity_response is not None:
        user += _item(0x59, struct.pack(">H", len(identity_response)) + identity_response)
    body += _item(0x50, user)
    return struct.pack(">BBI", ASSOCIATE_AC, 0, len(body)) + bytes(body)


def associate_rj(result: int, source: int, reason: int) -> bytes:
    return struct.pack(">BBIBBBB", ASSOCIATE_RJ, 0, 4, 0, result, source, reason)


def release_rp() -> bytes:
    return struct.pack(">BBII", RELEASE_RP, 0, 4, 0)


def abort(source: int = ABORT_BY_USER, reason: int = 0) -> bytes:
    return struct.pack(">BBIBBBB", ABORT, 0, 4, 0, 0, source, reason)


def p_data(context_id: int, flags: int, payload: bytes | memoryview) -> bytes:
    """A P-DATA-TF PDU holding one PDV."""
    return struct.pack(">BBIIBB", P_DATA_TF, 0, len(payload) + 6, len(payload) + 2, context_id, flags) + payload


def pdvs(body: bytes) -> Iterator[tuple[int, int, memoryview]]:
    """The presentation data values of a P-DATA-TF body: context ID, control header, fragment."""
    view = memoryview(body)
    offset = 0
    while offset < len(body):
        if offset + 6 > len(body):
            raise ProtocolError("truncated PDV item")
        length = struct.unpack_from(">I", body, offset)[0]
        if length < 2 or offset + 4 + length > len(body):
            raise ProtocolError(f"PDV item of length {length} does not fit its PDU")
        yield body[offset + 4], body[offset + 5], view[offset + 6:offset + 4 + length]
        offset += 4 + length
