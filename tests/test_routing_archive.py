"""Routing in the archive: rule sets activated in the database, applied to every input, decisions carried out."""

from __future__ import annotations

import subprocess
import time

import pytest
from pydicom import dcmread

from dopamine_py.router import provenance_of

from factory import encode, make_dataset, make_file
from support import dopamine_command, free_port, require_tool, run, shared_data, start_server

PAPER_EXAMPLE = """<RuleSet name="age">
<Rule>
  <Condition>
    <ElementMatch tag="PatientBirthDate" value="?*"/>
  </Condition>
  <Action>
    <AgeFromBirthDate />
    <EmptyElement tag="PatientBirthDate"/>
  </Action>
</Rule>
</RuleSet>
"""


def dopamine(data_dir, *args, check=True):
    return run(dopamine_command(*args, "--data-dir", str(data_dir)), check=check)


def activate(data_dir, tmp_path, xml, name="rules.xml", *extra):
    path = tmp_path / name
    path.write_text(xml)
    return dopamine(data_dir, "rules", "activate", str(path), *extra)


def storescu(server, *files):
    return run([require_tool("storescu"), "-aec", server.aet, server.host, str(server.dimse_port), *map(str, files)],
               check=False)


def find(server, level, **keys):
    args = [require_tool("findscu"), "-S", "-aec", server.aet, "-k", f"QueryRetrieveLevel={level}"]
    for key, value in keys.items():
        args += ["-k", f"{key}={value}" if value is not None else key]
    proc = run(args + [server.host, str(server.dimse_port)])
    return proc.stdout + proc.stderr


@pytest.fixture
def data_dir(tmp_path):
    return tmp_path / "data"


def test_the_papers_example_runs_on_dimse_input_as_written(data_dir, tmp_path):
    assert "version 1 is active" in activate(data_dir, tmp_path, PAPER_EXAMPLE).stdout
    server = start_server(data_dir)
    try:
        # Pixel data larger than what the archive reads at once: the rule must work on deferred values too.
        sent = make_file(tmp_path / "in.dcm", PatientBirthDate="19800115", StudyDate="20240601", rows=64, columns=64)
        assert storescu(server, tmp_path / "in.dcm").returncode == 0
        answer = find(server, "IMAGE", SOPInstanceUID=sent.SOPInstanceUID, PatientAge=None, PatientBirthDate=None)
        assert "044Y" in answer
        assert "19800115" not in answer
    finally:
        server.stop()
    from dopamine_py.config import load_settings
    from dopamine_py.assembly import open_archive

    archive = open_archive(load_settings(overrides={"data_dir": str(data_dir)}))
    with archive.open_original(str(sent.SOPInstanceUID)) as f:
        stored = dcmread(f)
    assert stored.PixelData == sent.PixelData and stored.PatientAge == "044Y" and not stored.PatientBirthDate
    [provenance] = provenance_of(archive.routing.records, sent.SOPInstanceUID)
    assert provenance["rulesets"] == [{"name": "age", "version": 1, "fired": [1]}]
    changed = {c["path"]: c for c in provenance["changes"]}
    assert changed["PatientBirthDate"]["old"] == "19800115" and changed["PatientAge"]["new"] == "044Y"
    shown = dopamine(data_dir, "rules", "provenance", sent.SOPInstanceUID).stdout
    assert "rule set age version 1: rules fired: 1" in shown
    assert "~ PatientBirthDate: 19800115 -> " in shown and "+ PatientAge = 044Y" in shown
    assert dopamine(data_dir, "rules", "provenance", "1.2.3.4", check=False).returncode == 1


def test_reject_quarantine_and_release(data_dir, tmp_path):
    activate(data_dir, tmp_path, """<RuleSet name="triage">
      <Rule name="no-phantoms"><Condition><ElementMatch tag="PatientName" value="Phantom*"/></Condition>
        <Action><Reject reason="phantom scans are not archived"/></Action></Rule>
      <Rule name="check-id"><Condition><Not><ElementMatch tag="PatientID" value="SUBJ-*"/></Not></Condition>
        <Action><Quarantine reason="patient ID outside the study's scheme"/></Action></Rule>
    </RuleSet>""")
    server = start_server(data_dir)
    try:
        phantom = make_file(tmp_path / "phantom.dcm", patient_name="Phantom^Water", patient_id="SUBJ-1")
        odd = make_file(tmp_path / "odd.dcm", patient_id="12345")
        good = make_file(tmp_path / "good.dcm", patient_id="SUBJ-2")
        proc = storescu(server, tmp_path / "phantom.dcm")
        assert "0124" in proc.stderr + proc.stdout or proc.returncode != 0
        assert storescu(server, tmp_path / "odd.dcm", tmp_path / "good.dcm").returncode == 0
        visible = find(server, "IMAGE", SOPInstanceUID=None)
        assert good.SOPInstanceUID in visible
        assert odd.SOPInstanceUID not in visible and phantom.SOPInstanceUID not in visible
        listing = dopamine(data_dir, "quarantine", "list").stdout
        assert odd.SOPInstanceUID in listing and "outside the study's scheme" in listing
        assert "stored" in dopamine(data_dir, "quarantine", "release", odd.SOPInstanceUID).stdout
        assert odd.SOPInstanceUID in find(server, "IMAGE", SOPInstanceUID=None)
        assert odd.SOPInstanceUID not in dopamine(data_dir, "quarantine", "list").stdout
    finally:
        server.stop()
    assert "phantom scans are not archived" in server.log()


def test_a_rule_that_fails_rejects_or_quarantines_as_configured(data_dir, tmp_path):
    # Pseudonymize needs a key from the configuration; without one the rule fails on every data set.
    activate(data_dir, tmp_path, """<RuleSet name="pseudo"><Rule><Action><Pseudonymize/></Action></Rule></RuleSet>""")
    ds_path = tmp_path / "one.dcm"
    make_file(ds_path)
    proc = dopamine(data_dir, "import", str(ds_path), check=False)
    assert proc.returncode == 1 and "routing rule failed" in proc.stdout and "secret" in proc.stdout
    config = tmp_path / "quarantine.toml"
    config.write_text('[routing]\non_error = "quarantine"\n')
    proc = run(dopamine_command("import", str(ds_path), "--data-dir", str(data_dir), "--config", str(config)))
    assert "quarantined: 1" in proc.stdout
    secrets = tmp_path / "secrets.toml"
    secrets.write_text('deidentification = "a key for tests only"\n')
    config.write_text(f'[routing]\nsecrets_file = "{secrets}"\n')
    other = make_file(tmp_path / "two.dcm", patient_id="REAL-ID")
    run(dopamine_command("import", str(tmp_path / "two.dcm"), "--data-dir", str(data_dir), "--config", str(config)))
    from dopamine_py.assembly import open_archive
    from dopamine_py.config import load_settings

    archive = open_archive(load_settings(overrides={"data_dir": str(data_dir)}))
    stored = archive.get_document(other.SOPInstanceUID)
    assert stored["00100020"]["Value"][0] != "REAL-ID"


def test_an_invalid_rule_set_is_refused_and_the_active_one_keeps_running(data_dir, tmp_path):
    activate(data_dir, tmp_path, PAPER_EXAMPLE)
    broken = PAPER_EXAMPLE.replace("<EmptyElement", "<EmptyElemnt")
    path = tmp_path / "broken.xml"
    path.write_text(broken)
    proc = dopamine(data_dir, "rules", "activate", str(path), "--name", "age", check=False)
    assert proc.returncode == 1 and "EmptyElemnt" in proc.stderr and "line" in proc.stderr
    assert "version 1\tactive" in dopamine(data_dir, "rules", "list").stdout
    assert len(dopamine(data_dir, "rules", "history", "age").stdout.splitlines()) == 1


def start_storescp(folder, port):
    folder.mkdir(exist_ok=True)
    proc = subprocess.Popen([require_tool("storescp"), "-aet", "RESEARCH", "-od", str(folder), str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(50):
        if subprocess.run([require_tool("echoscu"), "-aec", "RESEARCH", "127.0.0.1", str(port)],
                          capture_output=True).returncode == 0:
            return proc
        time.sleep(0.1)
    proc.kill()
    raise RuntimeError("storescp did not start")


def test_forward_queue_delivers_to_storescp_after_a_restart(data_dir, tmp_path):
    port = free_port()
    dopamine(data_dir, "peer", "add", "RESEARCH", "127.0.0.1", str(port))
    activate(data_dir, tmp_path, """<RuleSet name="copy"><Rule><Condition><ElementMatch tag="Modality" value="MR"/></Condition>
      <Action><Forward destination="RESEARCH"/></Action></Rule></RuleSet>""")
    config = tmp_path / "fast-retry.toml"
    config.write_text("[auth]\nenforce = false\n[forward]\nretry_first_seconds = 1\n")
    server = start_server(data_dir, config=config)
    mr = make_file(tmp_path / "mr.dcm", modality="MR")
    make_file(tmp_path / "ct.dcm", modality="CT")
    try:
        assert storescu(server, tmp_path / "mr.dcm", tmp_path / "ct.dcm").returncode == 0
        time.sleep(1.0)  # the peer is down: the attempt fails and stays queued
        assert "pending" in dopamine(data_dir, "forward", "list").stdout
    finally:
        server.stop()
    received = tmp_path / "received"
    storescp = start_storescp(received, port)
    server = start_server(data_dir, config=config)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not list(received.glob("*")):
            time.sleep(0.2)
        files = list(received.iterdir())
        assert [dcmread(f).SOPInstanceUID for f in files] == [mr.SOPInstanceUID]  # only the MR was forwarded
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and dopamine(data_dir, "forward", "list").stdout.strip():
            time.sleep(0.2)
        assert dopamine(data_dir, "forward", "list").stdout.strip() == ""
    finally:
        server.stop()
        storescp.terminate()
        storescp.wait()


def test_a_rule_set_normalizes_bruker_series_descriptions(data_dir, tmp_path):
    activate(data_dir, tmp_path, """<RuleSet name="bruker-names">
      <Rule><Condition><Protocol value="bruker"/></Condition>
        <Action><MapValue tag="SeriesDescription" ignoreCase="true">
          <Map from="*FLASH*" to="FLASH 2D"/>
        </MapValue></Action></Rule></RuleSet>""")
    proc = dopamine(data_dir, "bruker", "import", str(shared_data("bruker", "pv51_multislice_phantom")))
    assert "3 stored" in proc.stdout
    server = start_server(data_dir)
    try:
        answer = find(server, "SERIES", SeriesDescription=None, SeriesInstanceUID=None)
        assert "[FLASH 2D]" in answer, answer
    finally:
        server.stop()


def _stow(server, *datasets):
    import uuid

    import requests

    boundary = uuid.uuid4().hex
    body = b"".join(f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode() + encode(ds) + b"\r\n"
                    for ds in datasets) + f"--{boundary}--\r\n".encode()
    return requests.post(f"{server.dicomweb_url}/studies", data=body, timeout=30, headers={
        "Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}',
        "Accept": "application/dicom+json"})


def test_routing_decisions_over_stow(data_dir, tmp_path):
    activate(data_dir, tmp_path, """<RuleSet name="stow-triage">
      <Rule><Condition><ElementMatch tag="PatientName" value="Phantom*"/></Condition>
        <Action><Reject reason="phantom scans are not archived"/></Action></Rule>
      <Rule><Condition><ElementMatch tag="PatientID" value="TEMP*"/></Condition>
        <Action><Quarantine reason="temporary ID"/></Action></Rule>
      <Rule><Action><SetElement tag="InstitutionName" value="Research Lab"/></Action></Rule>
    </RuleSet>""", "stow.xml", "--protocol", "stow")
    server = start_server(data_dir)
    try:
        phantom, temporary, good = (make_dataset(patient_name="Phantom^Water"), make_dataset(patient_id="TEMP-1"),
                                    make_dataset(patient_id="SUBJ-9"))
        answer = _stow(server, phantom, temporary, good)
        assert answer.status_code == 202, answer.text   # some failed, some stored
        body = answer.json()
        failed = body["00081198"]["Value"]
        assert [f["00081155"]["Value"][0] for f in failed] == [phantom.SOPInstanceUID]
        assert failed[0]["00081197"]["Value"] == [0x0124]
        stored = {r["00081155"]["Value"][0] for r in body["00081199"]["Value"]}
        assert stored == {temporary.SOPInstanceUID, good.SOPInstanceUID}   # quarantine is an acknowledged store
        visible = find(server, "IMAGE", SOPInstanceUID=None, InstitutionName=None)
        assert good.SOPInstanceUID in visible and "Research Lab" in visible
        assert temporary.SOPInstanceUID not in visible and phantom.SOPInstanceUID not in visible
        assert temporary.SOPInstanceUID in dopamine(data_dir, "quarantine", "list").stdout
    finally:
        server.stop()


def test_a_rule_on_the_authenticated_dimse_user(data_dir, tmp_path):
    """Routing conditions see the user of the association (storescu -usr/-pwd), not only its AE title."""
    proc = subprocess.run(dopamine_command("user", "add", "tech", "--password-stdin", "--data-dir", str(data_dir)),
                          input="technician password\n", capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    activate(data_dir, tmp_path, """<RuleSet name="by-user"><Rule><Condition><User value="tech"/></Condition>
      <Action><SetElement tag="OperatorsName" template="{@user}"/></Action></Rule></RuleSet>""")
    server = start_server(data_dir)
    try:
        sent = make_file(tmp_path / "one.dcm")
        run([require_tool("storescu"), "-aec", server.aet, "-usr", "tech", "-pwd", "technician password",
             server.host, str(server.dimse_port), str(tmp_path / "one.dcm")])
        answer = find(server, "IMAGE", SOPInstanceUID=sent.SOPInstanceUID, OperatorsName=None)
        assert "[tech]" in answer, answer
    finally:
        server.stop()
