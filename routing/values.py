"""Writing values into elements with the VR they need, and reading them back as text."""

from __future__ import annotations

from typing import Any

from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset

from dopamine_py.document import vr_for_tag

from .errors import ActionFailed
from .paths import describe

INT_BINARY_VRS = frozenset({"US", "SS", "UL", "SL", "UV", "SV"})
FLOAT_BINARY_VRS = frozenset({"FL", "FD"})
SINGLE_TEXT_VRS = frozenset({"LT", "ST", "UT", "UR"})  # a backslash is part of the text, not a separator


def element_texts(element: DataElement) -> list[str]:
    """The values of an element as text (a PN as DICOM writes it)."""
    value = element.value
    if value is None or value == "" or element.VR == "SQ":
        return []
    if isinstance(value, (bytes, bytearray)):
        return [value.decode("latin-1")]
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        return [str(v) for v in value]
    return [str(value)]


def convert(text: str, vr: str, tag: int) -> Any:
    """The Python value pydicom expects for a text written in a rule."""
    parts = [text] if vr in SINGLE_TEXT_VRS else text.split("\\")
    try:
        if vr in INT_BINARY_VRS:
            values: list[Any] = [int(p) for p in parts]
        elif vr in FLOAT_BINARY_VRS:
            values = [float(p) for p in parts]
        else:
            values = parts
    except ValueError:
        raise ActionFailed(f"{text!r} is not a valid {vr} value for {describe(tag)}") from None
    return values[0] if len(values) == 1 else values


def set_value(container: Dataset, tag: int, text: str, vr: str | None = None) -> None:
    """Set an element to a text value, creating it when missing; keeps an existing element's VR."""
    if tag in container:
        element = container[tag]
        use_vr = vr or element.VR
        if use_vr != element.VR:
            del container[tag]
            container.add_new(tag, use_vr, convert(text, use_vr, tag))
        else:
            element.value = convert(text, use_vr, tag)
        return
    use_vr = vr or vr_for_tag(tag)
    if use_vr is None:
        raise ActionFailed(f"{describe(tag)} is not in the data dictionary: give its vr=\"..\"")
    container.add_new(tag, use_vr, convert(text, use_vr, tag))


def empty(container: Dataset, tag: int) -> None:
    element = container[tag]
    element.value = [] if element.VR == "SQ" else None
