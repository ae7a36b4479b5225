"""QIDO-RS through the dicomweb-client library and its command line, against a loaded `dopamine serve`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from xml.etree import ElementTree as ET

import requests

STUDY, SERIES, SOP = "0020000D", "0020000E", "00080018"


def first(answers: list[dict], tag: str) -> list:
    return [(a.get(tag, {}).get("Value") or [None])[0] for a in answers]


def studies_where(samples, predicate) -> set[str]:
    return {s.uids[0] for s in samples.values() if predicate(s.ds)}


def test_search_at_every_level_finds_everything_loaded(client, samples):
    studies = client.search_for_studies()
    assert set(first(studies, STUDY)) == {s.uids[0] for s in samples.values()}
    series = client.search_for_series()
    assert set(first(series, SERIES)) == {s.uids[1] for s in samples.values()}
    instances = client.search_for_instances()
    assert set(first(instances, SOP)) == {s.uids[2] for s in samples.values()}
    # Scoped searches: a study's series and instances, a series' instances.
    ct = samples["CT_small.dcm"]
    assert first(client.search_for_series(ct.uids[0]), SERIES) == [ct.uids[1]]
    assert first(client.search_for_instances(ct.uids[0]), SOP) == [ct.uids[2]]
    assert first(client.search_for_instances(ct.uids[0], ct.uids[1]), SOP) == [ct.uids[2]]
    # Results come in the order of the level's key (the stable order paging relies on).
    assert first(studies, STUDY) == sorted(first(studies, STUDY))


def test_single_value_matching(client, samples):
    found = client.search_for_studies(search_filters={"PatientID": "1CT1"})
    assert first(found, STUDY) == [samples["CT_small.dcm"].uids[0]]
    # By tag instead of keyword, at the instance level, on an attribute outside any fixed list.
    rows = client.search_for_instances(search_filters={"00280010": "64"})
    assert set(first(rows, SOP)) == {s.uids[2] for s in samples.values() if s.ds.get("Rows") == 64}
    assert rows, "the samples hold 64-row images"


def test_wildcard_matching(client, samples):
    found = client.search_for_studies(search_filters={"PatientName": "CompressedSamples*"})
    expected = studies_where(samples, lambda ds: str(ds.get("PatientName", "")).startswith("CompressedSamples"))
    assert set(first(found, STUDY)) == expected and len(expected) == 3
    one_char = client.search_for_studies(search_filters={"PatientName": "CompressedSamples^?R1"})
    assert first(one_char, STUDY) == [samples["MR_small.dcm"].uids[0]]


def test_range_matching(client, samples):
    found = client.search_for_studies(search_filters={"StudyDate": "20030101-20041231"})
    expected = studies_where(samples, lambda ds: "20030101" <= str(ds.get("StudyDate", "")) <= "20041231")
    assert set(first(found, STUDY)) == expected and len(expected) >= 4
    open_ended = client.search_for_studies(search_filters={"StudyDate": "2013-"})
    assert set(first(open_ended, STUDY)) == studies_where(samples, lambda ds: str(ds.get("StudyDate", "")) >= "2013")


def test_uid_list_matching(client, samples):
    wanted = [samples["CT_small.dcm"].uids[0], samples["rtplan.dcm"].uids[0]]
    found = client.search_for_studies(search_filters={"StudyInstanceUID": ",".join(wanted)})
    assert set(first(found, STUDY)) == set(wanted)
    by_backslash = client.search_for_studies(search_filters={"StudyInstanceUID": "\\".join(wanted)})
    assert set(first(by_backslash, STUDY)) == set(wanted)


def test_sequence_matching(client, samples):
    plan = samples["rtplan.dcm"]
    item = plan.ds.ReferencedStructureSetSequence[0]
    key = "ReferencedStructureSetSequence.ReferencedSOPInstanceUID"
    found = client.search_for_instances(search_filters={key: item.ReferencedSOPInstanceUID})
    assert first(found, SOP) == [plan.uids[2]]
    assert client.search_for_instances(search_filters={key: "1.2.3.4"}) == []


def test_fuzzy_matching_folds_person_names(client, samples):
    lower = {"PatientName": "compressedsamples^ct1"}
    assert client.search_for_studies(search_filters=lower) == []
    fuzzy = client.search_for_studies(search_filters=lower, fuzzymatching=True)
    assert first(fuzzy, STUDY) == [samples["CT_small.dcm"].uids[0]]
    # Non-ASCII names are decoded from their character set and folded too.
    german = client.search_for_studies(search_filters={"PatientName": "äneas*"}, fuzzymatching=True)
    assert first(german, STUDY) == [samples["chrGerm.dcm"].uids[0]]
    assert first(german, "00100010") == [{"Alphabetic": "Äneas^Rüdiger"}]
    japanese = client.search_for_studies(search_filters={"PatientName": "山田*"})
    assert first(japanese, STUDY) == [samples["chrH31.dcm"].uids[0]]


def test_computed_attributes(client, samples):
    mr_studies = client.search_for_studies(search_filters={"ModalitiesInStudy": "MR"})
    assert set(first(mr_studies, STUDY)) == studies_where(samples, lambda ds: ds.Modality == "MR")
    sc = samples["SC_rgb.dcm"]
    [study] = client.search_for_studies(search_filters={"StudyInstanceUID": sc.uids[0]},
                                        fields=["SOPClassesInStudy"])
    in_study = [s for s in samples.values() if s.uids[0] == sc.uids[0]]
    assert study["00201208"]["Value"] == [len(in_study)]
    assert study["00201206"]["Value"] == [len({s.uids[1] for s in in_study})]
    assert study["00080061"]["Value"] == ["OT"]
    assert study["00080062"]["Value"] == sorted({str(s.ds.SOPClassUID) for s in in_study})
    [series] = client.search_for_series(sc.uids[0])
    assert series["00201209"]["Value"] == [len(in_study)]
    # RetrieveURL points at the study, as the client reached the server.
    assert study["00081190"]["Value"] == [f"{client.base_url}/studies/{sc.uids[0]}"]


def test_includefield(client, samples):
    ct = samples["CT_small.dcm"]
    [plain] = client.search_for_instances(ct.uids[0])
    assert "00180050" not in plain  # SliceThickness is not a default instance attribute
    [named] = client.search_for_instances(ct.uids[0], fields=["SliceThickness", "00280030"])
    assert named["00180050"]["Value"] == [float(ct.ds.SliceThickness)]
    assert named["00280030"]["Value"] == [float(v) for v in ct.ds.PixelSpacing]
    [everything] = client.search_for_instances(ct.uids[0], fields=["all"])
    assert {"00180050", "00280030", "00200032", "00100010"} <= everything.keys()
    # Bulk data is referenced, not inlined.
    assert everything["7FE00010"]["BulkDataURI"].endswith(f"/instances/{ct.uids[2]}/bulkdata/7FE00010")
    # Asked for but absent: present and empty, as C-FIND answers.
    [absent] = client.search_for_instances(ct.uids[0], fields=["PatientComments"])
    assert absent["00104000"] == {"vr": "LT"}


def test_limit_and_offset_page_through_in_a_stable_order(client, samples):
    everything = first(client.search_for_studies(), STUDY)
    pages = []
    for offset in range(0, len(everything) + 2, 2):
        page = client.search_for_studies(limit=2, offset=offset)
        assert len(page) <= 2
        pages += first(page, STUDY)
    assert pages == everything


def test_xml_results(archive_server, samples):
    ct = samples["CT_small.dcm"]
    response = requests.get(f"{archive_server.dicomweb_url}/studies", params={"PatientID": "1CT1"},
                            headers={"Accept": 'multipart/related; type="application/dicom+xml"'}, timeout=30)
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith('multipart/related; type="application/dicom+xml"')
    boundary = response.headers["Content-Type"].split("boundary=")[1]
    parts = [p for p in response.content.split(b"--" + boundary.encode()) if b"<NativeDicomModel" in p]
    assert len(parts) == 1
    root = ET.fromstring(parts[0].split(b"\r\n\r\n", 1)[1].rstrip(b"\r\n"))
    ns = {"d": "http://dicom.nema.org/PS3.19/models/NativeDICOM"}
    study = root.find("d:DicomAttribute[@tag='0020000D']/d:Value", ns)
    assert study is not None and study.text == ct.uids[0]
    family = root.find("d:DicomAttribute[@keyword='PatientName']/d:PersonName/d:Alphabetic/d:FamilyName", ns)
    assert family.text == "CompressedSamples"


def test_gzip_for_json(archive_server):
    response = requests.get(f"{archive_server.dicomweb_url}/instances", params={"includefield": "all"},
                            headers={"Accept-Encoding": "gzip"}, timeout=30)
    assert response.status_code == 200
    assert response.headers.get("Content-Encoding") == "gzip"
    assert len(response.json()) > 5  # requests decompressed it


def test_command_line_client_searches(archive_server, samples):
    proc = subprocess.run(
        [str(Path(sys.executable).parent / "dicomweb_client"), "--url", archive_server.dicomweb_url,
         "search", "studies", "--filter", "PatientName=CompressedSamples*", "--field", "StudyDescription"],
        capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    answers = json.loads(proc.stdout)
    expected = studies_where(samples, lambda ds: str(ds.get("PatientName", "")).startswith("CompressedSamples"))
    assert set(first(answers, STUDY)) == expected
    proc = subprocess.run(
        [str(Path(sys.executable).parent / "dicomweb_client"), "--url", archive_server.dicomweb_url,
         "search", "instances", "--filter", "Modality=MR", "--limit", "1"],
        capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert len(json.loads(proc.stdout)) == 1


def test_no_match_is_an_empty_array(archive_server):
    response = requests.get(f"{archive_server.dicomweb_url}/studies", params={"PatientID": "nobody"}, timeout=30)
    assert response.status_code == 200 and response.json() == []
    xml = requests.get(f"{archive_server.dicomweb_url}/series", params={"PatientID": "nobody"}, timeout=30,
                       headers={"Accept": 'multipart/related; type="application/dicom+xml"'})
    assert xml.status_code == 200 and xml.content.startswith(b"--") and xml.content.rstrip().endswith(b"--")
