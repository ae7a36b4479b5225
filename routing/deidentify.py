"""``<Deidentify profile="basic">``: PS3.15 Annex E Basic Application Level Confidentiality Profile.

The action of every attribute comes from Table E.1-1 as shipped in rules/ps3.15-basic-profile.json
(generated from the standard by routing/generate_profile.py). Choices the table leaves to the
implementer, made here once:

- Compound codes. X/Z becomes Z and X/D, X/Z/D, Z/D become D: we do not know which IOD requires what,
  and an empty or dummy value hides as much as a removed one while keeping Type 1 and 2 attributes
  present, so the result stays as valid as the input. X/Z/U* (sequences of references) keeps the
  sequence and replaces the UIDs inside it.
- Options. When several chosen options name an attribute, K (retain) wins over C (clean), and any option
  wins over the basic action. Full and modified longitudinal dates cannot both be chosen.
- D. A dummy of the element's VR; for Patient ID a keyed pseudonym instead (so a subject's studies stay
  together in the archive). Patient ID and Patient's Name set by an earlier Pseudonymize are kept. A sequence
  with D keeps its items, de-identified by the profile, and free text in them (Text Value, Unformatted
  Text Value) becomes a dummy.
- C. Dates are shifted by the per-subject keyed offset (the same one ShiftDates uses), times kept; free
  text has the data set's own identifiers (names, IDs, birth date, accession number) cut out; sequences
  are kept and de-identified item by item; overlay and curve bitmaps are kept as they are.
- U. The keyed 2.25 mapping of ReplaceUIDs, so references between instances survive.
- Private attributes are removed; with retainSafePrivate, the blocks of the creators listed in <Keep>
  children are kept (the standard's list of safe private attributes is not shipped).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from dopamine_py import raw_values

from . import encoded, keyed
from .actions import (
    Action,
    LONGITUDINAL_TEMPORAL,
    map_uid_value,
    mapped_uid,
    remove_private,
    shift_da,
    shift_dt,
    sync_media_storage_uid,
)
from .changes import encoded_change, mapped_uid_change
from .context import Context
from .copying import decoded_vr, element_store, vr_of
from .encoding import EXPLICIT_LITTLE
from .errors import ActionFailed
from .paths import describe
from .schema import RULES_DIR
from .values import element_texts, set_value

PROFILE_PATH = RULES_DIR / "ps3.15-basic-profile.json"

OPTIONS = (
    "retainSafePrivate",
    "retainUIDs",
    "retainDeviceIdentity",
    "retainInstitutionIdentity",
    "retainPatientCharacteristics",
    "retainLongitudinalFullDates",
    "retainLongitudinalModifiedDates",
    "cleanDescriptors",
    "cleanStructuredContent",
    "cleanGraphics",
)

# CID 7050 De-identification Method (coding scheme DCM).
METHOD_CODES = {
    "basic": ("113100", "Basic Application Confidentiality Profile"),
    "cleanGraphics": ("113103", "Clean Graphics Option"),
    "cleanStructuredContent": ("113104", "Clean Structured Content Option"),
    "cleanDescriptors": ("113105", "Clean Descriptors Option"),
    "retainLongitudinalFullDates": ("113106", "Retain Longitudinal Temporal Information Full Dates Option"),
    "retainLongitudinalModifiedDates": ("113107", "Retain Longitudinal Temporal Information Modified Dates Option"),
    "retainPatientCharacteristics": ("113108", "Retain Patient Characteristics Option"),
    "retainDeviceIdentity": ("113109", "Retain Device Identity Option"),
    "retainUIDs": ("113110", "Retain UIDs Option"),
    "retainSafePrivate": ("113111", "Retain Safe Private Option"),
    "retainInstitutionIdentity": ("113112", "Retain Institution Identity Option"),
}

RESOLVED_COMPOUND = {"X/Z": "Z", "X/D": "D", "X/Z/D": "D", "Z/D": "D", "X/Z/U*": "U*"}

DUMMY_TEXT = "ANONYMIZED"
DUMMIES = {
    "AE": DUMMY_TEXT, "AS": "000Y", "CS": DUMMY_TEXT, "DA": "19000101", "DT": "19000101000000",
    "TM": "000000", "LO": DUMMY_TEXT, "LT": DUMMY_TEXT, "SH": DUMMY_TEXT, "ST": DUMMY_TEXT,
    "UC": DUMMY_TEXT, "UT": DUMMY_TEXT, "PN": DUMMY_TEXT, "UR": "urn:x-anonymized", "IS": "0", "DS": "0",
}
BINARY_DUMMY = b"\x00\x00"
FREE_TEXT = frozenset({0x0040A160, 0x00700006})  # Text Value, Unformatted Text Value
PATIENT_ID, PATIENT_NAME = 0x00100020, 0x00100010
PATIENT_IDENTITY_REMOVED, DEIDENTIFICATION_METHOD, DEIDENTIFICATION_METHOD_CODES = 0x00120062, 0x00120063, 0x00120064
CURVE_GROUPS = range(0x5000, 0x5100)
OVERLAY_GROUPS = range(0x6000, 0x6100)


@dataclass(frozen=True)
class ProfileTable:
    edition: str
    rows: tuple[dict, ...]
    exact: dict[int, dict]
    curve: dict
    overlay: dict[int, dict]  # element number (0x3000, 0x4000) -> row
    private: dict


@lru_cache(maxsize=1)
def load_table(path: Path = PROFILE_PATH) -> ProfileTable:
    data = json.loads(path.read_text("utf-8"))
    exact, overlay, curve, private = {}, {}, None, None
    for row in data["rows"]:
        tag = row["tag"].upper()
        if re.fullmatch(r"\([0-9A-F]{4},[0-9A-F]{4}\)", tag):
            exact[int(tag[1:5] + tag[6:10], 16)] = row
        elif tag == "(50XX,XXXX)":
            curve = row
        elif re.fullmatch(r"\(60XX,[0-9A-F]{4}\)", tag):
            overlay[int(tag[6:10], 16)] = row
        elif "ODD" in tag:
            private = row
        else:
            raise ValueError(f"{path}: row {row['tag']} has a tag pattern this code does not know")
    if curve is None or private is None:
        raise ValueError(f"{path}: the curve and private attribute rows are missing")
    return ProfileTable(data["edition"], tuple(data["rows"]), exact, curve, overlay, private)


def resolve_code(row: dict, options: frozenset[str]) -> str:
    """The single action (X, Z, D, U, U*, K, C) for a row under the chosen options."""
    chosen = [row[o] for o in options if o in row]
    if "K" in chosen:
        return "K"
    if "C" in chosen:
        return "C"
    return RESOLVED_COMPOUND.get(row["basic"], row["basic"])


@dataclass
class Plan:
    """The profile resolved for one set of options: what to do with each tag."""

    exact: dict[int, str]
    curve: str
    overlay: dict[int, str]
    private: str


@lru_cache(maxsize=64)
def plan_for(options: frozenset[str]) -> Plan:
    table = load_table()
    return Plan(
        {tag: resolve_code(row, options) for tag, row in table.exact.items()},
        resolve_code(table.curve, options),
        {elem: resolve_code(row, options) for elem, row in table.overlay.items()},
        resolve_code(table.private, options),
    )


def code_for(plan: Plan, tag: int) -> str | None:
    group, elem = tag >> 16, tag & 0xFFFF
    if group in CURVE_GROUPS and group % 2 == 0:
        return plan.curve
    if group in OVERLAY_GROUPS and group % 2 == 0 and elem in plan.overlay:
        return plan.overlay[elem]
    return plan.exact.get(tag)


@dataclass
class Deidentify(Action):
    options: frozenset[str] = frozenset()
    safe_private_creators: frozenset[str] = frozenset()
    secret: str = keyed.DEFAULT_SECRET
    max_days: int = 365
    name = "Deidentify"
    reports_changes = True

    def apply(self, ctx: Context) -> None:
        run = _Run(self, ctx, plan_for(self.options))
        run.execute()


@dataclass
class _Run:
    """One de-identification of one data set."""

    action: Deidentify
    ctx: Context
    plan: Plan
    _key: bytes | None = None
    _offset: int | None = None
    _identifiers: re.Pattern | None = field(default=None)

    @property
    def key(self) -> bytes:
        if self._key is None:
            self._key = keyed.secret_bytes(self.ctx.secrets, self.action.secret, "Deidentify")
        return self._key

    def execute(self) -> None:
        ds = self.ctx.ds
        journal = self.ctx.journal
        self.touch = journal.touch if journal is not None else _untracked
        self.keep_encoded = journal.keep_encoded if journal is not None else _untracked
        self.journal = journal
        options = self.action.options
        self.original_patient_id = _text(ds, PATIENT_ID)
        if "retainLongitudinalModifiedDates" in options:
            if not self.original_patient_id:
                raise ActionFailed("PatientID is missing or empty: the date offset is derived from it")
            self._offset = keyed.date_offset_days(self.key, self.original_patient_id, self.action.max_days)
        if options & {"cleanDescriptors", "cleanStructuredContent", "cleanGraphics",
                      "retainPatientCharacteristics", "retainDeviceIdentity"}:
            self._identifiers = identifier_pattern(ds)
        keep = self.action.safe_private_creators if "retainSafePrivate" in options else frozenset()
        remove_private(ds, keep, self.touch)
        self.process(ds, top=True, free_text=None)
        if "retainUIDs" not in options:
            sync_media_storage_uid(ds)
        self.record(ds)

    # ---------------------------------------------------------------------------------- walking

    def process(self, ds: Dataset, top: bool, free_text: str | None) -> None:
        """Apply the plan to one data set or item. ``free_text`` is the treatment of Text Value and
        Unformatted Text Value inside a sequence that was dummied ("D") or cleaned ("C").

        Works from the tags, so an element the profile keeps is never decoded. The common cases are
        written out: this loop runs for every element of every de-identified instance."""
        store = element_store(ds)
        exact = self.plan.exact
        touch = self.touch if top else _untracked  # changes in items: their top-level sequence was touched
        keep_encoded = self.keep_encoded if top else _untracked
        outcomes = self.outcomes_remembered() if top and self.journal is not None else None
        curves, overlays_end = CURVE_GROUPS.start, OVERLAY_GROUPS.stop
        for key, raw in list(store.items()):
            tag = int(key)
            group = tag >> 16
            code = code_for(self.plan, tag) if curves <= group < overlays_end else exact.get(tag)
            if code is None and group % 2 == 1:
                code = "K"  # a private element that survived remove_private: a kept safe block
            if code is None and free_text and tag in FREE_TEXT:
                code = free_text
            if code is None or code == "K":
                if raw.VR == "SQ" or raw.VR is None and vr_of(tag, raw) == "SQ":
                    touch(key)
                    self.items(ds[tag], free_text)
                continue
            personal = top and tag in (PATIENT_ID, PATIENT_NAME)
            if personal and code in ("D", "Z") and self.ctx.pseudonymized:
                continue  # an earlier Pseudonymize already replaced it with a non-identifying value
            if (outcomes is not None and type(raw) is RawDataElement and raw.value is not None
                    and raw.VR is not None and raw.VR != "SQ" and raw.length != UNDEFINED_LENGTH
                    and len(raw.value) <= REMEMBERED_VALUE_BYTES):
                found = outcomes.get((tag, raw.VR, raw.value, raw.is_implicit_VR, raw.is_little_endian), _MISSING)
                if found is _MISSING:
                    found = self.outcome(tag, raw, code, outcomes)
                if found is not _GENERAL:  # what the path below does to it, and the change it makes, at once
                    keep_encoded(key, raw)
                    if found is _KEPT:
                        continue
                    self.journal.described[key] = (raw, *found)  # the journal's, while it still holds
                    if found[0] is None:
                        del ds[key]
                    else:
                        store[key] = found[0]
                    continue
            if type(raw) is RawDataElement and raw.VR is not None and raw.VR != "SQ":
                keep_encoded(key, raw)  # what touch does for an encoded element, without a call of its own
            else:
                touch(key)
            if code == "X":
                del ds[key]  # without decoding it first; by the key itself, which pydicom's Tag would remake
                continue
            vr = decoded_vr(tag, raw)
            if code in ("Z", "D") and vr not in (None, "SQ", "UI") and not group % 2:
                # A new element: the old value need not be decoded to be replaced.
                encoding = encoded.encoding_of(ds, raw)
                if personal and code == "D":
                    value = self.dummy_value(tag, vr, top)
                    store[key] = encoded.raw_replacement(tag, vr, value, encoding) or DataElement(tag, vr, value)
                else:
                    store[key] = constant_replacement(tag, vr, code, encoding) or DataElement(
                        tag, vr, None if code == "Z" else dummy_of(vr))
                continue
            if vr == "UI" and type(raw) is RawDataElement and raw.value is not None and code in ("U", "U*", "D", "C"):
                self.map_encoded_uids(ds, raw, code)
                continue
            try:
                self.treat(ds, ds[tag], code, top, free_text)
            except ActionFailed as exc:
                raise ActionFailed(f"{describe(tag)}: {exc}") from None

    def outcomes_remembered(self) -> dict:
        """The profile's memory of outcomes for this run's options, key and rule."""
        try:
            key = self.key
        except ActionFailed:
            key = None  # no UID mapping remembered: the general path raises, naming the missing secret
        return remembered_outcomes(self.action.options, key, self.journal.rule)

    def outcome(self, tag: int, raw: RawDataElement, code: str, outcomes: dict):
        """What the loop of ``process`` makes of an encoded element of the top level (explicit VR, defined
        length, a short value, of action ``code``): (its replacement, or None when removed; the change,
        described as the journal would), _KEPT when it stays as it is, or _GENERAL when the loop's general
        path must handle it. Remembered in ``outcomes`` by the element's value: the instances of a series
        carry mostly the same values, and this took half the profile's time per element, with the journal's
        description."""
        vr, encoding = raw.VR, (raw.is_implicit_VR, raw.is_little_endian)
        found, change = _GENERAL, None
        if vr == "UN":
            pass  # decoded_vr gives none: the general path decodes it
        elif code == "X":
            found = None
        elif code == "D" and tag in (PATIENT_ID, PATIENT_NAME):
            # The pseudonym made from the Patient ID (dummy_value): a function of this very value only for
            # the Patient ID itself, and only when it reads the same in every character set (_text).
            if (tag == PATIENT_ID and vr == "LO" and self._key is not None and raw.value.isascii()
                    and b"\x1b" not in raw.value):
                found = encoded.raw_replacement(tag, vr, self.dummy_value(tag, vr, True), encoding) or _GENERAL
        elif code in ("Z", "D") and vr != "UI" and not tag >> 16 & 1:
            found = constant_replacement(tag, vr, code, encoding) or _GENERAL
        elif vr == "UI" and code in ("U", "U*", "D", "C") and self._key is not None:
            uids = mapped_uids(self._key, tag, raw.value, code == "D")
            replacement = encoded.uid_element(tag, uids[1], encoding) if uids is not None else False
            found = _KEPT if replacement is False else replacement if replacement is not None else _GENERAL
            if found is replacement and encoding == EXPLICIT_LITTLE:
                # Described from the texts just read: most UIDs that miss here are new in every instance (its
                # own SOP Instance UID), where decoding both elements again to describe them, and remembering
                # that, cost more than the mapping itself.
                change = mapped_uid_change(tag, *uids, self.journal.rule)
        if found is not _GENERAL and found is not _KEPT:
            if change is None:
                change = encoded_change(tag, raw, found, self.journal.rule)
            found = (found, change) if change is not False else _GENERAL
        if len(outcomes) >= REMEMBERED_OUTCOMES:
            outcomes.clear()
        outcomes[(tag, vr, raw.value, *encoding)] = found
        return found

    def map_encoded_uids(self, ds: Dataset, raw: RawDataElement, code: str) -> None:
        """U, D and C of a UID element still encoded: what ``treat`` does to it, without decoding it."""
        replacement = mapped_uid_element(self.key, int(raw.tag), raw.value, code == "D", encoded.encoding_of(ds, raw))
        if replacement is None:  # a value this module does not encode
            map_uid_value(ds[raw.tag], self.key)
        elif replacement is not False:
            element_store(ds)[raw.tag] = replacement

    def items(self, element, free_text: str | None) -> None:
        for item in element.value or []:
            self.process(item, top=False, free_text=free_text)

    def treat(self, ds: Dataset, element, code: str, top: bool, free_text: str | None) -> None:
        tag, vr = int(element.tag), element.VR
        if code == "X":
            del ds[tag]
        elif code == "Z":
            element.value = Sequence() if vr == "SQ" else None
        elif code in ("U", "U*"):
            if vr == "SQ":
                self.items(element, free_text)
            elif vr == "UI":
                map_uid_value(element, self.key)
            else:
                element.value = None  # a non-UID attribute the table marks U: nothing to map, so empty
        elif code == "D":
            self.dummy(element, top)
        elif code == "C":
            self.clean(element)
        else:
            raise ActionFailed(f"profile action {code!r} is not known")

    def dummy(self, element, top: bool) -> None:
        tag, vr = int(element.tag), element.VR
        if vr == "SQ":
            self.items(element, "D")
        elif vr == "UI":
            if element_texts(element):
                map_uid_value(element, self.key)
            else:
                element.value = keyed.replacement_uid(self.key, f"dummy:{tag:08X}")
        else:
            element.value = self.dummy_value(tag, vr, top)

    def dummy_value(self, tag: int, vr: str, top: bool):
        if top and tag in (PATIENT_ID, PATIENT_NAME) and self.original_patient_id:
            return keyed.pseudonym(self.key, self.original_patient_id, "ANON-", 10)
        return dummy_of(vr)

    def clean(self, element) -> None:
        vr = element.VR
        if vr == "SQ":
            self.items(element, "C")
            return
        texts = element_texts(element)
        if not texts:
            return
        if vr in ("DA", "DT") and self._offset is not None:
            shift = shift_da if vr == "DA" else shift_dt
            element.value = "\\".join(shift(t, self._offset) if t.strip() else t for t in texts)
        elif vr in ("DA", "DT", "TM"):
            return  # a time keeps its value: dates move by whole days
        elif vr == "UI":
            map_uid_value(element, self.key)
        elif vr in DUMMIES and self._identifiers is not None:
            cleaned = [scrub(t, self._identifiers) for t in texts]
            if cleaned != texts:
                element.value = cleaned[0] if len(cleaned) == 1 else cleaned
        # binary values (overlay, curve data) are kept: their cleaning is a person's job

    # ---------------------------------------------------------------------------------- record

    def record(self, ds: Dataset) -> None:
        """What was done, per PS3.15 E.1.1: Patient Identity Removed, the method and its codes, and what
        became of the dates."""
        options = self.action.options
        text, items = method_record(options)
        if "retainLongitudinalFullDates" in options:
            temporal = "UNMODIFIED"
        elif "retainLongitudinalModifiedDates" in options:
            temporal = "MODIFIED"
        else:
            temporal = "REMOVED"
        encoding = encoded.encoding_of(ds)
        store = element_store(ds)
        for tag, vr, value in ((PATIENT_IDENTITY_REMOVED, "CS", "YES"), (DEIDENTIFICATION_METHOD, "LO", text),
                               (DEIDENTIFICATION_METHOD_CODES, "SQ", items), (LONGITUDINAL_TEMPORAL, "CS", temporal)):
            element = (remembered_sequence(tag, value, encoding) if vr == "SQ"
                       else remembered_replacement(tag, vr, value, encoding))
            if element is not None:
                self.touch(element.tag)  # the very key it is stored under: BaseTag compares in Python
                store[element.tag] = element
            else:  # a data set of unknown encoding: pydicom's elements
                self.touch(tag)
                if vr == "SQ":
                    ds.add_new(tag, vr, _sequence_of(value))
                else:
                    set_value(ds, tag, value, vr)


@lru_cache(maxsize=64)
def method_record(options: frozenset[str]) -> tuple[str, tuple[tuple[tuple[int, str, str], ...], ...]]:
    """De-identification Method (its values joined) and the items of its code sequence, for ``options``,
    each item as (tag, VR, value) of its elements."""
    methods = [f"PS3.15 {load_table().edition} Basic Application Confidentiality Profile"]
    methods += [METHOD_CODES[o][1] for o in OPTIONS if o in options]
    items = []
    for name in ("basic",) + tuple(o for o in OPTIONS if o in options):
        value, meaning = METHOD_CODES[name]
        # Code Value, Coding Scheme Designator, Code Meaning
        items.append(((0x00080100, "SH", value), (0x00080102, "SH", "DCM"), (0x00080104, "LO", meaning)))
    return "\\".join(m[:64] for m in methods), tuple(items)


def _sequence_of(items: tuple[tuple[tuple[int, str, str], ...], ...]) -> Sequence:
    sequence = Sequence()
    for elements in items:
        item = Dataset()
        for tag, vr, value in elements:
            item.add_new(tag, vr, value)
        sequence.append(item)
    return sequence


@lru_cache(maxsize=4096)  # the study, series and frame of reference UIDs of a series' instances are the same
def mapped_uid_element(key: bytes, tag: int, value: bytes, dummy: bool,
                       encoding: tuple[bool, bool]) -> RawDataElement | bool | None:
    """The encoded UID element that replaces an encoded one (see mapped_uids). False when it stays as it
    is, None when the replacement is not one routing/encoded.py makes (a UID kept as it is, but not ASCII)."""
    uids = mapped_uids(key, tag, value, dummy)
    return encoded.uid_element(tag, uids[1], encoding) if uids is not None else False


def mapped_uids(key: bytes, tag: int, value: bytes, dummy: bool) -> tuple[list[str], list[str]] | None:
    """The UIDs of an encoded UID element (as pydicom reads them) and what they become: mapped, or for D of
    an empty one, a dummy UID (as ``_Run.dummy``; U and C leave an empty one). None when they stay."""
    uids = raw_values.uids(value)
    if uids == [""]:
        return (uids, [keyed.replacement_uid(key, f"dummy:{tag:08X}")]) if dummy else None
    mapped = [mapped_uid(key, uid) for uid in uids]
    return (uids, mapped) if mapped != uids else None


@lru_cache(maxsize=16)
def remembered_outcomes(options: frozenset[str], key: bytes | None, rule: str | int | None) -> dict:
    """The outcomes ``_Run.outcome`` remembers, per profile options, key and rule (see there)."""
    return {}


REMEMBERED_OUTCOMES = 8192  # then forgotten all at once: a few megabytes
# Longer values (overlay data, encapsulated documents) are the instance's own: not kept as keys.
REMEMBERED_VALUE_BYTES = 256
UNDEFINED_LENGTH = 0xFFFFFFFF  # the general path decodes such an element (decoded_vr gives no VR)
_MISSING, _GENERAL, _KEPT = object(), object(), object()


# Encoded replacements remembered: the same few dozen (dummies, empty values, the profile's record) go into
# every de-identified instance.
remembered_replacement = lru_cache(maxsize=4096)(encoded.raw_replacement)
# The profile's record of its method codes: encoded once, and from then on a sequence costs what one
# element costs (built, described, encoded and documented item by item, it was about a fifth of the
# routing's time in process).
remembered_sequence = lru_cache(maxsize=64)(encoded.raw_sequence)


def _untracked(tag: int, element: RawDataElement | None = None) -> None:
    """Nothing to note, for Journal.touch and Journal.keep_encoded: no journal (the engine compares snapshots
    of the whole data set), or a change inside items, whose top-level sequence was touched."""


def dummy_of(vr: str):
    """The dummy value of a VR (D), but for the pseudonymous Patient ID and Name."""
    if vr in DUMMIES:
        return DUMMIES[vr]
    if vr in ("US", "SS", "UL", "SL", "FL", "FD", "UV", "SV"):
        return 0
    return BINARY_DUMMY  # OB, OW, UN and the other binary VRs


def constant_replacement(tag: int, vr: str, code: str, encoding: tuple[bool, bool] | None):
    """Z or D of an element whose dummy does not depend on the instance, encoded (see routing/encoded.py);
    None when it cannot be."""
    return remembered_replacement(tag, vr, None if code == "Z" else dummy_of(vr), encoding)


def _text(ds: Dataset, tag: int) -> str | None:
    """The first value of a text element (LO, SH, CS...), stripped; None when it has none."""
    raw = element_store(ds).get(tag)
    if raw is None:
        return None
    value = raw.value if type(raw) is RawDataElement else None
    if value is not None and value.isascii() and b"\x1b" not in value and raw.VR in TEXT_VRS:
        # ASCII without the escape sequences of ISO 2022 (whose 7-bit bytes can be kanji) reads the same in
        # every character set; decoded as pydicom (and raw_values) decode text.
        first = value.decode("ascii").split("\\")[0].rstrip("\0 ")
    else:
        texts = element_texts(ds[tag])
        first = texts[0] if texts else ""
    return first.strip() or None


TEXT_VRS = frozenset({None, "LO", "SH", "CS"})  # None: implicit VR, the dictionary's (LO for Patient ID)


IDENTIFYING = (0x00100010, 0x00100020, 0x00101000, 0x00101001, 0x00100030, 0x00080050,
               0x00080090, 0x00081050, 0x00081060, 0x00081070, 0x00101040, 0x00102154)


def identifier_pattern(ds: Dataset) -> re.Pattern | None:
    """A pattern of the identifying words this data set itself carries (names, IDs, birth date...)."""
    words: set[str] = set()
    for tag in IDENTIFYING:
        if tag not in ds:
            continue
        for text in element_texts(ds[tag]):
            words.add(text.strip())
            words.update(w for w in re.split(r"[\^=\s,]+", text) if len(w) >= 2)
    words.discard("")
    if not words:
        return None
    alternatives = sorted(words, key=len, reverse=True)
    return re.compile(r"\b(?:" + "|".join(re.escape(w) for w in alternatives) + r")\b", re.IGNORECASE)


def scrub(text: str, pattern: re.Pattern) -> str:
    return re.sub(r"\s{2,}", " ", pattern.sub("", text)).strip()
