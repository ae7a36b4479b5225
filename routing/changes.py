"""What a rule did to a data set: attributes added, changed and removed, with old and new values.

Computed by comparing flat snapshots (one entry per attribute, sequence items included) taken before
and after each rule that can modify the data set, so every change is attributed to the rule that made
it, whatever action did it. A snapshot holds the element objects, not their decoded values: an element
no action touched is the very same object afterwards, and only the others are decoded and compared.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any, NamedTuple

from pydicom.charset import default_encoding
from pydicom.dataelem import DataElement, RawDataElement, convert_raw_data_element
from pydicom.dataset import Dataset

from dopamine_py import raw_values

from .copying import element_store, vr_of
from .paths import describe

SHOWN_BYTES = 32


class Change(NamedTuple):  # a tuple: thousands are made per second of ingest, a frozen dataclass costs more
    path: str  # "PatientName", "ReferencedSeriesSequence[0].SeriesInstanceUID", "(0029,1010)"
    tag: int
    kind: str  # "added" | "changed" | "removed"
    old: str | None
    new: str | None
    rule: str | int

    def __str__(self) -> str:
        if self.kind == "added":
            return f"+ {self.path} = {self.new}"
        if self.kind == "removed":
            return f"- {self.path} (was {self.old})"
        return f"~ {self.path}: {self.old} -> {self.new}"


# key: (tag, item index, tag, ...) -> (element, its value object or item count, containing data set)
Snapshot = dict[tuple[int, ...], tuple[Any, Any, Dataset]]


def snapshot(ds: Dataset, prefix: tuple[int, ...] = (), out: Snapshot | None = None) -> Snapshot:
    out = {} if out is None else out
    for tag, element in list(element_store(ds).items()):  # written out: it runs twice per rule and element
        key = prefix + (int(tag),)
        if type(element) is RawDataElement:
            if element.VR != "SQ" and (element.VR is not None or vr_of(tag, element) != "SQ"):
                out[key] = (element, None, ds)
                continue
            element = ds[tag]  # decode the sequence (of the engine's own copy) to see its items
        if element.VR == "SQ":
            items = element.value or []
            out[key] = (element, len(items), ds)
            for index, item in enumerate(items):
                snapshot(item, key + (index,), out)
        else:
            out[key] = (element, element.value, ds)
    return out


def _decoded(entry: tuple[Any, Any, Dataset]) -> tuple[str, Any]:
    """(VR, comparable value) of a snapshot entry, decoding a raw element if needed."""
    element, value, ds = entry
    if isinstance(element, RawDataElement):
        if element.value is None and element.length not in (0, 0xFFFFFFFF):
            # A value the parser deferred (large): described, never read from the source for this.
            return vr_of(element.tag, element), f"<{element.length} bytes, not read>"
        if not element.tag >> 16 & 1 or element.VR not in (None, "UN"):  # the data set does not matter
            return _decoded_raw(element.tag, element.VR, element.value, element.is_implicit_VR,
                                element.is_little_endian)
        element = convert_raw_data_element(element, ds=ds)
        value = element.value
    return _vr_and_value(element, value)


@lru_cache(maxsize=4096)
def _decoded_raw(tag: int, vr: str | None, value: bytes | None, implicit: bool, little: bool) -> tuple[str, Any]:
    """Remembered: the instances of a series mostly carry the same values, and decoding is most of the
    cost of describing what the rules changed."""
    raw = RawDataElement(tag, vr, len(value or b""), value, 0, implicit, little, True, False)
    if vr in PLAIN_TEXT_VRS:
        # Without pydicom's element: raw_values reads these as pydicom does (tests/test_raw_values.py),
        # here in pydicom's default character set, as convert_raw_data_element without a data set does.
        document = raw_values.element(raw, default_encoding)
        if document is not None:
            texts = tuple(text if text != "" else None for text in document.get("Value", ()))
            return vr, (texts[0] if len(texts) == 1 else texts or None)
    element = convert_raw_data_element(raw)
    return _vr_and_value(element, element.value)


# Their values compare and show as the text pydicom decodes (no PersonName, IS or DS objects).
PLAIN_TEXT_VRS = frozenset({"AE", "AS", "CS", "DA", "DT", "TM", "UI", "UR", "LO", "SH", "LT", "ST", "UT", "UC"})


def _vr_and_value(element: DataElement, value: Any) -> tuple[str, Any]:
    if element.VR == "SQ":
        return "SQ", len(element.value or []) if isinstance(value, (list, tuple)) or value is None else value
    return element.VR, _comparable(value)


def _comparable(value: Any) -> Any:
    if value is None or value == "" or value == b"":
        return None
    if isinstance(value, (bytes, bytearray, str, int, float)):
        return value
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        return tuple(_comparable(v) for v in value)
    return str(value)


def _show(vr: str, value: Any) -> str:
    if vr == "SQ":
        return f"<sequence of {value} item{'s' if value != 1 else ''}>"
    if value is None:
        return ""
    if isinstance(value, (bytes, bytearray)):
        return f"<{vr} {len(value)} bytes>" if len(value) > SHOWN_BYTES else value.hex()
    if isinstance(value, tuple):
        return "\\".join("" if v is None else str(v) for v in value)
    return str(value)


@lru_cache(maxsize=4096)
def path_text(key: tuple[int, ...]) -> str:
    parts = []
    for position, number in enumerate(key):
        if position % 2 == 0:
            parts.append(("." if parts else "") + describe(number))
        else:
            parts.append(f"[{number}]")
    return "".join(parts)


class PendingChange(NamedTuple):
    """A difference found by identity; decoded into a Change only when someone asks for it."""

    key: tuple[int, ...]
    before: tuple[Any, Any, Dataset] | None
    after: tuple[Any, Any, Dataset] | None
    rule: str | int

    def resolve(self) -> Change | None:
        before, after = _signature(self.before), _signature(self.after)
        if before is not False and after is not False:
            return _resolved(self.key, before, after, self.rule)
        return _resolve(self.key, self.before, self.after, self.rule)


def _signature(entry: tuple[Any, Any, Dataset] | None) -> tuple | None | bool:
    """What an entry's description depends on when that is only its encoded value (False otherwise)."""
    if entry is None:
        return None
    element = entry[0]
    if type(element) is not RawDataElement or element.value is None or (element.tag >> 16 & 1
                                                                         and element.VR in (None, "UN")):
        return False
    return element.tag, element.VR, element.value, element.is_implicit_VR, element.is_little_endian


@lru_cache(maxsize=8192)
def _resolved(key: tuple[int, ...], before: tuple | None, after: tuple | None, rule: str | int) -> Change | None:
    """Remembered: the instances of a series mostly carry the same values, and the same rules change
    them the same way; describing each change again was a tenth of the cost of routing an instance."""
    return _resolve(key, _entry(before), _entry(after), rule)


def _entry(signature: tuple | None) -> tuple[RawDataElement, None, None] | None:
    if signature is None:
        return None
    tag, vr, value, implicit, little = signature
    return RawDataElement(tag, vr, len(value), value, 0, implicit, little, True, False), None, None


def _resolve(key: tuple[int, ...], before: tuple[Any, Any, Dataset] | None, after: tuple[Any, Any, Dataset] | None,
             rule: str | int) -> Change | None:
    path, tag = path_text(key), key[-1]
    if after is None:
        vr, value = _decoded(before)
        return Change(path, tag, "removed", _show(vr, value), None, rule)
    if before is None:
        vr, value = _decoded(after)
        return Change(path, tag, "added", None, _show(vr, value), rule)
    old_vr, old_value = _decoded(before)
    new_vr, new_value = _decoded(after)
    if (old_vr, old_value) == (new_vr, new_value):
        return None  # decoded or rewritten, but to the same value
    return Change(path, tag, "changed", _show(old_vr, old_value), _show(new_vr, new_value), rule)


def diff(before: Snapshot, after: Snapshot, rule: str | int) -> list[PendingChange]:
    """The candidate changes between two snapshots, cheap to compute: nothing is decoded here."""
    pending = []
    for key, entry in before.items():
        new = after.get(key)
        # _same, written out: this runs for every element of every routed instance
        if new is None or new[0] is not entry[0] or new[1] is not entry[1] and new[1] != entry[1]:
            pending.append(PendingChange(key, entry, new, rule))
    pending += [PendingChange(key, None, entry, rule) for key, entry in after.items() if key not in before]
    return pending


def resolve_all(pending: list[PendingChange]) -> list[Change]:
    return [change for change in (p.resolve() for p in pending) if change is not None]
