"""Property tests: the in-memory evaluator and every backend select the same instances and groups.

Documents and queries are generated; each backend tier stores the documents and answers the queries
(instance level and study level, with paging). Any disagreement is a bug in one of the compilers.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from backends import TIERS, make_backend
from dopamine_py.document import tag_key
from dopamine_py.matching import MatchOptions, Query, SequenceMatch, parse_pairs
from dopamine_py.storage.base import DuplicatePolicy, InstanceRecord, Level, Original

# Characters chosen to trouble the compilers: GLOB's '[', regex metacharacters, non-ASCII, case pairs.
TEXT = st.text(alphabet="aAbBéÉ.[]^( ", min_size=1, max_size=5).map(str.strip).filter(bool)
DATES = st.sampled_from(["20200101", "20200615", "20201231", "20210101", "2020", "19991231"])
TIMES = st.sampled_from(["0800", "080000", "120000.5", "1230", "18", "235959"])


@st.composite
def documents(draw):
    doc = {
        tag_key(0x00100010): {"vr": "PN", "Value": [{"Alphabetic": draw(TEXT), **({"Ideographic": draw(TEXT)} if draw(st.booleans()) else {})}]},
        tag_key(0x00101001): {"vr": "PN", "Value": [{"Alphabetic": t} for t in draw(st.lists(TEXT, max_size=2))]},
        tag_key(0x00100020): {"vr": "LO", "Value": [draw(st.sampled_from(["P1", "P2", "p1"]))]},
        tag_key(0x00080060): {"vr": "CS", "Value": [draw(st.sampled_from(["CT", "MR", "PT"]))]},
        tag_key(0x00080008): {"vr": "CS", "Value": draw(st.lists(st.sampled_from(["ORIGINAL", "DERIVED", "AXIAL"]), max_size=3))},
        tag_key(0x00081030): {"vr": "LO", "Value": [draw(TEXT)]},
        tag_key(0x00200011): {"vr": "IS", "Value": [draw(st.integers(0, 3))]},
        tag_key(0x00280010): {"vr": "US", "Value": [draw(st.sampled_from([64, 128]))]},
        tag_key(0x00291010): {"vr": "LO", "Value": draw(st.lists(TEXT, max_size=2))},
        tag_key(0x00081032): {"vr": "SQ", "Value": [
            {tag_key(0x00080100): {"vr": "SH", "Value": [draw(st.sampled_from(["A1", "B2"]))]},
             tag_key(0x00080102): {"vr": "SH", "Value": [draw(st.sampled_from(["X", "Y"]))]}}
            for _ in range(draw(st.integers(0, 2)))]},
    }
    if draw(st.booleans()):
        doc[tag_key(0x00080020)] = {"vr": "DA", "Value": [draw(DATES)]}
    if draw(st.booleans()):
        doc[tag_key(0x00080030)] = {"vr": "TM", "Value": [draw(TIMES)]}
    for key in [k for k, v in doc.items() if v.get("Value") == []]:
        doc[key] = {"vr": doc[key]["vr"]}
    return doc


def _wildcard_of(text: str, draw) -> str:
    chars = list(text)
    i = draw(st.integers(0, len(chars) - 1))
    chars[i] = draw(st.sampled_from(["*", "?"]))
    return "".join(chars)


@st.composite
def query_pairs(draw, pool):
    """(key, value) pairs in DICOM query syntax, with values drawn from the stored documents."""
    doc = draw(st.sampled_from(pool))
    pairs = []
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["name", "name2", "other_names", "id", "modality", "type", "desc",
                                     "series", "rows", "private", "date", "datetime", "list"]))
        if kind in ("name", "name2"):
            name = doc[tag_key(0x00100010)]["Value"][0]
            text = name.get("Alphabetic") if kind == "name" or "Ideographic" not in name else "=" + name["Ideographic"]
            text = _wildcard_of(text, draw) if draw(st.booleans()) else text
            pairs.append(("PatientName", text))
        elif kind == "other_names":
            pairs.append(("OtherPatientNames", draw(TEXT)))
        elif kind == "id":
            pairs.append(("PatientID", draw(st.sampled_from(["P1", "P?", "p*", "P2"]))))
        elif kind == "modality":
            pairs.append(("Modality", draw(st.sampled_from(["CT", "MR", "C*", "CT\\PT"]))))
        elif kind == "type":
            pairs.append(("ImageType", draw(st.sampled_from(["DERIVED", "AX*", "ORIGINAL\\AXIAL"]))))
        elif kind == "desc":
            text = doc[tag_key(0x00081030)]["Value"][0]
            pairs.append(("StudyDescription", _wildcard_of(text, draw) if draw(st.booleans()) else text))
        elif kind == "series":
            pairs.append(("SeriesNumber", str(draw(st.integers(0, 3)))))
        elif kind == "rows":
            pairs.append(("Rows", draw(st.sampled_from(["64", "128"]))))
        elif kind == "private":
            pairs.append(("00291010", draw(TEXT)))
        elif kind == "date":
            low, high = draw(DATES), draw(DATES)
            pairs.append(("StudyDate", draw(st.sampled_from([f"{low}-", f"-{high}", f"{min(low, high)}-{max(low, high)}", low]))))
        elif kind == "datetime":
            low, high = sorted([draw(DATES), draw(DATES)])
            pairs.append(("StudyDate", f"{low}-{high}"))
            pairs.append(("StudyTime", f"{draw(TIMES)}-{draw(TIMES)}"))
        elif kind == "list":
            pairs.append(("PatientID", "P1\\p1"))
    return pairs


@st.composite
def cases(draw):
    pool = draw(st.lists(documents(), min_size=1, max_size=8))
    queries = []
    for _ in range(4):
        pairs = draw(query_pairs(pool))
        options = MatchOptions(fold_person_names=draw(st.booleans()), combine_datetime=draw(st.booleans()))
        query = parse_pairs(pairs, options)
        if draw(st.booleans()):
            item = parse_pairs([("CodeValue", draw(st.sampled_from(["A1", "B*"]))),
                                ("CodingSchemeDesignator", draw(st.sampled_from(["X", "Y", ""])))])
            query = Query(query.conditions + (SequenceMatch(0x00081032, "SQ", item),))
        if draw(st.booleans()):
            # Access constraints: OR-ed queries, possibly none (then nothing may match).
            alternatives = [parse_pairs(draw(query_pairs(pool))) for _ in range(draw(st.integers(0, 2)))]
            query = query.and_any_of(alternatives)
        queries.append(query)
    return pool, queries


def _store_all(backend, pool):
    uids = []
    for i, doc in enumerate(pool):
        uid = f"1.2.3.{i}"
        study = f"1.2.9.{i % 3}"
        doc = {**doc, tag_key(0x00080018): {"vr": "UI", "Value": [uid]}, tag_key(0x0020000D): {"vr": "UI", "Value": [study]}}
        pool[i] = doc
        record = InstanceRecord(
            sop_instance_uid=uid, sop_class_uid="1.2.840.10008.5.1.4.1.1.2", study_instance_uid=study,
            series_instance_uid=f"{study}.1", patient_id=doc[tag_key(0x00100020)]["Value"][0],
            modality=doc[tag_key(0x00080060)]["Value"][0], transfer_syntax_uid="1.2.840.10008.1.2.1",
            document=doc, size=4, sha256=hashlib.sha256(uid.encode()).hexdigest(), received_at="2026-01-01",
        )
        backend.put(record, Original(data=b"DICM"), DuplicatePolicy.KEEP_FIRST)
        uids.append(uid)
    return uids


@pytest.mark.parametrize("tier", TIERS)
def test_backends_agree_with_in_memory_matching(tier, tmp_path):
    @settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
    @given(cases())
    def check(case):
        pool, queries = case
        backend, dispose = make_backend(tier, tmp_path)
        try:
            _store_all(backend, pool)
            for query in queries:
                expected = sorted(d[tag_key(0x00080018)]["Value"][0] for d in pool if query.matches(d))
                got = [i.sop_instance_uid for i in backend.instances(query)]
                assert sorted(got) == expected, f"{tier} disagrees on {query}"
                # Study level: the groups and their counts, and a page of them.
                by_study = defaultdict(int)
                for d in pool:
                    if query.matches(d):
                        by_study[d[tag_key(0x0020000D)]["Value"][0]] += 1
                found = backend.find(Level.STUDY, query)
                assert [(f.document[tag_key(0x0020000D)]["Value"][0], f.instances) for f in found] == sorted(by_study.items())
                assert backend.count(Level.STUDY, query) == len(by_study)
                page = backend.find(Level.STUDY, query, limit=1, offset=1)
                assert [f.document[tag_key(0x0020000D)]["Value"][0] for f in page] == sorted(by_study)[1:2]
        finally:
            dispose()

    check()
