"""Each condition alone and combined, evaluated with the archive's DICOM matching semantics."""

from __future__ import annotations

import pytest
from pydicom.dataset import Dataset

from dopamine_py.archive import Source
from routing.errors import RuleApplicationError
from rules_helpers import minimal, ruleset

DIMSE = Source("dimse", calling_aet="MR_PARIS", user=None, peer="127.0.0.1")
STOW = Source("stow", calling_aet=None, user="alice", peer="10.0.0.7")


def fires(condition: str, ds: Dataset | None = None, source=DIMSE) -> bool:
    result = ruleset("<Store/>", condition).apply(ds if ds is not None else minimal(), source)
    return result.fired == ["r1"]


def with_series(*uids: str) -> Dataset:
    ds = minimal()
    items = []
    for uid in uids:
        item = Dataset()
        item.SeriesInstanceUID = uid
        items.append(item)
    ds.ReferencedSeriesSequence = items
    return ds


def test_element_match_single_wildcard_range_and_list():
    assert fires('<ElementMatch tag="PatientName" value="Doe^Jane"/>')
    assert not fires('<ElementMatch tag="PatientName" value="Doe^John"/>')
    assert fires('<ElementMatch tag="PatientName" value="Doe*"/>')
    assert fires('<ElementMatch tag="SeriesDescription" value="t1_?prage*"/>')
    assert not fires('<ElementMatch tag="SeriesDescription" value="T1*"/>')  # case-sensitive, as C-FIND
    assert fires('<ElementMatch tag="StudyDate" value="20240101-20240131"/>')
    assert fires('<ElementMatch tag="StudyDate" value="-2024"/>')  # an upper bound covers its whole year
    assert not fires('<ElementMatch tag="StudyDate" value="20240116-"/>')
    assert fires('<ElementMatch tag="Modality" value="CT\\MR"/>')
    assert not fires('<ElementMatch tag="Modality" value="CT\\PT"/>')
    assert fires('<ElementMatch tag="0008,0060" value="MR"/>')  # by tag


def test_element_match_uid_list_and_numbers():
    ds = minimal(SeriesNumber="7")
    uid = ds.StudyInstanceUID
    assert fires(f'<ElementMatch tag="StudyInstanceUID" value="1.2.3\\{uid}"/>', ds)
    assert not fires('<ElementMatch tag="StudyInstanceUID" value="1.2.3\\1.2.4"/>', ds)
    assert fires('<ElementMatch tag="SeriesNumber" value="7"/>', ds)
    assert fires('<ElementMatch tag="SeriesNumber" value="07"/>', ds)  # numbers compare as numbers


def test_universal_and_present_not_empty():
    ds = minimal()
    del ds.SeriesDescription
    assert fires('<ElementMatch tag="SeriesDescription" value="*"/>', ds)  # universal: even when missing
    assert not fires('<ElementMatch tag="SeriesDescription" value="?*"/>', ds)
    assert not fires('<ElementMatch tag="PatientBirthDate" value="?*"/>', minimal(PatientBirthDate=""))
    assert fires('<ElementMatch tag="PatientBirthDate" value="?*"/>', minimal(PatientBirthDate="19800220"))
    assert fires('<ElementMatch tag="PatientBirthDate" value="1980*"/>', minimal(PatientBirthDate="19800220"))


def test_element_match_regex():
    assert fires('<ElementMatch tag="SeriesDescription" regex="(?i)MPRAGE"/>')
    assert not fires('<ElementMatch tag="SeriesDescription" regex="^mprage"/>')
    assert fires('<ElementMatch tag="PatientName" regex="^Doe\\^"/>')
    ds = minimal()
    del ds.SeriesDescription
    assert not fires('<ElementMatch tag="SeriesDescription" regex=".*"/>', ds)  # a regex needs a value


def test_paths_into_sequences():
    ds = with_series("1.2.3.4", "1.2.3.5")
    assert fires('<ElementMatch tag="ReferencedSeriesSequence[1].SeriesInstanceUID" value="1.2.3.5"/>', ds)
    assert not fires('<ElementMatch tag="ReferencedSeriesSequence[0].SeriesInstanceUID" value="1.2.3.5"/>', ds)
    assert fires('<ElementMatch tag="ReferencedSeriesSequence.SeriesInstanceUID" value="1.2.3.5"/>', ds)
    assert not fires('<ElementMatch tag="ReferencedSeriesSequence.SeriesInstanceUID" value="9.9"/>', ds)
    assert fires('<ElementExists tag="ReferencedSeriesSequence[1].SeriesInstanceUID"/>', ds)
    assert not fires('<ElementExists tag="ReferencedSeriesSequence[2].SeriesInstanceUID"/>', ds)


def test_private_tags_through_their_creator():
    ds = minimal()
    block = ds.private_block(0x0029, "ACME 1.0", create=True)  # lands in block 0x10
    ds.add_new(0x00290011, "LO", "OTHER VENDOR")  # another creator, block 0x11
    ds.add_new(0x00291101, "LO", "other value")
    block.add_new(0x01, "LO", "research")
    assert fires('<ElementMatch tag="(0029,xx01)" creator="ACME 1.0" value="research"/>', ds)
    assert fires('<ElementMatch tag="0029,xx01" creator="OTHER VENDOR" value="other*"/>', ds)
    assert not fires('<ElementMatch tag="0029,xx01" creator="ACME 1.0" value="other*"/>', ds)
    assert fires('<ElementExists tag="0029,xx01" creator="ACME 1.0"/>', ds)
    assert not fires('<ElementExists tag="0029,xx01" creator="NOBODY"/>', ds)
    assert fires('<ElementExists tag="0029,1101"/>', ds)  # a literal private tag, no creator lookup


def test_element_exists():
    assert fires('<ElementExists tag="PatientBirthDate"/>', minimal(PatientBirthDate=""))  # present, even empty
    assert not fires('<ElementExists tag="PatientWeight"/>')


def test_boolean_combinations():
    assert fires("<True/>")
    assert not fires("<False/>")
    assert fires('<All><ElementMatch tag="Modality" value="MR"/><ElementExists tag="PatientID"/></All>')
    assert not fires('<All><ElementMatch tag="Modality" value="MR"/><False/></All>')
    assert fires('<Any><False/><ElementMatch tag="Modality" value="MR"/></Any>')
    assert not fires('<Any><False/><ElementMatch tag="Modality" value="CT"/></Any>')
    assert fires('<Not><ElementMatch tag="Modality" value="CT"/></Not>')
    assert not fires('<Not><True/></Not>')
    # Several conditions directly in <Condition> must all hold.
    assert not fires('<ElementMatch tag="Modality" value="MR"/><ElementMatch tag="PatientID" value="X"/>')
    assert fires('<Any><Not><All><True/><False/></All></Not><False/></Any>')


def test_source_conditions():
    assert fires('<CallingAE value="MR_PARIS"/>')
    assert fires('<CallingAE value="MR_*"/>')
    assert fires('<CallingAE value="CT_1\\MR_PARIS"/>')
    assert not fires('<CallingAE value="MR_LYON"/>')
    assert not fires('<CallingAE value="MR_*"/>', source=STOW)  # no calling AE over STOW-RS
    assert fires('<CallingAE value="*"/>', source=STOW)
    assert fires('<User value="alice"/>', source=STOW)
    assert not fires('<User value="alice"/>')
    assert fires('<Protocol value="stow"/>', source=STOW)
    assert fires('<Protocol regex="^(dimse|stow)$"/>')
    assert fires('<Peer value="10.0.*"/>', source=STOW)
    assert not fires('<Peer value="10.0.*"/>')
    assert not fires('<Protocol value="dimse"/>', source=None)
    assert fires('<All><Protocol value="dimse"/><CallingAE value="MR_PARIS"/>'
                 '<ElementMatch tag="Modality" value="MR"/></All>')


def test_condition_that_cannot_be_evaluated_is_a_clear_error():
    # A private element whose VR (DA) refuses the value written in the rule.
    ds = minimal()
    ds.private_block(0x0029, "ACME", create=True).add_new(0x02, "DA", "20240101")
    rs = ruleset("<Store/>", '<ElementMatch tag="0029,xx02" creator="ACME" value="2024-13"/>')
    with pytest.raises(RuleApplicationError) as info:
        rs.apply(ds)
    assert "rule 'r1'" in str(info.value) and "condition failed" in str(info.value)
