"""Decision.restrict on real queries over real stored instances: evaluated in memory and by each backend,
with the same answers, and with counts and paging that never reveal hidden data. Decision.permits for Store."""

from __future__ import annotations

import pytest

from acl.decision import decide
from acl.model import Identity, Principal, Rule, Service, parse_constraints
from dopamine_py.archive import ArchiveService, Source, computed_attributes
from dopamine_py.document import first_value, to_document
from dopamine_py.matching import parse_pairs
from dopamine_py.storage.base import Level
from factory import encode, make_dataset

ALICE = Identity("alice", frozenset({"radiology"}), protocol="dicomweb", method="password")
BOB = Identity("bob", frozenset(), protocol="dicomweb", method="password")
STUDY_A, STUDY_B, STUDY_C = "1.2.826.0.1.3680043.99.1", "1.2.826.0.1.3680043.99.2", "1.2.826.0.1.3680043.99.3"

RULES = [
    Rule(1, Principal.parse("user:alice"), Service.QUERY, parse_constraints(["Modality=MR"])),
    Rule(2, Principal.parse("group:radiology"), Service.QUERY, parse_constraints(["PatientID=P3"])),
    Rule(3, Principal.parse("user:bob"), Service.QUERY, parse_constraints(["PatientName=Doe^*"])),
    Rule(4, Principal.parse("user:alice"), Service.RETRIEVE, parse_constraints(["Modality=MR"])),
]


@pytest.fixture
def stored(archive: ArchiveService):
    """Three studies: A (P1, CT series of 2 and MR series of 1), B (P2, MR), C (P3, CT)."""
    instances = [
        dict(patient_id="P1", patient_name="Doe^Jane", study_uid=STUDY_A, series_uid=STUDY_A + ".1", modality="CT", InstanceNumber=1),
        dict(patient_id="P1", patient_name="Doe^Jane", study_uid=STUDY_A, series_uid=STUDY_A + ".1", modality="CT", InstanceNumber=2),
        dict(patient_id="P1", patient_name="Doe^Jane", study_uid=STUDY_A, series_uid=STUDY_A + ".2", modality="MR"),
        dict(patient_id="P2", patient_name="Roe^John", study_uid=STUDY_B, modality="MR"),
        dict(patient_id="P3", patient_name="Poe^Edgar", study_uid=STUDY_C, modality="CT", StudyDate="20190101"),
    ]
    documents = []
    for attributes in instances:
        ds = make_dataset(**attributes)
        result = archive.store_bytes(encode(ds), Source("import"))
        assert result.status == "stored", result.reason
        documents.append(to_document(ds))
    return archive, documents


def _uids(docs) -> set[str]:
    return {first_value(d, 0x00080018) for d in docs}


@pytest.mark.parametrize("identity, query_pairs", [
    (ALICE, []),
    (ALICE, [("PatientID", "P1")]),
    (ALICE, [("StudyDate", "2020-")]),
    (BOB, []),
    (BOB, [("Modality", "MR")]),
])
def test_restricted_query_gives_the_same_instances_in_memory_and_in_the_backend(stored, identity, query_pairs):
    archive, documents = stored
    decision = decide(RULES, identity, Service.QUERY)
    restricted = decision.restrict(parse_pairs(query_pairs))
    in_memory = _uids(d for d in documents if restricted.matches(d))
    in_backend = {i.sop_instance_uid for i in archive.instances(restricted)}
    assert in_backend == in_memory
    # and each visible instance is one the decision permits, each hidden one not
    for d in documents:
        assert (first_value(d, 0x00080018) in in_backend) == (parse_pairs(query_pairs).matches(d) and decision.permits(d))


def test_study_level_answers_count_only_what_the_user_may_see(stored):
    archive, _ = stored
    decision = decide(RULES, ALICE, Service.QUERY)
    found = archive.find(Level.STUDY, decision.restrict(parse_pairs([])))
    by_study = {first_value(f.document, 0x0020000D): f for f in found}
    assert set(by_study) == {STUDY_A, STUDY_B, STUDY_C}  # A and B for their MR, C through the group rule
    study_a = computed_attributes(by_study[STUDY_A], Level.STUDY)
    # Study A has 3 instances in 2 series, but only its MR series is visible: the counts must not tell.
    assert study_a["00201208"]["Value"] == [1]
    assert study_a["00201206"]["Value"] == [1]
    assert study_a["00080061"]["Value"] == ["MR"]
    assert archive.count(Level.STUDY, decision.restrict(parse_pairs([]))) == 3


def test_paging_runs_over_the_visible_groups_only(stored):
    archive, _ = stored
    decision = decide(RULES, BOB, Service.QUERY)  # Doe^*: study A only
    query = decision.restrict(parse_pairs([]))
    assert archive.count(Level.SERIES, query) == 2
    first = archive.find(Level.SERIES, query, limit=1, offset=0)
    second = archive.find(Level.SERIES, query, limit=1, offset=1)
    third = archive.find(Level.SERIES, query, limit=1, offset=2)
    assert len(first) == len(second) == 1 and third == []
    seen = {first_value(f.document, 0x0020000E) for f in first + second}
    assert seen == {STUDY_A + ".1", STUDY_A + ".2"}
    assert archive.count(Level.PATIENT, query) == 1


def test_retrieve_of_a_whole_study_yields_only_the_permitted_instances(stored):
    archive, documents = stored
    decision = decide(RULES, ALICE, Service.RETRIEVE)
    got = list(archive.instances(decision.restrict(parse_pairs([("StudyInstanceUID", STUDY_A)]))))
    assert [i.series_instance_uid for i in got] == [STUDY_A + ".2"]
    # study C is visible to Alice's group for Query, not for Retrieve
    assert list(archive.instances(decision.restrict(parse_pairs([("StudyInstanceUID", STUDY_C)])))) == []


def test_a_denied_decision_restricts_to_nothing(stored):
    archive, documents = stored
    nobody = Identity(None, protocol="dicomweb")
    decision = decide(RULES, nobody, Service.QUERY)
    assert not decision.allowed
    query = decision.restrict(parse_pairs([]))
    assert not any(query.matches(d) for d in documents)
    assert list(archive.instances(query)) == []
    assert archive.count(Level.STUDY, query) == 0
    assert archive.find(Level.PATIENT, query) == []


def test_store_permits_only_data_sets_matching_a_rule():
    rules = [Rule(1, Principal.parse("aet:SCANNER1@10.0.0.5"), Service.STORE, parse_constraints(["PatientID=LAB*"])),
             Rule(2, Principal.parse("aet:SCANNER1@10.0.0.5"), Service.STORE, parse_constraints(["Modality=MR"]))]
    scanner = Identity(None, calling_aet="SCANNER1", peer_host="10.0.0.5", protocol="dimse")
    decision = decide(rules, scanner, Service.STORE)
    assert decision.permits(to_document(make_dataset(patient_id="LAB12", modality="CT")))
    assert decision.permits(to_document(make_dataset(patient_id="HOSP1", modality="MR")))
    assert not decision.permits(to_document(make_dataset(patient_id="HOSP1", modality="CT")))
