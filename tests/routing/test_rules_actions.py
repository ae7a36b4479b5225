"""Each action alone and combined; routing decisions; failures that refuse the whole data set."""

from __future__ import annotations

import copy
import re
from datetime import date, timedelta

import pytest
from pydicom.dataset import Dataset

from dopamine_py.archive import Source
from routing.actions import age_string
from routing.engine import load_ruleset
from routing.errors import RuleApplicationError
from rules_helpers import SECRETS, minimal, ruleset, sample

UID_2_25 = re.compile(r"^2\.25\.(0|[1-9]\d*)$")


def apply(actions: str, ds: Dataset | None = None, condition: str | None = None, source=None, secrets=SECRETS):
    return ruleset(actions, condition).apply(ds if ds is not None else minimal(), source, secrets)


# ------------------------------------------------------------------------------------ element actions


def test_set_element_static_value_creates_and_replaces():
    result = apply('<SetElement tag="PatientComments" value="consented"/>'
                   '<SetElement tag="Modality" value="OT"/>'
                   '<SetElement tag="0018,0050" value="1.5"/>')
    assert result.dataset.PatientComments == "consented"
    assert result.dataset.Modality == "OT"
    assert float(result.dataset.SliceThickness) == 1.5
    kinds = {c.path: c.kind for c in result.changes}
    assert kinds == {"PatientComments": "added", "Modality": "changed", "SliceThickness": "added"}


def test_set_element_template_from_other_elements_and_source():
    result = apply('<SetElement tag="StudyID" template="{PatientID}-{StudyDate}"/>'
                   '<SetElement tag="StationName" template="{@callingAE}"/>'
                   '<SetElement tag="PatientComments" template="{{literal}} {0010,0010}"/>',
                   source=Source("dimse", calling_aet="MR_PARIS"))
    assert result.dataset.StudyID == "P-0001-20240115"
    assert result.dataset.StationName == "MR_PARIS"
    assert result.dataset.PatientComments == "{literal} Doe^Jane"


def test_template_naming_a_missing_element_is_a_clear_error():
    ds = minimal()
    with pytest.raises(RuleApplicationError) as info:
        apply('<SetElement tag="StudyID" template="{AccessionNumber}"/>', ds)
    message = str(info.value)
    assert message.startswith("rule 'r1' <SetElement> (line 1): ")
    assert "names AccessionNumber, which this data set lacks" in message
    with pytest.raises(RuleApplicationError, match="the source has no calling_aet"):
        apply('<SetElement tag="StationName" template="{@callingAE}"/>', source=Source("stow"))


def test_set_element_in_sequence_items_and_private_block():
    ds = minimal()
    items = [Dataset(), Dataset()]
    for item, uid in zip(items, ("1.2.3", "1.2.4")):
        item.ReferencedSOPInstanceUID = uid
    ds.ReferencedImageSequence = items
    result = apply('<SetElement tag="ReferencedImageSequence.ReferencedSOPClassUID" value="1.2.840.10008.5.1.4.1.1.4"/>'
                   '<SetElement tag="ReferencedImageSequence[1].ReferencedSOPInstanceUID" value="9.9"/>'
                   '<SetElement tag="0029,xx01" creator="DOPAMINE RESEARCH" vr="LO" value="cohort A"/>', ds)
    out = result.dataset
    assert [i.ReferencedSOPClassUID for i in out.ReferencedImageSequence] == ["1.2.840.10008.5.1.4.1.1.4"] * 2
    assert [i.ReferencedSOPInstanceUID for i in out.ReferencedImageSequence] == ["1.2.3", "9.9"]
    assert out[0x00290010].value == "DOPAMINE RESEARCH" and out[0x00291001].value == "cohort A"
    paths = {c.path for c in result.changes}
    assert "ReferencedImageSequence[1].ReferencedSOPInstanceUID" in paths and "(0029,1001)" in paths


def test_empty_and_delete_element():
    result = apply('<EmptyElement tag="PatientName"/><DeleteElement tag="PatientBirthDate"/>'
                   '<EmptyElement tag="PatientWeight"/><DeleteElement tag="PatientSize"/>')
    out = result.dataset
    assert "PatientName" in out and not out.PatientName
    assert "PatientBirthDate" not in out
    assert "PatientWeight" not in out and "PatientSize" not in out  # absent stays absent
    assert {(c.path, c.kind) for c in result.changes} == {("PatientName", "changed"), ("PatientBirthDate", "removed")}


# ------------------------------------------------------------------------------------------ ages


@pytest.mark.parametrize("birth, on, expected", [
    ("20240101", "20240115", "014D"),
    ("20240101", "20240128", "027D"),
    ("20240101", "20240129", "004W"),  # 4 weeks: weeks
    ("20240101", "20240331", "012W"),
    ("20240101", "20240401", "003M"),  # 3 completed months: months
    ("20220315", "20240314", "023M"),
    ("20220315", "20240315", "002Y"),  # 2 years: years
    ("19800220", "20240115", "043Y"),
    ("19800220", "20240220", "044Y"),
    ("18000101", "20240101", "224Y"),
])
def test_age_units(birth, on, expected):
    parse = lambda t: date(int(t[:4]), int(t[4:6]), int(t[6:]))  # noqa: E731
    assert age_string(parse(birth), parse(on)) == expected


def test_age_from_birth_date_reference_dates():
    ds = minimal(PatientBirthDate="20000101", StudyDate="")
    ds.AcquisitionDate = "20100101"
    assert apply("<AgeFromBirthDate/>", ds).dataset.PatientAge == "010Y"  # falls back to AcquisitionDate
    ds = minimal(PatientBirthDate="20000101", StudyDate="20200101")
    ds.AcquisitionDate = "20100101"
    assert apply('<AgeFromBirthDate reference="AcquisitionDate"/>', ds).dataset.PatientAge == "010Y"
    assert apply("<AgeFromBirthDate/>", ds).dataset.PatientAge == "020Y"


@pytest.mark.parametrize("attributes, message", [
    ({"PatientBirthDate": ""}, "PatientBirthDate is missing or empty"),
    ({"PatientBirthDate": "1980022"}, "is not a date"),
    ({"PatientBirthDate": "19800231"}, "is not a valid date"),
    ({"StudyDate": ""}, "no date to count the age to"),
    ({"PatientBirthDate": "20250101"}, "is after the reference date"),
])
def test_age_from_birth_date_failures(attributes, message):
    with pytest.raises(RuleApplicationError, match=message):
        apply("<AgeFromBirthDate/>", minimal(**attributes))


# ------------------------------------------------------------------------------------- value maps

T1_SPELLINGS = ["T1 3D", "t1_3d", "T1-3D sag", "3D T1 TFE", "t1_mprage_sag", "MPRAGE", "Sag MP-RAGE",
                "FSPGR 3D", "SAG FSPGR BRAVO", "T1W_3D_TFE SENSE", "sT1W_3D_ISO", "T1 ISO 1mm", "T1_VOL",
                "3D SPGR"]


def test_map_value_inline_and_csv_normalize_series_names():
    ruleset_ = load_ruleset("rules/normalization-example.xml")
    assert len(set(T1_SPELLINGS)) == len(T1_SPELLINGS)
    for spelling in T1_SPELLINGS:
        result = ruleset_.apply(minimal(SeriesDescription=spelling))
        assert result.dataset.SeriesDescription == "T1_3D", spelling
    for spelling, expected in [("t2_space_sag", "T2_3D"), ("ep2d_diff_mddw", "DWI"), ("localizer", "localizer")]:
        assert ruleset_.apply(minimal(SeriesDescription=spelling)).dataset.SeriesDescription == expected
    ct = minimal(SeriesDescription="T1 3D", Modality="CT")
    assert ruleset_.apply(ct).fired == []  # the condition limits it to MR


def test_map_value_first_match_case_default_target_and_multivalue(tmp_path):
    (tmp_path / "t.csv").write_text("from,to\nAX*,axial\n")
    xml = ('<RuleSet name="t"><Rule><Action>'
           '<MapValue tag="SeriesDescription"><Map from="t1*" to="first"/><Map from="t1_mprage*" to="second"/></MapValue>'
           '<MapValue tag="ProtocolName" file="t.csv" ignoreCase="false" default="other"/>'
           '<MapValue tag="ImageType" ><Map from="ORIGINAL" to="DERIVED"/></MapValue>'
           '<MapValue tag="StudyDescription" target="ClinicalTrialTimePointID"><Map from="*baseline*" to="BL"/></MapValue>'
           '</Action></Rule></RuleSet>')
    rs = load_ruleset(xml.encode(), base_dir=tmp_path)
    out = rs.apply(minimal(ProtocolName="ax t2", ImageType=["ORIGINAL", "PRIMARY"],
                           StudyDescription="MR brain baseline")).dataset
    assert out.SeriesDescription == "first"
    assert out.ProtocolName == "other"  # case-sensitive, so the default
    assert list(out.ImageType) == ["DERIVED", "PRIMARY"]
    assert out.ClinicalTrialTimePointID == "BL" and out.StudyDescription == "MR brain baseline"
    unchanged = rs.apply(minimal(SeriesDescription="flair", ProtocolName="AX flair")).dataset
    assert unchanged.SeriesDescription == "flair" and unchanged.ProtocolName == "axial"


# ------------------------------------------------------------------------------------------ dates


def test_shift_dates_is_per_subject_and_consistent():
    rs = ruleset('<ShiftDates maxDays="100"/>')
    first = rs.apply(minimal(StudyDate="20240115", PatientBirthDate="19800220"), None, SECRETS).dataset
    second = rs.apply(minimal(StudyDate="20240301", PatientBirthDate="19800220"), None, SECRETS).dataset
    shifted = date(int(first.StudyDate[:4]), int(first.StudyDate[4:6]), int(first.StudyDate[6:]))
    offset = (date(2024, 1, 15) - shifted).days
    assert 1 <= offset <= 100
    assert second.StudyDate == (date(2024, 3, 1) - timedelta(days=offset)).strftime("%Y%m%d")
    assert first.PatientBirthDate == second.PatientBirthDate == \
        (date(1980, 2, 20) - timedelta(days=offset)).strftime("%Y%m%d")
    assert first.LongitudinalTemporalInformationModified == "MODIFIED"
    other = rs.apply(minimal(PatientID="P-0002"), None, SECRETS).dataset
    others = [rs.apply(minimal(PatientID=f"P-{n}"), None, SECRETS).dataset.StudyDate for n in range(20)]
    assert len(set(others)) > 5 and other.StudyDate != "20240115"  # subjects get different offsets
    other_key = rs.apply(minimal(), None, {"deidentification": "another key"}).dataset
    assert other_key.StudyDate != first.StudyDate or other_key.PatientBirthDate != first.PatientBirthDate


def test_shift_dates_covers_datetimes_and_sequences():
    ds = minimal()
    ds.AcquisitionDateTime = "20240115103000.5+0100"
    item = Dataset()
    item.ObservationDateTime = "20240116"
    item.Date = "20240117"
    ds.ContentSequence = [item]
    out = ruleset("<ShiftDates/>").apply(ds, None, SECRETS).dataset
    offset = (date(2024, 1, 15) - date(int(out.StudyDate[:4]), int(out.StudyDate[4:6]), int(out.StudyDate[6:]))).days
    expected = (date(2024, 1, 15) - timedelta(days=offset)).strftime("%Y%m%d")
    assert out.AcquisitionDateTime == expected + "103000.5+0100"
    assert out.ContentSequence[0].Date == (date(2024, 1, 17) - timedelta(days=offset)).strftime("%Y%m%d")


def test_shift_dates_failures():
    with pytest.raises(RuleApplicationError, match="needs the secret 'deidentification'"):
        ruleset("<ShiftDates/>").apply(minimal(), None, None)
    with pytest.raises(RuleApplicationError, match="PatientID is missing or empty"):
        ruleset("<ShiftDates/>").apply(minimal(PatientID=""), None, SECRETS)
    with pytest.raises(RuleApplicationError, match="StudyDate: date '2024' is not a date"):
        ruleset("<ShiftDates/>").apply(minimal(StudyDate="2024"), None, SECRETS)
    with pytest.raises(RuleApplicationError, match="needs the secret 'trial'"):
        ruleset('<ShiftDates secret="trial"/>').apply(minimal(), None, SECRETS)


# ------------------------------------------------------------------------------------------- UIDs


def test_replace_uids_is_deterministic_and_keeps_the_hierarchy():
    rs = ruleset("<ReplaceUIDs/>")
    first, second = sample("CT_small.dcm"), sample("CT_small.dcm")
    second.SOPInstanceUID = first.SOPInstanceUID + ".2"
    a = rs.apply(first, None, SECRETS).dataset
    b = rs.apply(second, None, SECRETS).dataset
    for out in (a, b):
        for keyword in ("SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID", "FrameOfReferenceUID"):
            assert UID_2_25.match(out[keyword].value) and len(out[keyword].value) <= 64
        assert out.SOPClassUID == first.SOPClassUID  # class UIDs are not instance identifiers
        assert out.file_meta.MediaStorageSOPInstanceUID == out.SOPInstanceUID
        assert out.file_meta.TransferSyntaxUID == first.file_meta.TransferSyntaxUID
    assert a.StudyInstanceUID == b.StudyInstanceUID and a.SeriesInstanceUID == b.SeriesInstanceUID
    assert a.SOPInstanceUID != b.SOPInstanceUID
    again = rs.apply(sample("CT_small.dcm"), None, SECRETS).dataset
    assert again.SOPInstanceUID == a.SOPInstanceUID
    other_key = rs.apply(sample("CT_small.dcm"), None, {"deidentification": "other"}).dataset
    assert other_key.SOPInstanceUID != a.SOPInstanceUID


def test_replace_uids_keeps_rt_references():
    rs = ruleset("<ReplaceUIDs/>")
    plan, dose = sample("rtplan.dcm"), sample("rtdose.dcm")
    dose.ReferencedRTPlanSequence[0].ReferencedSOPInstanceUID = plan.SOPInstanceUID
    dose.StudyInstanceUID = plan.StudyInstanceUID
    new_plan, new_dose = (rs.apply(ds, None, SECRETS).dataset for ds in (plan, dose))
    assert new_dose.ReferencedRTPlanSequence[0].ReferencedSOPInstanceUID == new_plan.SOPInstanceUID
    assert new_dose.ReferencedRTPlanSequence[0].ReferencedSOPClassUID == plan.SOPClassUID
    assert new_dose.StudyInstanceUID == new_plan.StudyInstanceUID != plan.StudyInstanceUID
    # The plan's own references (to a structure set, a previous plan) map the same way.
    structure = plan.ReferencedStructureSetSequence[0].ReferencedSOPInstanceUID
    assert new_plan.ReferencedStructureSetSequence[0].ReferencedSOPInstanceUID != structure
    assert UID_2_25.match(new_plan.ReferencedStructureSetSequence[0].ReferencedSOPInstanceUID)


def test_replace_uids_keeps_sr_references():
    rs = ruleset("<ReplaceUIDs/>")
    report = sample("test-SR.dcm")
    image = minimal()
    image.SOPInstanceUID = report.ContentSequence[4].ReferencedSOPSequence[0].ReferencedSOPInstanceUID
    new_report = rs.apply(report, None, SECRETS).dataset
    new_image = rs.apply(image, None, SECRETS).dataset
    assert new_report.ContentSequence[4].ReferencedSOPSequence[0].ReferencedSOPInstanceUID == new_image.SOPInstanceUID
    predecessor = new_report.PredecessorDocumentsSequence[0]
    assert predecessor.StudyInstanceUID == new_report.StudyInstanceUID != report.StudyInstanceUID
    assert predecessor.ReferencedSeriesSequence[0].SeriesInstanceUID == new_report.SeriesInstanceUID
    coding = new_report.ContentSequence[0].ConceptNameCodeSequence[0].CodingSchemeUID
    assert coding == report.ContentSequence[0].ConceptNameCodeSequence[0].CodingSchemeUID  # not an instance
    reportsi = rs.apply(sample("reportsi.dcm"), None, SECRETS).dataset
    assert reportsi.StudyInstanceUID != sample("reportsi.dcm").StudyInstanceUID


# ---------------------------------------------------------------------------------- pseudonyms


def test_pseudonymize_with_keyed_hash():
    ds = minimal()
    ds.OtherPatientIDs = "OLD-ID"
    result = apply('<Pseudonymize prefix="SUBJ-" length="8"/>', ds)
    out = result.dataset
    assert re.fullmatch(r"SUBJ-[A-Z2-9]{8}", out.PatientID) and out.PatientName == out.PatientID
    assert "OtherPatientIDs" not in out
    assert apply('<Pseudonymize prefix="SUBJ-" length="8"/>', minimal()).dataset.PatientID == out.PatientID
    assert apply('<Pseudonymize prefix="SUBJ-" length="8"/>', minimal(PatientID="P-2")).dataset.PatientID != out.PatientID
    with pytest.raises(RuleApplicationError, match="needs the secret"):
        apply("<Pseudonymize/>", minimal(), secrets={})


def test_pseudonymize_from_table(tmp_path):
    (tmp_path / "subjects.csv").write_text("PatientID,PseudonymID,PseudonymName\nP-0001,S001,Subject^One\n")
    xml = '<RuleSet name="t"><Rule><Action><Pseudonymize table="subjects.csv"{}/></Action></Rule></RuleSet>'
    rs = load_ruleset(xml.format("").encode(), base_dir=tmp_path)
    out = rs.apply(minimal(), None, {}).dataset  # a table needs no key
    assert (out.PatientID, str(out.PatientName)) == ("S001", "Subject^One")
    with pytest.raises(RuleApplicationError, match="PatientID 'P-9' is not in subjects.csv"):
        rs.apply(minimal(PatientID="P-9"), None, SECRETS)
    fallback = load_ruleset(xml.format(' onMissing="hash"').encode(), base_dir=tmp_path)
    assert fallback.apply(minimal(PatientID="P-9"), None, SECRETS).dataset.PatientID.startswith("ANON-")


# ---------------------------------------------------------------------------------- private tags


def test_remove_private_tags_with_keep_list():
    ds = sample("CT_small.dcm")
    item = Dataset()
    item.add_new(0x00090010, "LO", "GEMS_IDEN_01")
    item.add_new(0x00091001, "LO", "nested private")
    ds.ReferencedImageSequence = [item]
    result = apply('<RemovePrivateTags><Keep creator="GEMS_ACQU_01"/></RemovePrivateTags>', ds)
    out = result.dataset
    private_groups = {e.tag.group for e in out if e.tag.is_private}
    assert private_groups == {0x0019}
    assert out[0x00190010].value == "GEMS_ACQU_01" and 0x00191002 in out
    assert not any(e.tag.is_private for e in out.ReferencedImageSequence[0])
    assert any(c.path == "ReferencedImageSequence[0].(0009,1001)" and c.kind == "removed" for c in result.changes)
    everything = apply("<RemovePrivateTags/>", sample()).dataset
    assert not any(tag.is_private for tag in everything.keys())
    assert everything.PixelData == sample().PixelData


# -------------------------------------------------------------------------------------- routing


def test_routing_decisions():
    assert apply("").decision == "store"
    result = apply('<Forward destination="PACS"/><Forward destination="BACKUP"/><Forward destination="PACS"/>')
    assert (result.decision, result.forward) == ("store", ["PACS", "BACKUP"])
    result = apply('<Quarantine reason="unknown sender"/>')
    assert (result.decision, result.reason) == ("quarantine", "unknown sender")
    assert result.changes == []


def test_reject_stops_the_rule_set_and_store_overrides_quarantine():
    xml = ('<RuleSet name="t">'
           '<Rule name="q"><Action><Quarantine reason="check"/></Action></Rule>'
           '<Rule name="ok"><Condition><CallingAE value="TRUSTED"/></Condition><Action><Store/></Action></Rule>'
           '<Rule name="no"><Condition><ElementMatch tag="Modality" value="SR"/></Condition>'
           '<Action><Reject reason="no reports"/><SetElement tag="PatientComments" value="never"/></Action></Rule>'
           '<Rule name="after"><Action><SetElement tag="PatientComments" value="after"/></Action></Rule>'
           '</RuleSet>')
    rs = load_ruleset(xml.encode())
    trusted = rs.apply(minimal(), Source("dimse", calling_aet="TRUSTED"))
    assert (trusted.decision, trusted.fired) == ("store", ["q", "ok", "after"])
    untrusted = rs.apply(minimal(), Source("dimse", calling_aet="OTHER"))
    assert (untrusted.decision, untrusted.reason) == ("quarantine", "check")
    report = rs.apply(minimal(Modality="SR"), Source("dimse", calling_aet="TRUSTED"))
    assert (report.decision, report.reason, report.fired) == ("reject", "no reports", ["q", "ok", "no"])
    assert "PatientComments" not in report.dataset


def test_stop_ends_the_rule_set():
    xml = ('<RuleSet name="t"><Rule><Action><SetElement tag="PatientComments" value="a"/><Stop/></Action></Rule>'
           '<Rule><Action><SetElement tag="PatientComments" value="b"/></Action></Rule></RuleSet>')
    result = load_ruleset(xml.encode()).apply(minimal())
    assert result.dataset.PatientComments == "a" and result.fired == [1]


# ------------------------------------------------------------------------------- combined, failures


def test_combined_rules_record_changes_per_rule_and_leave_input_untouched():
    ds = sample("MR_small.dcm")
    before = copy.deepcopy(ds)
    xml = ('<RuleSet name="t">'
           '<Rule name="age"><Condition><ElementMatch tag="PatientBirthDate" value="?*"/></Condition>'
           '<Action><AgeFromBirthDate/><EmptyElement tag="PatientBirthDate"/></Action></Rule>'
           '<Rule name="ids"><Condition><ElementMatch tag="Modality" value="MR"/></Condition>'
           '<Action><ShiftDates/><Pseudonymize/><ReplaceUIDs/><RemovePrivateTags/></Action></Rule>'
           '<Rule name="route"><Action><Forward destination="LAB"/></Action></Rule>'
           '</RuleSet>')
    ds.PatientBirthDate = "19700101"
    before.PatientBirthDate = "19700101"
    result = load_ruleset(xml.encode()).apply(ds, Source("dimse", calling_aet="MRI"), SECRETS)
    assert ds == before  # the caller's data set is untouched
    assert result.fired == ["age", "ids", "route"] and result.forward == ["LAB"]
    by_rule = {}
    for change in result.changes:
        by_rule.setdefault(change.rule, set()).add(change.path)
    assert {"PatientAge", "PatientBirthDate"} <= by_rule["age"]
    assert {"PatientID", "PatientName", "SOPInstanceUID", "StudyDate"} <= by_rule["ids"]
    assert "route" not in by_rule


def test_action_failure_refuses_the_data_set_and_names_rule_and_line():
    xml = ('<RuleSet name="t">\n<Rule name="ok"><Action><SetElement tag="PatientComments" value="x"/></Action></Rule>\n'
           '<Rule name="ages"><Action>\n  <AgeFromBirthDate/>\n</Action></Rule>\n</RuleSet>')
    rs = load_ruleset(xml.encode())
    ds = minimal(PatientBirthDate="")
    with pytest.raises(RuleApplicationError) as info:
        rs.apply(ds)
    error = info.value
    assert (error.rule, error.line, error.element) == ("ages", 4, "AgeFromBirthDate")
    assert str(error) == "rule 'ages' <AgeFromBirthDate> (line 4): PatientBirthDate is missing or empty"
    assert "PatientComments" not in ds


def test_set_element_value_of_the_wrong_type_is_a_clear_error():
    with pytest.raises(RuleApplicationError, match="'many' is not a valid US value for Rows"):
        apply('<SetElement tag="Rows" value="many"/>')


def test_data_set_parsed_with_deferred_values_as_the_archive_does():
    """The archive parses received files without reading large values; rules must still work and the
    changes must describe those values without reading them."""
    import io

    from pydicom import dcmread
    from pydicom.data import get_testdata_file

    data = open(get_testdata_file("CT_small.dcm"), "rb").read()
    ds = dcmread(io.BytesIO(data), defer_size=64)
    result = load_ruleset("rules/basic-profile.xml").apply(ds, None, SECRETS)
    removed = {c.path: c.old for c in result.changes_of("removed")}
    assert removed["(0043,1029)"] == "<2068 bytes, not read>"
    buffer = io.BytesIO()
    result.dataset.save_as(buffer)
    again = dcmread(io.BytesIO(buffer.getvalue()))
    assert again.PixelData == dcmread(io.BytesIO(data)).PixelData
    assert again.PatientIdentityRemoved == "YES"
