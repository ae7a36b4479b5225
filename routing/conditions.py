"""Conditions: whether a rule applies to a data set arriving from a source.

``ElementMatch`` uses the archive's own matching engine (dopamine_py.matching), so a rule and a C-FIND
agree on what ``Doe*``, ``20200101-20201231`` or ``1.2.3\\1.2.4`` mean. It adds two things:
- ``regex="..."``: a Python regular expression searched in each value's text;
- a wildcard on a VR where the standard forbids one (``PatientBirthDate value="?*"``, the classic
  "present and not empty" test) matches the value's text instead of being an error.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from pydicom.dataset import Dataset

from dopamine_py.document import tag_key, to_document
from dopamine_py.matching import Query, QueryError, parse_condition

from .errors import ActionFailed
from .paths import ElementPath


class Condition:
    def holds(self, ds: Dataset, source: Any) -> bool:  # pragma: no cover - interface
        raise NotImplementedError


@dataclass
class Always(Condition):
    value: bool

    def holds(self, ds, source):
        return self.value


@dataclass
class AllOf(Condition):
    parts: list[Condition]

    def holds(self, ds, source):
        return all(p.holds(ds, source) for p in self.parts)


@dataclass
class AnyOf(Condition):
    parts: list[Condition]

    def holds(self, ds, source):
        return any(p.holds(ds, source) for p in self.parts)


@dataclass
class Negation(Condition):
    part: Condition

    def holds(self, ds, source):
        return not self.part.holds(ds, source)


@dataclass
class ElementExists(Condition):
    path: ElementPath

    def holds(self, ds, source):
        return next(self.path.present(ds), None) is not None


def has_wildcard(text: str) -> bool:
    return "*" in text or "?" in text


@dataclass
class ElementMatch(Condition):
    """DICOM matching of one attribute (any item of a sequence path, any value of a multi-valued one)."""

    path: ElementPath
    value: str | None = None
    regex: re.Pattern | None = None
    _by_vr: dict = field(default_factory=dict, repr=False)

    def compile_for(self, vr: str):
        """(Query, as_text) for an element of this VR; QueryError when the value cannot match it."""
        if vr not in self._by_vr:
            try:
                compiled = (Query((parse_condition(self.path.tag, self.value, vr=vr),)), False)
            except QueryError:
                if not has_wildcard(self.value):
                    raise
                compiled = (Query((parse_condition(self.path.tag, self.value, vr="LO"),)), True)
            self._by_vr[vr] = compiled
        return self._by_vr[vr]

    def holds(self, ds, source):
        found = False
        for container, tag in self.path.present(ds):
            found = True
            if self._element_holds(container, tag):
                return True
        if not found and self.regex is None:
            # A missing attribute still matches a universal value ("*" or empty), as in C-FIND.
            query, _ = self.compile_for(self.path.dictionary_vr or "UN")
            return query.matches({})
        return False

    def _element_holds(self, container: Dataset, tag: int) -> bool:
        element = container[tag]
        single = Dataset()
        single.add(element)
        document = to_document(single)
        entry = document.get(tag_key(tag), {})
        if self.regex is not None:
            return any(self.regex.search(text) for text in _texts(entry))
        try:
            query, as_text = self.compile_for(element.VR)
        except QueryError as exc:
            raise ActionFailed(f"cannot match {self.path.text}: {exc}") from None
        if as_text:
            entry = {"vr": "LO", "Value": list(_texts(entry))}
        return query.matches({tag_key(self.path.tag): entry})


def _texts(entry: dict) -> list[str]:
    out = []
    for value in entry.get("Value") or []:
        if isinstance(value, dict):  # a person name: its groups as DICOM writes them
            out.append("=".join(value.get(g, "") for g in ("Alphabetic", "Ideographic", "Phonetic")).rstrip("="))
        elif value is not None:
            out.append(str(value))
    return out


SOURCE_FIELDS = {"CallingAE": "calling_aet", "User": "user", "Protocol": "protocol", "Peer": "peer"}


@dataclass
class SourceMatch(Condition):
    """A condition on where the data set came from (``dopamine_py.archive.Source``)."""

    field_name: str  # attribute of Source
    value: str | None = None
    regex: re.Pattern | None = None

    def holds(self, ds, source):
        actual = getattr(source, self.field_name, None) if source is not None else None
        if self.regex is not None:
            return actual is not None and self.regex.search(actual) is not None
        return text_matches(self.value or "", actual)


def text_matches(pattern: str, actual: str | None) -> bool:
    """DICOM-style text matching: ``*`` and ``?`` wildcards, ``\\``-separated alternatives, ``*`` matches
    even a missing value; case-sensitive, surrounding spaces ignored."""
    alternatives = [p.strip() for p in pattern.split("\\")]
    if any(p in ("", "*") for p in alternatives):
        return True
    if actual is None:
        return False
    actual = actual.strip()
    return any(re.fullmatch(wildcard_to_regex(p), actual, re.DOTALL) for p in alternatives)


def wildcard_to_regex(pattern: str) -> str:
    return "".join(".*" if ch == "*" else "." if ch == "?" else re.escape(ch) for ch in pattern)
