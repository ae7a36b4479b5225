"""The encoder of routed data sets writes what pydicom's dcmwrite writes, byte for byte, and leaves the data
set as dcmwrite leaves it (the archive builds the stored document from it afterwards); on every sample
file of pydicom, pydicom-data and deid-data, parsed as the archive parses, after several rule sets."""

from __future__ import annotations

import importlib
import io
import warnings
from pathlib import Path

import pydicom.data
import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file

import dopamine_py.part10
from dopamine_py.archive import read_received
from dopamine_py.document import to_document
from dopamine_py.part10 import encode_part10
from routing.encoding import encode_routed
from routing.engine import load_ruleset
from rules_helpers import SECRETS, ruleset

REPO = Path(__file__).resolve().parents[2]
RULE_SETS = {
    "basic profile": lambda: load_ruleset(REPO / "rules" / "basic-profile.xml"),
    "profile with options": lambda: ruleset(
        '<Deidentify profile="basic" retainSafePrivate="true" retainLongitudinalModifiedDates="true" '
        'retainPatientCharacteristics="true" cleanDescriptors="true" cleanStructuredContent="true" '
        'cleanGraphics="true"><Keep creator="SIEMENS CSA HEADER"/></Deidentify>'),
    "actions": lambda: ruleset('<Pseudonymize/><ShiftDates by="PatientID"/><ReplaceUIDs/><RemovePrivateTags/>'
                               '<SetElement tag="InstitutionName" value="ACME"/><DeleteElement tag="StudyDescription"/>'
                               '<SetElement tag="SpecificCharacterSet" value="ISO_IR 192"/>'),
}


def sample_files() -> list[Path]:
    """The files installed with pydicom, pydicom-data and deid-data (get_testdata_files would try to
    download the ones that are missing)."""
    folders = [Path(pydicom.data.__file__).parent / "test_files", Path(pydicom.data.__file__).parent / "charset_files"]
    for package in ("data_store", "deid_data"):  # pydicom-data, deid-data
        try:
            folders.append(Path(importlib.import_module(package).__file__).parent / "data")
        except ImportError:
            pass
    files = sorted(f for folder in folders for f in folder.rglob("*") if f.is_file())
    return [f for f in files if f.stat().st_size < 8_000_000]


def parsed(data: bytes):
    return dcmread(io.BytesIO(data), defer_size=1024)  # as ArchiveService._parse reads


def received_over_dimse(data: bytes):
    """As ArchiveService.store_received reads a data set received over DIMSE: the data set alone, its File
    Meta Information rebuilt from the header written for it (its elements left encoded)."""
    meta = dcmread(io.BytesIO(data), stop_before_pixels=True).file_meta
    syntax = meta.TransferSyntaxUID
    if syntax.is_deflated:
        raise ValueError("deflated: store_received reads these as files")
    stream = io.BytesIO(data)
    dopamine_py.part10.skip_file_meta(stream)
    header = dopamine_py.part10.file_header(meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID, syntax,
                                            implementation_class_uid="1.2.3", implementation_version="TEST",
                                            source_aet="STORESCU")
    return read_received(header, stream.read(), syntax, defer_size=1024)


READERS = {"as a file": parsed, "as over DIMSE": received_over_dimse}


def quiet_samples():
    """(path, bytes) of every sample file, without pydicom's warnings on their invalid values."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for path in sample_files():
            yield path, path.read_bytes()


@pytest.mark.parametrize("reader", READERS)
@pytest.mark.parametrize("rules", RULE_SETS)
def test_same_bytes_and_document_as_dcmwrite(rules, reader):
    rs, read = RULE_SETS[rules](), READERS[reader]
    encoded = 0
    for path, data in quiet_samples():
        try:
            received = read(data)
            reference = rs.apply(read(data), None, SECRETS).dataset
            fast = rs.apply(received, None, SECRETS).dataset
        except Exception:
            continue  # not a file the archive would store, or a data set the rules refuse
        try:
            expected = encode_part10(reference)
        except Exception as exc:
            with pytest.raises(type(exc)):
                encode_routed(fast, received)
            continue
        assert encode_routed(fast, received) == expected, path.name  # as the archive calls it
        assert to_document(fast) == to_document(reference), path.name
        encoded += 1
    assert encoded > 100


def test_an_untouched_data_set_comes_out_as_it_went_in():
    data = Path(get_testdata_file("CT_small.dcm")).read_bytes()
    assert encode_routed(parsed(data)) == encode_part10(parsed(data))


@pytest.mark.parametrize("reader", READERS)
def test_a_de_identified_instance_is_encoded_without_dcmwrite(monkeypatch, reader):
    """The fast path must be the one taken for the usual input (else the gain is gone, silently)."""
    data = Path(get_testdata_file("CT_small.dcm")).read_bytes()
    received = READERS[reader](data)
    routed = load_ruleset(REPO / "rules" / "basic-profile.xml").apply(received, None, SECRETS).dataset
    expected = encode_part10(load_ruleset(REPO / "rules" / "basic-profile.xml").apply(
        READERS[reader](data), None, SECRETS).dataset)

    def refuse(*args, **kwargs):
        raise AssertionError("dcmwrite called")

    monkeypatch.setattr(dopamine_py.part10, "dcmwrite", refuse)  # what encode_routed falls back on
    assert encode_routed(routed, received) == expected


def test_a_multi_valued_character_set_is_encoded_without_dcmwrite(monkeypatch):
    """pydicom decodes Specific Character Set in place as it decodes text: a MultiValue, which the encoder
    must take as it takes a list."""
    data = Path(pydicom.data.__file__).parent / "charset_files" / "chrJapMulti.dcm"
    received = parsed(data.read_bytes())
    routed = load_ruleset(REPO / "rules" / "basic-profile.xml").apply(received, None, SECRETS).dataset
    routed.PatientName  # decodes the character set in place
    assert type(routed[0x00080005].value).__name__ == "MultiValue"
    expected = encode_part10(routed)

    def refuse(*args, **kwargs):
        raise AssertionError("dcmwrite called")

    monkeypatch.setattr(dopamine_py.part10, "dcmwrite", refuse)
    assert encode_routed(routed, received) == expected


def test_copied_elements_are_written_as_dcmwrite_writes_them():
    """Elements copied from the received buffer with their header: a long header's reserved bytes, which
    dcmwrite writes as zeros whatever the file had, are not copied."""
    data = bytearray(Path(get_testdata_file("CT_small.dcm")).read_bytes())
    pixels = data.find(b"\xe0\x7f\x10\x00OW")
    data[pixels + 6:pixels + 8] = b"\x12\x34"
    data = bytes(data)
    rs = load_ruleset(REPO / "rules" / "basic-profile.xml")
    received = parsed(data)
    routed = rs.apply(received, None, SECRETS).dataset
    expected = encode_part10(rs.apply(parsed(data), None, SECRETS).dataset)
    assert expected[expected.find(b"\xe0\x7f\x10\x00OW") + 6:][:2] == b"\x00\x00"
    assert encode_routed(routed, received) == expected
