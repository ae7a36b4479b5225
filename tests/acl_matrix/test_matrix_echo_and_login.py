"""Echo per principal, and what every DICOMweb request goes through first: logins, throttling, CORS
preflight, the open status resource, and rule changes made with the `dopamine` command while serving."""

from __future__ import annotations

import base64

import pytest

from dimse_client import synthesize
from acl_matrix_support import (ANONYMOUS, CONSTRAINED_DIMSE_USERS, LABSCU, QUINN, WRONG_PASSWORD, A, Principal,
                                associate, association_accepted, dcmtk, dopamine_cli, http)

CHALLENGE = 'Basic realm="Dopamine-py", charset="UTF-8", Bearer realm="Dopamine-py"'


def _echo(server, principal) -> str:
    """"ok", "refused" (association rejected) or "aborted" (the archive ends it: no Echo right)."""
    from pynetdicom.sop_class import Verification

    assoc = associate(server, principal, [Verification])
    if not assoc.is_established:
        return "refused"
    status = assoc.send_c_echo()
    if assoc.is_established:
        assoc.release()
    return "ok" if status and status.Status == 0x0000 else "aborted"


@pytest.mark.parametrize("principal, expected", [
    *[(p, "ok") for p in CONSTRAINED_DIMSE_USERS],
    (LABSCU, "ok"),
    (QUINN, "aborted"),  # logged in, no Echo rule
    (ANONYMOUS, "aborted"),
    (WRONG_PASSWORD, "refused"),
], ids=lambda p: getattr(p, "label", p))
def test_echo_with_pynetdicom(matrix, principal, expected):
    assert _echo(matrix.server, principal) == expected


@pytest.mark.parametrize("principal, succeeds", [(LABSCU, True), (ANONYMOUS, False), (Principal("far", aet="FARSCU"), False)],
                         ids=lambda p: getattr(p, "label", p))
def test_echo_with_echoscu(matrix, principal, succeeds):
    proc = dcmtk("echoscu", matrix.server, principal, "-v")
    output = proc.stdout + proc.stderr
    if succeeds:
        assert proc.returncode == 0 and "Received Echo Response (Success)" in output, output
    else:
        assert "Received Echo Response (Success)" not in output, output


def test_a_storescu_login_with_a_wrong_password_rejects_the_association(matrix, tmp_path):
    path = synthesize(tmp_path / "x.dcm", patient_id="INBOX-WRONG-PASSWORD")
    proc = dcmtk("storescu", matrix.server, WRONG_PASSWORD, "-v", files=[path])
    assert proc.returncode != 0 and "Association Rejected" in proc.stdout + proc.stderr


@pytest.mark.parametrize("header", [
    "Basic " + base64.b64encode(b"alice:nope-nope-nope").decode(),  # wrong password
    "Basic " + base64.b64encode(b"nobody-at-all:whatever-pass").decode(),  # unknown user
    "Basic !!!not-base64",
    "Bearer not-a-token",
    "Bearer dpt_AAAAAAAAAAAA_" + "A" * 43,  # well formed, unknown
    "Negotiate abc",
])
def test_refused_credentials_get_401_with_the_challenge_and_no_detail(matrix, header):
    answer = http("GET", f"{matrix.url}/studies", {"Authorization": header})
    assert answer.status == 401 and answer.headers["www-authenticate"] == CHALLENGE
    assert answer.body == b"the credentials were refused\n", "the body must not tell unknown users from wrong passwords"


def test_too_many_failed_logins_get_429_with_retry_after(matrix):
    header = {"Authorization": "Basic " + base64.b64encode(b"guesser:wrong-guess-1").decode()}
    # 20 free failures (the matrix's configuration), a 21st that starts the wait, then 429 until it ends.
    statuses = [http("GET", f"{matrix.url}/studies", header).status for _ in range(21)]
    assert statuses == [401] * 21
    answer = http("GET", f"{matrix.url}/studies", header)
    assert answer.status == 429 and int(answer.headers["retry-after"]) >= 1


def test_cors_preflight_needs_no_credentials(matrix):
    answer = http("OPTIONS", f"{matrix.url}/studies", {"Origin": "http://viewer.example",
                                                       "Access-Control-Request-Method": "GET",
                                                       "Access-Control-Request-Headers": "authorization"})
    assert answer.status == 200 and answer.headers["access-control-allow-origin"] == "http://viewer.example"
    refused = http("GET", f"{matrix.url}/studies", {"Origin": "http://viewer.example"})
    assert refused.status == 401
    # The browser lets the viewer read the challenge.
    assert "WWW-Authenticate" in refused.headers["access-control-expose-headers"]


def test_status_stays_open(matrix):
    assert http("GET", f"{matrix.url}/status").status == 200


def test_rule_changes_with_the_command_apply_at_once(matrix):
    """`dopamine acl add` / `acl remove` against the served folder change the very next decision."""
    headers = QUINN.http_headers({})
    assert http("GET", f"{matrix.url}/studies/{A}/metadata", headers).status == 403
    added = dopamine_cli(matrix.server, "acl", "add", "user:quinn", "Retrieve", "--match", "PatientID=LAB1")
    rule_id = added.stdout.split()[2].rstrip(":")
    try:
        assert http("GET", f"{matrix.url}/studies/{A}/metadata", headers).status == 200
    finally:
        dopamine_cli(matrix.server, "acl", "remove", rule_id)
    assert http("GET", f"{matrix.url}/studies/{A}/metadata", headers).status == 403
    assert association_accepted(matrix.server, QUINN)  # logged in: only the right is gone


def test_a_cmove_after_a_refused_echo_still_completes(matrix):
    """The archive aborts an association whose C-ECHO it refuses; the associations after it must not suffer.
    (Regression seen with pynetdicom's reactors woken by events, dopamine_py/dimse_wakeups.py: the next
    C-MOVE to a DCMTK storescp waited for the DIMSE timeout.)"""
    from acl_matrix_support import ALICE, c_move

    dcmtk("echoscu", matrix.server, ANONYMOUS)
    matrix.destination.clear()
    status = c_move(matrix.server, ALICE, {"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": A},
                    matrix.destination.aet)
    matrix.destination.wait_quiet()
    assert status == 0x0000
    assert matrix.destination.received() == {i.sop for i in matrix.corpus.of_study(A)}
