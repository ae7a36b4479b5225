"""DICOM matching (PS3.4 C.2.2.2), one representation for every user of it.

Query identifiers from C-FIND, QIDO-RS parameters, access-control constraints and routing conditions are
parsed into a ``Query``: a conjunction of conditions on attributes. A ``Query`` is evaluated in memory
against a document (``Query.matches``) and compiled to each storage backend's own query language
(``storage/sqlite_query.py``, ``storage/mongo_query.py``). The property tests hold all three to the same
answers, so the semantics are written down once, here:

- Universal: an empty value, or a lone ``*``. Matches everything, including a missing attribute.
- Single value: exact, case-sensitive; numbers (IS, DS, US, ...) compare as numbers. For PN the value is
  compared with each component group (alphabetic, ideographic, phonetic); ``=`` in the query addresses
  groups one by one. Optional case-insensitive PN matching (QIDO's fuzzymatching) folds both sides.
- Wildcard: ``*`` any run of characters, ``?`` exactly one; for the text VRs the standard allows
  (AE, CS, LO, LT, PN, SH, ST, UC, UR, UT) and for attributes of unknown VR (private ones).
- Range: DA, TM, DT as ``lo-hi``, ``lo-`` or ``-hi``. Values compare as strings, which orders these VRs
  correctly; an upper bound covers its whole precision (``-2001`` includes ``20011231``, ``-10`` includes
  10:59), because a reduced-precision value names a period, not an instant.
- List: values separated by ``\\`` match when any one does. The standard defines this for UIDs; we accept
  it for every VR (``Modality=MR\\CT``), as Orthanc does, since researchers ask for it.
- Sequence: the query item's conditions must all hold within one item of the sequence.
- Combined date and time (C.2.2.2.5.2): a DA range with a TM range on its paired attribute
  (StudyDate/StudyTime, ...) selects one continuous interval when ``combine_datetime`` is set.
- On multi-valued attributes a condition holds when it holds for any one value.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Iterable, Union

from pydicom.dataset import Dataset

from .document import (
    INT_VRS,
    NUMBER_VRS,
    PN_GROUPS,
    UnknownAttribute,
    describe_tag,
    parse_tag,
    single_valued,
    tag_key,
    vr_for_tag,
)

# UN included: a private attribute's VR is unknown until the data are read, and they are usually text.
WILDCARD_VRS = frozenset({"AE", "CS", "LO", "LT", "PN", "SH", "ST", "UC", "UR", "UT", "UN"})
RANGE_VRS = frozenset({"DA", "TM", "DT"})
# Appended to an upper bound so that it covers its whole precision: sorts after every character
# DA, TM and DT values are made of (digits, '.', '+', '-', space).
UPPER_BOUND_PAD = "~"
DATE_TIME_PAIRS = {
    0x00080020: 0x00080030,  # StudyDate / StudyTime
    0x00080021: 0x00080031,  # SeriesDate / SeriesTime
    0x00080022: 0x00080032,  # AcquisitionDate / AcquisitionTime
    0x00080023: 0x00080033,  # ContentDate / ContentTime
    0x00100030: 0x00100032,  # PatientBirthDate / PatientBirthTime
}


class QueryError(ValueError):
    """A query key or value that cannot be matched; the message names the attribute."""


@dataclass(frozen=True)
class Universal:
    tag: int
    vr: str


@dataclass(frozen=True)
class Single:
    tag: int
    vr: str
    value: Any  # str, or int/float for numeric VRs, or tuple of PN groups
    fold_case: bool = False


@dataclass(frozen=True)
class Wildcard:
    tag: int
    vr: str
    pattern: Any  # str, or tuple of PN group patterns
    fold_case: bool = False


@dataclass(frozen=True)
class Range:
    tag: int
    vr: str
    low: str | None
    high: str | None


@dataclass(frozen=True)
class AnyOf:
    tag: int
    vr: str
    alternatives: tuple["Condition", ...]


@dataclass(frozen=True)
class SequenceMatch:
    tag: int
    vr: str
    item: "Query"


@dataclass(frozen=True)
class DateTimeRange:
    """StudyDate + StudyTime (or another pair) as one continuous interval."""

    tag: int  # the date attribute
    time_tag: int
    low: tuple[str, str] | None
    high: tuple[str, str] | None
    vr: str = "DA"


@dataclass(frozen=True)
class Either:
    """A disjunction of whole queries: access rules for one principal and service are OR-ed this way.

    Not an attribute condition: ``tag`` is None. No alternatives means nothing matches.
    """

    alternatives: tuple["Query", ...]
    tag: None = None
    vr: str = ""


Condition = Union[Universal, Single, Wildcard, Range, AnyOf, SequenceMatch, DateTimeRange, Either]


@dataclass(frozen=True)
class Query:
    """A conjunction of conditions. ``return_tags`` are the attributes a response must carry."""

    conditions: tuple[Condition, ...] = ()
    return_tags: tuple[int, ...] = ()

    def matches(self, doc: dict[str, Any]) -> bool:
        return all(_holds(c, doc) for c in self.conditions)

    @property
    def constraining(self) -> tuple[Condition, ...]:
        return tuple(c for c in self.conditions if not isinstance(c, Universal))

    def and_(self, other: "Query") -> "Query":
        return Query(self.conditions + other.conditions, self.return_tags)

    def and_any_of(self, alternatives: Iterable["Query"]) -> "Query":
        """This query, restricted to what at least one of ``alternatives`` matches."""
        return Query(self.conditions + (Either(tuple(alternatives)),), self.return_tags)


@dataclass(frozen=True)
class MatchOptions:
    fold_person_names: bool = False  # case-insensitive PN matching (QIDO fuzzymatching)
    combine_datetime: bool = False  # C.2.2.2.5.2 combined DA + TM range matching


# --------------------------------------------------------------------------------------------- parsing


def parse_condition(key: str | int, value: Any, options: MatchOptions = MatchOptions(), vr: str | None = None) -> Condition:
    """One condition from a keyword or tag and a value as DICOM writes it (``Doe*``, ``2001-2005``)."""
    try:
        tag = parse_tag(key) if isinstance(key, str) else int(key)
    except UnknownAttribute as exc:
        raise QueryError(str(exc)) from None
    vr = vr or vr_for_tag(tag) or "UN"
    return _condition(tag, vr, value, options)


def parse_pairs(pairs: Iterable[tuple[str | int, Any]], options: MatchOptions = MatchOptions()) -> Query:
    """A query from (keyword or tag, value) pairs, as QIDO parameters or ACL constraints give them."""
    conditions = [parse_condition(k, v, options) for k, v in pairs]
    return _finish(conditions, options)


def parse_identifier(identifier: Dataset, options: MatchOptions = MatchOptions()) -> Query:
    """A query from a C-FIND identifier (already decoded by pydicom)."""
    conditions = []
    for elem in identifier:
        if elem.tag in (0x00080005, 0x00080052) or elem.tag.group in (0x0000, 0x0002):
            continue  # Specific Character Set and Query/Retrieve Level are not matching keys
        if elem.VR == "SQ":
            items = list(elem.value or [])
            if not items or len(items[0]) == 0:
                conditions.append(Universal(int(elem.tag), "SQ"))
            else:
                conditions.append(SequenceMatch(int(elem.tag), "SQ", parse_identifier(items[0], options)))
            continue
        value = elem.value
        if elem.VR == "PN" and value is not None:
            value = "=".join(getattr(value, "components", None) or [str(value)])
        elif value is not None and not isinstance(value, (str, bytes)) and hasattr(value, "__iter__"):
            value = "\\".join(str(v) for v in value)
        conditions.append(_condition(int(elem.tag), elem.VR, value, options))
    return _finish(conditions, options)


def _finish(conditions: list[Condition], options: MatchOptions) -> Query:
    if options.combine_datetime:
        conditions = _combine_date_time(conditions)
    return_tags = []
    for c in conditions:
        return_tags.append(c.tag)
        if isinstance(c, DateTimeRange):
            return_tags.append(c.time_tag)
    return Query(tuple(conditions), tuple(dict.fromkeys(return_tags)))


def _condition(tag: int, vr: str, value: Any, options: MatchOptions) -> Condition:
    name = describe_tag(tag)
    if vr == "SQ":
        if value in (None, "", [], ()):
            return Universal(tag, vr)
        raise QueryError(f"{name}: a sequence is matched with an item of keys, not a value")
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    text = "" if value is None else str(value)
    if text.strip(" ") in ("", "*"):
        return Universal(tag, vr)
    parts = text.split("\\")
    if len(parts) > 1:
        alternatives = tuple(_one_value(tag, vr, part, options, name) for part in parts if part.strip(" "))
        if not alternatives:
            return Universal(tag, vr)
        if any(isinstance(a, Universal) for a in alternatives):
            return Universal(tag, vr)
        return alternatives[0] if len(alternatives) == 1 else AnyOf(tag, vr, alternatives)
    return _one_value(tag, vr, text, options, name)


def _one_value(tag: int, vr: str, text: str, options: MatchOptions, name: str) -> Condition:
    text = text.strip(" ") if vr not in ("LT", "ST", "UT") else text.rstrip(" ")
    if text == "*":
        return Universal(tag, vr)
    if ("*" in text or "?" in text) and vr not in WILDCARD_VRS:
        raise QueryError(f"{name}: wildcards are not allowed for VR {vr}")
    if vr in RANGE_VRS and "-" in text:
        low, high = _split_range(text, vr, name)
        return Range(tag, vr, low, high)
    if vr in RANGE_VRS:
        _check_temporal(text, vr, name)
    if vr in NUMBER_VRS:
        return Single(tag, vr, _parse_number(text, vr, name))
    fold = options.fold_person_names and vr == "PN"
    if vr == "PN":
        groups = tuple(text.split("="))
        if len(groups) > 3:
            raise QueryError(f"{name}: a person name has at most 3 component groups")
        has_wildcard = any("*" in g or "?" in g for g in groups)
        return (Wildcard if has_wildcard else Single)(tag, vr, groups, fold)
    if "*" in text or "?" in text:
        return Wildcard(tag, vr, text, fold)
    return Single(tag, vr, text)


_TEMPORAL = {
    "DA": re.compile(r"^\d{4}(\d{2}(\d{2})?)?$"),
    "TM": re.compile(r"^\d{2}(\d{2}(\d{2}(\.\d{1,6})?)?)?$"),
    "DT": re.compile(r"^\d{4}(\d{2}(\d{2}(\d{2}(\d{2}(\d{2}(\.\d{1,6})?)?)?)?)?)?([+-]\d{4})?$"),
}


def _check_temporal(text: str, vr: str, name: str) -> None:
    if not _TEMPORAL[vr].match(text):
        raise QueryError(f"{name}: {text!r} is not a valid {vr} value")


def _split_range(text: str, vr: str, name: str) -> tuple[str | None, str | None]:
    # DT values may carry a "-hhmm" UTC offset, so try every hyphen as the range separator.
    for i, ch in enumerate(text):
        if ch != "-":
            continue
        low, high = text[:i].strip(), text[i + 1 :].strip()
        if all(not part or _TEMPORAL[vr].match(part) for part in (low, high)):
            if not low and not high:
                break
            return (low or None, high or None)
    raise QueryError(f"{name}: {text!r} is not a valid {vr} range (expected lo-hi, lo- or -hi)")


def _parse_number(text: str, vr: str, name: str) -> int | float:
    try:
        return int(text) if vr in INT_VRS else float(text)
    except ValueError:
        raise QueryError(f"{name}: {text!r} is not a number (VR {vr})") from None


def _combine_date_time(conditions: list[Condition]) -> list[Condition]:
    by_tag = {c.tag: c for c in conditions}
    out = []
    consumed: set[int] = set()
    for c in conditions:
        time_tag = DATE_TIME_PAIRS.get(c.tag)
        time_cond = by_tag.get(time_tag) if time_tag else None
        if isinstance(c, Range) and isinstance(time_cond, Range):
            low = (c.low, time_cond.low or "") if c.low else None
            high = (c.high, time_cond.high or "") if c.high else None
            out.append(DateTimeRange(c.tag, time_tag, low, high))
            consumed.add(time_tag)
        else:
            out.append(c)
    return [c for c in out if not (c.tag in consumed and isinstance(c, Range))]


# ------------------------------------------------------------------------------------ in-memory evaluation


def wildcard_regex(pattern: str) -> str:
    """The anchored regular expression of a DICOM wildcard pattern, for Python and for MongoDB.

    Ends with a look-ahead rather than ``$``, which would also match before a trailing newline.
    Callers match with the dot-all flag.
    """
    body = "".join(".*" if ch == "*" else "." if ch == "?" else re.escape(ch) for ch in pattern)
    return "^" + body + r"(?![\s\S])"


def _values(doc: dict[str, Any], tag: int) -> list[Any]:
    elem = doc.get(tag_key(tag))
    if not elem:
        return []
    values = elem.get("Value") or []
    if single_valued(tag):
        values = values[:1]
    return [v for v in values if v is not None]


def _holds(c: Condition, doc: dict[str, Any]) -> bool:
    if isinstance(c, Universal):
        return True
    if isinstance(c, Either):
        return any(q.matches(doc) for q in c.alternatives)
    if isinstance(c, AnyOf):
        return any(_holds(a, doc) for a in c.alternatives)
    if isinstance(c, SequenceMatch):
        return any(isinstance(item, dict) and c.item.matches(item) for item in _values(doc, c.tag))
    if isinstance(c, DateTimeRange):
        return _datetime_holds(c, doc)
    values = _values(doc, c.tag)
    if isinstance(c, Range):
        return any(isinstance(v, str) and range_holds(v, c.low, c.high) for v in values)
    if c.vr == "PN":
        return any(isinstance(v, dict) and _person_name_holds(c, v) for v in values)
    if isinstance(c, Single):
        if c.vr in NUMBER_VRS:
            return any(_number_equal(v, c.value) for v in values)
        return any(v == c.value for v in values)
    if isinstance(c, Wildcard):
        rx = re.compile(wildcard_regex(c.pattern), re.DOTALL)
        return any(isinstance(v, str) and rx.match(v) for v in values)
    raise TypeError(c)


def range_holds(value: str, low: str | None, high: str | None) -> bool:
    return (low is None or value >= low) and (high is None or value < high + UPPER_BOUND_PAD)


def _number_equal(stored: Any, wanted: int | float) -> bool:
    # A stored string (a malformed DS kept as received) never equals a number, in every backend.
    return isinstance(stored, (int, float)) and not isinstance(stored, bool) and stored == wanted


def fold(text: str) -> str:
    """Case folding shared by every evaluator of case-insensitive PN matching."""
    return text.lower()


def _person_name_holds(c: Single | Wildcard, name: dict[str, str]) -> bool:
    groups = c.value if isinstance(c, Single) else c.pattern
    prepare = fold if c.fold_case else (lambda s: s)
    if len(groups) == 1:
        # No '=' in the query: any component group may match.
        return any(_text_holds(c, prepare(groups[0]), prepare(name.get(g, ""))) for g in PN_GROUPS if name.get(g))
    return all(
        _text_holds(c, prepare(wanted), prepare(name.get(group, "")))
        for wanted, group in zip(groups, PN_GROUPS)
        if constrains_group(wanted)
    )


def constrains_group(wanted: str) -> bool:
    """Whether one component group of a PN query constrains anything: "", "*" and "**" do not."""
    return wanted.strip("*") != ""


def _text_holds(c: Condition, wanted: str, stored: str) -> bool:
    if isinstance(c, Wildcard):
        return re.match(wildcard_regex(wanted), stored, re.DOTALL) is not None
    return stored == wanted


def _datetime_holds(c: DateTimeRange, doc: dict[str, Any]) -> bool:
    times = [t for t in _values(doc, c.time_tag) if isinstance(t, str)] or [""]
    for date in _values(doc, c.tag):
        if not isinstance(date, str):
            continue
        for time in times:
            if datetime_in_range(date, time, c.low, c.high):
                return True
    return False


def datetime_in_range(date: str, time: str, low: tuple[str, str] | None, high: tuple[str, str] | None) -> bool:
    if low is not None:
        if date < low[0] or (date == low[0] and time < low[1]):
            return False
    if high is not None:
        high_date = high[0] + UPPER_BOUND_PAD
        if date >= high_date:
            return False
        if date == high[0] and high[1] and time >= high[1] + UPPER_BOUND_PAD:
            return False
    return True
