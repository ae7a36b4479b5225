"""DIMSE command sets (PS3.7 section 9.3 and annex E): group 0000 in implicit VR little endian."""

from __future__ import annotations

import struct
from typing import Any

C_STORE_RQ, C_GET_RQ, C_FIND_RQ, C_MOVE_RQ, C_ECHO_RQ, C_CANCEL_RQ = 0x0001, 0x0010, 0x0020, 0x0021, 0x0030, 0x0FFF
RESPONSE = 0x8000  # a response's command field is its request's with this bit set
NO_DATA_SET, DATA_SET_PRESENT = 0x0101, 0x0000

AFFECTED_SOP_CLASS = 0x0002
COMMAND_FIELD = 0x0100
MESSAGE_ID = 0x0110
RESPONDING_TO = 0x0120
MOVE_DESTINATION = 0x0600
PRIORITY = 0x0700
DATA_SET_TYPE = 0x0800
STATUS = 0x0900
OFFENDING_ELEMENT = 0x0901
ERROR_COMMENT = 0x0902
AFFECTED_SOP_INSTANCE = 0x1000
REMAINING, COMPLETED, FAILED, WARNING = 0x1020, 0x1021, 0x1022, 0x1023
MOVE_ORIGINATOR_AET, MOVE_ORIGINATOR_ID = 0x1030, 0x1031

_US = frozenset({COMMAND_FIELD, MESSAGE_ID, RESPONDING_TO, PRIORITY, DATA_SET_TYPE, STATUS, 0x0903,
                 REMAINING, COMPLETED, FAILED, WARNING, MOVE_ORIGINATOR_ID})
_PADDED_WITH_NULL = frozenset({AFFECTED_SOP_CLASS, 0x0003, AFFECTED_SOP_INSTANCE, 0x1001})  # UIs


class CommandError(ValueError):
    """A command set we cannot read."""


def decode(data: bytes) -> dict[int, Any]:
    """Element number (the group is 0000) -> value: int for US, str for text, raw bytes otherwise."""
    fields: dict[int, Any] = {}
    offset = 0
    try:
        while offset < len(data):
            group, element, length = struct.unpack_from("<HHI", data, offset)
            value = data[offset + 8:offset + 8 + length]
            if len(value) != length or group != 0:
                raise CommandError("command set element outside group 0000 or truncated")
            offset += 8 + length
            if element in _US and length == 2:
                fields[element] = struct.unpack("<H", value)[0]
            elif element == 0x0000 or element == OFFENDING_ELEMENT:
                fields[element] = value
            else:
                fields[element] = value.rstrip(b"\0 ").decode("ascii", "replace").strip()
    except struct.error:
        raise CommandError("truncated command set") from None
    if COMMAND_FIELD not in fields:
        raise CommandError("command set without a Command Field")
    return fields


def encode(fields: dict[int, Any]) -> bytes:
    body = bytearray()
    for element in sorted(fields):
        value = fields[element]
        if value is None:
            continue
        if element in _US:
            encoded = struct.pack("<H", value)
        elif isinstance(value, bytes):
            encoded = value
        else:
            encoded = str(value).encode("ascii", "replace")
            if len(encoded) % 2:
                encoded += b"\0" if element in _PADDED_WITH_NULL else b" "
        body += struct.pack("<HHI", 0, element, len(encoded)) + encoded
    return struct.pack("<HHII", 0, 0, 4, len(body)) + bytes(body)


def response(request: dict[int, Any], status: int, *, data_set: bool = False,
             extra: dict[int, Any] | None = None) -> dict[int, Any]:
    """The response command to a request: same SOP class (and instance, for C-STORE), the status."""
    fields = {
        AFFECTED_SOP_CLASS: request.get(AFFECTED_SOP_CLASS),
        COMMAND_FIELD: request[COMMAND_FIELD] | RESPONSE,
        RESPONDING_TO: request.get(MESSAGE_ID, 0),
        DATA_SET_TYPE: DATA_SET_PRESENT if data_set else NO_DATA_SET,
        STATUS: status,
    }
    if request[COMMAND_FIELD] == C_STORE_RQ:
        fields[AFFECTED_SOP_INSTANCE] = request.get(AFFECTED_SOP_INSTANCE)
    fields.update(extra or {})
    return fields
