"""The router's and the Bruker importer's admin HTTP API, on a server with access control enforced."""

from __future__ import annotations

import shutil
import subprocess

import pytest
import requests

from factory import encode, make_dataset
from support import dopamine_command, require_tool, run, shared_data, start_server

ADMIN = ("admin", "admin password for tests")
ANALYST = ("analyst", "analyst password for tests")
QUARANTINE_ODD_IDS = """<RuleSet name="triage">
  <Rule><Condition><Not><ElementMatch tag="PatientID" value="SUBJ-*"/></Not></Condition>
    <Action><Quarantine reason="patient ID outside the scheme"/></Action></Rule>
</RuleSet>"""


def dopamine(data_dir, *args, stdin=None):
    proc = subprocess.run(dopamine_command(*args, "--data-dir", str(data_dir)), input=stdin, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    data = tmp_path_factory.mktemp("admin-routing") / "data"
    for name, password in (ADMIN, ANALYST):
        dopamine(data, "user", "add", name, "--password-stdin", stdin=password + "\n")
    dopamine(data, "acl", "add", "user:admin", "Admin")
    dopamine(data, "acl", "add", "user:analyst", "Query")
    dopamine(data, "acl", "add", "aet:STORESCU@127.0.0.1", "Store")
    srv = start_server(data, access="enforced")
    yield srv
    srv.stop()


def admin_url(server, path):
    return f"http://{server.host}:{server.http_port}/admin{path}"


def test_only_administrators_reach_the_routing_api(server):
    assert requests.get(admin_url(server, "/rulesets"), timeout=10).status_code == 401
    assert requests.get(admin_url(server, "/rulesets"), auth=ANALYST, timeout=10).status_code == 403
    assert requests.get(admin_url(server, "/rulesets"), auth=ADMIN, timeout=10).status_code == 200


def test_put_validates_versions_and_deactivates_rule_sets(server):
    url = admin_url(server, "/rulesets/triage")
    xml = {"Content-Type": "application/xml"}
    broken = requests.put(url, data=QUARANTINE_ODD_IDS.replace("<Quarantine", "<Quarantain"), headers=xml,
                          auth=ADMIN, timeout=10)
    assert broken.status_code == 400
    assert any("line 3" in p and "Quarantain" in p for p in broken.json()["problems"])
    first = requests.put(url, data=QUARANTINE_ODD_IDS, headers=xml, auth=ADMIN, params={"protocol": "dimse"}, timeout=10)
    assert first.status_code == 200 and first.json()["version"] == 1
    second = requests.put(url, data=QUARANTINE_ODD_IDS, headers=xml, auth=ADMIN, params={"comment": "all inputs"}, timeout=10)
    assert second.json()["version"] == 2 and second.json()["inputs"] == "every input"
    detail = requests.get(url, auth=ADMIN, timeout=10).json()
    assert [v["version"] for v in detail["history"]] == [1, 2] and detail["history"][0]["author"] == "user:admin"
    assert "Quarantine" in requests.get(url + "/versions/1", auth=ADMIN, timeout=10).text
    assert requests.delete(url, auth=ADMIN, timeout=10).status_code == 204
    assert requests.get(admin_url(server, "/rulesets"), auth=ADMIN, timeout=10).json()[0]["active"] is False


def test_dry_run_shows_changes_and_stores_nothing(server):
    ds = make_dataset(PatientBirthDate="19700101", StudyDate="20200101")
    files = {"ruleset": (None, """<RuleSet name="t"><Rule><Action><AgeFromBirthDate/>
              <EmptyElement tag="PatientBirthDate"/></Action></Rule></RuleSet>"""),
             "instance": ("one.dcm", encode(ds), "application/dicom")}
    answer = requests.post(admin_url(server, "/rulesets/dry-run"), files=files, auth=ADMIN, timeout=30)
    assert answer.status_code == 200, answer.text
    [result] = answer.json()
    changes = {c["path"]: c for c in result["changes"]}
    assert result["decision"] == "store" and changes["PatientAge"]["new"] == "050Y"
    assert changes["PatientBirthDate"]["old"] == "19700101"
    qido = f"{server.dicomweb_url}/instances?SOPInstanceUID={ds.SOPInstanceUID}"
    assert requests.get(qido, auth=ANALYST, timeout=10).json() in ([], None)


def test_quarantine_listed_and_released_over_http(server, tmp_path):
    url = admin_url(server, "/rulesets/triage")
    requests.put(url, data=QUARANTINE_ODD_IDS, headers={"Content-Type": "application/xml"}, auth=ADMIN, timeout=10)
    ds = make_dataset(patient_id="HOSPITAL-123")
    path = tmp_path / "odd.dcm"
    path.write_bytes(encode(ds))
    run([require_tool("storescu"), "-aec", server.aet, server.host, str(server.dimse_port), str(path)])
    listed = requests.get(admin_url(server, "/quarantine"), auth=ADMIN, timeout=10).json()
    assert [e["sop_instance_uid"] for e in listed] == [ds.SOPInstanceUID]
    assert listed[0]["reason"] == "patient ID outside the scheme"
    qido = f"{server.dicomweb_url}/instances?SOPInstanceUID={ds.SOPInstanceUID}"
    assert requests.get(qido, auth=ANALYST, timeout=10).json() in ([], None)
    released = requests.post(admin_url(server, f"/quarantine/{ds.SOPInstanceUID}/release"), auth=ADMIN, timeout=30)
    assert released.status_code == 200 and released.json()["status"] == "stored"
    assert len(requests.get(qido, auth=ANALYST, timeout=10).json()) == 1
    requests.delete(url, auth=ADMIN, timeout=10)


def test_zipped_bruker_study_uploaded_converted_and_stored(server, tmp_path):
    phantom = shared_data("bruker", "pv51_multislice_phantom")
    archive_path = shutil.make_archive(str(tmp_path / "phantom"), "zip", phantom)
    with open(archive_path, "rb") as body:
        answer = requests.post(admin_url(server, "/bruker"), data=body, auth=ADMIN,
                               headers={"Content-Type": "application/zip"}, timeout=120)
    assert answer.status_code == 200, answer.text
    assert answer.json()["totals"].get("stored") == 3
    found = requests.get(f"{server.dicomweb_url}/instances", params={"Modality": "MR", "SeriesDescription": "*flash*"},
                         auth=ANALYST, timeout=10).json()
    assert len(found) == 3
    not_zip = requests.post(admin_url(server, "/bruker"), data=b"PK-not-really", auth=ADMIN,
                            headers={"Content-Type": "application/zip"}, timeout=30)
    assert not_zip.status_code == 422 and "error" in not_zip.json()
    assert requests.post(admin_url(server, "/bruker"), data=b"x", auth=ANALYST,
                         headers={"Content-Type": "application/zip"}, timeout=30).status_code == 403
