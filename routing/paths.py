"""Naming attributes in rules: keywords, ``gggg,eeee`` tags, private tags with their creator, and
paths into sequences (``ReferencedSeriesSequence[0].SeriesInstanceUID``; no index means every item).

A private tag is written with ``xx`` in place of the block byte (``0029,xx10``) together with the
``creator`` attribute of the rule element; it is resolved in each data set through that creator, so
it finds the element wherever the sender put the block.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Iterator

from pydicom.datadict import keyword_for_tag
from pydicom.dataset import Dataset

from dopamine_py.document import UnknownAttribute, parse_tag, vr_for_tag

_STEP = re.compile(r"^(?P<name>[^\[\]]+?)(?:\[(?P<index>\d+)\])?$")
_PRIVATE = re.compile(r"^\(?(?P<group>[0-9A-Fa-f]{4}),?(?:xx|XX)(?P<offset>[0-9A-Fa-f]{2})\)?$")


class PathError(ValueError):
    """A path that names no attribute; the message says which step is wrong."""


@dataclass(frozen=True)
class Step:
    tag: int  # for a private step, group << 16 | offset (the block byte is found through the creator)
    index: int | None = None
    private: bool = False


@dataclass(frozen=True)
class ElementPath:
    text: str
    steps: tuple[Step, ...]
    creator: str | None = None

    @property
    def leaf(self) -> Step:
        return self.steps[-1]

    @property
    def tag(self) -> int:
        """The tag of the last step (for a private step: gggg,00ee; use ``targets`` to resolve it)."""
        return self.leaf.tag

    @property
    def is_private(self) -> bool:
        return self.leaf.private or (self.leaf.tag >> 16) % 2 == 1

    @property
    def dictionary_vr(self) -> str | None:
        return None if self.is_private else vr_for_tag(self.leaf.tag)

    def containers(self, ds: Dataset) -> Iterator[Dataset]:
        """The data sets (the top level or sequence items) that hold the last step."""
        level = [ds]
        for step in self.steps[:-1]:
            nxt = []
            for item in level:
                if step.tag not in item:
                    continue
                items = item[step.tag].value or []
                if step.index is None:
                    nxt.extend(items)
                elif step.index < len(items):
                    nxt.append(items[step.index])
            level = nxt
        yield from level

    def resolve(self, container: Dataset, create: bool = False) -> int | None:
        """The tag of the last step in one container; None when a private block is missing."""
        if not self.leaf.private:
            return self.leaf.tag
        group, offset = self.leaf.tag >> 16, self.leaf.tag & 0xFF
        try:
            block = container.private_block(group, self.creator, create=create)
        except KeyError:
            return None
        return int(block.get_tag(offset))

    def targets(self, ds: Dataset) -> Iterator[tuple[Dataset, int]]:
        """(container, tag) for every place this path addresses, present or not."""
        for container in self.containers(ds):
            tag = self.resolve(container)
            if tag is not None:
                yield container, tag

    def present(self, ds: Dataset) -> Iterator[tuple[Dataset, int]]:
        """(container, tag) for every place this path addresses where the element exists."""
        for container, tag in self.targets(ds):
            if tag in container:
                yield container, tag


def parse_path(text: str, creator: str | None = None) -> ElementPath:
    """Parse ``Keyword``, ``gggg,eeee``, ``(gggg,xxee)`` or a dotted path of them into sequences."""
    text = text.strip()
    if not text:
        raise PathError("empty attribute name")
    parts = text.split(".")
    steps = []
    for position, part in enumerate(parts):
        last = position == len(parts) - 1
        match = _STEP.match(part.strip())
        if not match:
            raise PathError(f"{part!r} in {text!r} is not an attribute (Keyword, gggg,eeee or Keyword[n])")
        name, index = match.group("name").strip(), match.group("index")
        private = _PRIVATE.match(name)
        if private:
            if not last:
                raise PathError(f"{text!r}: a private step is only allowed as the last step")
            if not creator:
                raise PathError(f"{name!r} is a private tag: give its private creator (creator=\"...\")")
            tag = int(private.group("group"), 16) << 16 | int(private.group("offset"), 16)
            if not (tag >> 16) % 2:
                raise PathError(f"{name!r}: private tags have an odd group number")
            steps.append(Step(tag, None, True))
            continue
        try:
            tag = parse_tag(name)
        except UnknownAttribute:
            raise PathError(f"unknown attribute {name!r}: not a DICOM keyword nor a tag (gggg,eeee)") from None
        if index is not None and last:
            raise PathError(f"{text!r}: an index [n] only applies to a sequence, not to the last step")
        if not last and vr_for_tag(tag) not in ("SQ", None):
            raise PathError(f"{name!r} in {text!r} is not a sequence, so nothing can follow it")
        steps.append(Step(tag, int(index) if index is not None else None))
    if creator and not steps[-1].private:
        tag = steps[-1].tag
        if not (tag >> 16) % 2:
            raise PathError(f"{text!r} is a standard attribute: creator=\"...\" applies only to private tags")
        # A creator given with a full private tag: resolve through the creator, ignoring the block byte.
        if tag & 0xFF00:
            steps[-1] = Step((tag & 0xFFFF0000) | (tag & 0xFF), None, True)
    return ElementPath(text, tuple(steps), creator)


@lru_cache(maxsize=4096)
def describe(tag: int) -> str:
    return keyword_for_tag(tag) or f"({tag >> 16:04X},{tag & 0xFFFF:04X})"
