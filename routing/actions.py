"""Actions: what a rule does to the data set (and the routing decision) once its condition holds.

Every action works on the engine's private copy and raises ActionFailed with a message meant for the
admin when it cannot do its job on this data set; the engine then refuses the whole data set.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Callable, Union

from pydicom.datadict import keyword_for_tag
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.tag import BaseTag
from pydicom.uid import UID_dictionary

from . import keyed
from .context import Context
from .copying import element_store, vr_of
from .errors import ActionFailed
from .paths import ElementPath, describe
from .values import element_texts, empty, set_value


class Action:
    name = "Action"
    # True for an action that calls ctx.journal.touch(tag) (when there is a journal) before it changes, adds
    # or removes a top-level element or anything in it; the engine then compares only those.
    reports_changes = False

    def apply(self, ctx: Context) -> None:  # pragma: no cover - interface
        raise NotImplementedError

    @property
    def modifies(self) -> bool:
        return True


# ----------------------------------------------------------------------------------------- templates


@dataclass(frozen=True)
class SourceField:
    name: str  # attribute of dopamine_py.archive.Source


TemplatePart = Union[str, ElementPath, SourceField]
TEMPLATE_SOURCE_FIELDS = {"@callingAE": "calling_aet", "@user": "user", "@protocol": "protocol", "@peer": "peer"}


@dataclass
class Template:
    """``"{PatientID}-{StudyDate}"``: literal text and references, ``{{``/``}}`` for braces."""

    text: str
    parts: list[TemplatePart]

    def render(self, ctx: Context) -> str:
        out = []
        for part in self.parts:
            if isinstance(part, str):
                out.append(part)
            elif isinstance(part, SourceField):
                value = getattr(ctx.source, part.name, None) if ctx.source is not None else None
                if value is None:
                    raise ActionFailed(f"template {self.text!r}: the source has no {part.name}")
                out.append(str(value))
            else:
                found = list(part.present(ctx.ds))
                if not found:
                    raise ActionFailed(f"template {self.text!r} names {part.text}, which this data set lacks")
                texts = [t for container, tag in found for t in element_texts(container[tag])]
                out.append("\\".join(t.strip() for t in texts))
        return "".join(out)


# ----------------------------------------------------------------------------------- element actions


@dataclass
class SetElement(Action):
    path: ElementPath
    value: str | None = None
    template: Template | None = None
    vr: str | None = None
    name = "SetElement"

    def apply(self, ctx):
        text = self.template.render(ctx) if self.template is not None else (self.value or "")
        for container in self.path.containers(ctx.ds):
            tag = self.path.resolve(container, create=True)
            set_value(container, tag, text, self.vr)


@dataclass
class EmptyElement(Action):
    path: ElementPath
    name = "EmptyElement"

    def apply(self, ctx):
        for container, tag in list(self.path.present(ctx.ds)):
            empty(container, tag)


@dataclass
class DeleteElement(Action):
    path: ElementPath
    name = "DeleteElement"

    def apply(self, ctx):
        for container, tag in list(self.path.present(ctx.ds)):
            del container[tag]


# ------------------------------------------------------------------------------------------ ages


def parse_da(text: str, what: str) -> date:
    compact = text.strip().replace(".", "")  # ACR-NEMA wrote YYYY.MM.DD
    if not re.fullmatch(r"\d{8}", compact):
        raise ActionFailed(f"{what} {text!r} is not a date (YYYYMMDD)")
    try:
        return date(int(compact[:4]), int(compact[4:6]), int(compact[6:]))
    except ValueError:
        raise ActionFailed(f"{what} {text!r} is not a valid date") from None


def age_string(birth: date, on: date) -> str:
    """An AS value (PS3.5: nnnD, nnnW, nnnM or nnnY).

    The standard fixes the format, not the unit. We pick the unit the way paediatric records do, so an
    infant's age keeps useful resolution: days under 4 weeks, weeks under 3 months, months under 2 years,
    years after that (999Y at most).
    """
    days = (on - birth).days
    months = (on.year - birth.year) * 12 + on.month - birth.month - (1 if on.day < birth.day else 0)
    if days < 28:
        return f"{days:03d}D"
    if months < 3:
        return f"{days // 7:03d}W"
    if months < 24:
        return f"{months:03d}M"
    return f"{min(months // 12, 999):03d}Y"


REFERENCE_DATES = (0x00080020, 0x00080022, 0x00080021, 0x00080023)  # Study, Acquisition, Series, Content


@dataclass
class AgeFromBirthDate(Action):
    """PatientAge from PatientBirthDate and the study's date (or the named reference date)."""

    reference: ElementPath | None = None
    name = "AgeFromBirthDate"

    def apply(self, ctx):
        ds = ctx.ds
        birth_text = _first_text(ds, 0x00100030)
        if not birth_text:
            raise ActionFailed("PatientBirthDate is missing or empty")
        birth = parse_da(birth_text, "PatientBirthDate")
        candidates = [self.reference.tag] if self.reference is not None else list(REFERENCE_DATES)
        on_text = next((t for t in (_first_text(ds, tag) for tag in candidates) if t), None)
        if not on_text:
            names = ", ".join(describe(t) for t in candidates)
            raise ActionFailed(f"no date to count the age to: {names} missing or empty")
        on = parse_da(on_text, "reference date")
        if on < birth:
            raise ActionFailed(f"PatientBirthDate {birth_text} is after the reference date {on_text}")
        set_value(ds, 0x00101010, age_string(birth, on), "AS")


def _first_text(ds: Dataset, tag: int) -> str | None:
    if tag not in ds:
        return None
    texts = element_texts(ds[tag])
    return texts[0].strip() if texts and texts[0].strip() else None


# ------------------------------------------------------------------------------------- value maps


def wildcard_pattern(text: str, ignore_case: bool) -> re.Pattern:
    body = "".join(".*" if ch == "*" else "." if ch == "?" else re.escape(ch) for ch in text.strip())
    return re.compile(body, re.DOTALL | (re.IGNORECASE if ignore_case else 0))


@dataclass
class MapValue(Action):
    """Replace a value through a lookup table; the first entry whose ``from`` matches wins."""

    path: ElementPath
    entries: list[tuple[re.Pattern, str]]
    target: ElementPath | None = None
    default: str | None = None
    name = "MapValue"

    def lookup(self, value: str) -> str | None:
        value = value.strip()
        for pattern, replacement in self.entries:
            if pattern.fullmatch(value):
                return replacement
        return self.default

    def apply(self, ctx):
        for container, tag in list(self.path.present(ctx.ds)):
            texts = element_texts(container[tag])
            mapped = [self.lookup(t) for t in texts]
            if not texts or all(m is None for m in mapped):
                continue
            new = "\\".join(m if m is not None else t for m, t in zip(mapped, texts))
            if self.target is None:
                set_value(container, tag, new)
            else:
                set_value(container, self.target.resolve(container, create=True), new)


# ------------------------------------------------------------------------------------------ dates


def shift_da(text: str, days: int) -> str:
    return (parse_da(text, "date") - timedelta(days=days)).strftime("%Y%m%d")


def shift_dt(text: str, days: int) -> str:
    text = text.strip()
    if len(text) < 8 or not text[:8].isdigit():
        raise ActionFailed(f"date-time {text!r} has no full date to shift")
    return shift_da(text[:8], days) + text[8:]


def shift_all_dates(ds: Dataset, days: int) -> None:
    """Move every DA and DT value (in sequences too) ``days`` back."""
    for tag, raw in list(element_store(ds).items()):
        vr = vr_of(tag, raw)
        if vr == "SQ":
            for item in ds[tag].value or []:
                shift_all_dates(item, days)
            continue
        if vr not in ("DA", "DT"):
            continue
        element = ds[tag]
        texts = element_texts(element)
        if not any(t.strip() for t in texts):
            continue
        shift = shift_da if element.VR == "DA" else shift_dt
        try:
            element.value = "\\".join(shift(t, days) if t.strip() else t for t in texts)
        except ActionFailed as exc:
            raise ActionFailed(f"{describe(int(tag))}: {exc}") from None


LONGITUDINAL_TEMPORAL = 0x00280303


def subject_offset(ctx: Context, by: ElementPath, secret: str, max_days: int, action: str) -> int:
    key = keyed.secret_bytes(ctx.secrets, secret, action)
    subject = _first_text(ctx.ds, by.tag) if not by.is_private else None
    if not subject:
        raise ActionFailed(f"{by.text} is missing or empty: the date offset is derived from it")
    return keyed.date_offset_days(key, subject, max_days)


@dataclass
class ShiftDates(Action):
    """Move every date of the data set back by a per-subject number of days (keyed hash of PatientID),
    so intervals within a subject are kept and all of a subject's data move together, with no state."""

    by: ElementPath
    secret: str = keyed.DEFAULT_SECRET
    max_days: int = 365
    name = "ShiftDates"

    def apply(self, ctx):
        days = subject_offset(ctx, self.by, self.secret, self.max_days, self.name)
        shift_all_dates(ctx.ds, days)
        set_value(ctx.ds, LONGITUDINAL_TEMPORAL, "MODIFIED", "CS")


# ------------------------------------------------------------------------------------------- UIDs

# UIDs naming a kind of thing (a SOP class, a transfer syntax, a coding scheme), not an instance of it.
_NOT_INSTANCE_KEYWORDS = ("ClassUID", "TransferSyntaxUID", "CodingSchemeUID", "MappingResourceUID",
                          "ContextGroupExtensionCreatorUID")


def is_instance_uid_tag(tag: int) -> bool:
    keyword = keyword_for_tag(tag) or ""
    return not keyword.endswith(_NOT_INSTANCE_KEYWORDS)


def mapped_uid(key: bytes, text: str) -> str:
    """The keyed image of a UID; the text itself when it is empty or a UID of the standard (a transfer
    syntax or an SOP class identifies nobody)."""
    stripped = text.strip()
    return text if not stripped or stripped.rstrip("\0") in UID_dictionary else keyed.replacement_uid(key, text)


def map_uid_value(element, key: bytes) -> None:
    texts = element_texts(element)
    new = [mapped_uid(key, t) for t in texts]
    if new != texts:
        element.value = new[0] if len(new) == 1 else new


def replace_all_uids(ds: Dataset, key: bytes) -> None:
    for tag, raw in list(element_store(ds).items()):
        vr = vr_of(tag, raw)
        if vr == "SQ":
            for item in ds[tag].value or []:
                replace_all_uids(item, key)
        elif vr == "UI" and is_instance_uid_tag(int(tag)):
            map_uid_value(ds[tag], key)


MEDIA_STORAGE_SOP_INSTANCE_UID = BaseTag(0x00020003)


def sync_media_storage_uid(ds: Dataset) -> None:
    """Keep the File Meta Information's copy of the SOP Instance UID equal to the data set's."""
    meta = getattr(ds, "file_meta", None)
    uid = element_store(ds).get(0x00080018)
    if meta is None or uid is None or 0x00020003 not in element_store(meta):
        return
    if type(uid) is RawDataElement and uid.value is not None:
        # The same bytes in any encoding; the File Meta Information's is explicit VR little endian.
        element_store(meta)[0x00020003] = RawDataElement(MEDIA_STORAGE_SOP_INSTANCE_UID, "UI", uid.length, uid.value,
                                                         uid.value_tell, False, True, uid.is_raw,
                                                         uid.is_buffered)
    else:
        meta[0x00020003].value = ds[0x00080018].value


@dataclass
class ReplaceUIDs(Action):
    """Every instance UID (UI values other than class, transfer syntax and well-known UIDs) is replaced
    by its keyed image under 2.25, so references between instances and inside sequences still resolve."""

    secret: str = keyed.DEFAULT_SECRET
    name = "ReplaceUIDs"

    def apply(self, ctx):
        key = keyed.secret_bytes(ctx.secrets, self.secret, self.name)
        replace_all_uids(ctx.ds, key)
        sync_media_storage_uid(ctx.ds)


# ---------------------------------------------------------------------------------- pseudonyms

OTHER_IDENTITIES = (0x00101000, 0x00101001, 0x00101002)  # OtherPatientIDs, ...Names, ...IDsSequence


@dataclass
class Pseudonymize(Action):
    """PatientID and PatientName from a lookup table (PatientID -> pseudonym) or a keyed hash."""

    secret: str = keyed.DEFAULT_SECRET
    table: dict[str, tuple[str, str]] | None = None
    table_file: str | None = None
    on_missing: str = "fail"
    prefix: str = "ANON-"
    length: int = 10
    name = "Pseudonymize"

    def apply(self, ctx):
        patient_id = _first_text(ctx.ds, 0x00100020)
        if not patient_id:
            raise ActionFailed("PatientID is missing or empty: nothing to pseudonymize from")
        row = self.table.get(patient_id) if self.table is not None else None
        if row is not None:
            new_id, new_name = row
        elif self.table is not None and self.on_missing == "fail":
            raise ActionFailed(f"PatientID {patient_id!r} is not in {self.table_file}")
        else:
            key = keyed.secret_bytes(ctx.secrets, self.secret, self.name)
            new_id = new_name = keyed.pseudonym(key, patient_id, self.prefix, self.length)
        set_value(ctx.ds, 0x00100020, new_id, "LO")
        set_value(ctx.ds, 0x00100010, new_name, "PN")
        for tag in OTHER_IDENTITIES:
            if tag in ctx.ds:
                del ctx.ds[tag]
        ctx.pseudonymized = True


# ---------------------------------------------------------------------------------- private tags


def remove_private(ds: Dataset, keep: frozenset[str], touch: Callable[[int], None] | None = None,
                   before_change: Callable[[], None] | None = None) -> None:
    """Remove private elements (in sequences too), except the blocks of the creators in ``keep``.

    ``touch(tag)`` is called before a top-level element (or something in it) is changed, for a change
    journal (see changes.Journal); in items, ``before_change()`` before the first change."""
    kept_blocks: set[tuple[int, int]] = set()
    doomed = []
    # Only private elements and sequences need a look; most data sets have few of either.
    candidates = [(t, e) for t, e in element_store(ds).items() if t & 0x10000 or e.VR == "SQ" or e.VR is None]
    for tag, raw in candidates:  # in tag order: creators come before their blocks
        tag = int(tag)
        group, elem = tag >> 16, tag & 0xFFFF
        if group % 2 == 0:
            if vr_of(tag, raw) == "SQ":
                _remove_private_in_items(ds, tag, keep, touch, before_change)
            continue
        if 0x0010 <= elem <= 0x00FF:
            creator = str(ds[tag].value or "").strip()
            if creator in keep:
                kept_blocks.add((group, elem))
            else:
                doomed.append(tag)
            continue
        if (group, elem >> 8) in kept_blocks and elem >= 0x1000:
            if vr_of(tag, raw) == "SQ":
                _remove_private_in_items(ds, tag, keep, touch, before_change)
            continue
        doomed.append(tag)
    for tag in doomed:
        if touch is not None:
            touch(tag)
        elif before_change is not None:
            before_change()
        del ds[tag]


def _remove_private_in_items(ds: Dataset, tag: int, keep: frozenset[str], touch: Callable[[int], None] | None,
                             before_change: Callable[[], None] | None) -> None:
    # Touched only if something in the items goes (a touched sequence costs a snapshot of its items), though
    # the profile then touches every sequence it walks into anyway.
    if touch is not None:
        before_change = functools.partial(touch, tag)
    for item in ds[tag].value or []:
        remove_private(item, keep, before_change=before_change)


@dataclass
class RemovePrivateTags(Action):
    keep: frozenset[str] = frozenset()
    name = "RemovePrivateTags"

    def apply(self, ctx):
        remove_private(ctx.ds, self.keep)


# -------------------------------------------------------------------------------------- routing


@dataclass
class Route(Action):
    """Store, Reject, Quarantine, Forward and Stop: they only decide; the archive carries it out."""

    kind: str  # "store" | "reject" | "quarantine" | "forward" | "stop"
    reason: str | None = None
    destination: str | None = None
    name: str = field(default="Route")

    @property
    def modifies(self) -> bool:
        return False

    def apply(self, ctx):
        if self.kind == "forward":
            if self.destination not in ctx.forward:
                ctx.forward.append(self.destination)
        elif self.kind == "stop":
            ctx.stop = True
        else:
            ctx.decision = self.kind
            ctx.reason = self.reason
            if self.kind == "reject":
                ctx.stop = True  # nothing after a rejection can matter
