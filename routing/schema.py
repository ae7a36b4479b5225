"""Reading a rule file: well-formedness and XML Schema validity, reported as ``line L, column C: ...``.

libxml2 gives a column for syntax errors but not for schema errors, so the column of an element is
found in the source line itself (the position of its ``<Name``).
"""

from __future__ import annotations

import re
from functools import lru_cache

from lxml import etree

from rules import RULES_DIR  # the shipped schema and tables, installed as package data

from .errors import Problem, RuleSetError

SCHEMA_PATH = RULES_DIR / "ruleset.xsd"

CONDITIONS = ("ElementMatch", "ElementExists", "All", "Any", "Not", "True", "False",
              "CallingAE", "User", "Protocol", "Peer")
ACTIONS = ("SetElement", "EmptyElement", "DeleteElement", "AgeFromBirthDate", "MapValue", "ShiftDates",
           "ReplaceUIDs", "Pseudonymize", "RemovePrivateTags", "Deidentify", "Store", "Reject", "Quarantine",
           "Forward", "Stop")
CONDITION_PARENTS = ("Condition", "All", "Any", "Not")


@lru_cache(maxsize=1)
def schema() -> etree.XMLSchema:
    return etree.XMLSchema(etree.parse(str(SCHEMA_PATH)))


def column_of(lines: list[str], line: int, name: str) -> int:
    """1-based column of ``<name`` on a 1-based line; 1 when it is not there (e.g. a tag split over lines)."""
    if 1 <= line <= len(lines):
        found = re.search(r"<" + re.escape(name) + r"(?=[\s/>])", lines[line - 1])
        if found:
            return found.start() + 1
    return 1


def parse_document(data: bytes, source: str | None) -> tuple[etree._Element, list[str]]:
    """The root element of a valid rule file and its source lines, or RuleSetError."""
    parser = etree.XMLParser(resolve_entities=False, no_network=True, remove_comments=False)
    try:
        root = etree.fromstring(data, parser)
    except etree.XMLSyntaxError as exc:
        line, column = exc.position if exc.position else (exc.lineno or 1, 1)
        message = re.sub(r", line \d+, column \d+$", "", exc.msg or str(exc))
        raise RuleSetError([Problem(line or 1, column or 1, f"malformed XML: {message}")], source) from None
    lines = data.decode("utf-8", "replace").splitlines()
    xsd = schema()
    if not xsd.validate(root):
        problems = [_problem(error, root, lines) for error in xsd.error_log]
        raise RuleSetError(problems, source)
    return root, lines


def _problem(error, root: etree._Element, lines: list[str]) -> Problem:
    element = None
    try:
        found = root.getroottree().xpath(error.path) if error.path else []
        element = found[0] if found else None
    except etree.XPathError:
        element = None
    name = element.tag if element is not None and isinstance(element.tag, str) else None
    line = element.sourceline if element is not None and element.sourceline else error.line
    column = column_of(lines, line, name) if name else max(error.column, 1)
    return Problem(line, column, _friendly(error.message, element))


def _friendly(message: str, element) -> str:
    """libxml2's wording turned into what an admin can act on."""
    unexpected = re.match(r"Element '([^']+)': This element is not expected\.", message)
    if unexpected and element is not None:
        name = unexpected.group(1)
        parent = element.getparent()
        parent_name = parent.tag if parent is not None else None
        if parent_name == "Action" and name not in ACTIONS:
            return f"unknown action <{name}> (actions: {', '.join(ACTIONS)})"
        if parent_name in CONDITION_PARENTS and name not in CONDITIONS:
            return f"unknown condition <{name}> (conditions: {', '.join(CONDITIONS)})"
        if parent_name == "Not":
            return f"<Not> takes exactly one condition; <{name}> is one too many"
        expected = re.search(r"Expected is (?:one of )?\( ?([^)]*?) ?\)", message)
        hint = f" (expected: {expected.group(1)})" if expected else ""
        return f"<{name}> is not allowed here, inside <{parent_name}>{hint}"
    missing_child = re.match(r"Element '([^']+)': Missing child element\(s\)\. Expected is (?:one of )?\( ?([^)]*?) ?\)", message)
    if missing_child:
        return f"<{missing_child.group(1)}> is incomplete: expected {missing_child.group(2)}"
    attribute = re.match(r"Element '([^']+)', attribute '([^']+)': (.*)", message)
    if attribute:
        element_name, attr, rest = attribute.groups()
        if "is not allowed" in rest:
            return f"<{element_name}>: unknown attribute {attr!r}"
        rest = re.sub(r"^\[facet '\w+'\] ", "", rest).rstrip(".")
        return f"<{element_name}> attribute {attr!r}: {rest}"
    required = re.match(r"Element '([^']+)': The attribute '([^']+)' is required but missing\.", message)
    if required:
        return f"<{required.group(1)}>: missing required attribute {required.group(2)!r}"
    return re.sub(r"^Element '([^']+)'", r"<\1>", message).rstrip(".")
