"""Probes that try to learn something about hidden data; none may succeed."""

from __future__ import annotations

import re

import pytest

from acl_matrix_support import (ALICE, ALICE_TOKEN, BOSS, LABSCU, MAX_RESULTS, A, F, M, c_find, c_move, dcmtk, findscu,
                                http)

ALL_LEVELS = ["studies", "series", "instances", f"studies/{M}/series", f"studies/{M}/instances"]


@pytest.mark.parametrize("path", ALL_LEVELS)
def test_qido_with_includefield_all_shows_no_hidden_value(matrix, path):
    hidden = matrix.corpus.hidden_uids() | {"OTHER1", "OTHER2", "OTHER3"}
    texts = []
    for offset in (0, MAX_RESULTS, 2 * MAX_RESULTS):
        answer = http("GET", f"{matrix.url}/{path}?includefield=all&offset={offset}", ALICE.http_headers({}))
        assert answer.status == 200
        texts.append(answer.body.decode())
    body = "".join(texts)
    assert body.count("0020000D") > 0, "the probe must see some data"
    leaked = {value for value in hidden if value in body}
    assert not leaked
    assert '"CT"' not in body, "the hidden CT series of the mixed study shows through"


def _same_shape_absent_uid(uid: str) -> str:
    """A UID of the same length that names nothing: only the last digit changes (to 9s, never used here)."""
    return uid[:-1] + ("8" if uid[-1] == "9" else "9")


def _hidden_and_absent_paths(matrix) -> list[tuple[str, str]]:
    """(path to a hidden resource, the same path to an absent one of the same shape): a hidden study, and
    a hidden series and instance inside a visible (mixed) study."""
    hidden_study_instance = matrix.corpus.of_study(F)[0]
    hidden_in_visible_study = [i for i in matrix.corpus.of_study(M) if i.modality == "CT"][0]
    pairs = []
    for inst in (hidden_study_instance, hidden_in_visible_study):
        study_is_hidden = inst.study == F
        names = {"hidden": (inst.study, inst.series, inst.sop),
                 "absent": (_same_shape_absent_uid(inst.study) if study_is_hidden else inst.study,
                            _same_shape_absent_uid(inst.series), _same_shape_absent_uid(inst.sop))}
        paths = {}
        for kind, (study, series, sop) in names.items():
            listed = [f"studies/{study}/series/{series}", f"studies/{study}/series/{series}/metadata",
                      f"studies/{study}/series/{series}/rendered"]
            if study_is_hidden:
                listed += [f"studies/{study}", f"studies/{study}/metadata", f"studies/{study}/thumbnail"]
            instance = f"studies/{study}/series/{series}/instances/{sop}"
            listed += [instance + suffix for suffix in
                       ("", "/metadata", "/frames/1", "/rendered", "/thumbnail", "/bulkdata/7fe00010")]
            listed.append(f"wado?requestType=WADO&studyUID={study}&seriesUID={series}&objectUID={sop}")
            paths[kind] = listed
        pairs += list(zip(paths["hidden"], paths["absent"]))
    return pairs


@pytest.mark.parametrize("principal", [ALICE, ALICE_TOKEN], ids=lambda p: p.label)
def test_wado_of_a_guessed_uid_answers_like_a_nonexistent_one(matrix, principal):
    headers = principal.http_headers(matrix.tokens)
    for hidden_path, absent_path in _hidden_and_absent_paths(matrix):
        hidden = http("GET", f"{matrix.url}/{hidden_path}", headers)
        absent = http("GET", f"{matrix.url}/{absent_path}", headers)
        assert hidden.status == absent.status == 404, (hidden_path, hidden.status, absent.status)
        uids = re.compile(rb"[0-9]+(\.[0-9]+){4,}")
        assert uids.sub(b"<uid>", hidden.body) == uids.sub(b"<uid>", absent.body), hidden_path
        assert len(hidden.body) == len(absent.body), hidden_path
        for header in ("content-type", "content-length"):
            assert hidden.headers.get(header) == absent.headers.get(header), (hidden_path, header)
    # ... and the control principal gets the hidden ones.
    assert http("GET", f"{matrix.url}/studies/{F}/metadata", BOSS.http_headers({})).status == 200


def test_cmove_of_a_hidden_study_to_an_allowed_destination_sends_nothing(matrix):
    matrix.destination.clear()
    keys = {"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": F}
    assert c_move(matrix.server, ALICE, keys, matrix.destination.aet) == 0x0000
    dcmtk("movescu", matrix.server, LABSCU, "-S", "-aem", matrix.destination.aet, "-k", "QueryRetrieveLevel=STUDY",
          "-k", f"StudyInstanceUID={F}", check=True)
    for level_keys in ({"QueryRetrieveLevel": "SERIES", "StudyInstanceUID": M,
                        "SeriesInstanceUID": [i for i in matrix.corpus.of_study(M) if i.modality == "CT"][0].series},
                       {"QueryRetrieveLevel": "IMAGE", "StudyInstanceUID": F,
                        "SeriesInstanceUID": matrix.corpus.of_study(F)[0].series,
                        "SOPInstanceUID": matrix.corpus.of_study(F)[0].sop}):
        assert c_move(matrix.server, ALICE, level_keys, matrix.destination.aet) == 0x0000
    matrix.destination.wait_quiet()
    assert matrix.destination.received() == set()
    # The destination works: the control principal's move of the same study arrives.
    assert c_move(matrix.server, BOSS, keys, matrix.destination.aet) == 0x0000
    matrix.destination.wait_quiet()
    assert matrix.destination.received() == {i.sop for i in matrix.corpus.of_study(F)}


def test_study_counts_of_the_mixed_study_agree_over_cfind_and_qido(matrix, tmp_path):
    keys = {"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": M, "NumberOfStudyRelatedInstances": "",
            "NumberOfStudyRelatedSeries": "", "ModalitiesInStudy": "", "SOPClassesInStudy": ""}
    (answer,), _ = c_find(matrix.server, ALICE, keys)
    assert (int(answer.NumberOfStudyRelatedInstances), int(answer.NumberOfStudyRelatedSeries)) == (2, 1)
    assert answer.ModalitiesInStudy == "MR" and answer.SOPClassesInStudy == "1.2.840.10008.5.1.4.1.1.4"
    (dcmtk_answer,) = findscu(matrix.server, LABSCU, {k: (v or None) for k, v in keys.items()}, tmp_path)
    assert int(dcmtk_answer.NumberOfStudyRelatedInstances) == 2 and dcmtk_answer.ModalitiesInStudy == "MR"
    qido = http("GET", f"{matrix.url}/studies?StudyInstanceUID={M}&includefield=all", ALICE.http_headers({})).json()
    assert qido[0]["00201208"]["Value"] == [2] and qido[0]["00201206"]["Value"] == [1]
    assert qido[0]["00080061"]["Value"] == ["MR"]
    # Series level: the visible series counts its instances; the hidden one is not listed.
    series = http("GET", f"{matrix.url}/studies/{M}/series?includefield=NumberOfSeriesRelatedInstances",
                  ALICE.http_headers({})).json()
    assert [s["00201209"]["Value"] for s in series] == [[2]]


def test_patient_level_counts_see_visible_data_only(matrix):
    keys = {"QueryRetrieveLevel": "PATIENT", "PatientID": "LAB2", "NumberOfPatientRelatedStudies": "",
            "NumberOfPatientRelatedSeries": "", "NumberOfPatientRelatedInstances": ""}
    (answer,), status = c_find(matrix.server, ALICE, keys, patient_root=True)
    assert status == 0x0000
    assert (int(answer.NumberOfPatientRelatedStudies), int(answer.NumberOfPatientRelatedSeries),
            int(answer.NumberOfPatientRelatedInstances)) == (1, 1, 2)
    hidden_patient, status = c_find(matrix.server, ALICE, {**keys, "PatientID": "OTHER1"}, patient_root=True)
    assert hidden_patient == [] and status == 0x0000


def test_paging_runs_over_visible_data_only(matrix):
    visible = matrix.corpus.visible_studies
    headers = ALICE.http_headers({})

    def page(query: str):
        answer = http("GET", f"{matrix.url}/studies?{query}", headers)
        assert answer.status == 200
        return [a["0020000D"]["Value"][0] for a in answer.json()], answer.headers

    assert page("limit=2")[0] == visible[:2]
    assert page("limit=2&offset=2")[0] == visible[2:4]
    assert page("offset=4")[0] == []
    assert page("limit=1&offset=3")[0] == visible[3:4]
    # As many visible studies as the server returns at most: no "more results" Warning, which hidden
    # studies would otherwise trigger (the control principal, who sees 7, gets it).
    everything, answer_headers = page("")
    assert everything == visible and "warning" not in answer_headers
    assert "warning" in http("GET", f"{matrix.url}/studies", BOSS.http_headers({})).headers


def test_matching_a_hidden_instance_through_modalities_in_study(matrix):
    """ModalitiesInStudy=CT must not select the mixed study: its CT instances are hidden from alice."""
    keys = {"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": "", "ModalitiesInStudy": "CT"}
    answers, status = c_find(matrix.server, ALICE, keys)
    qido = http("GET", f"{matrix.url}/studies?ModalitiesInStudy=CT", ALICE.http_headers({})).json()
    assert status == 0x0000
    assert answers == [] and qido == [], "the answer reveals a hidden CT instance in study M"
    assert c_find(matrix.server, BOSS, keys)[0], "the control sees the CT study"


def test_a_study_visible_in_part_is_retrieved_in_part_over_every_protocol(matrix, tmp_path):
    """The mixed study's hidden CT series, named explicitly, is absent everywhere."""
    ct = [i for i in matrix.corpus.of_study(M) if i.modality == "CT"]
    answers, _ = c_find(matrix.server, ALICE, {"QueryRetrieveLevel": "IMAGE", "StudyInstanceUID": M,
                                                "SeriesInstanceUID": ct[0].series, "SOPInstanceUID": ""})
    assert answers == []
    qido = http("GET", f"{matrix.url}/studies/{M}/series/{ct[0].series}/instances", ALICE.http_headers({}))
    assert qido.status == 200 and qido.json() == []
    assert http("GET", f"{matrix.url}/studies/{A}/series/{ct[0].series}", ALICE.http_headers({})).status == 404
