"""Replacement elements made in encoded form, for the values the profile writes most: empty values,
dummies, mapped UIDs and the code sequence of its record.

A rule that sets an element through pydicom pays for a DataElement (value validation, MultiValue, UID
objects), then again to describe the change, to encode the routed data set and to build its document. A
RawDataElement holding the bytes pydicom's writer would produce costs none of that: the encoder copies it,
the document is made from it as from any element read from a file, and a change to a constant dummy is
described once per process. Only plain ASCII values are made this way, which every character set DICOM
allows encodes identically; the others keep pydicom's path (``raw_replacement`` returns None).

pydicom decodes every sequence it reads, so an encoded sequence is one of these: the change tracking
(routing/changes.py) and the document (dopamine_py/document.py) each decode it once, on a data set of
its own, and remember what they found.
"""

from __future__ import annotations

import struct
from functools import lru_cache

from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset
from pydicom.tag import BaseTag

from .encoding import ITEM, NUMBER_FORMATS, PADDED_BINARY_VRS, delimiter, header_maker  # pydicom's writer's

# The padding pydicom's writer adds to an odd-length value of each kind.
NUL_PADDED = frozenset({"UI"})
SPACE_PADDED = frozenset({"AE", "AS", "CS", "DA", "DS", "DT", "IS", "LO", "LT", "PN", "SH", "ST", "TM", "UC",
                          "UR", "UT"})


def encoding_of(ds: Dataset, element: DataElement | RawDataElement | None = None) -> tuple[bool, bool] | None:
    """(implicit VR, little endian) of ``ds`` (or of ``element``, one of its elements), when known."""
    if type(element) is RawDataElement:
        return element.is_implicit_VR, element.is_little_endian
    implicit, little = ds.original_encoding
    return None if implicit is None or little is None else (implicit, little)


def value_bytes(vr: str, value: str | int | float | bytes | None, little: bool) -> bytes | None:
    """The bytes pydicom's writer makes of one plain value, or None when this module does not make them."""
    if value is None:
        return b""
    if isinstance(value, str):
        if vr not in NUL_PADDED and vr not in SPACE_PADDED or not value.isascii():
            return None
        data = value.encode("ascii")
        return data + (b"\x00" if vr in NUL_PADDED else b" ") if len(data) % 2 else data
    if isinstance(value, bytes):
        return value if vr in PADDED_BINARY_VRS and len(value) % 2 == 0 else None
    code = NUMBER_FORMATS.get(vr)
    if code is None or isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if code in "fd" and isinstance(value, int):
        value = float(value)
    elif code not in "fd" and not isinstance(value, int):
        return None
    return struct.pack(("<" if little else ">") + code, value)


def raw_replacement(tag: int, vr: str, value: str | int | float | bytes | None,
                    encoding: tuple[bool, bool] | None) -> RawDataElement | None:
    """An element of ``tag`` holding ``value``, encoded as the data set it goes into; None when the value
    or the data set's encoding is not one this module writes."""
    if encoding is None:
        return None
    data = value_bytes(vr, value, encoding[1])
    if data is None:
        return None
    return _raw(tag, vr, data, encoding)


def raw_sequence(tag: int, items: tuple[tuple[tuple[int, str, str | int | float | bytes | None], ...], ...],
                 encoding: tuple[bool, bool] | None) -> RawDataElement | None:
    """A sequence of ``items``, each a tuple of (tag, VR, value) in tag order, encoded as pydicom's writer
    encodes such a sequence (its items and itself of defined length); None when a value is not one this
    module writes. Decoded, it is a sequence like any other: a rule can still read and edit its items."""
    if encoding is None:
        return None
    header = header_maker(*encoding)
    value = bytearray()
    for item in items:
        body = bytearray()
        for item_tag, vr, item_value in item:
            data = value_bytes(vr, item_value, encoding[1])
            head = header(item_tag, vr, len(data)) if data is not None else None
            if head is None:
                return None
            body += head + data
        value += delimiter(ITEM, encoding[1], len(body)) + body
    return _raw(tag, "SQ", bytes(value), encoding)


def uid_element(tag: int, uids: list[str], encoding: tuple[bool, bool]) -> RawDataElement | None:
    text = "\\".join(uids)
    return raw_replacement(tag, "UI", text, encoding) if text else _raw(tag, "UI", b"", encoding)


@lru_cache(maxsize=1024)
def _raw(tag: int, vr: str, data: bytes, encoding: tuple[bool, bool]) -> RawDataElement:
    # Remembered: the same dummies go into every instance, and the tuple is immutable.
    return RawDataElement(BaseTag(tag), vr, len(data), data, 0, encoding[0], encoding[1], True, False)
