"""Documents built from encoded values (dopamine_py/raw_values.py) equal those built through pydicom.

The fast conversion takes the common cases and hands everything else to pydicom; these tests hold it to
pydicom's answers on every sample file of pydicom and pydicom-data, and on generated values of every VR it
converts, with the padding, backslashes, empty values and odd bytes real senders produce.
"""

from __future__ import annotations

import io
import struct
import warnings
from pathlib import Path

import data_store
import pydicom
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st
from pydicom import dcmread
from pydicom.errors import InvalidDicomError

from dopamine_py import part10, raw_values
from dopamine_py.document import DocumentOptions, to_document

SAMPLE_FOLDERS = (Path(pydicom.__file__).parent / "data", Path(data_store.__file__).parent / "data")


def sample_files() -> list[Path]:
    files = sorted(p for folder in SAMPLE_FOLDERS for p in folder.rglob("*")
                   if p.is_file() and p.suffix.lower() not in (".py", ".pyc", ".json", ".txt", ".gz", ".bz2", ".zip", ".xz"))
    assert len(files) > 150, f"expected pydicom's and pydicom-data's sample files, found {len(files)}"
    return files


def both_documents(data: bytes, options: DocumentOptions = DocumentOptions()) -> tuple[dict, dict]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom's warnings on odd values in the samples
        fast = to_document(dcmread(io.BytesIO(data), force=True), options)
        reference = to_document(dcmread(io.BytesIO(data), force=True), options, from_raw=False)
    return fast, reference


def test_every_sample_file_gives_the_same_document():
    compared = elements = 0
    differences = []
    for path in sample_files():
        data = path.read_bytes()
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                dcmread(io.BytesIO(data), force=True)
        except (InvalidDicomError, Exception):  # not DICOM (or not parseable at all): nothing to compare
            continue
        try:
            fast, reference = both_documents(data)
        except Exception as exc:  # pydicom cannot convert some element of this file either way
            with pytest.raises(type(exc)):
                both_documents(data)
            continue
        compared += 1
        elements += sum(1 for e in fast.values() if "BulkData" not in e)
        if fast != reference:
            keys = [k for k in reference if fast.get(k) != reference.get(k)] + [k for k in fast if k not in reference]
            differences.append(f"{path.name}: {[(k, fast.get(k), reference.get(k)) for k in keys[:3]]}")
    assert compared > 150, f"only {compared} sample files could be compared"
    assert elements > 5000
    assert not differences, "\n".join(differences)


def explicit_element(group: int, element: int, vr: str, value: bytes) -> bytes:
    if len(value) % 2:
        value += b"\0" if vr == "UI" else b" "
    if vr in ("OB", "OD", "OF", "OL", "OV", "OW", "SQ", "UC", "UN", "UR", "UT", "SV", "UV"):
        return struct.pack("<HH2sHI", group, element, vr.encode(), 0, len(value)) + value
    return struct.pack("<HH2sH", group, element, vr.encode(), len(value)) + value


def as_part10(elements: bytes) -> bytes:
    return part10.file_header("1.2.840.10008.5.1.4.1.1.7", "1.2.3.4", "1.2.840.10008.1.2.1",
                              implementation_class_uid="1.2.3.4", implementation_version="TEST") + elements


# A public tag of each VR (the dictionary VR does not matter for explicit VR, the sender's does).
TAG_OF_VR = {
    "AE": (0x0008, 0x0054), "AS": (0x0010, 0x1010), "AT": (0x0020, 0x5000), "CS": (0x0008, 0x0060),
    "DA": (0x0008, 0x0020), "DS": (0x0018, 0x0050), "DT": (0x0008, 0x002A), "FD": (0x0018, 0x9087),
    "FL": (0x0018, 0x1156), "IS": (0x0020, 0x0013), "LO": (0x0008, 0x1090), "LT": (0x0010, 0x4000),
    "OB": (0x0009, 0x1010), "OD": (0x0009, 0x1011), "OF": (0x0009, 0x1012), "OL": (0x0009, 0x1013),
    "OV": (0x0009, 0x1014), "OW": (0x0009, 0x1015), "PN": (0x0010, 0x0010), "SH": (0x0008, 0x0050),
    "SL": (0x0018, 0x6020), "SS": (0x0028, 0x0106), "ST": (0x0008, 0x0081), "SV": (0x0009, 0x1016),
    "TM": (0x0008, 0x0030), "UC": (0x0008, 0x0119), "UI": (0x0008, 0x0018), "UL": (0x0008, 0x1161),
    "UR": (0x0008, 0x0120), "US": (0x0028, 0x0010), "UT": (0x0040, 0xA160), "UV": (0x0009, 0x1017),
}
TEXTISH = st.text(alphabet=st.sampled_from(list("AZaz09 ^=\\.-+eE:/\0é") + ["\x1b", "ü"]), max_size=24)
NUMERIC_TEXT = st.lists(st.sampled_from(["1", "-2", "3.5", " 4", "5 ", "1e3", "", "0x10", "nan", "1.0", "7_0",
                                         "+8", "9.", "1e999"]), min_size=1, max_size=4).map("\\".join)
CHARSETS = [None, "ISO_IR 100", "ISO_IR 192", "ISO_IR 6", "ISO 2022 IR 100", "ISO_IR 144"]


@st.composite
def element_values(draw):
    vr = draw(st.sampled_from(sorted(TAG_OF_VR)))
    if vr in ("DS", "IS"):
        text = draw(NUMERIC_TEXT | TEXTISH)
    else:
        text = draw(TEXTISH)
    charset = draw(st.sampled_from(CHARSETS))
    encoding = "utf-8" if charset == "ISO_IR 192" else "latin-1"
    value = text.encode(encoding, errors="replace")
    if vr in ("AT", "FD", "FL", "OB", "OD", "OF", "OL", "OV", "OW", "SL", "SS", "SV", "UL", "US", "UV"):
        value = draw(st.binary(max_size=24))
        if draw(st.booleans()) and vr not in ("OB",):  # mostly whole values, sometimes a length that is not
            size = {"AT": 4, "FD": 8, "FL": 4, "SL": 4, "SS": 2, "SV": 8, "UL": 4, "US": 2, "UV": 8}.get(vr, 2)
            value = value[: len(value) - len(value) % size]
    return vr, value, charset


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(element_values(), min_size=1, max_size=4))
def test_generated_values_give_the_same_document(elements):
    charset = next((c for _, _, c in elements if c), None)
    encoded = b""
    if charset:
        encoded += explicit_element(0x0008, 0x0005, "CS", charset.encode())
    seen = set()
    for vr, value, _ in sorted(elements, key=lambda e: TAG_OF_VR[e[0]]):
        if vr in seen:
            continue
        seen.add(vr)
        encoded += explicit_element(*TAG_OF_VR[vr], vr, value)
    data = as_part10(encoded)
    options = DocumentOptions(bulk_data_threshold=1 << 20)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            reference = to_document(dcmread(io.BytesIO(data)), options, from_raw=False)
    except Exception as exc:  # pydicom refuses the value: the archive must refuse it too
        with pytest.raises(type(exc)), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            to_document(dcmread(io.BytesIO(data)), options)
        return
    fast, _ = both_documents(data, options)
    assert fast == reference


def test_what_is_not_converted_from_bytes_goes_to_pydicom():
    """The cases the fast conversion declines, each checked to be declined (so pydicom decides)."""
    from pydicom.dataelem import RawDataElement

    def raw(vr, value, implicit=False, little=True):
        return RawDataElement(0x00100010, vr, len(value), value, 0, implicit, little)

    assert raw_values.element(raw("PN", b"Doe^John"), ["iso8859"]) == {"vr": "PN", "Value": [{"Alphabetic": "Doe^John"}]}
    assert raw_values.element(raw(None, b"Doe^John", implicit=True), ["iso8859"]) is None  # implicit VR
    assert raw_values.element(raw("PN", b"Doe^John", little=False), ["iso8859"]) is None  # big endian
    assert raw_values.element(raw("UN", b"abcd"), ["iso8859"]) is None  # pydicom may give it a known VR
    assert raw_values.element(raw("SQ", b""), ["iso8859"]) is None
    assert raw_values.element(raw("PN", b"\x1b$B"), ["iso8859", "iso2022_jp"]) is None  # ISO 2022
    assert raw_values.element(raw("LO", b"\xff\xfe"), ["UTF8"]) is None  # not UTF-8: pydicom replaces
    assert raw_values.element(raw("IS", b"1.0 "), ["iso8859"]) is None  # pydicom's IS rules
    assert raw_values.element(raw("FD", b"\0" * 7), ["iso8859"]) is None  # not a whole number of values
