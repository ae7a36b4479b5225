"""From a validated rule file to a RuleSet: the checks XML Schema cannot make, located like its own.

Every problem found is collected, so an admin fixes a file in one pass rather than one error per run.
"""

from __future__ import annotations

import csv
import re
from pathlib import Path

from lxml import etree

from dopamine_py.matching import QueryError

from . import keyed
from .actions import (
    AgeFromBirthDate,
    DeleteElement,
    EmptyElement,
    MapValue,
    Pseudonymize,
    RemovePrivateTags,
    ReplaceUIDs,
    Route,
    SetElement,
    ShiftDates,
    SourceField,
    TEMPLATE_SOURCE_FIELDS,
    Template,
    wildcard_pattern,
)
from .conditions import (
    SOURCE_FIELDS,
    AllOf,
    Always,
    AnyOf,
    Condition,
    ElementExists,
    ElementMatch,
    Negation,
    SourceMatch,
)
from .deidentify import OPTIONS, Deidentify, load_table
from .engine import PlacedAction, Rule, RuleSet
from .errors import Problem, RuleSetError
from .paths import ElementPath, PathError, parse_path
from .schema import column_of, parse_document


class _Invalid(Exception):
    """One problem in one element; collected, and parsing goes on with the next element."""


def _true(value: str | None, default: bool = False) -> bool:
    return default if value is None else value.strip() in ("true", "1")


class _Builder:
    def __init__(self, lines: list[str], base_dir: Path):
        self.lines = lines
        self.base_dir = base_dir
        self.problems: list[Problem] = []

    def problem(self, element: etree._Element, message: str) -> None:
        line = element.sourceline or 1
        self.problems.append(Problem(line, column_of(self.lines, line, element.tag), message))

    # ------------------------------------------------------------------------------------ rules

    def ruleset(self, root: etree._Element, source: str | None) -> RuleSet:
        rules = []
        for index, element in enumerate(root.findall("Rule"), start=1):
            rules.append(self.rule(element, index))
        seen: set[str] = set()
        for element in root.findall("Rule"):
            name = element.get("name")
            if name and name in seen:
                self.problem(element, f"rule name {name!r} is used more than once")
            seen.add(name)
        return RuleSet(root.get("name"), rules, source, root.get("version"))

    def rule(self, element: etree._Element, index: int) -> Rule:
        condition_element = element.find("Condition")
        if condition_element is None:
            condition: Condition = Always(True)
        else:
            parts = self.conditions(condition_element)
            condition = parts[0] if len(parts) == 1 else AllOf(parts)
        actions = []
        for child in element.find("Action"):
            if not isinstance(child.tag, str):
                continue  # a comment
            try:
                actions.append(PlacedAction(self.action(child), child.sourceline or 0))
            except _Invalid as exc:
                self.problem(child, str(exc))
        return Rule(index, element.get("name"), condition, actions, element.sourceline or 0)

    # ------------------------------------------------------------------------------- conditions

    def conditions(self, parent: etree._Element) -> list[Condition]:
        out = []
        for child in parent:
            if not isinstance(child.tag, str):
                continue
            try:
                out.append(self.condition(child))
            except _Invalid as exc:
                self.problem(child, str(exc))
                out.append(Always(False))
        return out

    def condition(self, element: etree._Element) -> Condition:
        kind = element.tag
        if kind in ("True", "False"):
            return Always(kind == "True")
        if kind == "All":
            return AllOf(self.conditions(element))
        if kind == "Any":
            return AnyOf(self.conditions(element))
        if kind == "Not":
            return Negation(self.conditions(element)[0])
        if kind == "ElementExists":
            return ElementExists(self.path(element))
        if kind == "ElementMatch":
            path = self.path(element)
            value, regex = self.value_or_regex(element)
            match = ElementMatch(path, value, regex)
            vr = path.dictionary_vr
            if value is not None and vr is not None:
                try:
                    match.compile_for(vr)
                except QueryError as exc:
                    raise _Invalid(f"<ElementMatch> value {value!r}: {exc}") from None
            return match
        if kind in SOURCE_FIELDS:
            value, regex = self.value_or_regex(element)
            return SourceMatch(SOURCE_FIELDS[kind], value, regex)
        raise _Invalid(f"unknown condition <{kind}>")

    def value_or_regex(self, element: etree._Element) -> tuple[str | None, re.Pattern | None]:
        value, regex = element.get("value"), element.get("regex")
        if (value is None) == (regex is None):
            raise _Invalid(f"<{element.tag}> needs exactly one of value=\"...\" or regex=\"...\"")
        if regex is None:
            return value, None
        try:
            return None, re.compile(regex)
        except re.error as exc:
            raise _Invalid(f"<{element.tag}> regex {regex!r} is not a valid regular expression: {exc}") from None

    def path(self, element: etree._Element, attribute: str = "tag") -> ElementPath:
        try:
            return parse_path(element.get(attribute), element.get("creator"))
        except PathError as exc:
            raise _Invalid(f"<{element.tag}> {attribute}: {exc}") from None

    # ---------------------------------------------------------------------------------- actions

    def action(self, element: etree._Element):
        kind = element.tag
        if kind == "SetElement":
            return self.set_element(element)
        if kind == "EmptyElement":
            return EmptyElement(self.path(element))
        if kind == "DeleteElement":
            return DeleteElement(self.path(element))
        if kind == "AgeFromBirthDate":
            reference = element.get("reference")
            if reference is None:
                return AgeFromBirthDate()
            path = self.path(element, "reference")
            if len(path.steps) != 1 or path.dictionary_vr != "DA":
                raise _Invalid(f"<AgeFromBirthDate> reference {reference!r} must be a top-level DA attribute")
            return AgeFromBirthDate(path)
        if kind == "MapValue":
            return self.map_value(element)
        if kind == "ShiftDates":
            by = self.path(element, "by") if element.get("by") else parse_path("PatientID")
            return ShiftDates(by, element.get("secret", keyed.DEFAULT_SECRET), int(element.get("maxDays", "365")))
        if kind == "ReplaceUIDs":
            return ReplaceUIDs(element.get("secret", keyed.DEFAULT_SECRET))
        if kind == "Pseudonymize":
            return self.pseudonymize(element)
        if kind == "RemovePrivateTags":
            return RemovePrivateTags(frozenset(k.get("creator").strip() for k in element.findall("Keep")))
        if kind == "Deidentify":
            return self.deidentify(element)
        if kind in ("Store", "Reject", "Quarantine", "Stop"):
            return Route(kind.lower(), element.get("reason"), name=kind)
        if kind == "Forward":
            return Route("forward", destination=element.get("destination").strip(), name=kind)
        raise _Invalid(f"unknown action <{kind}>")

    def set_element(self, element: etree._Element) -> SetElement:
        path = self.path(element)
        value, template = element.get("value"), element.get("template")
        if (value is None) == (template is None):
            raise _Invalid("<SetElement> needs exactly one of value=\"...\" or template=\"...\"")
        vr = element.get("vr")
        if vr is None and path.dictionary_vr is None:
            raise _Invalid(f"<SetElement> {path.text} is not in the data dictionary: give its vr=\"..\"")
        if path.dictionary_vr == "SQ":
            raise _Invalid(f"<SetElement> {path.text} is a sequence; set the attributes inside it instead")
        return SetElement(path, value, self.template(template) if template is not None else None, vr)

    def template(self, text: str) -> Template:
        parts: list = []
        position = 0
        for match in re.finditer(r"\{\{|\}\}|\{([^{}]*)\}|[{}]", text):
            parts.append(text[position:match.start()])
            position = match.end()
            token = match.group(0)
            if token in ("{{", "}}"):
                parts.append(token[0])
            elif token in ("{", "}"):
                raise _Invalid(f"template {text!r}: unbalanced {token!r} (write {token * 2} for a literal brace)")
            else:
                name = match.group(1).strip()
                if name.startswith("@"):
                    if name not in TEMPLATE_SOURCE_FIELDS:
                        raise _Invalid(f"template {text!r}: unknown source field {name!r} "
                                       f"(known: {', '.join(TEMPLATE_SOURCE_FIELDS)})")
                    parts.append(SourceField(TEMPLATE_SOURCE_FIELDS[name]))
                else:
                    try:
                        parts.append(parse_path(name))
                    except PathError as exc:
                        raise _Invalid(f"template {text!r}: {exc}") from None
        parts.append(text[position:])
        return Template(text, [p for p in parts if p != ""])

    def map_value(self, element: etree._Element) -> MapValue:
        path = self.path(element)
        target = self.path(element, "target") if element.get("target") else None
        ignore_case = _true(element.get("ignoreCase"))
        pairs = [(m.get("from"), m.get("to")) for m in element.findall("Map")]
        file_name = element.get("file")
        if file_name:
            pairs += self.csv_pairs(file_name, ("from", "to"))
        if not pairs:
            raise _Invalid("<MapValue> has no entries: add <Map from=\"..\" to=\"..\"/> children or file=\"...csv\"")
        entries = [(wildcard_pattern(source, ignore_case), to) for source, to in pairs]
        return MapValue(path, entries, target, element.get("default"))

    def csv_rows(self, file_name: str, columns: tuple[str, ...]) -> list[dict[str, str]]:
        path = Path(file_name)
        if not path.is_absolute():
            path = self.base_dir / path
        try:
            with path.open(newline="", encoding="utf-8-sig") as handle:
                reader = csv.DictReader(handle)
                header = [h.strip() for h in reader.fieldnames or []]
                missing = [c for c in columns if c not in header]
                if missing:
                    raise _Invalid(f"{file_name}: the header must name the columns {', '.join(columns)} "
                                   f"(found: {', '.join(header) or 'nothing'})")
                rows = []
                for number, row in enumerate(reader, start=2):
                    clean = {(k or "").strip(): (v or "").strip() for k, v in row.items()}
                    if not clean.get(columns[0]):
                        raise _Invalid(f"{file_name} line {number}: empty {columns[0]!r}")
                    rows.append(clean)
                return rows
        except FileNotFoundError:
            raise _Invalid(f"file {file_name!r} does not exist (looked for {path})") from None
        except (OSError, UnicodeDecodeError, csv.Error) as exc:
            raise _Invalid(f"cannot read {file_name!r}: {exc}") from None

    def csv_pairs(self, file_name: str, columns: tuple[str, str]) -> list[tuple[str, str]]:
        return [(row[columns[0]], row[columns[1]]) for row in self.csv_rows(file_name, columns)]

    def pseudonymize(self, element: etree._Element) -> Pseudonymize:
        table_file = element.get("table")
        table = None
        if table_file:
            table = {}
            for row in self.csv_rows(table_file, ("PatientID", "PseudonymID")):
                pseudo_id = row["PseudonymID"]
                if not pseudo_id:
                    raise _Invalid(f"{table_file}: PatientID {row['PatientID']!r} has an empty PseudonymID")
                table[row["PatientID"]] = (pseudo_id, row.get("PseudonymName") or pseudo_id)
        return Pseudonymize(element.get("secret", keyed.DEFAULT_SECRET), table, table_file,
                            element.get("onMissing", "fail"), element.get("prefix", "ANON-"),
                            int(element.get("length", "10")))

    def deidentify(self, element: etree._Element) -> Deidentify:
        options = frozenset(o for o in OPTIONS if _true(element.get(o)))
        if {"retainLongitudinalFullDates", "retainLongitudinalModifiedDates"} <= options:
            raise _Invalid("<Deidentify>: retainLongitudinalFullDates and retainLongitudinalModifiedDates "
                           "exclude each other; choose one")
        creators = frozenset(k.get("creator").strip() for k in element.findall("Keep"))
        if creators and "retainSafePrivate" not in options:
            raise _Invalid("<Deidentify>: <Keep> lists safe private creators, which only "
                           "retainSafePrivate=\"true\" keeps")
        try:
            load_table()
        except (OSError, ValueError) as exc:
            raise _Invalid(f"<Deidentify>: the profile table cannot be read: {exc}") from None
        return Deidentify(options, creators, element.get("secret", keyed.DEFAULT_SECRET),
                          int(element.get("maxDays", "365")))


def parse_ruleset(data: bytes, source: str | None, base_dir: Path) -> RuleSet:
    root, lines = parse_document(data, source)
    builder = _Builder(lines, base_dir)
    ruleset = builder.ruleset(root, source)
    if builder.problems:
        raise RuleSetError(builder.problems, source)
    return ruleset
