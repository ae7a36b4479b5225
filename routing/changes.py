"""What a rule did to a data set: attributes added, changed and removed, with old and new values.

Computed by comparing flat snapshots (one entry per attribute, sequence items included) taken before
and after each rule that can modify the data set, so every change is attributed to the rule that made
it, whatever action did it. A snapshot holds the element objects, not their decoded values: an element
no action touched is the very same object afterwards, and only the others are decoded and compared.
A rule whose actions say which elements they touch (the profile) keeps a Journal of those instead, which
finds the same changes (tests/routing/test_change_tracking.py) without snapshots of the whole data set.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any, NamedTuple

from pydicom.charset import default_encoding
from pydicom.dataelem import DataElement, RawDataElement, convert_raw_data_element
from pydicom.dataset import Dataset
from pydicom.tag import BaseTag

from dopamine_py import raw_values
from dopamine_py.document import encodings_key, sequence_alone

from .copying import element_store, vr_of
from .encoding import character_set
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


class Snapshot(NamedTuple):
    """One data set as it was: its elements (a copy of its element store), the values of its decoded
    elements (an action may assign a new value to an element in place), and its sequences' items."""

    ds: Dataset
    elements: dict  # tag -> DataElement or RawDataElement
    values: dict  # tag -> value, for decoded elements other than sequences
    items: dict  # tag -> [Snapshot of each item] (a tuple when remembered), for sequences


def snapshot(ds: Dataset) -> Snapshot:
    return _snapshot_of(ds, element_store(ds))


def _snapshot_of(ds: Dataset, elements_of: dict, in_place: bool = True) -> Snapshot:
    """A snapshot of ``ds`` restricted to the tags of ``elements_of`` (its whole store, or some of it).

    Its encoded sequences are decoded in place, so that the snapshot holds the very items an action
    would then change; or, ``in_place=False`` for a snapshot of how a rule left the data set, the items
    of an encoded sequence (a replacement routing made, the same in every instance) are those of a
    decoding of its own, remembered."""
    store = element_store(ds)
    encoded_items = {}
    for tag in [t for t, e in elements_of.items() if type(e) is RawDataElement and (e.VR == "SQ" or e.VR is None)]:
        element = store[tag]
        if not in_place and element.VR == "SQ" and element.value is not None:
            encoded_items[tag] = _item_snapshots(element, encodings_key(character_set(ds)))
        elif vr_of(tag, element) == "SQ":
            ds[tag]  # decode the sequence (of the engine's own copy) to see its items
    # Taken after the decoding: decoding a sequence decodes other elements in place (Pixel Representation,
    # private creators), whose values must be kept as they are now, since an action may then assign a new one.
    elements = {tag: store[tag] for tag in elements_of} if elements_of is not store else dict(store)
    items = {tag: [snapshot(item) for item in element.value or []]
             for tag, element in elements.items() if type(element) is not RawDataElement and element.VR == "SQ"}
    items.update(encoded_items)
    values = {tag: element.value for tag, element in elements.items()
              if type(element) is not RawDataElement and tag not in items}
    return Snapshot(ds, elements, values, items)


@lru_cache(maxsize=256)
def _item_snapshots(raw: RawDataElement, encodings: str | tuple[str, ...]) -> tuple[Snapshot, ...]:
    """Snapshots of the items of an encoded sequence, decoded alone."""
    return tuple(snapshot(item) for item in sequence_alone(raw, encodings).value)


class Journal:
    """The changes of a rule whose actions say which top-level elements they are about to change
    (``Action.reports_changes``), without snapshots of the whole data set.

    ``touch(tag)`` before an element (or anything inside a sequence) is changed, removed or added keeps it
    as it is; ``changes`` then compares the touched elements only, as ``diff`` compares whole snapshots,
    in the same order. An element touched but left alone is no change."""

    def __init__(self, ds: Dataset, rule: str | int) -> None:
        self.ds = ds
        self.rule = rule  # the label its changes are given
        self.store = element_store(ds)
        # The elements as the rule found them, in order (changes come in the data set's order). An encoded
        # one is what a snapshot would have kept, even when the action decoded it in place (to read it)
        # before touching it.
        self.original = dict(self.store)
        # tag -> as it was: the element itself when encoded and not a sequence (immutable: the common case,
        # kept at no cost), a snapshot of that element alone otherwise, None when it was absent
        self.before: dict = {}
        # keep_encoded(tag, element): touch(tag) for an element of the store that is encoded, of an explicit
        # VR other than SQ (so neither decoded in place since the rule began nor changed without a touch:
        # as the rule found it), without a call of Python's: the profile makes a score of them per instance.
        self.keep_encoded = self.before.setdefault
        # tag -> (element as the rule found it, what the action made of it, that change described for the rule
        # ``rule``, or None): an action that knows its change at once (the profile, from what it remembers of
        # the same value in earlier instances). Used only while both elements are still those.
        self.described: dict = {}
        self.snapshots = False  # whether ``before`` holds a Snapshot (then the changes are compared as diff does)

    def touch(self, tag: int) -> None:
        if tag in self.before:
            return
        element = self.store.get(tag)
        original = self.original.get(tag)
        if type(original) is RawDataElement and original is not element and vr_of(tag, original) != "SQ":
            element = original  # decoded in place since, not changed: the action touches before it changes
        if type(element) is RawDataElement and element.VR != "SQ" and (element.VR is not None
                                                                        or vr_of(tag, element) != "SQ"):
            self.before[tag] = element
        elif element is None:
            self.before[tag] = None
        else:
            self.before[tag] = _snapshot_of(self.ds, {tag: element})
            self.snapshots = True

    def changes(self) -> list[PendingChange | Change]:
        """What ``diff`` finds between snapshots before and after, for the touched elements."""
        before, ds, store, described, rule = self.before, self.ds, self.store, self.described, self.rule
        if self.snapshots:
            return self._compared()
        # The common case, written out: encoded elements replaced, removed or added, described at once when
        # that depends on their encoded values only (as PendingChange.resolve would).
        pending: list[PendingChange | Change] = []
        for tag in [t for t in self.original if t in before]:
            old = before[tag]
            if old is None:
                continue
            new = store.get(tag)
            if new is old:
                continue
            known = described.get(tag)
            if known is not None and known[0] is old and known[1] is new:
                if known[2] is not None:
                    pending.append(known[2])
                continue
            key = (int(tag),)
            if new is None or type(new) is RawDataElement and new.VR != "SQ":
                change = encoded_change(key[0], old, new, rule)
                if change is False:
                    pending.append(PendingChange(key, (old, None, ds), None if new is None else (new, None, ds), rule))
                elif change is not None:
                    pending.append(change)
            elif new.VR != "SQ":
                pending.append(PendingChange(key, (old, None, ds), (new, new.value, ds), rule))
            else:
                return self._compared()
        added = {tag: element for tag, element in store.items() if tag in before and before[tag] is None}
        if not all(type(e) is RawDataElement and e.VR is not None and e.value is not None for e in added.values()):
            _added(_snapshot_of(ds, added, in_place=False), None, (), rule, pending)
            return pending
        for tag, element in added.items():  # encoded: what _added finds, without a snapshot
            key = (int(tag),)
            if element.VR == "SQ":
                pending.extend(_added_sequence(key, element, encodings_key(character_set(ds)), rule))
                continue
            change = encoded_change(key[0], None, element, rule)
            pending.append(PendingChange(key, None, (element, None, ds), rule) if change is False else change)
        return pending

    def _compared(self) -> list[PendingChange]:
        then = Snapshot(self.ds, {}, {}, {})
        for tag in self.original:
            kept = self.before.get(tag)
            if type(kept) is Snapshot:
                then.elements.update(kept.elements)
                then.values.update(kept.values)
                then.items.update(kept.items)
            elif kept is not None:
                then.elements[tag] = kept
        now = _snapshot_of(self.ds, {t: e for t, e in self.store.items() if t in self.before}, in_place=False)
        return diff(then, now, self.rule)


# A flat entry: (element, its value object or a sequence's item count, containing data set); a change's
# key: (tag, item index, tag, ...).
Entry = tuple[Any, Any, Dataset]


def _entry(level: Snapshot, tag: int, element: Any) -> Entry:
    items = level.items.get(tag)
    return element, len(items) if items is not None else level.values.get(tag), level.ds


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
    raw = RawDataElement(BaseTag(tag), vr, len(value or b""), value, 0, implicit, little, True, False)
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
        return "SQ", value if type(value) is int else len(element.value or [])  # an entry's count, or its items
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
    """What an entry's description depends on, when that is its encoded value alone (a raw element) or a
    plain decoded value (the VR and value of a decoded element, the VR and item count of a sequence);
    False otherwise."""
    if entry is None:
        return None
    element, value, _ = entry
    if type(element) is RawDataElement:
        return _element_signature(element)
    vr = element.VR
    if vr == "SQ":
        return (vr, value) if type(value) is int else False
    if type(value) in PLAIN_VALUE_TYPES:
        return vr, _comparable(value)
    return False


# Values that are equal only when they show the same: not floats (0.0 == -0.0), not PersonName, IS or DS
# (their own equality and text).
PLAIN_VALUE_TYPES = frozenset({str, int, bytes, type(None)})


def encoded_change(tag: int, old: RawDataElement | None, new: RawDataElement | None,
                   rule: str | int) -> Change | None | bool:
    """The change of a top-level element from the encoded ``old`` to the encoded ``new`` (not a sequence;
    None for absent), described as PendingChange.resolve would: None for none; False when describing it
    needs the data set (a PendingChange then describes it)."""
    then = None if old is None else _element_signature(old)
    now = None if new is None else _element_signature(new)
    if then is False or now is False:
        return False
    return _resolved((tag,), then, now, rule)


def mapped_uid_change(tag: int, old: list[str], new: list[str], rule: str | int) -> Change:
    """What encoded_change says of a top-level UID element of explicit VR little endian whose values
    ``old`` (as raw_values.uids reads them) became the different ``new``, said from those texts: decoding
    both elements again, as _decoded_raw does, gives them back (tests/routing/test_change_descriptions.py)."""
    return Change(path_text((tag,)), tag, "changed", "\\".join(old), "\\".join(new), rule)


def _element_signature(element: Any) -> tuple | bool:
    if type(element) is not RawDataElement or element.value is None or (element.tag >> 16 & 1
                                                                         and element.VR in (None, "UN")):
        return False
    # int: a BaseTag compares in Python, and the cache compares keys on every hit
    return int(element.tag), element.VR, element.value, element.is_implicit_VR, element.is_little_endian


@lru_cache(maxsize=8192)
def _resolved(key: tuple[int, ...], before: tuple | None, after: tuple | None, rule: str | int) -> Change | None:
    """Remembered: the instances of a series mostly carry the same values, and the same rules change
    them the same way; describing each change again was a tenth of the cost of routing an instance."""
    return _change(key, _signed(before), _signed(after), rule)


def _signed(signature: tuple | None) -> tuple[str, Any] | None:
    """(VR, comparable value) of a signature (see _signature)."""
    if signature is None or len(signature) == 2:
        return signature
    return _decoded_raw(*signature)


def _resolve(key: tuple[int, ...], before: tuple[Any, Any, Dataset] | None, after: tuple[Any, Any, Dataset] | None,
             rule: str | int) -> Change | None:
    return _change(key, None if before is None else _decoded(before), None if after is None else _decoded(after),
                   rule)


def _change(key: tuple[int, ...], old: tuple[str, Any] | None, new: tuple[str, Any] | None,
            rule: str | int) -> Change | None:
    path, tag = path_text(key), key[-1]
    if new is None:
        return Change(path, tag, "removed", _show(*old), None, rule)
    if old is None:
        return Change(path, tag, "added", None, _show(*new), rule)
    if old == new:
        return None  # decoded or rewritten, but to the same value
    return Change(path, tag, "changed", _show(*old), _show(*new), rule)


def diff(before: Snapshot, after: Snapshot, rule: str | int) -> list[PendingChange]:
    """The candidate changes between two snapshots, cheap to compute: nothing is decoded here. Changed
    and removed elements first, then added ones, each in the data set's order, items after their sequence."""
    pending: list[PendingChange] = []
    _changed_or_removed(before, after, (), rule, pending)
    _added(after, before, (), rule, pending)
    return pending


def _changed_or_removed(before: Snapshot, after: Snapshot | None, prefix: tuple[int, ...], rule: str | int,
                        out: list[PendingChange]) -> None:
    now = after.elements if after is not None else {}
    decoded, sequences = before.values, before.items
    elements = before.elements
    # Most elements are the very ones they were, still as read: passed over in a comprehension.
    for tag in [t for t, e in elements.items() if now.get(t) is not e or t in decoded or t in sequences]:
        element, new = elements[tag], now.get(tag)
        key = prefix + (int(tag),)
        old_entry = _entry(before, tag, element)
        new_entry = _entry(after, tag, new) if new is not None else None
        if new_entry is None or new is not element or (new_entry[1] is not old_entry[1]
                                                       and new_entry[1] != old_entry[1]):
            out.append(PendingChange(key, old_entry, new_entry, rule))
        if tag in sequences:
            items = after.items.get(tag, ()) if after is not None else ()
            for index, item in enumerate(sequences[tag]):
                _changed_or_removed(item, items[index] if index < len(items) else None, key + (index,), rule, out)


def _added(after: Snapshot, before: Snapshot | None, prefix: tuple[int, ...], rule: str | int,
           out: list[PendingChange]) -> None:
    then = before.elements if before is not None else {}
    sequences = after.items
    for tag in [t for t in after.elements if t not in then or t in sequences]:
        key = prefix + (int(tag),)
        element = after.elements[tag]
        if tag not in then and type(element) is RawDataElement and tag in sequences:
            out.extend(_added_sequence(key, element, encodings_key(character_set(after.ds)), rule))
            continue
        if tag not in then:
            out.append(PendingChange(key, None, _entry(after, tag, element), rule))
        if tag in sequences:
            items = before.items.get(tag, ()) if before is not None else ()
            for index, item in enumerate(sequences[tag]):
                _added(item, items[index] if index < len(items) else None, key + (index,), rule, out)


@lru_cache(maxsize=256)
def _added_sequence(key: tuple[int, ...], raw: RawDataElement, encodings: str | tuple[str, ...],
                    rule: str | int) -> tuple[Change, ...]:
    """The changes of adding an encoded sequence, described: routing adds the same one to every instance."""
    items = _item_snapshots(raw, encodings)
    pending: list[PendingChange | Change] = [PendingChange(key, None, (raw, len(items), None), rule)]
    for index, item in enumerate(items):
        _added(item, None, key + (index,), rule, pending)
    return tuple(resolve_all(pending))


def resolve_all(pending: list[PendingChange | Change]) -> list[Change]:
    """The changes described (a journal describes some of them as it finds them)."""
    return [change for change in (p if type(p) is Change else p.resolve() for p in pending) if change is not None]
