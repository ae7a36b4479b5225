"""Document elements straight from encoded values, for the common cases.

Storing an instance spent half its time in pydicom turning each encoded element into a DataElement
(value conversion, validation, MultiValue, PersonName ...) only for ``document._element`` to turn it into
plain JSON values. ``element`` does that conversion from the bytes for explicit VR little endian
elements of the usual VRs and returns None for everything else (implicit VR, UN, SQ, ISO 2022 escape
sequences, values that are not valid for their VR ...), which then take pydicom's path.

It must give exactly what pydicom's path gives: tests/test_raw_values.py compares the two on every sample
file of pydicom and pydicom-data and on generated values.
"""

from __future__ import annotations

import math
import struct
from typing import Any

from pydicom.dataelem import RawDataElement

PN_GROUPS = ("Alphabetic", "Ideographic", "Phonetic")
DEFAULT_ENCODING = "iso8859"  # pydicom's decoding of the VRs that are not affected by the character set
ESC = 0x1B

_STRUCT = {"US": "H", "SS": "h", "UL": "L", "SL": "l", "FL": "f", "FD": "d", "SV": "q", "UV": "Q"}
_BINARY = frozenset({"OB", "OD", "OF", "OL", "OV", "OW"})
_MULTI_TEXT = frozenset({"SH", "LO", "UC"})  # decoded with the character set, split on backslashes
_SINGLE_TEXT = frozenset({"ST", "LT", "UT"})  # decoded with the character set, one value
_PLAIN = frozenset({"AS", "CS", "DA", "DT", "TM"})  # trailing padding stripped, then split


def element(raw: RawDataElement, encodings: str | list[str]) -> dict[str, Any] | None:
    """The document element of an encoded element, or None when pydicom must convert it."""
    vr = raw.VR
    if vr is None or raw.is_implicit_VR or not raw.is_little_endian or raw.value is None:
        return None
    data = raw.value
    if not data:
        return {"vr": vr} if vr in _CONVERTERS else None
    converter = _CONVERTERS.get(vr)
    if converter is None:
        return None
    if isinstance(encodings, str):
        encodings = [encodings]
    try:
        values = converter(data, vr, encodings)
    except (ValueError, UnicodeError, struct.error, LookupError):
        return None
    if values is None:
        return None
    if vr in _BINARY:
        return {"vr": vr, "InlineBinary": values}
    if len(values) == 1 and values[0] in ("", {}):
        return {"vr": vr}  # as pydicom's path: an empty single value (or name of empty groups) is no value
    return {"vr": vr, "Value": values}


def _binary(data: bytes, vr: str, encodings: list[str]) -> bytes:
    return bytes(data)


def _numbers(data: bytes, vr: str, encodings: list[str]) -> list[Any] | None:
    code = _STRUCT[vr]
    size = struct.calcsize(code)
    if len(data) % size:
        return None
    values = list(struct.unpack(f"<{len(data) // size}{code}", data))
    if code in "fd" and not all(math.isfinite(v) for v in values):
        return None  # pydicom's path keeps these as strings
    return values


def _tags(data: bytes, vr: str, encodings: list[str]) -> list[str] | None:
    if len(data) % 4:
        return None
    words = struct.unpack(f"<{len(data) // 2}H", data)
    return [f"{words[i]:04X}{words[i + 1]:04X}" for i in range(0, len(words), 2)]


def _text(data: bytes, encodings: list[str]) -> str | None:
    if ESC in data or len(encodings) != 1:
        return None  # ISO 2022 code extensions: pydicom decodes them fragment by fragment
    return data.decode(encodings[0])  # strict: a value pydicom would decode with replacements goes to pydicom


def _multi_text(data: bytes, vr: str, encodings: list[str]) -> list[str] | None:
    text = _text(data, encodings)
    return None if text is None else [v.rstrip("\0 ") for v in text.split("\\")]


def _single_text(data: bytes, vr: str, encodings: list[str]) -> list[str] | None:
    text = _text(data, encodings)
    return None if text is None else [text.rstrip("\0 ")]


def _person_names(data: bytes, vr: str, encodings: list[str]) -> list[dict[str, str]] | None:
    text = _text(data.rstrip(b"\0 "), encodings)
    if text is None:
        return None
    return [{group: part for group, part in zip(PN_GROUPS, name.split("=")) if part} for name in text.split("\\")]


def _plain(data: bytes, vr: str, encodings: list[str]) -> list[str]:
    return data.decode(DEFAULT_ENCODING).rstrip(" \0").split("\\")


def uids(data: bytes) -> list[str]:
    """The values of an encoded UI element as pydicom decodes them (each value stripped, as its UID does)."""
    return [v.strip() for v in data.decode(DEFAULT_ENCODING).rstrip(" \0").split("\\")]


def _uids(data: bytes, vr: str, encodings: list[str]) -> list[str]:
    return uids(data)


def _application_entities(data: bytes, vr: str, encodings: list[str]) -> list[str]:
    return [v.strip() for v in data.decode(DEFAULT_ENCODING).split("\\")]


def _uri(data: bytes, vr: str, encodings: list[str]) -> list[str]:
    return [data.decode(DEFAULT_ENCODING).rstrip()]


def _decimals(data: bytes, vr: str, encodings: list[str]) -> list[float] | None:
    values = []
    for text in data.decode(DEFAULT_ENCODING).strip().rstrip(" \0").split("\\"):
        value = float(text)  # ValueError for what pydicom would keep as text
        if not math.isfinite(value) or text != text.strip() or not text:
            return None
        values.append(value)
    return values


def _integers(data: bytes, vr: str, encodings: list[str]) -> list[int] | None:
    values = []
    for text in data.decode(DEFAULT_ENCODING).strip().rstrip(" \0").split("\\"):
        if not text or text != text.strip():
            return None
        values.append(int(text))  # ValueError ("1.0", "abc"): pydicom has its own rules for those
    return values


_CONVERTERS = {
    **{vr: _numbers for vr in _STRUCT},
    **{vr: _binary for vr in _BINARY},
    **{vr: _multi_text for vr in _MULTI_TEXT},
    **{vr: _single_text for vr in _SINGLE_TEXT},
    **{vr: _plain for vr in _PLAIN},
    "PN": _person_names,
    "AE": _application_entities,
    "UI": _uids,
    "UR": _uri,
    "AT": _tags,
    "DS": _decimals,
    "IS": _integers,
}
