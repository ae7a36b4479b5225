"""Retrieve (C-GET, C-MOVE, WADO-RS, WADO-URI): an allowed study comes whole, a forbidden one not at all
(404 over HTTP, as if absent), a mixed one with its allowed instances only."""

from __future__ import annotations

import pytest
import requests

from acl_matrix_support import (ANONYMOUS, BOSS, CONSTRAINED_DIMSE_USERS, CONSTRAINED_HTTP, LABSCU, WRONG_PASSWORD, A,
                                F, M, c_get, c_move, dcmtk, dicomweb_client_as, http, multipart_parts)

NOT_AUTHORIZED = 0x0124
STUDIES = {"allowed": A, "forbidden": F, "mixed": M}


def _allowed_uids(matrix, study: str) -> set[str]:
    return {i.sop for i in matrix.corpus.of_study(study, visible=True)}


@pytest.mark.parametrize("constraint", STUDIES)
@pytest.mark.parametrize("principal", CONSTRAINED_HTTP, ids=lambda p: p.label)
def test_wado_rs_with_dicomweb_client(matrix, principal, constraint):
    study = STUDIES[constraint]
    client = dicomweb_client_as(matrix.server, principal, matrix.tokens)
    expected = _allowed_uids(matrix, study)
    if not expected:
        with pytest.raises(requests.HTTPError) as error:
            client.retrieve_study(study)
        assert error.value.response.status_code == 404
        return
    assert {str(ds.SOPInstanceUID) for ds in client.retrieve_study(study)} == expected
    assert {m["00080018"]["Value"][0] for m in client.retrieve_study_metadata(study)} == expected


@pytest.mark.parametrize("constraint", STUDIES)
@pytest.mark.parametrize("principal", CONSTRAINED_HTTP, ids=lambda p: p.label)
def test_wado_rs_and_wado_uri_over_plain_http(matrix, principal, constraint):
    study = STUDIES[constraint]
    headers = principal.http_headers(matrix.tokens)
    expected = _allowed_uids(matrix, study)
    answer = http("GET", f"{matrix.url}/studies/{study}", {**headers, "Accept": 'multipart/related; type="application/dicom"'})
    if expected:
        assert answer.status == 200 and multipart_parts(answer) == len(expected)
    else:
        assert answer.status == 404
    for instance in matrix.corpus.of_study(study):
        uri = http("GET", f"{matrix.url}/wado?requestType=WADO&studyUID={study}&seriesUID={instance.series}"
                          f"&objectUID={instance.sop}&contentType=application/dicom", headers)
        assert uri.status == (200 if instance.sop in expected else 404), instance


@pytest.mark.parametrize("constraint", STUDIES)
@pytest.mark.parametrize("operation", ["C-GET", "C-MOVE"])
@pytest.mark.parametrize("principal", CONSTRAINED_DIMSE_USERS, ids=lambda p: p.label)
def test_dimse_retrieve_as_a_user(matrix, principal, operation, constraint):
    study = STUDIES[constraint]
    keys = {"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": study}
    if operation == "C-GET":
        received, status = c_get(matrix.server, principal, keys)
    else:
        matrix.destination.clear()
        status = c_move(matrix.server, principal, keys, matrix.destination.aet)
        matrix.destination.wait_quiet()
        received = matrix.destination.received()
    assert status == 0x0000
    assert received == _allowed_uids(matrix, study)


@pytest.mark.parametrize("constraint", STUDIES)
@pytest.mark.parametrize("tool", ["getscu", "movescu"])
def test_dcmtk_retrieve_as_an_ae_title(matrix, tool, constraint, tmp_path):
    study = STUDIES[constraint]
    keys = ["-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={study}"]
    if tool == "getscu":
        dcmtk("getscu", matrix.server, LABSCU, "-S", "-od", str(tmp_path), *keys, check=True)
        received = {p.name.split(".", 1)[1] for p in tmp_path.iterdir()}
    else:
        matrix.destination.clear()
        dcmtk("movescu", matrix.server, LABSCU, "-S", "-aem", matrix.destination.aet, *keys, check=True)
        matrix.destination.wait_quiet()
        received = matrix.destination.received()
    assert received == _allowed_uids(matrix, study)


def test_anonymous_and_wrong_passwords_retrieve_nothing(matrix, tmp_path):
    keys = {"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": A}
    received, status = c_get(matrix.server, ANONYMOUS, keys)
    assert received == set() and status == NOT_AUTHORIZED
    dcmtk("getscu", matrix.server, ANONYMOUS, "-S", "-od", str(tmp_path), "-k", "QueryRetrieveLevel=STUDY",
          "-k", f"StudyInstanceUID={A}")
    assert not list(tmp_path.iterdir())
    for principal in (ANONYMOUS, WRONG_PASSWORD):
        answer = http("GET", f"{matrix.url}/studies/{A}", principal.http_headers({}))
        assert answer.status == 401 and "www-authenticate" in answer.headers and b"DICM" not in answer.body


def test_the_control_principal_retrieves_the_hidden_data(matrix):
    received, status = c_get(matrix.server, BOSS, {"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": M})
    assert status == 0x0000 and received == {i.sop for i in matrix.corpus.of_study(M)}
