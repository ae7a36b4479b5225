"""``dopamine rules check`` and ``dopamine rules try``: the bodies of the commands, wired in by the CLI.

    check_command(path, out) -> exit code   (0: valid; 1: problems, one line each with line and column)
    try_command(path, inputs, out, secrets) (dry run: per instance, what would change and the decision)
"""

from __future__ import annotations

import secrets as random_secrets
from pathlib import Path
from typing import Any, Iterable, Mapping, TextIO

from pydicom import dcmread
from pydicom.errors import InvalidDicomError

from .engine import RuleSet, load_ruleset
from .errors import RuleApplicationError, RuleSetError


def check_command(path: str | Path, out: TextIO) -> int:
    try:
        ruleset = load_ruleset(path)
    except RuleSetError as exc:
        out.write(f"{exc}\n")
        count = len(exc.problems)
        out.write(f"{path}: {count} problem{'s' if count != 1 else ''}\n")
        return 1
    out.write(f"{path}: rule set {ruleset.name!r} is valid ({len(ruleset.rules)} "
              f"rule{'s' if len(ruleset.rules) != 1 else ''})\n")
    return 0


def _instances(inputs: Iterable[str]) -> Iterable[Path]:
    for name in inputs:
        path = Path(name)
        if path.is_dir():
            yield from sorted(p for p in path.rglob("*") if p.is_file())
        else:
            yield path


def try_command(path: str | Path, inputs: list[str], out: TextIO, secrets: Mapping[str, Any] | None = None,
                source: Any = None) -> int:
    """Apply the rule set to each input file without storing anything; print what it would do.

    Without ``secrets`` a throwaway key is used (and said so): replaced UIDs, shifted dates and
    pseudonyms then differ from what the archive, with its configured key, would produce.
    Exit code: 0 when every instance was processed, 1 when the rule set is invalid or an instance could
    not be read or processed.
    """
    try:
        ruleset = load_ruleset(path)
    except RuleSetError as exc:
        out.write(f"{exc}\n")
        return 1
    if secrets is None:
        throwaway = random_secrets.token_hex(16)
        secrets = _AnySecret(throwaway)
        out.write("note: no secrets given; a throwaway key is used for this dry run\n")
    failures = 0
    for file in _instances(inputs):
        failures += _try_one(ruleset, file, out, secrets, source)
    return 1 if failures else 0


class _AnySecret(dict):
    """Every secret name maps to the same throwaway key."""

    def __init__(self, value: str):
        super().__init__()
        self.value = value

    def get(self, key, default=None):
        return self.value


def _try_one(ruleset: RuleSet, file: Path, out: TextIO, secrets, source) -> int:
    out.write(f"== {file}\n")
    try:
        ds = dcmread(str(file))
    except (InvalidDicomError, OSError) as exc:
        out.write(f"   cannot read: {exc}\n")
        return 1
    try:
        result = ruleset.apply(ds, source, secrets)
    except RuleApplicationError as exc:
        out.write(f"   error: {exc}\n   decision: not stored (the archive rejects or quarantines it)\n")
        return 1
    fired = ", ".join(str(f) for f in result.fired) or "none"
    out.write(f"   rules fired: {fired}\n")
    for kind in ("added", "changed", "removed"):
        changes = result.changes_of(kind)
        out.write(f"   {kind}: {len(changes)}\n")
        for change in changes:
            out.write(f"     {change}\n")
    decision = result.decision + (f" ({result.reason})" if result.reason else "")
    out.write(f"   decision: {decision}\n")
    if result.forward:
        out.write(f"   forward to: {', '.join(result.forward)}\n")
    return 0
