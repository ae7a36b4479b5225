"""Reader for the JCAMP-DX dialect ParaVision writes its parameter files in.

Files such as ``subject``, ``acqp``, ``method``, ``reco``, ``visu_pars``,
``d3proc`` and ``id`` are sequences of records::

    ##TITLE=Parameter List            header record (kept as raw text)
    ##$VisuCoreSize=( 2 )             parameter record: shape on the first line,
    128 128                           values on the following lines
    $$ a comment                      dropped

Every value comes back typed:

* ``int`` / ``float`` for numbers,
* ``str`` for quoted ``<strings>`` (escapes resolved),
* :class:`Enum` (a ``str`` subclass) for bare words such as ``Yes`` or
  ``Head_Supine``, so callers can tell a symbol from free text,
* :class:`Struct` (a ``tuple`` subclass) for ``(a, <b>, (c, d))``,
* ``numpy.ndarray`` with the declared shape for arrays: numeric dtype for
  numbers, ``object`` dtype for strings, enums and structs.  A character
  array (``( 65 )`` followed by one ``<string>``) is returned as ``str``: the
  last dimension is the string's capacity, not a count of values.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping

import numpy as np

__all__ = ["Enum", "Struct", "ParameterFile", "JcampError", "parse_jcamp", "read_jcamp"]


class JcampError(ValueError):
    """A parameter file that does not follow the JCAMP-DX syntax."""


class Enum(str):
    """A bare symbolic value (``Yes``, ``FEMALE``, ``_16BIT_SGN_INT``)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return f"Enum({str.__repr__(self)})"


class Struct(tuple):
    """A ParaVision struct value: ``(3, <FG_SLICE>, <>, 0, 2)``."""

    __slots__ = ()

    def __repr__(self) -> str:
        return f"Struct({tuple.__repr__(self)})"


@dataclass
class ParameterFile(Mapping[str, Any]):
    """The parameters (``##$NAME``) of one file, plus its header records."""

    parameters: dict[str, Any] = field(default_factory=dict)
    header: dict[str, str] = field(default_factory=dict)
    path: Path | None = None

    def __getitem__(self, key: str) -> Any:
        return self.parameters[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.parameters)

    def __len__(self) -> int:
        return len(self.parameters)


# A shape declaration is the whole first line of a value, e.g. "( 3, 9 )".
_SHAPE = re.compile(r"^\(\s*(\d+(?:\s*,\s*\d+)*)\s*\)\s*$")
_INT = re.compile(r"^[+-]?\d+$")
_FLOAT = re.compile(r"^[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?$|^[+-]?(?:inf|nan)$", re.I)
_RUN = re.compile(r"^@(\d+)\*$")
_ESCAPES = {"n": "\n", "t": "\t", "\\": "\\", "<": "<", ">": ">", '"': '"'}


def read_jcamp(path: str | Path) -> ParameterFile:
    """Read one parameter file; ParaVision writes Latin-1 text."""
    path = Path(path)
    text = path.read_bytes().decode("latin-1")
    try:
        result = parse_jcamp(text)
    except JcampError as exc:
        raise JcampError(f"{path}: {exc}") from None
    result.path = path
    return result


def parse_jcamp(text: str) -> ParameterFile:
    """Parse the text of a parameter file."""
    result = ParameterFile()
    for name, raw, is_parameter in _records(text):
        if is_parameter:
            try:
                result.parameters[name] = parse_value(raw)
            except JcampError as exc:
                raise JcampError(f"parameter {name}: {exc}") from None
        elif name != "END":
            result.header[name] = raw.strip()
    return result


def _records(text: str) -> Iterator[tuple[str, str, bool]]:
    """Split the file into (name, raw value, is ``##$`` parameter) records.

    A record runs from its ``##`` line up to the next line starting with
    ``##`` or ``$$``; continuation lines are kept with their newlines so the
    tokenizer can tell a wrapped string from separate values.
    """
    name: str | None = None
    parts: list[str] = []
    is_parameter = False
    for line in text.splitlines():
        if line.startswith("##"):
            if name is not None:
                yield name, "\n".join(parts), is_parameter
            head, sep, value = line[2:].partition("=")
            if not sep:
                raise JcampError(f"record without '=': {line[:60]!r}")
            is_parameter = head.startswith("$")
            name = head[1:].strip() if is_parameter else head.strip()
            parts = [value]
            if name == "END":
                yield name, value, False
                name = None
                break
        elif line.startswith("$$"):
            continue
        elif name is not None:
            parts.append(line)
    if name is not None:
        yield name, "\n".join(parts), is_parameter


def parse_value(raw: str) -> Any:
    """Type one raw value (everything after ``=`` of a record)."""
    first, _, rest = raw.partition("\n")
    shape_match = _SHAPE.match(first.strip())
    # "(1, 2)" alone on its line could be a struct; ParaVision always writes
    # shapes with inner spaces and the values on the next line.
    if shape_match and (rest.strip() or first.strip().startswith("( ")):
        shape = tuple(int(d) for d in shape_match.group(1).split(","))
        items = _Parser(rest).items()
        return _as_array(items, shape)
    items = _Parser(raw).items()
    if len(items) == 1:
        return items[0]
    if not items:
        return ""
    return _as_array(items, (len(items),))


def _as_array(items: list[Any], shape: tuple[int, ...]) -> Any:
    count = int(np.prod(shape))
    if items and all(type(v) is str for v in items):
        # Strings fill the last dimension themselves.
        if len(items) == 1 and len(shape) == 1:
            return items[0]
        outer = shape[:-1] if int(np.prod(shape[:-1])) == len(items) else (len(items),)
        return _object_array(items, outer)
    if items and all(type(v) in (int, float) for v in items):
        dtype = np.int64 if all(type(v) is int for v in items) else np.float64
        array = np.asarray(items, dtype=dtype)
        return array.reshape(shape) if len(items) == count else array
    if not items:
        return np.zeros(shape if count == 0 else (0,), dtype=np.float64)
    return _object_array(items, shape if len(items) == count else (len(items),))


def _object_array(items: list[Any], shape: tuple[int, ...]) -> np.ndarray:
    # Filled element by element: numpy would otherwise unpack the tuples.
    array = np.empty(len(items), dtype=object)
    for i, item in enumerate(items):
        array[i] = item
    return array.reshape(shape)


class _Parser:
    """Recursive-descent reader of a value's items (after any shape)."""

    def __init__(self, text: str) -> None:
        self.tokens = list(_tokenize(text))
        self.pos = 0

    def items(self) -> list[Any]:
        values: list[Any] = []
        while self.pos < len(self.tokens):
            values.extend(self._item())
        return values

    def _peek(self) -> tuple[str, str] | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def _next(self) -> tuple[str, str]:
        token = self._peek()
        if token is None:
            raise JcampError("value ends early")
        self.pos += 1
        return token

    def _item(self) -> list[Any]:
        """One item; a run-length ``@N*(v)`` expands to N copies."""
        kind, text = self._next()
        if kind == "string":
            return [text]
        if kind == "open":
            return [self._struct()]
        if kind == "atom":
            run = _RUN.match(text)
            if run and self._peek() == ("open", "("):
                self._next()
                inner = self._struct_fields()
                value = inner[0] if len(inner) == 1 else Struct(inner)
                return [value] * int(run.group(1))
            return [_atom(text)]
        raise JcampError(f"unexpected {text!r}")

    def _struct(self) -> Struct:
        return Struct(self._struct_fields())

    def _struct_fields(self) -> list[Any]:
        fields: list[Any] = []
        expect_value = True
        while True:
            token = self._peek()
            if token is None:
                raise JcampError("unclosed '('")
            kind, _ = token
            if kind == "close":
                self._next()
                return fields
            if kind == "comma":
                self._next()
                if expect_value:  # an empty field: "(a, , b)"
                    fields.append("")
                expect_value = True
                continue
            fields.extend(self._item())
            expect_value = False


def _atom(text: str) -> Any:
    if _INT.match(text):
        return int(text)
    if _FLOAT.match(text):
        return float(text)
    return Enum(text)


def _tokenize(text: str) -> Iterator[tuple[str, str]]:
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c.isspace():
            i += 1
        elif text.startswith("$$", i):  # inline comment to end of line
            end = text.find("\n", i)
            i = n if end < 0 else end
        elif c == "<":
            value, i = _string(text, i + 1)
            yield "string", value
        elif c == "(":
            yield "open", c
            i += 1
        elif c == ")":
            yield "close", c
            i += 1
        elif c == ",":
            yield "comma", c
            i += 1
        else:
            start = i
            while i < n and not text[i].isspace() and text[i] not in "(),<":
                i += 1
            yield "atom", text[start:i]


def _string(text: str, i: int) -> tuple[str, int]:
    """Read a ``<string>`` body starting after ``<``; returns (value, next index).

    Line breaks inside a string are ParaVision's line wrapping, not content.
    """
    out: list[str] = []
    n = len(text)
    while i < n:
        c = text[i]
        if c == "\\" and i + 1 < n:
            nxt = text[i + 1]
            out.append(_ESCAPES.get(nxt, "\\" + nxt))
            i += 2
        elif c == ">":
            return "".join(out), i + 1
        elif c == "\n":
            i += 1
        else:
            out.append(c)
            i += 1
    raise JcampError("unterminated <string>")
