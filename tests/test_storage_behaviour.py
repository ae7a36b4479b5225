"""Storage behaviour, the same for every backend tier (see tests/backends.py)."""

from __future__ import annotations


import numpy as np
import pytest
from pydicom.data import get_charset_files, get_testdata_file
from pydicom.uid import generate_uid

from dopamine_py.archive import DUPLICATE_SOP_INSTANCE, Source
from dopamine_py.archive import ArchiveService
from dopamine_py.document import tag_key
from dopamine_py.matching import MatchOptions, parse_pairs
from dopamine_py.storage.base import DuplicatePolicy, Level, PutOutcome
from factory import encode, make_dataset

SOURCE = Source(protocol="test")


def store(archive, **kwargs):
    ds = make_dataset(**kwargs)
    result = archive.store_bytes(encode(ds), SOURCE)
    assert result.status == "stored", result.reason
    return ds


@pytest.fixture
def small_corpus(archive):
    """Two patients; patient A has a CT study (2 series, 3 instances) and an MR study; patient B one MR."""
    study_a1, study_a2, study_b = generate_uid(), generate_uid(), generate_uid()
    series = [generate_uid() for _ in range(4)]
    store(archive, patient_id="A", patient_name="Alpha^Ann", study_uid=study_a1, series_uid=series[0], modality="CT",
          StudyDescription="Chest CT", StudyDate="20230105")
    store(archive, patient_id="A", patient_name="Alpha^Ann", study_uid=study_a1, series_uid=series[0], modality="CT",
          StudyDescription="Chest CT", StudyDate="20230105", InstanceNumber=2)
    store(archive, patient_id="A", patient_name="Alpha^Ann", study_uid=study_a1, series_uid=series[1], modality="CT",
          StudyDescription="Chest CT", StudyDate="20230105")
    store(archive, patient_id="A", patient_name="Alpha^Ann", study_uid=study_a2, series_uid=series[2], modality="MR",
          StudyDescription="Brain MR", StudyDate="20240612")
    store(archive, patient_id="B", patient_name="Beta^Bob", study_uid=study_b, series_uid=series[3], modality="MR",
          StudyDescription="Knee MR", StudyDate="20240701")
    return {"studies": (study_a1, study_a2, study_b), "series": series}


def test_level_queries_count_what_they_group(archive, small_corpus):
    patients = archive.find(Level.PATIENT, parse_pairs([("PatientID", "")]))
    assert [(f.document[tag_key(0x00100020)]["Value"][0], f.studies, f.series, f.instances) for f in patients] == [
        ("A", 2, 3, 4), ("B", 1, 1, 1)]
    ct_study = archive.find(Level.STUDY, parse_pairs([("StudyDescription", "Chest*")]))
    assert len(ct_study) == 1
    assert (ct_study[0].series, ct_study[0].instances, ct_study[0].modalities) == (2, 3, ["CT"])
    series = archive.find(Level.SERIES, parse_pairs([("StudyInstanceUID", small_corpus["studies"][0])]))
    assert sorted(f.instances for f in series) == [1, 2]
    images = archive.find(Level.IMAGE, parse_pairs([("PatientID", "A"), ("Modality", "CT")]))
    assert len(images) == 3


def test_computed_modalities_in_study_is_matched_on_the_study(archive, small_corpus):
    mr_studies = archive.find(Level.STUDY, parse_pairs([("ModalitiesInStudy", "MR")]))
    assert {f.document[tag_key(0x0020000D)]["Value"][0] for f in mr_studies} == set(small_corpus["studies"][1:])
    assert archive.count(Level.STUDY, parse_pairs([("ModalitiesInStudy", "CT\\MR")])) == 3
    assert archive.count(Level.STUDY, parse_pairs([("ModalitiesInStudy", "US")])) == 0


def test_paging_is_stable_and_complete(archive):
    study = generate_uid()
    for i in range(7):
        store(archive, study_uid=study, series_uid=generate_uid(), SeriesNumber=i + 1)
    query = parse_pairs([("StudyInstanceUID", study)])
    everything = [f.document[tag_key(0x0020000E)]["Value"][0] for f in archive.find(Level.SERIES, query)]
    paged = []
    for offset in range(0, 7, 3):
        paged += [f.document[tag_key(0x0020000E)]["Value"][0] for f in archive.find(Level.SERIES, query, limit=3, offset=offset)]
    assert paged == everything == sorted(everything)
    assert archive.count(Level.SERIES, query) == 7


def test_matching_types_through_the_backend(archive, small_corpus):
    def count(*pairs, options=MatchOptions()):
        return len(archive.find(Level.IMAGE, parse_pairs(pairs, options)))

    assert count(("PatientName", "Alpha^Ann")) == 4                       # single value
    assert count(("PatientName", "alpha*")) == 0                          # case-sensitive by default
    assert count(("PatientName", "alpha*"), options=MatchOptions(fold_person_names=True)) == 4
    assert count(("PatientName", "?eta*")) == 1                           # wildcard
    assert count(("StudyDate", "20240101-")) == 2                         # open range
    assert count(("StudyDate", "2023-2023")) == 3                         # reduced-precision bounds
    assert count(("SeriesInstanceUID", "\\".join(small_corpus["series"][:2]))) == 3   # UID list
    assert count(("InstanceNumber", "2")) == 1                            # numbers compare as numbers


def test_original_bytes_come_back_exactly(archive):
    path = get_testdata_file("MR_small_bigendian.dcm")
    original = open(path, "rb").read()
    result = archive.store_file(path, SOURCE)
    assert result.status == "stored", result.reason
    with archive.open_original(result.sop_instance_uid) as f:
        assert f.read() == original
    assert archive.backend.storage_of(result.sop_instance_uid) == "inline"


def test_an_instance_whose_document_would_pass_16_mib_is_stored_outside(archive, tmp_path):
    rng = np.random.default_rng(7)
    pixels = rng.integers(0, 65535, size=17 * 1024 * 1024 // 2, dtype="<u2").tobytes()
    ds = make_dataset(rows=1024, pixel_bytes=pixels)
    path = tmp_path / "big.dcm"
    ds.save_as(path, enforce_file_format=True)
    result = archive.store_file(path, SOURCE)
    assert result.status == "stored", result.reason
    assert archive.backend.storage_of(result.sop_instance_uid) in ("file", "gridfs")
    with archive.open_original(result.sop_instance_uid) as f:
        assert f.read() == path.read_bytes()
    document = archive.get_document(result.sop_instance_uid)
    assert document[tag_key(0x7FE00010)] == {"vr": "OW", "BulkData": True}


def test_a_large_document_leaves_less_room_for_the_original(archive):
    """The cut-off is measured on the encoded document, not on the file size alone."""
    from dopamine_py.storage.base import InstanceRecord, fits_inline

    def record(document):
        return InstanceRecord("1.2", "1.2", "1.2", "1.2", "", "", "1.2", document, 0, "0" * 64, "now")

    small_doc, big_doc = {}, {"00091010": {"vr": "LT", "Value": ["x" * (4 * 1024 * 1024)]}}
    size = 14 * 1024 * 1024
    assert fits_inline(record(small_doc), size)
    assert not fits_inline(record(big_doc), size)


@pytest.mark.parametrize("policy", list(DuplicatePolicy))
def test_duplicates_lose_nothing(backend, policy):
    archive = ArchiveService(backend, duplicate_policy=policy)
    sop = generate_uid()
    first = make_dataset(sop_uid=sop, StudyDescription="first")
    second = make_dataset(sop_uid=sop, study_uid=first.StudyInstanceUID, series_uid=first.SeriesInstanceUID,
                          StudyDescription="second")
    assert archive.store_bytes(encode(first), SOURCE).status == "stored"
    again = archive.store_bytes(encode(first), SOURCE)
    assert (again.status, again.outcome) == ("duplicate", PutOutcome.IDENTICAL_DUPLICATE)
    result = archive.store_bytes(encode(second), SOURCE)
    kept = archive.get_document(sop)[tag_key(0x00081030)]["Value"][0]
    versions = backend.superseded_versions(sop)
    if policy == DuplicatePolicy.KEEP_FIRST:
        assert (result.status, result.outcome, kept, len(versions)) == ("duplicate", PutOutcome.KEPT_FIRST, "first", 1)
    elif policy == DuplicatePolicy.REPLACE:
        assert (result.status, result.outcome, kept, len(versions)) == ("stored", PutOutcome.REPLACED, "second", 1)
    else:
        assert (result.status, result.dimse_status, kept, versions) == ("rejected", DUPLICATE_SOP_INSTANCE, "first", [])
    assert len(archive.find(Level.IMAGE, parse_pairs([("SOPInstanceUID", sop)]))) == 1


def test_strings_are_searchable_whatever_the_senders_character_set(archive):
    for path in get_charset_files("chr*.dcm"):
        archive.store_file(path, SOURCE)
    def names(pattern):
        found = archive.find(Level.IMAGE, parse_pairs([("PatientName", pattern)]))
        return sorted(f.document[tag_key(0x00100010)]["Value"][0].get("Alphabetic", "") for f in found)
    assert names("Äneas*") == ["Äneas^Rüdiger"]                   # ISO_IR 100
    assert names("Διονυσιος") == ["Διονυσιος"]                    # ISO_IR 126
    assert "Yamada^Tarou" in names("*=山田^太郎")                   # ISO 2022 IR 87, ideographic group
    assert names("山田*") and names("山田*") == names("*=山田*")   # one group matches any group
    assert names("Wang^XiaoDong") == ["Wang^XiaoDong", "Wang^XiaoDong"]   # GB18030 and GBK files


def test_private_attributes_are_searchable(archive):
    ds = make_dataset()
    block = ds.private_block(0x0029, "DOPAMINE TEST", create=True)
    block.add_new(0x10, "LO", ["cohort-7", "arm-B"])
    assert archive.store_bytes(encode(ds), SOURCE).status == "stored"
    assert len(archive.find(Level.IMAGE, parse_pairs([("00291010", "arm-B")]))) == 1        # any of its values
    assert len(archive.find(Level.IMAGE, parse_pairs([("(0029,1010)", "cohort-*")]))) == 1
    assert len(archive.find(Level.IMAGE, parse_pairs([("00291010", "arm-C")]))) == 0


def test_sequence_matching_is_item_level(archive):
    from pydicom.dataset import Dataset

    def code(value, scheme):
        item = Dataset()
        item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value, scheme, value
        return item

    ds = make_dataset()
    ds.ProcedureCodeSequence = [code("A1", "X"), code("B2", "Y")]
    assert archive.store_bytes(encode(ds), SOURCE).status == "stored"
    from dopamine_py.matching import Query, SequenceMatch

    def seq_query(value, scheme):
        item = parse_pairs([("CodeValue", value), ("CodingSchemeDesignator", scheme)])
        return Query((SequenceMatch(0x00081032, "SQ", item),))

    assert len(archive.find(Level.IMAGE, seq_query("A1", "X"))) == 1
    assert len(archive.find(Level.IMAGE, seq_query("A1", "Y"))) == 0   # both keys must hold in one item


def test_peers(backend):
    backend.put_peer("STORESCP", "127.0.0.1", 104)
    backend.put_peer("STORESCP", "127.0.0.1", 11113)
    backend.put_peer("OTHER", "localhost", 4242)
    assert backend.get_peer("STORESCP") == {"aet": "STORESCP", "host": "127.0.0.1", "port": 11113}
    assert [p["aet"] for p in backend.list_peers()] == ["OTHER", "STORESCP"]
    assert backend.remove_peer("OTHER") and not backend.remove_peer("OTHER")
    assert backend.get_peer("OTHER") is None


def test_person_name_groups_that_constrain_nothing(archive):
    with_ideographic = make_dataset(patient_name="Yamada^Tarou=山田^太郎", SpecificCharacterSet="ISO_IR 192")
    ideographic_only = make_dataset(patient_name="=山田^花子", SpecificCharacterSet="ISO_IR 192")
    no_name = make_dataset(patient_name="")
    for ds in (with_ideographic, ideographic_only, no_name):
        assert archive.store_bytes(encode(ds), SOURCE).status == "stored"

    def uids(pattern):
        return {f.document[tag_key(0x00080018)]["Value"][0] for f in archive.find(Level.IMAGE, parse_pairs([("PatientName", pattern)]))}

    both = {with_ideographic.SOPInstanceUID, ideographic_only.SOPInstanceUID}
    assert uids("**=山田*") == both       # an all-star group constrains nothing
    assert uids("=") == both               # any person name, but not a missing one


def test_documents_come_back_with_binary_values_as_bytes(archive):
    ds = make_dataset()
    ds.add_new(0x00091010, "OB", b"\x00\x01binary\xff\xfe")
    ds.add_new(0x00090010, "LO", "DOPAMINE TEST")
    assert archive.store_bytes(encode(ds), SOURCE).status == "stored"
    document = archive.get_document(ds.SOPInstanceUID)
    assert document["00091010"]["InlineBinary"] == b"\x00\x01binary\xff\xfe"
    found = archive.find(Level.IMAGE, parse_pairs([("SOPInstanceUID", ds.SOPInstanceUID)]))
    assert found[0].document["00091010"]["InlineBinary"] == b"\x00\x01binary\xff\xfe"


def test_delete_instance_removes_it_and_its_original(archive, tmp_path):
    small = make_dataset()
    assert archive.store_bytes(encode(small), SOURCE).status == "stored"
    rng = np.random.default_rng(3)
    big = make_dataset(rows=1024, pixel_bytes=rng.integers(0, 65535, size=9 * 1024 * 1024, dtype="<u2").tobytes())
    path = tmp_path / "big.dcm"
    big.save_as(path, enforce_file_format=True)
    assert archive.store_file(path, SOURCE).status == "stored"
    for ds in (small, big):
        assert archive.backend.delete_instance(ds.SOPInstanceUID)
        assert archive.get_document(ds.SOPInstanceUID) is None
        with pytest.raises(KeyError):
            archive.open_original(ds.SOPInstanceUID)
        assert not archive.backend.delete_instance(ds.SOPInstanceUID)


def test_documents_of_many_instances_in_one_call(archive):
    stored = [make_dataset() for _ in range(3)]
    for ds in stored:
        assert archive.store_bytes(encode(ds), SOURCE).status == "stored"
    uids = [ds.SOPInstanceUID for ds in stored] + ["1.2.3.4.5.nowhere"]
    documents = archive.get_documents(uids)
    assert sorted(documents) == sorted(uids[:3])
    assert all(documents[uid] == archive.get_document(uid) for uid in uids[:3])


def test_a_rejected_duplicate_does_not_reveal_data_outside_the_senders_rights(backend):
    archive = ArchiveService(backend, duplicate_policy=DuplicatePolicy.REJECT)
    hidden = make_dataset(modality="CT")
    assert archive.store_bytes(encode(hidden), SOURCE).status == "stored"
    only_mr = parse_pairs([("Modality", "MR")])
    probe = make_dataset(modality="MR", sop_uid=hidden.SOPInstanceUID)
    result = archive.store_bytes(encode(probe), SOURCE, permits=only_mr.matches)
    assert (result.status, result.dimse_status) == ("rejected", 0x0124)   # as for any data set it may not store
    visible = make_dataset(modality="MR")
    assert archive.store_bytes(encode(visible), SOURCE, permits=only_mr.matches).status == "stored"
    again = make_dataset(modality="MR", sop_uid=visible.SOPInstanceUID, StudyDescription="changed")
    assert archive.store_bytes(encode(again), SOURCE, permits=only_mr.matches).dimse_status == DUPLICATE_SOP_INSTANCE


def test_instances_stored_without_sync_are_there_and_sync_returns(archive):
    """STOW-RS stores a request's instances with ``sync=False`` and syncs once: they are found at once,
    and sync() completes (on MongoDB it has nothing to do: every write is already journaled)."""
    stored = []
    for number in range(3):
        ds = make_dataset(patient_id="DEFERRED", instance_number=number + 1)
        result = archive.store_bytes(encode(ds), SOURCE, sync=False)
        assert result.status == "stored", result.reason
        stored.append(str(ds.SOPInstanceUID))
    archive.sync()
    found = archive.find(Level.IMAGE, parse_pairs([("PatientID", "DEFERRED"), ("SOPInstanceUID", "")]))
    assert sorted(f.document["00080018"]["Value"][0] for f in found) == sorted(stored)
