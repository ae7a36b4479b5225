"""The MongoDB filters ``mongo_query.compile_query`` builds, one condition type at a time.

Each test pins the exact filter document, then evaluates it with mongomock on a few small documents and
checks that it selects what ``Query.matches`` (the in-memory reference) selects, and which ones those are.
mongomock is a stand-in for a MongoDB server (none runs in CI): it shows the filters mean what we intend,
not that a server agrees; the behaviour suite's ``mongodb-real`` tier does that when a server is given.
"""

from __future__ import annotations

from typing import Any

import mongomock
import pytest

from dopamine_py.document import first_value, tag_key
from dopamine_py.matching import MatchOptions, Query, SequenceMatch, parse_pairs
from dopamine_py.storage.mongo_query import NOTHING, compile_query, mongo_regex
from dopamine_py.storage.mongodb import KEY_FIELDS

END = r"(?![\s\S])"  # the end anchor of matching.wildcard_regex


def element(vr: str, *values: Any) -> dict[str, Any]:
    return {"vr": vr, "Value": list(values)} if values else {"vr": vr}


def name(alphabetic: str | None = None, ideographic: str | None = None) -> dict[str, str]:
    groups = {"Alphabetic": alphabetic, "Ideographic": ideographic}
    return {group: text for group, text in groups.items() if text}


def selected(query: Query, documents: list[dict[str, Any]], key_fields: dict[int, str] | None = None) -> list[int]:
    """The indexes of the documents the compiled filter selects in mongomock, checked against Query.matches."""
    collection = mongomock.MongoClient().db.instances
    for i, doc in enumerate(documents):
        # The key fields as the backend stores them: the first value, '' when absent.
        keys = {field: str(first_value(doc, tag) or "") for tag, field in KEY_FIELDS.items() if field != "_id"}
        collection.insert_one({"_id": i, **keys, "ds": doc})
    by_standin = sorted(d["_id"] for d in collection.find(compile_query(query, key_fields)))
    in_memory = [i for i, doc in enumerate(documents) if query.matches(doc)]
    assert by_standin == in_memory, f"mongomock selects {by_standin}, Query.matches {in_memory}"
    return by_standin


DESCRIPTION, PATIENT_NAME, OTHER_NAMES = tag_key(0x00081030), tag_key(0x00100010), tag_key(0x00101001)


def test_filter_universal_is_empty_mongomock_standin():
    query = parse_pairs([("PatientName", ""), ("StudyDescription", "*")])
    assert compile_query(query) == {}
    assert selected(query, [{}, {DESCRIPTION: element("LO", "x")}]) == [0, 1]


def test_filter_single_value_vm1_reads_the_first_value_mongomock_standin():
    query = parse_pairs([("StudyDescription", "Chest CT")])
    assert compile_query(query) == {"ds.00081030.Value.0": "Chest CT"}
    docs = [{DESCRIPTION: element("LO", "Chest CT")}, {DESCRIPTION: element("LO", "chest ct")},
            {DESCRIPTION: element("LO", "Knee", "Chest CT")},  # VM 1: a stray second value is not the value
            {}]
    assert selected(query, docs) == [0]


def test_filter_multi_valued_matches_any_value_mongomock_standin():
    query = parse_pairs([("ImageType", "DERIVED")])
    assert compile_query(query) == {"ds.00080008.Value": "DERIVED"}
    image_type = tag_key(0x00080008)
    docs = [{image_type: element("CS", "ORIGINAL", "DERIVED")}, {image_type: element("CS", "ORIGINAL")}, {}]
    assert selected(query, docs) == [0]


def test_filter_numbers_equal_numbers_only_mongomock_standin():
    query = parse_pairs([("InstanceNumber", "2")])
    assert compile_query(query) == {"ds.00200013.Value.0": 2}
    number = tag_key(0x00200013)
    docs = [{number: element("IS", 2)}, {number: element("IS", "2")},  # a malformed value kept as text
            {number: element("IS", 3)}, {number: element("IS", 2.0)}]
    assert selected(query, docs) == [0, 3]
    thickness = parse_pairs([("SliceThickness", "2.50")])
    assert compile_query(thickness) == {"ds.00180050.Value.0": 2.5}
    slice_thickness = tag_key(0x00180050)
    assert selected(thickness, [{slice_thickness: element("DS", 2.5)}, {slice_thickness: element("DS", "2.50")}]) == [0]


def test_filter_wildcard_is_an_anchored_dotall_regex_mongomock_standin():
    query = parse_pairs([("StudyDescription", "Chest C?*")])
    assert compile_query(query) == {"ds.00081030.Value.0": {"$regex": r"^Chest\ C..*" + END, "$options": "s"}}
    docs = [{DESCRIPTION: element("LO", "Chest CT")}, {DESCRIPTION: element("LO", "Chest C\nT")},
            {DESCRIPTION: element("LO", "chest CT")}, {DESCRIPTION: element("LO", "Chest C")},
            {DESCRIPTION: element("LO", "My Chest CT")}]
    assert selected(query, docs) == [0, 1]


def test_filter_wildcard_escapes_regex_characters_and_nul_mongomock_standin():
    query = parse_pairs([("StudyDescription", "a.(b*")])
    assert compile_query(query) == {"ds.00081030.Value.0": {"$regex": r"^a\.\(b.*" + END, "$options": "s"}}
    docs = [{DESCRIPTION: element("LO", "a.(bc")}, {DESCRIPTION: element("LO", "ax(bc")}]
    assert selected(query, docs) == [0]
    # MongoDB refuses a NUL byte in a pattern: it is written as an escape both engines read.
    assert mongo_regex("a\x00*") == r"^a\x00.*" + END


def test_filter_key_fields_read_the_indexed_top_level_field_mongomock_standin():
    query = parse_pairs([("PatientID", "P1\\P2"), ("Modality", "M*")])
    assert compile_query(query, KEY_FIELDS) == {"$and": [
        {"$or": [{"patient_id": "P1"}, {"patient_id": "P2"}]},
        {"modality": {"$regex": "^M.*" + END, "$options": "s", "$ne": ""}},
    ]}
    patient, modality = tag_key(0x00100020), tag_key(0x00080060)
    docs = [{patient: element("LO", "P1"), modality: element("CS", "MR")},
            {patient: element("LO", "P2"), modality: element("CS", "CT")},
            {patient: element("LO", "P3"), modality: element("CS", "MR")}]
    assert selected(query, docs, KEY_FIELDS) == [0]
    # A wildcard that matches the empty string must not select the '' of an absent value.
    anything = parse_pairs([("PatientID", "**")])
    assert selected(anything, [{patient: element("LO", "P1")}, {}], KEY_FIELDS) == [0]


def test_filter_person_name_one_group_matches_any_group_mongomock_standin():
    query = parse_pairs([("PatientName", "山田^太郎")])
    assert compile_query(query) == {"$or": [
        {"ds.00100010.Value.0.Alphabetic": "山田^太郎"},
        {"ds.00100010.Value.0.Ideographic": "山田^太郎"},
        {"ds.00100010.Value.0.Phonetic": "山田^太郎"},
    ]}
    docs = [{PATIENT_NAME: element("PN", name("Yamada^Tarou", "山田^太郎"))},
            {PATIENT_NAME: element("PN", name("山田^太郎"))},
            {PATIENT_NAME: element("PN", name("Yamada^Tarou"))}]
    assert selected(query, docs) == [0, 1]


def test_filter_person_name_groups_hold_within_one_value_mongomock_standin():
    query = parse_pairs([("PatientName", "Yamada^Tarou=山田^太郎")])
    assert compile_query(query) == {"ds.00100010.Value.0.Alphabetic": "Yamada^Tarou",
                                    "ds.00100010.Value.0.Ideographic": "山田^太郎"}
    docs = [{PATIENT_NAME: element("PN", name("Yamada^Tarou", "山田^太郎"))},
            {PATIENT_NAME: element("PN", name("Yamada^Tarou"))}]
    assert selected(query, docs) == [0]

    # Multi-valued: both groups in the same value, which takes $elemMatch.
    others = parse_pairs([("OtherPatientNames", "Yamada^Tarou=山田*")])
    assert compile_query(others) == {"ds.00101001.Value": {"$elemMatch": {
        "Alphabetic": {"$regex": r"^Yamada\^Tarou" + END, "$options": "s"},
        "Ideographic": {"$regex": "^山田.*" + END, "$options": "s"},
    }}}
    docs = [{OTHER_NAMES: element("PN", name("Yamada^Tarou", "山田^太郎"))},
            {OTHER_NAMES: element("PN", name("Yamada^Tarou"), name("Suzuki", "山田^花子"))}]  # groups split over values
    assert selected(others, docs) == [0]


def test_filter_person_name_groups_that_match_anything_are_left_out_mongomock_standin():
    # '**' matches any group, even an absent one ('' in matching): it constrains nothing.
    query = parse_pairs([("PatientName", "**=山田*")])
    assert compile_query(query) == {"ds.00100010.Value.0.Ideographic": {"$regex": "^山田.*" + END, "$options": "s"}}
    # No group constrained at all: any name value passes, an absent name does not.
    empty_groups = parse_pairs([("PatientName", "=")])
    assert compile_query(empty_groups) == {"ds.00100010.Value.0": {"$type": "object"}}
    docs = [{PATIENT_NAME: element("PN", name("Yamada^Tarou", "山田^太郎"))}, {PATIENT_NAME: element("PN")}, {},
            {PATIENT_NAME: element("PN", name(None, "山田^花子"))}]  # no alphabetic group: '**' still holds
    assert selected(query, docs) == [0, 3]
    assert selected(empty_groups, docs) == [0, 3]
    others = parse_pairs([("OtherPatientNames", "=")])
    assert compile_query(others) == {"ds.00101001.Value": {"$elemMatch": {"$type": "object"}}}
    assert selected(others, [{OTHER_NAMES: element("PN", name("A"))}, {OTHER_NAMES: element("PN")}]) == [0]


def test_filter_person_name_fold_case_mongomock_standin():
    fold = MatchOptions(fold_person_names=True)
    exact = parse_pairs([("PatientName", "alpha^ann")], fold)
    assert compile_query(exact) == {"$or": [
        {f"ds.00100010.Value.0.{group}": {"$regex": r"^alpha\^ann" + END, "$options": "i"}}
        for group in ("Alphabetic", "Ideographic", "Phonetic")
    ]}
    pattern = parse_pairs([("PatientName", "ÄNEAS*")], fold)
    assert compile_query(pattern)["$or"][0] == {
        "ds.00100010.Value.0.Alphabetic": {"$regex": "^ÄNEAS.*" + END, "$options": "si"}}
    docs = [{PATIENT_NAME: element("PN", name("Alpha^Ann"))}, {PATIENT_NAME: element("PN", name("ALPHA^ANN"))},
            {PATIENT_NAME: element("PN", name("Alpha^Annie"))}, {PATIENT_NAME: element("PN", name("Äneas^Rüdiger"))}]
    assert selected(exact, docs) == [0, 1]
    assert selected(pattern, docs) == [3]
    # Without the option, case counts.
    assert selected(parse_pairs([("PatientName", "alpha^ann")]), docs) == []


DATE = tag_key(0x00080020)


def test_filter_range_open_and_closed_mongomock_standin():
    docs = [{DATE: element("DA", "20221231")}, {DATE: element("DA", "20230101")}, {DATE: element("DA", "20231231")},
            {DATE: element("DA", "20240101")}, {DATE: element("DA", 20230505)},  # a number is not a date
            {}]
    since = parse_pairs([("StudyDate", "20230101-")])
    assert compile_query(since) == {"ds.00080020.Value.0": {"$type": "string", "$gte": "20230101"}}
    assert selected(since, docs) == [1, 2, 3]
    until = parse_pairs([("StudyDate", "-2023")])  # a reduced-precision bound covers its whole year
    assert compile_query(until) == {"ds.00080020.Value.0": {"$type": "string", "$lt": "2023~"}}
    assert selected(until, docs) == [0, 1, 2]
    closed = parse_pairs([("StudyDate", "20230101-20231231")])
    assert compile_query(closed) == {"ds.00080020.Value.0": {"$type": "string", "$gte": "20230101", "$lt": "20231231~"}}
    assert selected(closed, docs) == [1, 2]


def test_filter_range_on_multi_valued_holds_on_one_value_mongomock_standin():
    calibration = tag_key(0x00181200)  # Date of Last Calibration, VM 1-n
    query = parse_pairs([("DateOfLastCalibration", "2023-2024")])
    assert compile_query(query) == {"ds.00181200.Value": {"$elemMatch": {"$type": "string", "$gte": "2023", "$lt": "2024~"}}}
    docs = [{calibration: element("DA", "19990101", "20230505")},
            {calibration: element("DA", "20220101", "20250101")}]  # one value above the low, another below the high
    assert selected(query, docs) == [0]


def test_filter_list_of_values_mongomock_standin():
    query = parse_pairs([("StudyDescription", "Knee\\Chest*")])
    assert compile_query(query) == {"$or": [
        {"ds.00081030.Value.0": "Knee"},
        {"ds.00081030.Value.0": {"$regex": "^Chest.*" + END, "$options": "s"}},
    ]}
    docs = [{DESCRIPTION: element("LO", "Knee")}, {DESCRIPTION: element("LO", "Chest CT")}, {DESCRIPTION: element("LO", "Head")}]
    assert selected(query, docs) == [0, 1]


def _code(value: str, scheme: str) -> dict[str, Any]:
    return {tag_key(0x00080100): element("SH", value), tag_key(0x00080102): element("SH", scheme)}


def test_filter_sequence_item_conditions_hold_in_one_item_mongomock_standin():
    item = parse_pairs([("CodeValue", "A1"), ("CodingSchemeDesignator", "X")])
    query = Query((SequenceMatch(0x00081032, "SQ", item),))
    assert compile_query(query) == {"ds.00081032.Value": {"$elemMatch": {"$and": [
        {"00080100.Value.0": "A1"}, {"00080102.Value.0": "X"}]}}}
    procedure = tag_key(0x00081032)
    docs = [{procedure: element("SQ", _code("B2", "Y"), _code("A1", "X"))},
            {procedure: element("SQ", _code("A1", "Y"), _code("B2", "X"))},  # both keys, never in one item
            {procedure: element("SQ")}]
    assert selected(query, docs) == [0]
    # An item without constraints: any item will do.
    anything = Query((SequenceMatch(0x00081032, "SQ", parse_pairs([("CodeValue", "")])),))
    assert compile_query(anything) == {"ds.00081032.Value": {"$elemMatch": {"$type": "object"}}}
    assert selected(anything, docs) == [0, 1]


TIME = tag_key(0x00080030)


def test_filter_date_time_range_is_one_interval_mongomock_standin():
    query = parse_pairs([("StudyDate", "20230101-20230102"), ("StudyTime", "1200-13")],
                        MatchOptions(combine_datetime=True))
    date, time = "ds.00080020.Value.0", "ds.00080030.Value.0"
    assert compile_query(query) == {"$and": [
        {date: {"$type": "string", "$gte": "20230101", "$lt": "20230102~"}},
        {"$or": [{date: {"$ne": "20230101"}}, {time: {"$gte": "1200"}}]},
        {"$nor": [{date: "20230102", time: {"$gte": "13~"}}]},
    ]}

    def at(day: str, clock: str | None = None) -> dict[str, Any]:
        return {DATE: element("DA", day), **({TIME: element("TM", clock)} if clock else {})}

    docs = [at("20230101", "1159"), at("20230101", "1200"), at("20230101"),       # before the start; start; no time
            at("20230101", "2300"), at("20230102", "0100"),                       # the night in between
            at("20230102", "135959"), at("20230102", "1400"), at("20230102"),     # 13 covers 13:59:59; after; no time
            at("20221231", "2359"), at("20230103", "0000")]
    assert selected(query, docs) == [1, 3, 4, 5, 7]


def test_filter_date_time_range_open_ended_mongomock_standin():
    query = parse_pairs([("StudyDate", "20230102-"), ("StudyTime", "0800-")], MatchOptions(combine_datetime=True))
    assert compile_query(query) == {"$and": [
        {"ds.00080020.Value.0": {"$type": "string", "$gte": "20230102"}},
        {"$or": [{"ds.00080020.Value.0": {"$ne": "20230102"}}, {"ds.00080030.Value.0": {"$gte": "0800"}}]},
    ]}
    docs = [{DATE: element("DA", "20230102"), TIME: element("TM", "0759")},
            {DATE: element("DA", "20230102"), TIME: element("TM", "0800")},
            {DATE: element("DA", "20230103")}]
    assert selected(query, docs) == [1, 2]


def test_filter_private_tag_matches_any_value_mongomock_standin():
    private = tag_key(0x00291010)
    docs = [{private: element("LO", "cohort-7", "arm-B")}, {private: element("LO", "arm-C")}, {}]
    exact = parse_pairs([("00291010", "arm-B")])
    assert compile_query(exact) == {"ds.00291010.Value": "arm-B"}
    assert selected(exact, docs) == [0]
    pattern = parse_pairs([("(0029,1010)", "*-?")])
    assert compile_query(pattern) == {"ds.00291010.Value": {"$regex": r"^.*\-." + END, "$options": "s"}}
    assert selected(pattern, docs) == [0, 1]


def test_filter_either_is_a_disjunction_of_queries_mongomock_standin():
    base = parse_pairs([("StudyDescription", "C*")])
    either = base.and_any_of([parse_pairs([("ImageType", "DERIVED")]), parse_pairs([("InstanceNumber", "1")])])
    assert compile_query(either) == {"$and": [
        {"ds.00081030.Value.0": {"$regex": "^C.*" + END, "$options": "s"}},
        {"$or": [{"ds.00080008.Value": "DERIVED"}, {"ds.00200013.Value.0": 1}]},
    ]}
    image_type, number = tag_key(0x00080008), tag_key(0x00200013)
    docs = [{DESCRIPTION: element("LO", "CT"), image_type: element("CS", "ORIGINAL", "DERIVED")},
            {DESCRIPTION: element("LO", "CT"), number: element("IS", 1)},
            {DESCRIPTION: element("LO", "CT"), number: element("IS", 2)},
            {DESCRIPTION: element("LO", "MR"), number: element("IS", 1)}]
    assert selected(either, docs) == [0, 1]
    nothing = base.and_any_of([])
    assert compile_query(nothing) == {"$and": [{"ds.00081030.Value.0": {"$regex": "^C.*" + END, "$options": "s"}}, NOTHING]}
    assert selected(nothing, docs) == []
    # An alternative without constraints lets everything through.
    assert compile_query(Query().and_any_of([Query(), parse_pairs([("InstanceNumber", "1")])])) == {}


@pytest.mark.parametrize("text", ["Äneas^Rüdiger", "Διονυσιος", "ÉCOLE^é", "straße"])
def test_filter_fold_case_agrees_with_str_lower_mongomock_standin(text):
    """The 'i' regex option against matching.fold (str.lower) on the scripts our test files carry."""
    fold = MatchOptions(fold_person_names=True)
    docs = [{PATIENT_NAME: element("PN", name(variant))} for variant in (text, text.lower(), text.upper(), "other")]
    for query_text in (text, text.lower(), text.upper()):
        hits = selected(parse_pairs([("PatientName", query_text)], fold), docs)
        assert 3 not in hits and hits


# ------------------------------------------------------------------------------ connecting (no stand-in)


def test_connect_names_the_uri_when_no_server_answers():
    """No server listens on the port: a clear error within the timeout, naming the URI without its password."""
    import socket
    import time

    from dopamine_py.storage.mongodb import MongoBackend, MongoUnavailable

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    started = time.monotonic()
    with pytest.raises(MongoUnavailable) as caught:
        MongoBackend.connect(f"mongodb://lab:secret@127.0.0.1:{port}/", "dopamine", [], timeout_ms=1000)
    assert time.monotonic() - started < 10
    assert f"mongodb://lab:***@127.0.0.1:{port}/" in str(caught.value) and "secret" not in str(caught.value)
    assert isinstance(caught.value, OSError)
    with pytest.raises(MongoUnavailable, match="invalid MongoDB URI"):
        MongoBackend.connect("mongodb://[bad", "dopamine", [])


# --------------------------------------------------------------- originals in GridFS (on the stand-in)


def _big_instance(uid: str, fill: int):
    """A record and original bytes too large to sit inline in a 16 MiB document."""
    import hashlib

    from dopamine_py.storage.base import InstanceRecord, Original

    data = bytes([fill]) * (17 * 1024 * 1024)
    record = InstanceRecord(uid, "1.2.840.10008.5.1.4.1.1.4", "1.2.3", "1.2.3.4", "P1", "MR", "1.2.840.10008.1.2.1",
                            {tag_key(0x00080018): element("UI", uid)}, len(data), hashlib.sha256(data).hexdigest(), "now")
    return record, Original(data=data)


@pytest.fixture
def standin_backend():
    from dopamine_py.storage.mongodb import MongoBackend

    client = mongomock.MongoClient()
    yield MongoBackend(client.db, [])
    client.close()


def _gridfs_files(backend) -> int:
    return backend.database["originals.files"].count_documents({})


def test_store_failing_after_gridfs_upload_leaves_no_orphan_mongomock_standin(standin_backend, monkeypatch):
    from pymongo.errors import WriteError

    from dopamine_py.storage.base import DuplicatePolicy, StorageFull

    def refuse(document, *args, **kwargs):
        raise WriteError("No space left on device", code=14031)

    monkeypatch.setattr(standin_backend._instances, "insert_one", refuse)
    record, original = _big_instance("1.9.1", 1)
    with pytest.raises(StorageFull, match="1.9.1"):
        standin_backend.put(record, original, DuplicatePolicy.KEEP_FIRST)
    assert _gridfs_files(standin_backend) == 0
    assert standin_backend.database["originals.chunks"].count_documents({}) == 0
    assert standin_backend.get_document("1.9.1") is None


def test_store_duplicates_of_gridfs_originals_keep_every_version_mongomock_standin(standin_backend):
    from dopamine_py.storage.base import DuplicatePolicy, PutOutcome

    first, first_bytes = _big_instance("1.9.2", 1)
    second, second_bytes = _big_instance("1.9.2", 2)
    third, third_bytes = _big_instance("1.9.2", 3)
    assert standin_backend.put(first, first_bytes, DuplicatePolicy.REPLACE) == PutOutcome.STORED
    assert standin_backend.storage_of("1.9.2") == "gridfs"
    assert standin_backend.put(first, first_bytes, DuplicatePolicy.REPLACE) == PutOutcome.IDENTICAL_DUPLICATE
    assert _gridfs_files(standin_backend) == 1  # nothing uploaded for an identical copy
    assert standin_backend.put(second, second_bytes, DuplicatePolicy.REJECT) == PutOutcome.REJECTED_DUPLICATE
    assert _gridfs_files(standin_backend) == 1
    assert standin_backend.put(second, second_bytes, DuplicatePolicy.REPLACE) == PutOutcome.REPLACED
    assert standin_backend.put(third, third_bytes, DuplicatePolicy.KEEP_FIRST) == PutOutcome.KEPT_FIRST
    with standin_backend.open_original("1.9.2") as f:
        assert f.read() == second_bytes.data
    versions = standin_backend.superseded_versions("1.9.2")
    assert [v["sha256"] for v in versions] == [first.sha256, third.sha256]
    assert [v["reason"] for v in versions] == ["replaced by a newer version (replace)", "duplicate kept aside (keep-first)"]
    assert _gridfs_files(standin_backend) == 3  # the current version and the two kept aside


def test_store_unconfirmed_by_the_majority_keeps_the_gridfs_file_it_names_mongomock_standin(standin_backend, monkeypatch):
    """A write concern error may follow an applied write: the original it names must stay."""
    from pymongo.errors import WriteConcernError

    from dopamine_py.storage.base import DuplicatePolicy

    insert = standin_backend._instances.insert_one

    def applied_then_unconfirmed(document, *args, **kwargs):
        insert(document)
        raise WriteConcernError("waiting for replication timed out", code=64)

    monkeypatch.setattr(standin_backend._instances, "insert_one", applied_then_unconfirmed)
    record, original = _big_instance("1.9.3", 1)
    with pytest.raises(OSError, match="majority"):
        standin_backend.put(record, original, DuplicatePolicy.KEEP_FIRST)
    with standin_backend.open_original("1.9.3") as f:
        assert f.read() == original.data
