"""The rule engine: a rule set applied to one data set gives a routing result.

    ruleset = load_ruleset("rules/basic-profile.xml")
    result = ruleset.apply(ds, Source("dimse", calling_aet="MRI1"), secrets={"deidentification": key})
    result.decision, result.reason, result.forward, result.fired, result.changes, result.dataset

The engine only decides: storing, rejecting, quarantining and forwarding are the archive's job.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Mapping

from pydicom.dataset import Dataset

from .actions import Action
from .changes import Change, Journal, PendingChange, diff, resolve_all, snapshot
from .conditions import Condition
from .copying import cheap_copy
from .context import Context
from .errors import ActionFailed, RuleApplicationError, RuleSetError

DECISIONS = ("store", "reject", "quarantine")


@dataclass
class PlacedAction:
    action: Action
    line: int


@dataclass
class Rule:
    index: int  # 1-based position in the rule set
    name: str | None
    condition: Condition
    actions: list[PlacedAction]
    line: int = 0

    @property
    def label(self) -> str | int:
        return self.name if self.name else self.index

    @cached_property  # a rule does not change once parsed
    def modifies(self) -> bool:
        return any(p.action.modifies for p in self.actions)

    @cached_property
    def reports_changes(self) -> bool:
        """Every action that modifies says what it touches (see changes.Journal): no snapshots needed."""
        return all(p.action.reports_changes for p in self.actions if p.action.modifies)


@dataclass
class RoutingResult:
    dataset: Dataset  # the modified copy; the caller's data set is untouched
    decision: str = "store"  # "store" | "reject" | "quarantine"
    reason: str | None = None
    forward: list[str] = field(default_factory=list)  # AE titles to forward to (when stored)
    fired: list[str | int] = field(default_factory=list)  # rule names, or 1-based positions of unnamed rules
    pending_changes: list[PendingChange | Change] = field(default_factory=list, repr=False)
    _changes: list[Change] | None = field(default=None, repr=False)

    @property
    def changes(self) -> list[Change]:
        """Attributes added, changed and removed, in rule order, each with the rule that did it.

        Decoded on first use, but for the changes a journal described as it found them (through caches:
        a series repeats them)."""
        if self._changes is None:
            self._changes = resolve_all(self.pending_changes)
        return self._changes

    def changes_of(self, kind: str) -> list[Change]:
        return [c for c in self.changes if c.kind == kind]


@dataclass
class RuleSet:
    name: str
    rules: list[Rule]
    source: str | None = None  # the file it came from
    version: str | None = None

    def apply(self, ds: Dataset, source: Any = None, secrets: Mapping[str, Any] | None = None) -> RoutingResult:
        """Run every rule, in order, on a copy of ``ds``.

        Raises RuleApplicationError when a condition or action fails on this data set; no partial
        result is ever returned.
        """
        work = cheap_copy(ds)
        ctx = Context(work, source, secrets if secrets is not None else {})
        fired: list[str | int] = []
        changes: list[PendingChange | Change] = []
        for rule in self.rules:
            if ctx.stop:
                break
            try:
                applies = rule.condition.holds(work, source)
            except ActionFailed as exc:
                raise RuleApplicationError(f"condition failed: {exc}", rule.label, rule.line) from None
            except Exception as exc:  # a bug or a data set no one expected: still a clean refusal
                raise RuleApplicationError(f"condition failed: {type(exc).__name__}: {exc}", rule.label, rule.line) from exc
            if not applies:
                continue
            fired.append(rule.label)
            before = journal = None
            if rule.modifies:
                if rule.reports_changes:
                    journal = ctx.journal = Journal(work, rule.label)
                else:
                    before = snapshot(work)
            for placed in rule.actions:
                try:
                    placed.action.apply(ctx)
                except ActionFailed as exc:
                    raise RuleApplicationError(str(exc), rule.label, placed.line, placed.action.name) from None
                except Exception as exc:
                    raise RuleApplicationError(f"{type(exc).__name__}: {exc}", rule.label, placed.line,
                                               placed.action.name) from exc
                if ctx.stop:
                    break
            if journal is not None:
                changes.extend(journal.changes())
                ctx.journal = None
            elif before is not None:
                changes.extend(diff(before, snapshot(work), rule.label))
        return RoutingResult(work, ctx.decision, ctx.reason, list(ctx.forward), fired, changes)


def load_ruleset(path_or_bytes: str | Path | bytes, base_dir: str | Path | None = None) -> RuleSet:
    """Parse and validate a rule set from a file path or from the XML bytes themselves.

    Files named in the rule set (MapValue and Pseudonymize tables) are read now, relative to the rule
    file's folder (or ``base_dir``, or the current folder for bytes). Raises RuleSetError.
    """
    from .parser import parse_ruleset

    if isinstance(path_or_bytes, (bytes, bytearray)):
        return parse_ruleset(bytes(path_or_bytes), None, Path(base_dir) if base_dir else Path.cwd())
    path = Path(path_or_bytes)
    try:
        data = path.read_bytes()
    except OSError as exc:
        from .errors import Problem

        raise RuleSetError([Problem(1, 1, f"cannot read the rule set: {exc.strerror}")], str(path)) from None
    return parse_ruleset(data, str(path), Path(base_dir) if base_dir else path.parent)


__all__ = ["RuleSet", "Rule", "RoutingResult", "Change", "load_ruleset", "RuleSetError", "RuleApplicationError",
           "DECISIONS"]
