"""Property tests of the level queries (patient, study, series) against an in-memory model, on every backend tier.

The embedded store answers these from its summaries (one row per series and distinct patient, study and
series attributes) whenever every condition is on those attributes, and from the instances otherwise.
Here the instances of a series often agree, as in real data, and sometimes disagree (a PatientName or a
Modality differs within a series); instances are replaced and deleted after they are stored. Every answer
must be the in-memory one: the groups, the instance of the group that came first, the counts, the
modalities and SOP classes, a page, and ModalitiesInStudy-like ``having`` conditions.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from backends import TIERS, make_backend
from dopamine_py.document import first_value, tag_key
from dopamine_py.matching import MatchOptions, Query, parse_pairs
from dopamine_py.storage.base import DuplicatePolicy, InstanceRecord, Level, Original

NAMES = ["Doe^Jane", "Doe^John", "doe^jane", "Roe^Ann"]
CLASSES = ["1.2.840.10008.5.1.4.1.1.2", "1.2.840.10008.5.1.4.1.1.4"]
LEVEL_TAG = {Level.PATIENT: 0x00100020, Level.STUDY: 0x0020000D, Level.SERIES: 0x0020000E}


def element(vr, *values):
    return {"vr": vr, "Value": list(values)} if values else {"vr": vr}


@st.composite
def instances(draw):
    """Instances of up to 3 studies of 2 series; attributes mostly shared by a study (or series), sometimes not."""
    studies = [{"name": draw(st.sampled_from(NAMES)), "id": draw(st.sampled_from(["P1", "P2"])),
                "desc": draw(st.sampled_from(["CT CHEST", "MR HEAD", ""]))} for _ in range(3)]
    modalities = {(s, r): draw(st.sampled_from(["CT", "MR", ""])) for s in range(3) for r in range(2)}
    out = []
    for n in range(draw(st.integers(1, 10))):
        s, r = draw(st.integers(0, 2)), draw(st.integers(0, 1))
        study = studies[s]
        odd = draw(st.sampled_from([None, None, None, "name", "modality", "class"]))
        modality = draw(st.sampled_from(["CT", "MR"])) if odd == "modality" else modalities[(s, r)]
        doc = {
            tag_key(0x00080016): element("UI", CLASSES[1] if odd == "class" else CLASSES[0]),
            tag_key(0x00080018): element("UI", f"1.2.3.{n}"),
            tag_key(0x00080060): element("CS", *([modality] if modality else [])),
            tag_key(0x00081030): element("LO", *([study["desc"]] if study["desc"] else [])),
            tag_key(0x00100010): element("PN", {"Alphabetic": draw(st.sampled_from(NAMES)) if odd == "name" else study["name"]}),
            tag_key(0x00100020): element("LO", study["id"]),
            tag_key(0x0020000D): element("UI", f"1.2.9.{s}"),
            tag_key(0x0020000E): element("UI", f"1.2.9.{s}.{r}"),
            tag_key(0x00200013): element("IS", draw(st.integers(1, 3))),  # an instance attribute
        }
        out.append(doc)
    return out


def _document(n, study, series, name, modality):
    return {
        tag_key(0x00080016): element("UI", CLASSES[0]),
        tag_key(0x00080018): element("UI", f"1.2.3.{n}"),
        tag_key(0x00080060): element("CS", modality),
        tag_key(0x00081030): element("LO", ["CT CHEST", "MR HEAD"][study % 2]),
        tag_key(0x00100010): element("PN", {"Alphabetic": name}),
        tag_key(0x00100020): element("LO", f"P{study % 2 + 1}"),
        tag_key(0x0020000D): element("UI", f"1.2.9.{study}"),
        tag_key(0x0020000E): element("UI", f"1.2.9.{study}.{series}"),
    }


@st.composite
def changes(draw, count):
    """Replacements (another PatientName or Modality) and deletions of stored instances, in order."""
    out = []
    for _ in range(draw(st.integers(0, 3))):
        n = draw(st.integers(0, count - 1))
        kind = draw(st.sampled_from(["rename", "remodality", "delete"]))
        out.append((kind, n, draw(st.sampled_from(NAMES)) if kind == "rename" else draw(st.sampled_from(["CT", "MR"]))))
    return out


def conditions(draw):
    pairs = []
    for _ in range(draw(st.integers(1, 2))):
        kind = draw(st.sampled_from(["name", "id", "desc", "modality", "class", "number", "study"]))
        if kind == "name":
            pairs.append(("PatientName", draw(st.sampled_from(["Doe^Jane", "*oe*", "Doe*", "*Ann", "?oe^J*"]))))
        elif kind == "id":
            pairs.append(("PatientID", draw(st.sampled_from(["P1", "P*", "P2\\P1"]))))
        elif kind == "desc":
            pairs.append(("StudyDescription", draw(st.sampled_from(["CT*", "*HEAD", ""]))))
        elif kind == "modality":
            pairs.append(("Modality", draw(st.sampled_from(["CT", "MR", "CT\\MR"]))))
        elif kind == "class":
            pairs.append(("SOPClassUID", draw(st.sampled_from(CLASSES))))
        elif kind == "number":
            pairs.append(("InstanceNumber", str(draw(st.integers(1, 3)))))
        else:
            pairs.append(("StudyInstanceUID", f"1.2.9.{draw(st.integers(0, 2))}"))
    return pairs


@st.composite
def queries(draw):
    options = MatchOptions(fold_person_names=draw(st.booleans()))
    query = parse_pairs(conditions(draw), options)
    if draw(st.booleans()):
        # Access constraints, AND-ed as Decision.restrict does: on summary attributes or not.
        query = query.and_any_of([parse_pairs(conditions(draw)) for _ in range(draw(st.integers(0, 2)))])
    having = None
    if draw(st.booleans()):
        having = parse_pairs([("Modality", draw(st.sampled_from(["CT", "MR"])))])
        if draw(st.booleans()):
            having = having.and_any_of([parse_pairs(conditions(draw))])
    return query, having


def _record(doc, version):
    uid = first_value(doc, 0x00080018)
    return InstanceRecord(
        sop_instance_uid=uid, sop_class_uid=first_value(doc, 0x00080016), study_instance_uid=first_value(doc, 0x0020000D),
        series_instance_uid=first_value(doc, 0x0020000E), patient_id=first_value(doc, 0x00100020),
        modality=first_value(doc, 0x00080060) or "", transfer_syntax_uid="1.2.840.10008.1.2.1", document=doc,
        size=4, sha256=hashlib.sha256(f"{uid}/{version}".encode()).hexdigest(), received_at="2026-01-01",
    )


def _apply(backend, docs, changes_):
    """Store, then change; the stored instances in arrival order (a replaced instance arrives anew)."""
    stored = []
    for doc in docs:
        backend.put(_record(doc, 0), Original(data=b"DICM"), DuplicatePolicy.KEEP_FIRST)
        stored.append(doc)
    for version, (kind, n, value) in enumerate(changes_, 1):
        uid = first_value(docs[n], 0x00080018)
        current = next((d for d in stored if first_value(d, 0x00080018) == uid), None)
        if kind == "delete":
            assert backend.delete_instance(uid) == (current is not None)
            stored = [d for d in stored if d is not current]
            continue
        if current is None:
            continue
        if kind == "rename":
            new = {**current, tag_key(0x00100010): element("PN", {"Alphabetic": value})}
        else:
            new = {**current, tag_key(0x00080060): element("CS", value)}
        backend.put(_record(new, version), Original(data=b"DICM"), DuplicatePolicy.REPLACE)
        stored = [d for d in stored if d is not current] + [new]
    return stored


def _expected(stored, level, query, having):
    key_of = lambda d: first_value(d, LEVEL_TAG[level])  # noqa: E731
    allowed = None if having is None else {key_of(d) for d in stored if having.matches(d)}
    groups = defaultdict(list)
    for d in stored:
        if query.matches(d) and (allowed is None or key_of(d) in allowed):
            groups[key_of(d)].append(d)
    return [
        (key, first_value(members[0], 0x00080018), len(members),
         len({first_value(d, 0x0020000E) for d in members}), len({first_value(d, 0x0020000D) for d in members}),
         sorted({first_value(d, 0x00080060) for d in members} - {None}),
         sorted({first_value(d, 0x00080016) for d in members}))
        for key, members in sorted(groups.items())
    ]


@pytest.mark.parametrize("tier", TIERS)
def test_level_queries_agree_with_the_model(tier, tmp_path):
    @settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
    @given(st.data())
    def check(data):
        docs = data.draw(instances())
        changes_ = data.draw(changes(len(docs)))
        backend, dispose = make_backend(tier, tmp_path)
        try:
            stored = _apply(backend, docs, changes_)
            for _ in range(3):
                query, having = data.draw(queries())
                level = data.draw(st.sampled_from([Level.PATIENT, Level.STUDY, Level.SERIES]))
                expected = _expected(stored, level, query, having)
                found = backend.find(level, query, having)
                got = [(first_value(f.document, LEVEL_TAG[level]), first_value(f.document, 0x00080018), f.instances,
                        f.series, f.studies, f.modalities, f.sop_classes) for f in found]
                assert got == expected, f"{tier} disagrees at {level.value} on {query} having {having}"
                assert backend.count(level, query, having) == len(expected)
                page = backend.find(level, query, having, limit=1, offset=1)
                assert [first_value(f.document, LEVEL_TAG[level]) for f in page] == [e[0] for e in expected[1:2]]
                uids = sorted(i.sop_instance_uid for i in backend.instances(query))
                assert uids == sorted(first_value(d, 0x00080018) for d in stored if query.matches(d))
        finally:
            dispose()

    check()



def test_a_store_made_before_the_summaries_gets_them_and_answers_alike(tmp_path):
    """An embedded store from before the summaries (no table, no column, indexes on the instances) is
    given its summaries when opened, and answers every level query as before."""
    import sqlite3

    from dopamine_py.storage.sqlite import SQLiteBackend

    docs = [_document(n, study=n % 3, series=n % 2, name=NAMES[n % 4], modality="CT" if n % 5 else "MR") for n in range(12)]
    backend = SQLiteBackend(tmp_path / "store", ["PatientName", "StudyDescription"])
    stored = _apply(backend, docs, [])
    backend.close()
    with sqlite3.connect(tmp_path / "store" / "dopamine.sqlite") as conn:
        conn.executescript("""
            DROP INDEX instances_summary; ALTER TABLE instances DROP COLUMN summary_id; DROP TABLE summaries;
            CREATE INDEX instances_patient ON instances(patient_id);
            CREATE INDEX attr_00081030 ON instances(json_extract(doc, '$."00081030".Value[0]'));
        """)
    backend = SQLiteBackend(tmp_path / "store", ["PatientName", "StudyDescription"])
    try:
        for level in LEVEL_TAG:
            for pairs in ([("PatientName", "*oe*")], [("StudyDescription", "CT*")], [("PatientID", "P1")], []):
                query = parse_pairs(pairs)
                found = [(first_value(f.document, LEVEL_TAG[level]), first_value(f.document, 0x00080018), f.instances,
                          f.series, f.studies, f.modalities, f.sop_classes) for f in backend.find(level, query)]
                assert found == _expected(stored, level, query, None)
        indexes = {row[0] for row in backend._read("SELECT name FROM sqlite_master WHERE tbl_name = 'instances' AND type = 'index'")}
        assert not indexes & {"instances_patient", "attr_00081030"}
    finally:
        backend.close()
