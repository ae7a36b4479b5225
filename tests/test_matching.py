"""The matching engine's parsing and in-memory semantics (PS3.4 C.2.2.2), on documents."""

from __future__ import annotations

import pytest
from pydicom.dataset import Dataset

from dopamine_py.document import tag_key
from dopamine_py.matching import (
    AnyOf,
    DateTimeRange,
    MatchOptions,
    QueryError,
    Range,
    SequenceMatch,
    Single,
    Universal,
    Wildcard,
    parse_condition,
    parse_identifier,
    parse_pairs,
)

DOC = {
    tag_key(0x00100010): {"vr": "PN", "Value": [{"Alphabetic": "Yamada^Tarou", "Ideographic": "山田^太郎"}]},
    tag_key(0x00100020): {"vr": "LO", "Value": ["ID-42"]},
    tag_key(0x00080020): {"vr": "DA", "Value": ["20240615"]},
    tag_key(0x00080030): {"vr": "TM", "Value": ["143000"]},
    tag_key(0x00080060): {"vr": "CS", "Value": ["MR"]},
    tag_key(0x00080008): {"vr": "CS", "Value": ["ORIGINAL", "PRIMARY", "M"]},
    tag_key(0x00180050): {"vr": "DS", "Value": [1.5]},
    tag_key(0x00081030): {"vr": "LO", "Value": ["Brain [contrast] 3.0T"]},
}


def matches(pairs, **options):
    return parse_pairs(pairs, MatchOptions(**options)).matches(DOC)


@pytest.mark.parametrize("value, kind", [
    ("", Universal), ("*", Universal), ("Doe", Single), ("Do*", Wildcard), ("D?e", Wildcard),
    ("Doe\\Roe", AnyOf),
])
def test_value_kinds(value, kind):
    assert isinstance(parse_condition("PatientID", value), kind)


def test_ranges_parse_with_open_ends():
    assert parse_condition("StudyDate", "20240101-") == Range(0x00080020, "DA", "20240101", None)
    assert parse_condition("StudyDate", "-20240101") == Range(0x00080020, "DA", None, "20240101")
    assert parse_condition("AcquisitionDateTime", "20240101120000-0500-20240102").low == "20240101120000-0500"


@pytest.mark.parametrize("key, value, message", [
    ("NoSuchKeyword", "x", "unknown attribute"),
    ("StudyDate", "2024-13", "not a valid DA range"),
    ("StudyDate", "yesterday", "not a valid DA value"),
    ("StudyDate", "2024*", "wildcards are not allowed for VR DA"),
    ("Rows", "many", "not a number"),
    ("StudyInstanceUID", "1.2.*", "wildcards are not allowed for VR UI"),
    ("PatientName", "a=b=c=d", "at most 3 component groups"),
])
def test_bad_queries_say_what_is_wrong(key, value, message):
    with pytest.raises(QueryError, match=message):
        parse_condition(key, value)


def test_single_wildcard_and_list_matching():
    assert matches([("PatientID", "ID-42")])
    assert not matches([("PatientID", "id-42")])
    assert matches([("PatientID", "ID-*")]) and matches([("PatientID", "??-42")]) and not matches([("PatientID", "?-42")])
    assert matches([("Modality", "CT\\MR")])
    assert matches([("StudyDescription", "Brain [contrast]*")])  # brackets are literal
    assert matches([("ImageType", "PRIMARY")])                     # any value of a multi-valued attribute
    assert matches([("SliceThickness", "1.50")]) and not matches([("SliceThickness", "2")])


def test_person_names_by_group_and_case():
    assert matches([("PatientName", "Yamada*")])
    assert matches([("PatientName", "山田*")])                     # one group matches any group
    assert matches([("PatientName", "Yamada^Tarou=山田^太郎")])
    assert not matches([("PatientName", "Yamada^Tarou=山本*")])
    assert not matches([("PatientName", "yamada*")])
    assert matches([("PatientName", "yamada*")], fold_person_names=True)


def test_date_and_time_ranges():
    assert matches([("StudyDate", "20240601-20240630")])
    assert matches([("StudyDate", "-2024")])                       # upper bound covers its whole year
    assert not matches([("StudyDate", "2025-")])
    assert matches([("StudyTime", "14-")]) and matches([("StudyTime", "-1430")])
    assert not matches([("StudyTime", "-1429")])


def test_combined_date_time_is_one_interval():
    pairs = [("StudyDate", "20240614-20240615"), ("StudyTime", "1500-1400")]
    # Separately: the time 14:30 is not within 15:00-14:00. Combined: 2024-06-14 15:00 to 2024-06-15 14:00.
    assert not matches(pairs)
    combined = parse_pairs(pairs, MatchOptions(combine_datetime=True))
    assert isinstance(combined.conditions[0], DateTimeRange)
    assert not combined.matches(DOC)                                   # 14:30 on the 15th is after 14:00
    later = parse_pairs([("StudyDate", "20240614-20240615"), ("StudyTime", "1500-1500")], MatchOptions(combine_datetime=True))
    assert later.matches(DOC)


def test_identifier_from_a_c_find_request():
    identifier = Dataset()
    identifier.QueryRetrieveLevel = "STUDY"
    identifier.PatientName = "Yamada*"
    identifier.StudyDate = ""
    item = Dataset()
    item.CodeValue = "X1"
    identifier.ProcedureCodeSequence = [item]
    query = parse_identifier(identifier)
    kinds = {c.tag: type(c) for c in query.conditions}
    assert kinds == {0x00100010: Wildcard, 0x00080020: Universal, 0x00081032: SequenceMatch}
    assert 0x00080052 not in query.return_tags


def test_either_is_a_disjunction_of_whole_queries():
    base = parse_pairs([("Modality", "MR")])
    assert base.and_any_of([parse_pairs([("PatientID", "nobody")]), parse_pairs([("PatientName", "Yamada*")])]).matches(DOC)
    assert not base.and_any_of([parse_pairs([("PatientID", "nobody")])]).matches(DOC)
    assert not base.and_any_of([]).matches(DOC)   # no rule allows: nothing matches
