"""WADO-RS metadata made from the stored JSON text (dicomweb.metadata_text) against the element-by-element
path (to_wire on the decoded document): the same bytes, on real files and on generated documents."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
import pydicom.data
from pydicom import dcmread
from pydicom.errors import InvalidDicomError

from dicomweb import metadata_text
from dicomweb.json_model import dumps
from dicomweb.wado import _bulk_uris, _metadata_of
from dopamine_py.document import DocumentOptions, to_document
from dopamine_py.storage.base import StoredInstance
from dopamine_py.storage.sqlite import dump_document, load_document

BASE = 'http://archive.example:8080/dicom-web'
INSTANCE = StoredInstance("1.2.3.4", "1.2.840.10008.5.1.4.1.1.2", "1.2.3", "1.2.3.1", "1.2.840.10008.1.2.1", 0)


def both_paths(doc: dict, inst: StoredInstance = INSTANCE, text: str | None = None) -> tuple[bytes | None, bytes]:
    """(from the stored text, element by element) for a document as the embedded store keeps it."""
    text = dump_document(doc) if text is None else text
    fast = metadata_text.wire_text(text, _bulk_uris(BASE, inst), inst.transfer_syntax_uid)
    slow = dumps(_metadata_of(BASE, inst, load_document(text)))
    return fast, slow


def _real_files() -> list[Path]:
    # Listed from the folders: get_testdata_files("*") spends seconds asking pydicom-data's sources.
    folders = [Path(pydicom.data.__file__).parent / "test_files", Path(pydicom.data.__file__).parent / "charset_files"]
    try:
        import deid_data
    except ImportError:
        pass
    else:
        folders.append(Path(deid_data.__file__).parent / "data")
    return [f for folder in folders for f in sorted(folder.rglob("*")) if f.suffix.lower() in (".dcm", "") and f.is_file()]


@pytest.mark.parametrize("threshold", [1024, 16])
def test_real_files_give_the_same_bytes(threshold):
    """pydicom's test files (sequences, person names in several character sets, binary values, private
    tags, bulk data in sequences) and deid's; a low threshold makes many more bulk data elements."""
    paths = {"simple": 0, "rebuilt": 0}
    checked = 0
    for path in _real_files():
        try:
            ds = dcmread(path)
            doc = to_document(ds, DocumentOptions(bulk_data_threshold=threshold))
        except (InvalidDicomError, ValueError, TypeError, AttributeError, KeyError, NotImplementedError, EOFError, OSError):
            continue  # not a data set pydicom can read whole: not what this test is about
        fast, slow = both_paths(doc)
        assert fast is not None, path.name
        assert fast == slow, path.name
        json.loads(fast)
        checked += 1
        paths["simple" if metadata_text._SIMPLE_DOCUMENT.fullmatch(dump_document(doc)) else "rebuilt"] += 1
    assert checked > 100
    assert min(paths.values()) > 20, paths  # both ways through wire_text were taken


def element(vr, *values):
    return {"vr": vr, "Value": list(values)} if values else {"vr": vr}


@pytest.mark.parametrize("doc", [
    {},
    {"00100010": element("PN", {"Alphabetic": "Doe^J"})},
    {"7FE00010": {"vr": "OW", "BulkData": True}},
    {"00080005": element("CS", "ISO_IR 100"), "00083002": element("UI", "1.2.840.10008.1.2"), "00100020": element("LO", "X")},
    {"00083002": element("UI", "1.2.840.10008.1.2")},
    {"00080005": element("CS", "ISO_IR 100")},
    {"00100020": element("LO", "P"), "00080016": element("UI", "1.2")},  # out of tag order (a rule added it)
    {"00100020": {"vr": "LO", "Value": []}},  # an empty Value is left out on the wire
    {"00100020": {"vr": "LO", "Value": ["A"], "Internal": 1}},  # unknown keys are left out
    {"00100020": {"Value": ["A"]}},  # no VR: UN on the wire
    {"00181000": element("LO", 'say "}":{"vr":"OW","BulkData":true} \\ \n \x01 é 中 \u2028')},
    {"00181000": element("LO", "\\u00e9"), "00280010": element("US", 512), "00280030": element("DS", 0.1, -1e-05, 3e+20)},
    {"00291010": {"vr": "OB", "InlineBinary": bytes(range(256))}, "00291011": element("UN", None, None)},
    {"00081115": {"vr": "SQ", "Value": [{"0020000E": element("UI", "1.2"), "00081199": {"vr": "SQ", "Value": [{}]}}]},
     "00082112": {"vr": "SQ", "Value": [{"00081150": element("UI", "1"), "00081155": element("UI", "2"),
                                         "7FE00010": {"vr": "OB", "BulkData": True}}]}},
    {"00081115": {"vr": "SQ"}, "00081140": {"vr": "SQ", "Value": [{}]}},
])
def test_edge_cases_give_the_same_bytes(doc):
    fast, slow = both_paths(doc)
    assert fast == slow
    # A text written otherwise (every non-ASCII character escaped) is not copied as it is.
    ascii_text = json.dumps(json.loads(dump_document(doc)), separators=(",", ":"))
    fast, slow = both_paths(doc, text=ascii_text)
    assert fast == slow


def test_too_deep_a_document_is_left_to_the_element_path():
    doc = {"00100010": element("PN", {"Alphabetic": "A"})}
    for _ in range(7):
        doc = {"00081115": {"vr": "SQ", "Value": [doc]}}
    fast, slow = both_paths(doc)
    assert fast is None and json.loads(slow)


def test_the_uris_are_escaped_as_json():
    inst = StoredInstance('1.2"\\', "1", "1", "1", "1.2.840.10008.1.2.1", 0)
    fast, slow = both_paths({"7FE00010": {"vr": "OW", "BulkData": True}}, inst)
    assert fast == slow


# Generated documents: elements of every shape the JSON model has, nested.
KEYS = st.sampled_from(["00080005", "00080016", "00081115", "00083002", "00100010", "00291010", "7FE00010", "FFFEE000"])
TEXT = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=6)
SCALARS = st.one_of(TEXT, st.integers(-2**70, 2**70), st.floats(allow_nan=False, allow_infinity=False), st.none())
NAMES = st.dictionaries(st.sampled_from(["Alphabetic", "Ideographic", "Phonetic"]), TEXT, max_size=3)


def elements(items):
    vr = st.sampled_from(["CS", "LO", "DS", "US", "UN", "OB", "PN", "UI"])
    return st.one_of(
        st.builds(lambda v, values: {"vr": v, "Value": values}, vr, st.lists(st.one_of(SCALARS, NAMES), max_size=3)),
        st.builds(lambda v: {"vr": v}, vr),
        st.builds(lambda v, data: {"vr": v, "InlineBinary": data}, vr, st.binary(max_size=8)),
        st.builds(lambda v: {"vr": v, "BulkData": True}, vr),
        st.builds(lambda values: {"vr": "SQ", "Value": values}, st.lists(items, max_size=2)),
    )


DOCUMENTS = st.recursive(st.just({}), lambda items: st.dictionaries(KEYS, elements(items), max_size=5), max_leaves=12)


@settings(max_examples=400, deadline=None)
@given(DOCUMENTS)
def test_generated_documents_give_the_same_bytes(doc):
    fast, slow = both_paths(doc)
    assert fast is None or fast == slow


def test_the_route_takes_the_stored_text_and_gives_the_same_bytes(tmp_path):
    """The metadata route's JSON, from the embedded store's texts, against the decoded documents."""
    from starlette.requests import Request

    from dicomweb.wado import metadata_documents, metadata_json
    from dopamine_py.archive import ArchiveService, Source
    from dopamine_py.matching import Query
    from dopamine_py.storage.sqlite import SQLiteBackend

    archive = ArchiveService(SQLiteBackend(tmp_path / "store"))
    for path in _real_files():
        archive.store_file(path, Source(protocol="test"))
    instances = list(archive.instances(Query()))
    assert len(instances) > 50
    request = Request({"type": "http", "method": "GET", "path": "/", "query_string": b"", "root_path": "/dicom-web",
                       "headers": [(b"host", b"archive.example:8080")], "scheme": "http", "server": ("127.0.0.1", 8080)})
    texts = list(metadata_json(archive, request, instances))
    assert texts == [dumps(wire) for wire in metadata_documents(archive, request, instances)]
    assert b"/dicom-web/studies/" in b"".join(texts)
