"""Encoding a routed data set as a Part 10 file: the bytes of pydicom's
``dcmwrite(enforce_file_format=True)``, at a sixth of its cost.

A routed data set is mostly elements no rule touched, still in the raw form the parser left them in, and a
few that rules set to plain values (empty, text, UIDs, sequences of them). dcmwrite spends about ten
microseconds of bookkeeping on each element; here a raw element costs a header and a copy, a plain value
an encoding as pydicom's writers do it. Every other element (person names, number strings, lists of
numbers, anything unusual) is written by pydicom's own ``write_data_element``, and a data set out of the
ordinary (deflate, a changed character set, a transfer syntax it was not read with, one that fails to
encode) goes through dcmwrite whole. dcmwrite also decodes a few elements on its way (the SOP UIDs, the
Pixel Data, empty values), which the document is built from afterwards: so does this, unless decoding is
sure to change nothing. tests/routing/test_encoding.py holds bytes and document to dcmwrite's.
"""

from __future__ import annotations

import copy
import io
import struct
from functools import lru_cache
from typing import Callable

from pydicom.charset import convert_encodings, default_encoding, encode_string
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset, validate_file_meta
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_data_element
from pydicom.multival import MultiValue
from pydicom.tag import BaseTag
from pydicom.uid import UID, DeflatedExplicitVRLittleEndian
from pydicom.valuerep import EXPLICIT_VR_LENGTH_32

from dopamine_py import raw_values
from dopamine_py.document import encodings_key
from dopamine_py.part10 import encode_part10  # the reference: dcmwrite's bytes

PIXEL_DATA = 0x7FE00010
TRANSFER_SYNTAX = 0x00020010
# Media Storage SOP Class and Instance UIDs, and what dcmwrite copies into them.
MEDIA_STORAGE = ((0x00020002, 0x00080016), (0x00020003, 0x00080018))
# Type 1 meta elements dcmwrite adds or checks, and the Implementation Version Name it adds when missing.
META_REQUIRED = (0x00020001, 0x00020002, 0x00020003, 0x00020010, 0x00020012)
META_VERSION_NAME = 0x00020013
SOP_UIDS = (0x00080016, 0x00080018)
SPECIFIC_CHARACTER_SET = 0x00080005
UNDEFINED = 0xFFFFFFFF
ITEM, ITEM_DELIMITER, SEQUENCE_DELIMITER = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD
EXPLICIT_LITTLE = (False, True)  # (implicit VR, little endian)

STRING_VRS = frozenset({"AE", "AS", "CS", "DA", "DT", "TM", "UR", "UI"})  # write_string (UI: NUL padding)
TEXT_VRS = frozenset({"LO", "LT", "SH", "ST", "UC", "UT"})  # write_text: in the character set
PADDED_BINARY_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW"})
INT_FORMATS = {"US": "H", "SS": "h", "UL": "L", "SL": "l", "UV": "Q", "SV": "q"}  # write_numbers, one value
FLOAT_FORMATS = {"FL": "f", "FD": "d"}
NUMBER_FORMATS = {**INT_FORMATS, **FLOAT_FORMATS}
STRING_TYPES = (str, UID)
LIST_TYPES = (list, MultiValue)

Header = Callable[[int, "str | None", int], "bytes | None"]


def encode_routed(ds: Dataset, received: Dataset | None = None) -> bytes:
    """The bytes of ``encode_part10(ds)``, faster for a data set read from a file and then edited.

    ``received``: the data set ``ds`` was routed from. The elements of ``ds`` that are still its very
    elements, as read, are copied from the buffer both were read from, runs of them at a time."""
    meta = getattr(ds, "file_meta", None)
    syntax = _transfer_syntax(meta) if meta is not None else None
    preamble = getattr(ds, "preamble", None)
    tags = _tags_to_write(ds)
    if (syntax is None
            or (preamble and len(preamble) != 128)
            or not _as_read(ds, syntax[:2]) or not _as_read(meta, EXPLICIT_LITTLE)
            or not tags or tags[0] >> 16 <= 2):  # nothing to write, or meta elements in the data set
        return encode_part10(ds)  # dcmwrite decodes and re-encodes every element, or refuses: let it
    implicit, little, compressed = syntax
    try:
        out = io.BytesIO()  # pydicom's DicomBytesIO costs 7 us to make; only its writer needs one (below)
        out.write(preamble or b"\x00" * 128)
        out.write(b"DICM")
        for tag in SOP_UIDS:
            element = ds._dict.get(tag)
            if type(element) is RawDataElement and not _same_once_decoded(element):
                ds[tag].value  # decoded in place, as dcmwrite's reading them for the meta does
        out.write(_meta_bytes(ds, meta))
        pixels = ds._dict.get(PIXEL_DATA)
        if pixels is not None and not _undefined_length_as_dcmwrite_sets_it(pixels, compressed):
            ds[PIXEL_DATA].is_undefined_length = compressed  # as dcmwrite does
        data = _shared_bytes(ds, received)
        if data is None:
            _write_elements(out, ds, tags, implicit, little)
        else:
            with memoryview(data) as view:
                _write_elements(out, ds, tags, implicit, little, shared=(received._dict, view))
    except Exception:
        pass  # dcmwrite's own error (it names the element), raised outside this handler
    else:
        return out.getvalue()
    return encode_part10(ds)


def _transfer_syntax(meta: Dataset) -> tuple[bool, bool, bool] | None:
    """``_syntax`` of the meta's Transfer Syntax UID, read from its encoded value when it has one (as
    part10.file_meta leaves it): decoding it cost a tenth of the encoding of a small instance."""
    element = meta._dict.get(TRANSFER_SYNTAX)
    if type(element) is RawDataElement and element.value is not None:
        return _encoded_syntax(element.value)
    text = _uid_text(element) if element is not None else None  # several values: no transfer syntax, None
    return _syntax(UID(text)) if text is not None else _syntax(meta.get("TransferSyntaxUID"))


@lru_cache(maxsize=64)
def _encoded_syntax(value: bytes) -> tuple[bool, bool, bool] | None:
    """``_syntax`` of an encoded Transfer Syntax UID (several values: none). Remembered by its bytes: making
    a UID of its text each time cost more than the rest of reading the meta."""
    uids = raw_values.uids(value)
    return _syntax(UID(uids[0])) if len(uids) == 1 else None


@lru_cache(maxsize=64)
def _syntax(uid: UID | None) -> tuple[bool, bool, bool] | None:
    """(implicit VR, little endian, compressed) of a transfer syntax this encoder writes; None for the
    others (unknown, private, deflated: dcmwrite's)."""
    if uid is None or uid.is_private or not uid.is_transfer_syntax or uid == DeflatedExplicitVRLittleEndian:
        return None
    return uid.is_implicit_VR, uid.is_little_endian, uid.is_compressed


def _as_read(ds: Dataset, encoding: tuple[bool, bool]) -> bool:
    """Whether dcmwrite would write the raw elements of ``ds`` as they are (it decodes them otherwise)."""
    return ds.original_encoding == encoding and ds.original_character_set == character_set(ds)


def character_set(ds: Dataset) -> str | list[str]:
    """``ds._character_set``, without decoding Specific Character Set in place or converting it each time."""
    value = _specific_character_set(ds)
    if value is None:
        return ds._parent_encoding
    if type(value) is str:
        return _encodings(value)
    if all(type(v) is str for v in value):
        return _encodings(tuple(value))
    return ds._character_set


def _specific_character_set(ds: Dataset) -> str | list[str] | None:
    """The value of Specific Character Set as pydicom decodes it (None when absent), without decoding
    the element in place: an element still as read is copied as it is."""
    element = ds._dict.get(SPECIFIC_CHARACTER_SET)
    if element is None:
        return None
    if type(element) is RawDataElement:
        values = _encoded_character_set(element.VR, element.value, element.is_implicit_VR, element.is_little_endian)
        if values is not None:
            return values[0] if len(values) == 1 else list(values)
    return ds[SPECIFIC_CHARACTER_SET].value


@lru_cache(maxsize=64)
def _encoded_character_set(vr: str | None, value: bytes | None, implicit: bool,
                           little: bool) -> tuple[str, ...] | None:
    """The values of an encoded Specific Character Set as pydicom decodes them (a CS value), or None when
    raw_values does not read it. Remembered: a character set is looked up several times per instance."""
    raw = RawDataElement(BaseTag(SPECIFIC_CHARACTER_SET), vr, len(value or b""), value, 0, implicit, little, True,
                         False)
    document = raw_values.element(raw, default_encoding)
    if document is not None and document["vr"] == "CS" and document.get("Value"):
        return tuple(document["Value"])
    return None


@lru_cache(maxsize=64)
def _encodings(value: str | tuple[str, ...]) -> list[str]:
    return convert_encodings(value if type(value) is str else list(value))  # not to be changed by callers


def _undefined_length_as_dcmwrite_sets_it(pixels: DataElement | RawDataElement, compressed: bool) -> bool:
    """Whether raw Pixel Data would stay the same once dcmwrite decoded it to set its length kind: in the
    file, and in the document, which takes its VR from the element (implicit VR: OB raw, OW decoded)."""
    return (type(pixels) is RawDataElement and pixels.VR not in (None, "UN")
            and (pixels.length == UNDEFINED) == compressed
            and (compressed or pixels.length % 2 == 0))  # decoded, an odd value gets padded


def _same_once_decoded(raw: RawDataElement) -> bool:
    """Whether a raw UID (or OB) element dcmwrite decodes is written as it was: no VR to correct, and
    the padding pydicom's writer would put back."""
    value = raw.value
    if value is None:
        return False
    if raw.VR == "OB":
        return len(value) % 2 == 0
    if raw.VR not in ("UI", None):  # None: implicit VR, where the dictionary says UI
        return False
    stripped = value.rstrip(b"\x00 ")
    return value == stripped + b"\x00" * (len(stripped) % 2)


def _meta_bytes(ds: Dataset, meta: Dataset) -> bytes:
    """The File Meta Information as dcmwrite writes it, preceded by its group length."""
    if not _meta_complete(ds, meta):
        meta = _completed_meta(ds, meta)
    tags = [tag for tag in sorted(meta._dict, key=int) if tag & 0xFFFF]  # without the group length (a BaseTag
    # compares in Python)
    # The common case: each element as _write_elements writes it, but not through _encoded_element's memory:
    # each instance's File Meta Information is made of elements of its own, which it would hash and compare.
    parts = [_element_bytes(meta._dict[tag], False, True) for tag in tags]
    if None in parts:
        body = io.BytesIO()
        _write_elements(body, meta, tags, False, True)
        data = body.getvalue()
    else:
        data = b"".join(parts)
    return struct.pack("<HH2sHL", 0x0002, 0x0000, b"UL", 4, len(data)) + data


def _meta_complete(ds: Dataset, meta: Dataset) -> bool:
    """True when dcmwrite would change nothing in the meta (a cautious test: False sends it the long way)."""
    elements = {int(tag): element for tag, element in meta._dict.items()}  # looked up by int: a BaseTag key
    # compares in Python
    if META_VERSION_NAME not in elements or any(tag >> 16 != 2 for tag in elements):
        return False
    for tag in META_REQUIRED:  # dcmwrite decodes these to check them
        element = elements.get(tag)
        if element is None or not element.value:
            return False
        if type(element) is RawDataElement and not (_same_once_decoded(element) and element.value.strip(b"\x00 ")):
            return False
    for meta_tag, tag in MEDIA_STORAGE:
        theirs, mine = ds._dict.get(tag), elements[meta_tag]
        if theirs is None or (type(theirs) is RawDataElement and type(mine) is RawDataElement
                              and theirs.value is not None and theirs.value == mine.value):
            continue  # the same bytes decode to the same UID (the common case: copied by sync_media_storage_uid)
        if _uid_text(theirs) is not None and _uid_text(theirs) == _uid_text(mine):
            continue  # the same text decodes to the same UID
        if ds[tag].value != meta[meta_tag].value:  # decoded as dcmwrite decodes both to compare them
            return False
    return True


def _uid_text(element: DataElement | RawDataElement) -> str | None:
    """A UID element's text as pydicom decodes it, when that is plain (None otherwise)."""
    value = element.value
    if type(element) is RawDataElement:
        return "\\".join(raw_values.uids(value)) if value is not None else None
    return value if type(value) in STRING_TYPES else None


def _completed_meta(ds: Dataset, meta: Dataset) -> Dataset:
    """dcmwrite's steps on a copy: SOP class and instance from the data set, missing elements added."""
    new = copy.copy(meta)
    new._dict = {tag: copy.copy(element) for tag, element in meta._dict.items()}
    for meta_keyword, keyword in (("MediaStorageSOPClassUID", "SOPClassUID"),
                                  ("MediaStorageSOPInstanceUID", "SOPInstanceUID")):
        current = new.get(meta_keyword, None)
        wanted = ds.get(keyword, None)
        if current is None or (wanted and wanted != current):
            setattr(new, meta_keyword, wanted)
    validate_file_meta(new, enforce_standard=True)
    return new


def _tags_to_write(ds: Dataset) -> list[int]:
    """In order (as ints: BaseTag compares in Python), without the retired group lengths."""
    return [tag for tag in sorted(ds._dict, key=int) if tag & 0xFFFF or tag >> 16 <= 6]


def _shared_bytes(ds: Dataset, received: Dataset | None) -> bytes | None:
    """The bytes of the buffer ``ds`` and the data set it was routed from were both read from; None when the
    elements of ``ds`` cannot be copied from such a buffer. The buffer's value, not a view of the buffer: a
    BytesIO made from bytes gives those very bytes, where a view of it is a copy of them."""
    buffer = getattr(ds, "buffer", None)
    if (received is None or type(buffer) is not io.BytesIO or buffer.closed
            or getattr(received, "buffer", None) is not buffer or received.original_encoding != ds.original_encoding):
        return None
    return buffer.getvalue()


def _write_elements(out: io.BytesIO, ds: Dataset, tags: list[int], implicit: bool, little: bool,
                    parent_encoding: str | list[str] = default_encoding,
                    shared: tuple[dict, memoryview] | None = None) -> None:
    """The elements ``tags`` of ``ds`` as dcmwrite's write_dataset writes them: raw ones copied, plain
    values and sequences of them encoded here, the rest by pydicom's write_data_element. ``ds`` was read
    in this encoding, or holds no raw element (write_dataset would decode them).

    ``shared``: the elements of the received data set and a view of the buffer it was read from (see
    _shared_bytes). The elements of ``ds`` still those of the received data set, as read, are copied from
    it, header included, a run of consecutive ones at a time. Written inline: this loop runs for every
    element of every routed instance."""
    header = header_maker(implicit, little)
    charset = _specific_character_set(ds)
    encodings = charset if charset is not None else parent_encoding
    codecs = _encodings(encodings_key(encodings or default_encoding))
    elements = ds._dict
    received, view = shared or ({}, None)
    run_start = run_end = -1
    for tag in tags:
        element = elements[tag]
        if received.get(tag) is element and type(element) is RawDataElement:
            vr, length, value = element.VR, element.length, element.value
            # Copied only where dcmwrite would write the same (see _raw_value): a value as long as its header
            # says (not cut short; a deferred one only binary of even length, all in the buffer), and a VR
            # of two letters (not an element read as implicit VR inside an explicit VR data set).
            if (length != UNDEFINED and (len(value) == length if value is not None
                                         else vr in PADDED_BINARY_VRS and not length % 2
                                         and element.value_tell + length <= len(view))
                    and (implicit or vr is not None and len(vr) == 2)):
                long_header = not implicit and vr in EXPLICIT_VR_LENGTH_32
                start = element.value_tell - (12 if long_header else 8)
                if long_header and view[start + 6:start + 8] != b"\x00\x00":
                    start = -1  # reserved bytes that dcmwrite writes as zeros: written the usual way below
            else:
                start = -1
            if start >= 0:
                if start != run_end:
                    if run_start >= 0:
                        out.write(view[run_start:run_end])
                    run_start = start
                run_end = element.value_tell + length
                continue
        if run_start >= 0:
            out.write(view[run_start:run_end])
            run_start = run_end = -1
        length = None
        if type(element) is RawDataElement:
            if element.value is not None and element.length != UNDEFINED:
                encoded = _encoded_element(element, implicit, little)
                if encoded is not None:
                    out.write(encoded)
                    continue
            value = _raw_value(ds, element, header) if element.length != UNDEFINED else None
        elif element.VR == "SQ":
            value = _items(element, codecs, implicit, little)
            length = UNDEFINED if element.is_undefined_length else None
        else:
            value = _value_bytes(element, codecs, little)
        if value is not None:
            head = header(element.tag, element.VR, len(value) if length is None else length)
            if head is not None:
                out.write(head)
                out.write(value)
                if length == UNDEFINED:
                    out.write(delimiter(SEQUENCE_DELIMITER, little))
                continue
        written = DicomBytesIO()  # pydicom's writer reads its encoding from its file
        written.is_implicit_VR, written.is_little_endian = implicit, little
        write_data_element(written, ds.get_item(tag), encodings)
        out.write(written.getvalue())
    if run_start >= 0:
        out.write(view[run_start:run_end])


def _element_bytes(element: DataElement | RawDataElement, implicit: bool, little: bool) -> bytes | None:
    """Header and value of a raw element that holds its value (of defined length), as _write_elements writes
    it; None for any other element."""
    if type(element) is not RawDataElement or element.value is None or element.length == UNDEFINED:
        return None
    head = header_maker(implicit, little)(element.tag, element.VR, len(element.value))
    return head + element.value if head is not None else None


# Remembered for _write_elements: the replacements routing makes (routing/encoded.py) are the same few objects
# in every instance.
_encoded_element = lru_cache(maxsize=1024)(_element_bytes)


def _items(sequence: DataElement, codecs: list[str], implicit: bool, little: bool) -> bytes | None:
    """The items of a sequence as write_sequence writes them, or None when one needs pydicom: an item not
    read in this encoding (write_dataset would decode its raw elements and correct its ambiguous VRs) that
    has either."""
    out = io.BytesIO()
    for item in sequence.value or ():
        if not _as_read(item, (implicit, little)) and not _plain(item):
            return None
        out.write(delimiter(ITEM, little, UNDEFINED))
        start = out.tell()
        tags = _tags_to_write(item)
        _write_elements(out, item, tags, implicit, little, codecs)
        if getattr(item, "is_undefined_length_sequence_item", False):
            out.write(delimiter(ITEM_DELIMITER, little))
        else:
            end = out.tell()
            out.seek(start - 4)
            out.write(struct.pack("<L" if little else ">L", end - start))
            out.seek(end)
    return out.getvalue()


def _plain(item: Dataset) -> bool:
    """No raw element and no ambiguous VR, in the item or the items of its sequences."""
    for element in item._dict.values():
        if type(element) is RawDataElement or " or " in element.VR:
            return False
        if element.VR == "SQ" and not all(_plain(nested) for nested in element.value or ()):
            return False
    return True


def delimiter(tag: int, little: bool, length: int = 0) -> bytes:
    return struct.pack("<HHL" if little else ">HHL", tag >> 16, tag & 0xFFFF, length)


def _raw_value(ds: Dataset, element: RawDataElement, header: Header) -> bytes | None:
    """The bytes of a raw element. dcmwrite decodes (and so may rewrite) those without a value: empty ones
    and deferred ones (large values the parser left in the buffer it read); here they are kept when
    decoding would change nothing: an explicit VR it keeps, and for a deferred value, binary data of even
    length read from that buffer, behind the very header this element has."""
    if element.value is not None:
        return element.value
    if element.VR in (None, "UN"):
        return None
    if element.length == 0:
        return b""
    buffer = getattr(ds, "buffer", None)
    if element.VR not in PADDED_BINARY_VRS or element.length % 2 or type(buffer) is not io.BytesIO or buffer.closed:
        return None
    head = header(element.tag, element.VR, element.length)
    start, end = element.value_tell, element.value_tell + element.length
    with memoryview(buffer.getvalue()) as view:  # not getbuffer(): see _shared_bytes
        if head is None or start < len(head) or end > len(view) or view[start - len(head):start] != head:
            return None
        return bytes(view[start:end])


def _value_bytes(element: DataElement, codecs: list[str], little: bool) -> bytes | None:
    """The encoded value of a decoded element as pydicom's writers make it, for the plain values rules
    produce (empty, text, UIDs, bytes, one number); None for the others."""
    if element.is_undefined_length:
        return None
    vr, value = element.VR, element.value
    kind = type(value)
    if value is None or (kind in STRING_TYPES or kind in LIST_TYPES or kind is bytes) and not value:
        return b"" if vr != "SQ" else None
    if kind is bytes:
        return (value + b"\x00" if len(value) % 2 else value) if vr in PADDED_BINARY_VRS else None
    if kind is int and vr in INT_FORMATS or kind is float and vr in FLOAT_FORMATS:
        return struct.pack(("<" if little else ">") + NUMBER_FORMATS[vr], value)
    if kind in LIST_TYPES and all(type(v) in STRING_TYPES for v in value):
        values = value
    elif kind in STRING_TYPES:
        values = (value,)
    else:
        return None
    if vr in STRING_VRS:
        text = "\\".join(values)
        if len(text) % 2:
            text += "\x00" if vr == "UI" else " "
        return text.encode(default_encoding)
    if vr in TEXT_VRS:
        # ASCII is encoded the same in every character set DICOM allows (pydicom's encoder is slow at it).
        data = b"\\".join(v.encode("ascii") if v.isascii() else encode_string(v, codecs) for v in values)
        return data + b" " if len(data) % 2 else data
    return None


@lru_cache(maxsize=None)
def header_maker(implicit: bool, little: bool) -> Header:
    """header(tag, VR, length): the bytes write_data_element puts before a value, or None when it would
    write something else (a VR it refuses or changes)."""
    order = "<" if little else ">"
    implicit_form = struct.Struct(order + "HHL")
    short_form = struct.Struct(order + "HH2sH")
    long_form = struct.Struct(order + "HH2sHL")

    def header(tag: int, vr: str | None, length: int) -> bytes | None:
        if implicit:
            return implicit_form.pack(tag >> 16, tag & 0xFFFF, length)
        if not vr or len(vr) != 2:
            return None
        if vr in EXPLICIT_VR_LENGTH_32:
            return long_form.pack(tag >> 16, tag & 0xFFFF, vr.encode("ascii"), 0, length)
        if length > 0xFFFF:
            return None  # dcmwrite would write it as UN
        return short_form.pack(tag >> 16, tag & 0xFFFF, vr.encode("ascii"), length)

    return header
