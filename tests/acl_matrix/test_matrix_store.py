"""Store (C-STORE with DCMTK storescu, STOW-RS): a data set inside the sender's Store rules is stored, one
outside them is refused (0x0124 over DIMSE, FailureReason 0x0124 over STOW) and not stored, and in a mixed
request each is judged on its own. What is stored is checked by the control principal."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import requests

from acl_matrix_support import (ALICE_TOKEN, ANONYMOUS, BOSS, CAROL, CONSTRAINED_DIMSE_USERS, CONSTRAINED_HTTP, LABSCU, QUINN,
                                WRONG_PASSWORD, Principal, c_find, dcmtk, dicomweb_client_as, http, stow_body)
from dimse_client import synthesize
from pydicom import dcmread
from pydicom.uid import CTImageStorage

NOT_AUTHORIZED = 0x0124
_numbers = itertools.count(1)


def _new_instances(folder: Path, kinds: list[str]) -> list[tuple[Path, bool]]:
    """Fresh instances: "allowed" (INBOX patient, MR), "forbidden" (INBOX patient, CT; and a LAB patient,
    MR, which the principals may read but not store). Each with whether the Store rules allow it."""
    out = []
    for kind in kinds:
        n = next(_numbers)
        if kind == "allowed":
            path = synthesize(folder / f"ok{n}.dcm", patient_id=f"INBOX{n}", modality="MR", instance_number=n)
        elif n % 2:
            path = synthesize(folder / f"ct{n}.dcm", patient_id=f"INBOX{n}", modality="CT", sop_class=CTImageStorage,
                              instance_number=n)
        else:
            path = synthesize(folder / f"lab{n}.dcm", patient_id=f"LAB{n}", modality="MR", instance_number=n)
        out.append((path, kind == "allowed"))
    return out


def _stored(matrix, path: Path) -> bool:
    sop = str(dcmread(path, stop_before_pixels=True).SOPInstanceUID)
    answers, status = c_find(matrix.server, BOSS, {"QueryRetrieveLevel": "IMAGE", "StudyInstanceUID":
                                                   str(dcmread(path, stop_before_pixels=True).StudyInstanceUID),
                                                   "SOPInstanceUID": sop})
    assert status == 0x0000
    return bool(answers)


CONSTRAINTS = {"allowed": ["allowed"], "forbidden": ["forbidden"], "mixed": ["allowed", "forbidden", "forbidden"]}


@pytest.mark.parametrize("constraint", CONSTRAINTS)
@pytest.mark.parametrize("principal", [*CONSTRAINED_DIMSE_USERS, LABSCU], ids=lambda p: p.label)
def test_storescu(matrix, principal, constraint, tmp_path):
    """DCMTK storescu, as a user (-usr/-pwd) or as an AE title; several files go over one association."""
    files = _new_instances(tmp_path, CONSTRAINTS[constraint])
    # -nh: storescu stops at the first refusal unless told to go on.
    proc = dcmtk("storescu", matrix.server, principal, "-v", "-nh", files=[p for p, _ in files])
    for path, allowed in files:
        assert _stored(matrix, path) == allowed, path.name
    # DCMTK 3.6.7 names no C-STORE status 0x0124: it prints it as an unknown one.
    refusals = (proc.stdout + proc.stderr).count("Store Response (Unknown Status: 0x124)")
    assert refusals == sum(not allowed for _, allowed in files), proc.stderr


def _stow_answer(answer) -> tuple[set[str], dict[str, int]]:
    body = answer.json()
    stored = {item["00081155"]["Value"][0] for item in body.get("00081199", {}).get("Value", [])}
    failed = {item["00081155"]["Value"][0]: item["00081197"]["Value"][0] for item in body.get("00081198", {}).get("Value", [])}
    return stored, failed


@pytest.mark.parametrize("constraint", CONSTRAINTS)
@pytest.mark.parametrize("principal", CONSTRAINED_HTTP, ids=lambda p: p.label)
def test_stow_over_plain_http(matrix, principal, constraint, tmp_path):
    files = _new_instances(tmp_path, CONSTRAINTS[constraint])
    body, content_type = stow_body([p for p, _ in files])
    answer = http("POST", f"{matrix.url}/studies", {**principal.http_headers(matrix.tokens), "Content-Type": content_type,
                                                     "Accept": "application/dicom+json"}, body)
    allowed = [p for p, ok in files if ok]
    assert answer.status == (200 if len(allowed) == len(files) else 202 if allowed else 409), answer.body
    stored, failed = _stow_answer(answer)
    uids = {p: str(dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p, _ in files}
    assert stored == {uids[p] for p in allowed}
    assert failed == {uids[p]: NOT_AUTHORIZED for p, ok in files if not ok}
    for path, ok in files:
        assert _stored(matrix, path) == ok, path.name


@pytest.mark.parametrize("principal", [CAROL, ALICE_TOKEN], ids=lambda p: p.label)
def test_stow_with_dicomweb_client(matrix, principal, tmp_path):
    files = _new_instances(tmp_path, ["allowed", "allowed"])
    client = dicomweb_client_as(matrix.server, principal, matrix.tokens)
    answer = client.store_instances([dcmread(p) for p, _ in files])
    assert len(answer.ReferencedSOPSequence) == 2 and "FailedSOPSequence" not in answer
    assert all(_stored(matrix, p) for p, _ in files)
    refused = _new_instances(tmp_path, ["forbidden"])
    with pytest.raises(requests.HTTPError) as error:  # 409: every instance failed
        client.store_instances([dcmread(refused[0][0])])
    assert error.value.response.status_code == 409
    assert not _stored(matrix, refused[0][0])


@pytest.mark.parametrize("principal", [ANONYMOUS, WRONG_PASSWORD, QUINN, Principal("unknown-aet", aet="NOBODY2")],
                         ids=lambda p: p.label)
def test_no_store_without_a_store_rule(matrix, principal, tmp_path):
    files = _new_instances(tmp_path, ["allowed"])
    dcmtk("storescu", matrix.server, principal, files=[p for p, _ in files])
    body, content_type = stow_body([files[0][0]])
    answer = http("POST", f"{matrix.url}/studies", {**principal.http_headers({}), "Content-Type": content_type}, body)
    # Nobody logged in (or the login failed): 401 with the challenge; logged in without Store: 403.
    assert answer.status == (403 if principal is QUINN else 401)
    assert not _stored(matrix, files[0][0])
