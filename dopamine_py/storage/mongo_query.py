"""Compile a ``matching.Query`` to a MongoDB filter over the ``ds`` field of instance documents.

The semantics are those of ``matching`` (its docstring is the specification); the agreement tests compare
this compiler's answers with the in-memory evaluator's and with the SQLite compiler's. Attributes of VM 1
are read at ``ds.<TAG>.Value.0``, the path of the attribute indexes, so that MongoDB uses them; other
attributes match when any one value does, with ``$elemMatch`` wherever two tests must hold on one value.

Only operators that both MongoDB and mongomock (the test stand-in) evaluate alike are used: equality,
``$regex`` with options, ``$type``, ``$gte``/``$lt``, ``$ne``, ``$in``, ``$elemMatch``, ``$or``/``$and``/``$nor``.
"""

from __future__ import annotations

from typing import Any

from ..document import PN_GROUPS, single_valued, tag_key
from ..matching import (
    UPPER_BOUND_PAD,
    AnyOf,
    Condition,
    DateTimeRange,
    Either,
    Query,
    Range,
    SequenceMatch,
    Single,
    Universal,
    Wildcard,
    wildcard_regex,
)

DOCUMENT_FIELD = "ds"
# A filter no document passes (an Either without alternatives).
NOTHING = {"_id": {"$in": []}}


def mongo_regex(pattern: str) -> str:
    """``matching.wildcard_regex`` made safe for MongoDB, which refuses a NUL byte inside a pattern."""
    return wildcard_regex(pattern).replace("\x00", r"\x00")


def value_path(prefix: str, tag: int) -> str:
    return f"{prefix}{tag_key(tag)}.Value"


def first_value_path(prefix: str, tag: int) -> str:
    return f"{value_path(prefix, tag)}.0"


def _matches_anything(pattern: str) -> bool:
    # Only a run of '*' matches the empty string; such a PN group test can never fail.
    return set(pattern) <= {"*"}


class _Compiler:
    def __init__(self, key_fields: dict[int, str]) -> None:
        self._key_fields = key_fields

    def query(self, query: Query, prefix: str) -> dict[str, Any]:
        parts = [self.condition(c, prefix) for c in query.conditions if not isinstance(c, Universal)]
        parts = [p for p in parts if p]  # {} holds for every document
        if not parts:
            return {}
        return parts[0] if len(parts) == 1 else {"$and": parts}

    def condition(self, c: Condition, prefix: str) -> dict[str, Any]:
        if isinstance(c, Either):
            alternatives = [self.query(q, prefix) for q in c.alternatives]
            if not alternatives:
                return NOTHING
            if not all(alternatives):
                return {}  # one alternative holds for every document
            return alternatives[0] if len(alternatives) == 1 else {"$or": alternatives}
        if isinstance(c, AnyOf):
            return {"$or": [self.condition(a, prefix) for a in c.alternatives]}
        if isinstance(c, SequenceMatch):
            item = self.query(c.item, "")
            # An item query without constraints holds for any item that is a data set.
            return {value_path(prefix, c.tag): {"$elemMatch": item or {"$type": "object"}}}
        if isinstance(c, DateTimeRange):
            return self.date_time_range(c, prefix)
        field = self._key_fields.get(c.tag) if prefix == f"{DOCUMENT_FIELD}." else None
        if field and c.vr != "PN":
            # A key field holds '' where the document has no value; an exact value never is ''.
            test = self.scalar_test(c)
            return {field: test if isinstance(c, Single) else {**test, "$ne": ""}}
        if c.vr == "PN":
            return self.person_name(c, prefix)
        test = self.scalar_test(c)
        if single_valued(c.tag):
            return {first_value_path(prefix, c.tag): test}
        if isinstance(c, Range):
            # Three tests (type, low, high) that one value must pass together.
            return {value_path(prefix, c.tag): {"$elemMatch": test}}
        return {value_path(prefix, c.tag): test}

    def scalar_test(self, c: Single | Wildcard | Range) -> Any:
        """The test on one value: an equality value or an operator document."""
        if isinstance(c, Range):
            test: dict[str, Any] = {"$type": "string"}
            if c.low is not None:
                test["$gte"] = c.low
            if c.high is not None:
                test["$lt"] = c.high + UPPER_BOUND_PAD
            return test
        if isinstance(c, Single):
            # MongoDB never finds a string equal to a number, nor a number to a string, so plain
            # equality already compares numeric VRs as numbers only.
            return c.value
        if isinstance(c, Wildcard):
            return {"$regex": mongo_regex(c.pattern), "$options": "s"}
        raise TypeError(c)

    def person_name(self, c: Single | Wildcard, prefix: str) -> dict[str, Any]:
        groups = c.value if isinstance(c, Single) else c.pattern
        if single_valued(c.tag):
            tests = self.name_tests(c, groups, f"{first_value_path(prefix, c.tag)}.")
            return tests if tests is not None else {first_value_path(prefix, c.tag): {"$type": "object"}}
        tests = self.name_tests(c, groups, "")
        return {value_path(prefix, c.tag): {"$elemMatch": tests if tests is not None else {"$type": "object"}}}

    def name_tests(self, c: Single | Wildcard, groups: tuple[str, ...], at: str) -> dict[str, Any] | None:
        """Tests on the groups of one name value at ``at``; None when any name passes."""

        def test(wanted: str) -> Any:
            if isinstance(c, Wildcard):
                return {"$regex": mongo_regex(wanted), "$options": "si" if c.fold_case else "s"}
            if c.fold_case:
                # The 'i' option on the escaped literal: case-insensitive equality (matching.fold).
                return {"$regex": mongo_regex(wanted), "$options": "i"}
            return wanted

        if len(groups) == 1:
            return {"$or": [{f"{at}{group}": test(groups[0])} for group in PN_GROUPS]}
        tests = {f"{at}{group}": test(wanted) for wanted, group in zip(groups, PN_GROUPS)
                 if wanted and not _matches_anything(wanted)}
        return tests or None

    def date_time_range(self, c: DateTimeRange, prefix: str) -> dict[str, Any]:
        # Dates and times of VM 1 by the dictionary: the first value is the value. A missing time
        # counts as '' (matching.datetime_in_range), which is below every low bound and every high one.
        date, time = first_value_path(prefix, c.tag), first_value_path(prefix, c.time_tag)
        date_test: dict[str, Any] = {"$type": "string"}
        tests: list[dict[str, Any]] = [{date: date_test}]
        if c.low is not None:
            low_date, low_time = c.low
            date_test["$gte"] = low_date
            if low_time:
                tests.append({"$or": [{date: {"$ne": low_date}}, {time: {"$gte": low_time}}]})
        if c.high is not None:
            high_date, high_time = c.high
            date_test["$lt"] = high_date + UPPER_BOUND_PAD
            if high_time:
                tests.append({"$nor": [{date: high_date, time: {"$gte": high_time + UPPER_BOUND_PAD}}]})
        return tests[0] if len(tests) == 1 else {"$and": tests}


def compile_query(query: Query, key_fields: dict[int, str] | None = None) -> dict[str, Any]:
    """The MongoDB filter selecting the instance documents ``query`` matches.

    ``key_fields`` maps tags to top-level fields holding their first value ('' when absent), read
    instead of the document because they carry plain indexes.
    """
    return _Compiler(key_fields or {}).query(query, f"{DOCUMENT_FIELD}.")
