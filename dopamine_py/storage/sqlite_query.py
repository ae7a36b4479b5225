"""Compile a ``matching.Query`` to an SQLite WHERE clause over JSON documents.

The semantics are those of ``matching``; the property tests compare this compiler's answers with the
in-memory evaluator's. Attributes of VM 1 are read with ``json_extract(doc, '$."TAG".Value[0]')``, the
exact expression of the expression indexes, so that SQLite uses them.
"""

from __future__ import annotations

import itertools
from typing import Any

from ..document import NUMBER_VRS, PN_GROUPS, single_valued, tag_key
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
    constrains_group,
    fold,
)

FOLD_FUNCTION = "dcm_fold"  # registered on every connection: matching.fold


def value_path(tag: int) -> str:
    return f'$."{tag_key(tag)}".Value'


def first_value_expr(base: str, tag: int, member: str = "") -> str:
    return f"json_extract({base}, '{value_path(tag)}[0]{member}')"


def glob_pattern(pattern: str) -> str:
    """DICOM wildcards are GLOB's own; only '[' needs escaping."""
    return pattern.replace("[", "[[]")


class _Compiler:
    def __init__(self, top_base: str, columns: dict[int, str]) -> None:
        self.params: list[Any] = []
        self._aliases = itertools.count()
        self._top_base = top_base
        self._columns = columns

    def query(self, query: Query, base: str) -> str:
        parts = [self.condition(c, base) for c in query.conditions if not isinstance(c, Universal)]
        return " AND ".join(f"({p})" for p in parts) if parts else "1"

    def condition(self, c: Condition, base: str) -> str:
        if isinstance(c, Either):
            if not c.alternatives:
                return "0"
            # Access constraints filter the rows the request's own conditions find: a unary + keeps SQLite
            # from driving the scan with their key-column indexes (Modality=CT would scan every CT instance
            # of the archive instead of the one study asked for).
            columns, self._columns = self._columns, {tag: f"+{name}" for tag, name in self._columns.items()}
            try:
                return " OR ".join(f"({self.query(q, base)})" for q in c.alternatives)
            finally:
                self._columns = columns
        if isinstance(c, AnyOf):
            return " OR ".join(f"({self.condition(a, base)})" for a in c.alternatives)
        if isinstance(c, SequenceMatch):
            alias = f"item{next(self._aliases)}"
            inner = self.query(c.item, f"{alias}.value")
            return f"EXISTS (SELECT 1 FROM json_each({base}, '{value_path(c.tag)}') AS {alias} WHERE {inner})"
        if isinstance(c, DateTimeRange):
            return self.date_time_range(c, base)
        column = self._columns.get(c.tag) if base == self._top_base else None
        if column and c.vr != "PN":
            # A key column holds '' where the document has no value; an exact value never is ''.
            return self.on_value(c, lambda member="": column if isinstance(c, Single) else f"NULLIF({column}, '')")
        if single_valued(c.tag):
            return self.on_value(c, lambda member="": first_value_expr(base, c.tag, member))
        alias = f"v{next(self._aliases)}"
        test = self.on_value(c, lambda member="": f"json_extract({alias}.value, '${member}')" if member else f"{alias}.value")
        return f"EXISTS (SELECT 1 FROM json_each({base}, '{value_path(c.tag)}') AS {alias} WHERE {test})"

    def on_value(self, c: Condition, expr) -> str:
        """The test on one value; ``expr(member)`` is the SQL of the value (or of a PN group)."""
        if isinstance(c, Range):
            return self.range(expr(), c.low, c.high)
        if c.vr == "PN":
            return self.person_name(c, expr)
        if isinstance(c, Single):
            if c.vr in NUMBER_VRS:
                # json_type keeps a malformed number stored as text from comparing equal.
                self.params.append(c.value)
                return f"({expr()} = ? AND typeof({expr()}) IN ('integer', 'real'))"
            self.params.append(c.value)
            return f"{expr()} = ?"
        if isinstance(c, Wildcard):
            self.params.append(glob_pattern(c.pattern))
            return f"{expr()} GLOB ?"
        raise TypeError(c)

    def range(self, value_sql: str, low: str | None, high: str | None) -> str:
        tests = [f"typeof({value_sql}) = 'text'"]
        if low is not None:
            self.params.append(low)
            tests.append(f"{value_sql} >= ?")
        if high is not None:
            self.params.append(high + UPPER_BOUND_PAD)
            tests.append(f"{value_sql} < ?")
        return " AND ".join(tests)

    def person_name(self, c: Single | Wildcard, expr) -> str:
        groups = c.value if isinstance(c, Single) else c.pattern
        op = "GLOB" if isinstance(c, Wildcard) else "="

        def test(group: str, wanted: str) -> str:
            sql = expr(f".{group}")
            if c.fold_case:
                sql, wanted = f"{FOLD_FUNCTION}({sql})", fold(wanted)
            self.params.append(glob_pattern(wanted) if op == "GLOB" else wanted)
            return f"{sql} {op} ?"

        if len(groups) == 1:
            return " OR ".join(f"({test(g, groups[0])})" for g in PN_GROUPS)
        tests = [test(g, w) for w, g in zip(groups, PN_GROUPS) if constrains_group(w)]
        # No group constrained (a query like "="): any person name value matches.
        return " AND ".join(f"({t})" for t in tests) if tests else f"json_type({expr()}) = 'object'"

    def date_time_range(self, c: DateTimeRange, base: str) -> str:
        # Dates and times of VM 1 by the dictionary: the first value is the value.
        date = first_value_expr(base, c.tag)
        time = f"coalesce({first_value_expr(base, c.time_tag)}, '')"
        tests = [f"typeof({date}) = 'text'"]
        if c.low is not None:
            low_date, low_time = c.low
            self.params.append(low_date)
            tests.append(f"{date} >= ?")
            if low_time:
                self.params.extend([low_date, low_time])
                tests.append(f"NOT ({date} = ? AND {time} < ?)")
        if c.high is not None:
            high_date, high_time = c.high
            self.params.append(high_date + UPPER_BOUND_PAD)
            tests.append(f"{date} < ?")
            if high_time:
                self.params.extend([high_date, high_time + UPPER_BOUND_PAD])
                tests.append(f"NOT ({date} = ? AND {time} >= ?)")
        return " AND ".join(tests)


def condition_tags(c: Condition) -> set[int]:
    """The top-level attributes a condition reads."""
    if isinstance(c, Either):
        return {tag for q in c.alternatives for inner in q.constraining for tag in condition_tags(inner)}
    if isinstance(c, DateTimeRange):
        return {c.tag, c.time_tag}
    return {c.tag}  # AnyOf: alternatives on the same tag; SequenceMatch: within the sequence's element


def split_query(query: Query, tags: frozenset[int]) -> tuple[Query, Query]:
    """The constraining conditions reading only ``tags``, and the others (the query is their conjunction)."""
    inside, outside = [], []
    for c in query.constraining:
        (inside if condition_tags(c) <= tags else outside).append(c)
    return Query(tuple(inside)), Query(tuple(outside))


def compile_query(query: Query, base: str = "doc", columns: dict[int, str] | None = None) -> tuple[str, list[Any]]:
    """The WHERE clause (without the keyword) and its parameters.

    ``columns`` maps tags to columns holding their first value, read instead of the document.
    """
    compiler = _Compiler(base, columns or {})
    sql = compiler.query(query, base)
    return sql, compiler.params
