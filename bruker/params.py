"""One reconstruction's parameters, looked up across its files.

``visu_pars`` describes the reconstruction as stored and comes first;
``method``, ``acqp`` and ``subject`` fill in what older or sparser
``visu_pars`` files leave out.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import numpy as np

from .jcamp import JcampError, ParameterFile, read_jcamp

__all__ = ["Parameters", "load_parameters", "SEARCH_ORDER"]

SEARCH_ORDER = ("visu_pars", "method", "acqp", "subject", "reco", "d3proc", "id")

_MISSING = object()


class Parameters:
    """Name lookup over the parameter files of one reconstruction."""

    def __init__(self, files: Mapping[str, ParameterFile]) -> None:
        self.files = dict(files)

    def has_file(self, name: str) -> bool:
        return name in self.files

    def get(self, *names: str, default: Any = None) -> Any:
        """The first of ``names`` that any file defines with a non-empty value."""
        for name in names:
            for file_name in SEARCH_ORDER:
                value = self.files.get(file_name, {}).get(name, _MISSING)
                if value is not _MISSING and not _empty(value):
                    return value
        return default

    def scalar(self, *names: str, default: Any = None) -> Any:
        """Like :meth:`get`, reduced to the first element of an array."""
        value = self.get(*names)
        if value is None:
            return default
        if isinstance(value, np.ndarray):
            return value.flat[0] if value.size else default
        return value

    def number(self, *names: str, default: float | None = None) -> float | None:
        value = self.scalar(*names)
        try:
            return float(value)
        except (TypeError, ValueError):
            return default

    def text(self, *names: str, default: str = "") -> str:
        value = self.scalar(*names)
        return default if value is None else str(value).strip()


def _empty(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip() == ""
    if isinstance(value, np.ndarray):
        return value.size == 0
    return False


def load_parameters(files: Mapping[str, Path]) -> Parameters:
    """Read the files found by discovery; a broken file names itself."""
    parsed: dict[str, ParameterFile] = {}
    for name, path in files.items():
        try:
            parsed[name] = read_jcamp(path)
        except (OSError, JcampError, UnicodeDecodeError) as exc:
            raise JcampError(f"cannot read {name}: {exc}") from None
    return Parameters(parsed)
