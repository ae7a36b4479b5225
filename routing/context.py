"""What one application of a rule set works on: the copy being modified and the decision so far."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

from pydicom.dataset import Dataset


@dataclass
class Context:
    ds: Dataset
    source: Any = None  # dopamine_py.archive.Source or None
    secrets: Mapping[str, Any] = field(default_factory=dict)
    decision: str = "store"
    reason: str | None = None
    forward: list[str] = field(default_factory=list)
    stop: bool = False
    # Set by Pseudonymize so that a later Deidentify keeps the pseudonym instead of a dummy.
    pseudonymized: bool = False
    # Set by the engine while a rule whose actions report what they change runs (Action.reports_changes).
    journal: Any = None  # changes.Journal
