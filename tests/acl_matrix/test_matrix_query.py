"""Query (C-FIND and QIDO-RS): each principal sees the allowed studies, and of a mixed study only the
allowed instances, counted as such; the unconstrained control sees everything, so the hidden data exist."""

from __future__ import annotations

import pytest

from acl_matrix_support import (ALICE, ANONYMOUS, BOSS, MAX_RESULTS, CONSTRAINED_DIMSE_USERS, CONSTRAINED_HTTP, LABSCU, M, QUINN,
                                WRONG_PASSWORD, F, association_accepted, c_find, dicomweb_client_as, findscu, http)

NOT_AUTHORIZED = 0x0124
STUDY_KEYS = {"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": "", "NumberOfStudyRelatedInstances": "",
              "NumberOfStudyRelatedSeries": "", "ModalitiesInStudy": ""}


def _study_answers_over_qido(matrix, principal, client: str) -> list[dict]:
    params = {"includefield": "NumberOfStudyRelatedInstances,NumberOfStudyRelatedSeries,ModalitiesInStudy"}
    if client == "dicomweb-client":
        return dicomweb_client_as(matrix.server, principal, matrix.tokens).search_for_studies(
            fields=params["includefield"].split(","))
    answer = http("GET", f"{matrix.url}/studies?includefield={params['includefield']}",
                  {**principal.http_headers(matrix.tokens), "Accept": "application/dicom+json"})
    assert answer.status == 200, answer.body
    return answer.json()


def _qido_summary(answers: list[dict]) -> dict[str, tuple[int, int, list[str]]]:
    return {a["0020000D"]["Value"][0]: (int(a["00201208"]["Value"][0]), int(a["00201206"]["Value"][0]),
                                        a["00080061"].get("Value", [])) for a in answers}


def _values(ds, keyword: str) -> list[str]:
    value = ds.get(keyword)
    if not value:
        return []
    return [str(v) for v in value] if not isinstance(value, str) else [value]


def _dimse_summary(answers) -> dict[str, tuple[int, int, list[str]]]:
    return {str(a.StudyInstanceUID): (int(a.NumberOfStudyRelatedInstances), int(a.NumberOfStudyRelatedSeries),
                                      sorted(_values(a, "ModalitiesInStudy"))) for a in answers}


def _expected(matrix, visible_only: bool = True) -> dict[str, tuple[int, int, list[str]]]:
    out = {}
    studies = matrix.corpus.visible_studies if visible_only else matrix.corpus.studies
    for study in studies:
        instances = matrix.corpus.of_study(study, visible=True if visible_only else None)
        out[study] = (len(instances), len({i.series for i in instances}), sorted({i.modality for i in instances}))
    return out


@pytest.mark.parametrize("client", ["dicomweb-client", "urllib"])
@pytest.mark.parametrize("principal", CONSTRAINED_HTTP, ids=lambda p: p.label)
def test_qido_returns_and_counts_only_the_allowed_data(matrix, principal, client):
    summary = _qido_summary(_study_answers_over_qido(matrix, principal, client))
    assert summary == _expected(matrix)
    assert summary[M] == (2, 1, ["MR"]), "the mixed study counts its visible MR instances only"


@pytest.mark.parametrize("principal", CONSTRAINED_DIMSE_USERS, ids=lambda p: p.label)
def test_cfind_as_a_user_returns_and_counts_only_the_allowed_data(matrix, principal):
    answers, status = c_find(matrix.server, principal, STUDY_KEYS)
    assert status == 0x0000
    assert _dimse_summary(answers) == _expected(matrix)


def test_cfind_as_an_ae_title_with_findscu(matrix, tmp_path):
    answers = findscu(matrix.server, LABSCU, {"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": None,
                                              "NumberOfStudyRelatedInstances": None,
                                              "NumberOfStudyRelatedSeries": None, "ModalitiesInStudy": None},
                      tmp_path)
    assert _dimse_summary(answers) == _expected(matrix)


def test_the_control_principal_sees_the_hidden_data(matrix):
    """Without this, 'hidden data do not appear' could pass on an archive that simply lacks them."""
    answers, status = c_find(matrix.server, BOSS, STUDY_KEYS)
    assert status == 0x0000 and _dimse_summary(answers) == _expected(matrix, visible_only=False)
    assert _dimse_summary(answers)[M] == (5, 2, ["CT", "MR"])
    pages = [http("GET", f"{matrix.url}/studies?offset={offset}&includefield=NumberOfStudyRelatedInstances,"
                         "NumberOfStudyRelatedSeries,ModalitiesInStudy", BOSS.http_headers({})).json()
             for offset in (0, MAX_RESULTS)]  # the server answers MAX_RESULTS at most
    assert _qido_summary(pages[0] + pages[1]) == _expected(matrix, visible_only=False)


@pytest.mark.parametrize("level", ["SERIES", "IMAGE"])
def test_lower_levels_of_the_mixed_study_list_visible_entities_only(matrix, level):
    visible = matrix.corpus.of_study(M, visible=True)
    key = "SeriesInstanceUID" if level == "SERIES" else "SOPInstanceUID"
    answers, status = c_find(matrix.server, ALICE, {"QueryRetrieveLevel": level, "StudyInstanceUID": M, key: ""})
    expected = {getattr(i, "series" if level == "SERIES" else "sop") for i in visible}
    assert status == 0x0000 and {str(getattr(a, key)) for a in answers} == expected
    path = "series" if level == "SERIES" else "instances"
    qido = http("GET", f"{matrix.url}/studies/{M}/{path}", ALICE.http_headers({}))
    tag = "0020000E" if level == "SERIES" else "00080018"
    assert {a[tag]["Value"][0] for a in qido.json()} == expected



def test_a_query_for_a_hidden_study_finds_nothing(matrix):
    answers, status = c_find(matrix.server, ALICE, {"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": F})
    assert status == 0x0000 and answers == []
    qido = http("GET", f"{matrix.url}/studies?StudyInstanceUID={F}", ALICE.http_headers({}))
    assert qido.status == 200 and qido.json() == []
    # ... although it is there.
    assert c_find(matrix.server, BOSS, {"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": F})[0]


def test_anonymous_and_unknown_ae_titles_may_not_query(matrix, tmp_path):
    answers, status = c_find(matrix.server, ANONYMOUS, STUDY_KEYS)
    assert answers == [] and status == NOT_AUTHORIZED
    # findscu reports the refusal and returns no answer.
    assert findscu(matrix.server, ANONYMOUS, {"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": None}, tmp_path) == []
    answer = http("GET", f"{matrix.url}/studies")
    assert answer.status == 401 and answer.headers["www-authenticate"].startswith("Basic realm=")


def test_an_ae_title_bound_to_another_address_gives_nothing(matrix):
    """aet:FARSCU@10.254.254.254 may Query: calling as FARSCU from 127.0.0.1 is someone else."""
    from acl_matrix_support import Principal

    answers, status = c_find(matrix.server, Principal("far", aet="FARSCU"), STUDY_KEYS)
    assert answers == [] and status == NOT_AUTHORIZED


def test_a_wrong_password_is_refused_on_both_protocols(matrix):
    assert not association_accepted(matrix.server, WRONG_PASSWORD)
    for client in ("urllib", "dicomweb-client"):
        if client == "urllib":
            answer = http("GET", f"{matrix.url}/studies", WRONG_PASSWORD.http_headers({}))
            assert answer.status == 401 and "www-authenticate" in answer.headers
        else:
            import requests

            with pytest.raises(requests.HTTPError) as error:
                dicomweb_client_as(matrix.server, WRONG_PASSWORD, {}).search_for_studies()
            assert error.value.response.status_code == 401


def test_query_without_retrieve_shows_existence_only(matrix):
    """A principal may know data exist without fetching them: quinn queries everything, retrieves nothing."""
    answers, status = c_find(matrix.server, QUINN, STUDY_KEYS)
    assert status == 0x0000 and len(answers) == len(matrix.corpus.studies)
    study = matrix.corpus.studies[0]
    assert http("GET", f"{matrix.url}/studies/{study}", QUINN.http_headers({})).status == 403
