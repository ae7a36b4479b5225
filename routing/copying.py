"""A copy of a data set that costs little: the engine must never touch the caller's data set, and a
deep copy of every element (pixel data included) would cost more than all the rules together.

Elements still in their raw, undecoded form are immutable and shared; decoded elements are copied
shallowly (actions always assign a new value, never edit a value in place); sequences are copied item by
item. This reads pydicom's element store (``Dataset._dict``) directly, pydicom 3's layout.
"""

from __future__ import annotations

from typing import TypeVar

from pydicom.datadict import dictionary_VR
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

T = TypeVar("T")


def element_store(ds: Dataset) -> dict:
    """tag -> DataElement or RawDataElement, without decoding anything."""
    return ds._dict


def cheap_copy(ds: Dataset) -> Dataset:
    new = _shallow_copy(ds)
    new._dict = _copied_elements(ds)
    new._private_blocks = {}
    if getattr(ds, "_pixel_array", None) is not None:
        new._pixel_array = None
        new._pixel_id = {}
    meta = getattr(ds, "file_meta", None)
    if meta is not None:
        new.file_meta = _shallow_copy(meta)  # a deep copy would cost more than all the rules
        new.file_meta._dict = _copied_elements(meta)
    return new


def _copied_elements(ds: Dataset) -> dict:
    store = dict(element_store(ds))  # raw elements are shared as they are; most elements of a data set read
    for tag in [t for t, e in store.items() if type(e) is not RawDataElement]:
        element = store[tag]
        copied = store[tag] = _shallow_copy(element)
        if element.VR == "SQ":
            copied._value = Sequence([cheap_copy(item) for item in element.value or []])
    return store


def _shallow_copy(thing: T) -> T:
    """copy.copy of a data set or an element (neither defines a copy protocol of its own), without the
    generic protocol's few microseconds."""
    copied = object.__new__(type(thing))
    copied.__dict__.update(thing.__dict__)
    return copied


def vr_of(tag: int, element: DataElement | RawDataElement) -> str:
    """The VR of an element without decoding it (implicit VR raw elements: the dictionary's)."""
    if element.VR:
        return element.VR
    from dopamine_py.document import vr_for_tag

    return vr_for_tag(int(tag)) or "UN"


def decoded_vr(tag: int, element: DataElement | RawDataElement) -> str | None:
    """The VR pydicom gives an element once decoded, when that is sure without decoding it (None when
    it depends: an explicit UN, an ambiguous or unknown implicit one, an undefined length)."""
    if isinstance(element, DataElement):
        return None if element.is_undefined_length else element.VR
    if element.length == 0xFFFFFFFF:
        return None
    if element.VR is not None:
        return element.VR if element.VR != "UN" else None
    try:
        vr = dictionary_VR(tag)
    except KeyError:
        return None
    return vr if " or " not in vr else None
