"""The two errors of the rule engine: a rule set that cannot be loaded, a rule that cannot be applied."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Problem:
    """One thing wrong in a rule file, located for the admin who has to fix it."""

    line: int
    column: int
    message: str

    def __str__(self) -> str:
        return f"line {self.line}, column {self.column}: {self.message}"


class RuleSetError(ValueError):
    """A rule set that is not well-formed, not valid, or names things that do not exist.

    ``str()`` is one line per problem, each ``line L, column C: ...`` (prefixed by the file name when
    the rule set came from a file), so that it can be shown to an admin as it is.
    """

    def __init__(self, problems: list[Problem], source: str | None = None):
        self.problems = sorted(problems, key=lambda p: (p.line, p.column))
        self.source = source
        prefix = f"{source}: " if source else ""
        super().__init__("\n".join(prefix + str(p) for p in self.problems))

    @property
    def line(self) -> int:
        return self.problems[0].line

    @property
    def column(self) -> int:
        return self.problems[0].column


class ActionFailed(Exception):
    """Raised inside an action or condition; the engine turns it into a located RuleApplicationError."""


class RuleApplicationError(RuntimeError):
    """A rule that could not be applied to one data set.

    The caller must reject or quarantine the instance: the engine never hands back a data set on which
    only part of the rule set ran.
    """

    def __init__(self, message: str, rule: str | int | None = None, line: int | None = None, element: str | None = None):
        self.rule = rule
        self.line = line
        self.element = element
        self.detail = message
        where = []
        if rule is not None:
            where.append(f"rule {rule!r}" if isinstance(rule, str) else f"rule #{rule}")
        if element:
            where.append(f"<{element}>")
        if line is not None:
            where.append(f"(line {line})")
        super().__init__((" ".join(where) + ": " if where else "") + message)
