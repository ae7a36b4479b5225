"""A data set as a document: the DICOM JSON model (PS3.18 Annex F) with binary values kept binary.

Shape of a document: ``{"00100010": {"vr": "PN", "Value": [{"Alphabetic": "Doe^John"}]}, ...}``.

Differences from the wire form of DICOM JSON, all deliberate:
- small binary values sit under ``InlineBinary`` as ``bytes`` (BSON Binary in MongoDB), never Base64;
  the JSON writers of the protocols encode them when they leave the archive;
- bulk binary values (pixel data, binary values over the configured size) are not copied: the element
  stays, as ``{"vr": "OW", "BulkData": true}``, so that its presence can be queried and a DICOMweb
  layer can point at it; the value itself lives in the original bytes;
- every text value has been decoded with the data set's Specific Character Set, so a document is
  plain Unicode whatever the sender's encoding was.
"""

from __future__ import annotations

import base64
import math
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from pydicom.datadict import dictionary_VM, dictionary_VR, keyword_for_tag, tag_for_keyword
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset
from pydicom.tag import Tag

from . import raw_values

BINARY_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "UN"})
INT_VRS = frozenset({"IS", "SL", "SS", "UL", "US", "SV", "UV"})
FLOAT_VRS = frozenset({"DS", "FL", "FD"})
NUMBER_VRS = INT_VRS | FLOAT_VRS
PN_GROUPS = raw_values.PN_GROUPS
PIXEL_DATA_TAGS = frozenset({0x7FE00010, 0x7FE00008, 0x7FE00009})
UNDEFINED_LENGTH = 0xFFFFFFFF


class UnknownAttribute(ValueError):
    """A keyword or tag that names no attribute."""


@dataclass(frozen=True)
class DocumentOptions:
    """What goes into the queryable document."""

    # Binary values longer than this many bytes stay only in the original bytes.
    bulk_data_threshold: int = 1024
    # Tags (ints) never copied into the document, e.g. a vendor's huge private blob.
    exclude: frozenset[int] = field(default_factory=frozenset)
    include_private: bool = True


def tag_key(tag: int) -> str:
    return f"{tag:08X}"


def parse_tag(text: str) -> int:
    """A tag from a keyword (``PatientID``), ``00100020``, ``0010,0020`` or ``(0010,0020)``."""
    text = text.strip()
    by_keyword = tag_for_keyword(text)
    if by_keyword is not None:
        return int(by_keyword)
    hexdigits = text.strip("()").replace(",", "")
    if len(hexdigits) == 8:
        try:
            return int(hexdigits, 16)
        except ValueError:
            pass
    raise UnknownAttribute(f"unknown attribute {text!r}: not a DICOM keyword nor a tag (gggg,eeee)")


def vr_for_tag(tag: int) -> str | None:
    """The dictionary VR of a tag, the first one for ambiguous VRs (``US or SS`` gives ``US``)."""
    try:
        vr = dictionary_VR(tag)
    except KeyError:
        return None
    return vr.split(" or ")[0]


@lru_cache(maxsize=4096)
def single_valued(tag: int) -> bool:
    """Whether the dictionary says VM 1. Such attributes are matched on their first (only) value,
    which lets every backend use a plain index on it; unknown and private tags count as multi-valued.
    A sequence is never single-valued: its VM is 1 but its items are many."""
    try:
        return dictionary_VM(tag) == "1" and dictionary_VR(tag) != "SQ"
    except KeyError:
        return False


def describe_tag(tag: int) -> str:
    return keyword_for_tag(tag) or f"({tag >> 16:04X},{tag & 0xFFFF:04X})"


def to_document(ds: Dataset, options: DocumentOptions = DocumentOptions(), *, from_raw: bool = True) -> dict[str, Any]:
    """The queryable document of a data set (its File Meta Information is not part of it).

    Elements still in their encoded form (as read from a file) are converted by ``raw_values`` where it can,
    without pydicom's element objects: that conversion was half of the time spent storing an instance.
    ``from_raw=False`` converts every element through pydicom (the reference the tests compare with).
    """
    doc: dict[str, Any] = {}
    encodings = None
    for tag in ds.keys():
        tag = int(tag)
        if tag in options.exclude or (not options.include_private and tag >> 16 & 1):
            continue
        raw = ds.get_item(tag, keep_deferred=True)  # a deferred read would load bulk data
        bulk_vr = _bulk_vr(raw, tag, options)
        if bulk_vr is not None:
            # Decided from the raw length so that the value is never read into memory.
            doc[tag_key(tag)] = {"vr": bulk_vr, "BulkData": True}
            continue
        if from_raw and isinstance(raw, RawDataElement):
            if encodings is None:
                encodings = ds._character_set
            if raw.VR == "SQ" and raw.value is not None:
                doc[tag_key(tag)] = _copied(_encoded_sequence(raw, encodings_key(encodings), options))
                continue
            element = raw_values.element(raw, encodings)
            if element is not None:
                doc[tag_key(tag)] = element
                continue
        doc[tag_key(tag)] = _element(ds[tag], options, from_raw)
    return doc


@lru_cache(maxsize=256)
def _encoded_sequence(raw: RawDataElement, encodings: str | tuple[str, ...],
                      options: DocumentOptions) -> dict[str, Any]:
    """The document of a sequence still encoded. Only routing's replacements leave a sequence encoded
    (pydicom decodes those it reads), the same one in every instance, and decoding it in place cost more
    than all the other elements of a document."""
    return _element(sequence_alone(raw, encodings), options)


def encodings_key(encodings: str | list[str] | tuple[str, ...]) -> str | tuple[str, ...]:
    """A character set (pydicom's encodings: one name or a list) as a key of a cache."""
    return encodings if type(encodings) is str else tuple(encodings)


def sequence_alone(raw: RawDataElement, encodings: str | tuple[str, ...]) -> DataElement:
    """An encoded sequence decoded on a data set of its own, whose character set (``encodings``, that of
    the data set holding it) its items inherit; the data set holding it keeps it encoded."""
    holder = Dataset(parent_encoding=encodings if type(encodings) is str else list(encodings))
    holder.set_original_encoding(raw.is_implicit_VR, raw.is_little_endian, holder._parent_encoding)
    holder._dict[raw.tag] = raw
    return holder[raw.tag]


def _copied(value: Any) -> Any:
    """A copy of a document's lists and dicts (the remembered one stays as it was made)."""
    if type(value) is dict:
        return {key: _copied(item) for key, item in value.items()}
    if type(value) is list:
        return [_copied(item) for item in value]
    return value


def _bulk_vr(raw: DataElement | RawDataElement, tag: int, options: DocumentOptions) -> str | None:
    vr = raw.VR or vr_for_tag(tag) or "UN"
    if vr not in BINARY_VRS and "O" not in vr:  # "OB or OW" on implicit VR pixel data
        return None
    if isinstance(raw, RawDataElement):
        length = raw.length
    else:
        value = raw.value
        length = len(value) if isinstance(value, (bytes, bytearray)) else 0
    if tag in PIXEL_DATA_TAGS or length == UNDEFINED_LENGTH or length > options.bulk_data_threshold:
        return vr if vr in BINARY_VRS else "OW"
    return None


def _element(elem: DataElement, options: DocumentOptions, from_raw: bool = True) -> dict[str, Any]:
    vr = elem.VR
    out: dict[str, Any] = {"vr": vr}
    value = elem.value
    if vr == "SQ":
        if value:
            out["Value"] = [to_document(item, options, from_raw=from_raw) for item in value]
        return out
    if vr in BINARY_VRS:
        if value:
            out["InlineBinary"] = bytes(value)
        return out
    values = _as_list(value)
    if not values:
        return out
    if vr == "PN":
        out["Value"] = [_person_name(v) for v in values]
    elif vr == "AT":
        out["Value"] = [tag_key(int(Tag(v))) for v in values]
    elif vr in NUMBER_VRS:
        out["Value"] = [_number(v, vr) for v in values]
    else:
        out["Value"] = [None if v is None else str(v) for v in values]
    return out


def _as_list(value: Any) -> list[Any]:
    if value is None or value == "" or value == b"":
        return []
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        return list(value)
    return [value]


def _person_name(value: Any) -> dict[str, str] | None:
    if value is None:
        return None
    components = getattr(value, "components", None)
    if components is None:
        components = str(value).split("=")
    return {group: text for group, text in zip(PN_GROUPS, components) if text}


def _number(value: Any, vr: str) -> Any:
    """JSON numbers for numeric VRs; a value that is not a valid number stays the string it was."""
    if value is None or value == "":
        return None
    try:
        number = float(value) if vr in FLOAT_VRS else int(value)
    except (TypeError, ValueError):
        return str(value)
    if isinstance(number, float) and not math.isfinite(number):
        return str(value)
    return number


def first_value(doc: dict[str, Any], tag: int) -> Any:
    """The first value of an attribute, or None."""
    elem = doc.get(tag_key(tag))
    if not elem:
        return None
    values = elem.get("Value")
    if not values:
        return None
    return values[0]


def to_dataset(doc: dict[str, Any]) -> Dataset:
    """A pydicom data set from document elements (for responses: C-FIND identifiers, rendered metadata).

    Bulk data markers become empty elements: their values are only in the original bytes.
    """
    ds = Dataset()
    for key, elem in doc.items():
        tag = int(key, 16)
        vr = elem.get("vr", "UN")
        if vr == "SQ":
            ds.add_new(tag, vr, [to_dataset(item) for item in elem.get("Value") or []])
            continue
        if vr in BINARY_VRS:
            value = elem.get("InlineBinary")
            if isinstance(value, str):  # Base64, as JSON carries it
                value = base64.b64decode(value)
            ds.add_new(tag, vr, value)
            continue
        values = elem.get("Value") or []
        if vr == "PN":
            values = ["=".join(v.get(g, "") for g in PN_GROUPS).rstrip("=") if isinstance(v, dict) else "" for v in values]
        elif vr == "AT":
            values = [int(v, 16) for v in values]
        elif vr in ("DS", "IS"):
            values = [_format_number(v, vr) for v in values]
        if not values:
            ds.add_new(tag, vr, None)
        else:
            ds.add_new(tag, vr, values[0] if len(values) == 1 else values)
    return ds


def _format_number(value: Any, vr: str) -> str:
    if isinstance(value, float) and vr == "DS":
        text = repr(value) if len(repr(value)) <= 16 else f"{value:.10g}"
        return text[:-2] if text.endswith(".0") else text
    return str(value)
