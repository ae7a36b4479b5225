"""Part 10 framing written and read by hand for received data sets (dopamine_py/part10.py), against
pydicom's reader of the same bytes."""

from __future__ import annotations

import io

import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file

from dopamine_py import part10


@pytest.mark.parametrize("source_aet", ["SCANNER1", "ODD", ""])
def test_file_meta_read_by_hand_equals_pydicoms(source_aet):
    header = part10.file_header("1.2.840.10008.5.1.4.1.1.4", "1.2.3.4.5", "1.2.840.10008.1.2.1",
                                implementation_class_uid="2.25.1", implementation_version="DOPAMINE_PY_1",
                                source_aet=source_aet)
    ours, pydicoms = part10.file_meta(header), dcmread(io.BytesIO(header)).file_meta
    assert ours == pydicoms
    assert (ours.original_encoding, ours.original_character_set) == (pydicoms.original_encoding,
                                                                    pydicoms.original_character_set)
    assert ours.TransferSyntaxUID.is_little_endian and not ours.TransferSyntaxUID.is_implicit_VR


def test_padding_that_came_with_the_association_is_not_written():
    """Some peers pad AE titles (and UIDs) with NULs; the File Meta Information holds the values themselves,
    which are copied as they are into every routed copy."""
    header = part10.file_header("1.2.840.10008.5.1.4.1.1.4\0", "1.2.3.4.5\0", "1.2.840.10008.1.2.1",
                                implementation_class_uid="2.25.1", implementation_version="DOPAMINE_PY_1",
                                source_aet=" SCANNER\0\0\0")
    meta = part10.file_meta(header)
    assert meta.SourceApplicationEntityTitle == "SCANNER"
    assert meta[0x00020016].value == "SCANNER"  # decoded from bytes without padding: "SCANNER "
    assert (meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID) == ("1.2.840.10008.5.1.4.1.1.4", "1.2.3.4.5")
    assert b"\0\0" not in header[header.index(b"SCANNER"):]


@pytest.mark.parametrize("name", ["CT_small.dcm", "MR_small_bigendian.dcm", "JPEG2000.dcm"])
def test_skip_file_meta_lands_on_the_data_set(name):
    path = get_testdata_file(name)
    with open(path, "rb") as f:
        part10.skip_file_meta(f)
        first_group = f.read(2)
    assert first_group in (b"\x08\x00", b"\x00\x08"), "not at the first element (group 0008) of the data set"
