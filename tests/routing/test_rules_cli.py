"""The bodies of ``dopamine rules check`` and ``dopamine rules try``."""

from __future__ import annotations

import io
import shutil
from pathlib import Path

from pydicom.data import get_testdata_file

from dopamine_py.archive import Source
from routing.cli import check_command, try_command
from rules_helpers import SECRETS

REPO = Path(__file__).resolve().parents[2]


def test_check_reports_every_problem_with_its_location(tmp_path):
    rules = tmp_path / "bad.xml"
    rules.write_text('<RuleSet name="t">\n<Rule>\n<Action>\n  <EmptyElemnt tag="PatientName"/>\n'
                     '  <DeleteElement tag="PatientNmae"/>\n</Action>\n</Rule>\n</RuleSet>\n')
    out = io.StringIO()
    assert check_command(rules, out) == 1
    text = out.getvalue()
    assert f"{rules}: line 4, column 3: unknown action <EmptyElemnt>" in text
    assert "Traceback" not in text


def test_check_semantic_problems_are_all_listed(tmp_path):
    rules = tmp_path / "bad.xml"
    rules.write_text('<RuleSet name="t"><Rule><Action>\n<DeleteElement tag="PatientNmae"/>\n'
                     '<MapValue tag="SeriesDescription" file="nope.csv"/>\n</Action></Rule></RuleSet>\n')
    out = io.StringIO()
    assert check_command(rules, out) == 1
    lines = out.getvalue().splitlines()
    assert lines[0] == f"{rules}: line 2, column 1: <DeleteElement> tag: unknown attribute 'PatientNmae': " \
                       "not a DICOM keyword nor a tag (gggg,eeee)"
    assert lines[1].startswith(f"{rules}: line 3, column 1: file 'nope.csv' does not exist")
    assert lines[2] == f"{rules}: 2 problems"


def test_check_valid_rule_set():
    out = io.StringIO()
    assert check_command(REPO / "rules" / "research-example.xml", out) == 0
    assert "rule set 'study ACME-042' is valid (5 rules)" in out.getvalue()


def test_try_prints_changes_and_decision_per_instance(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    for name in ("MR_small.dcm", "CT_small.dcm"):
        shutil.copy(get_testdata_file(name), folder / name)
    out = io.StringIO()
    code = try_command(REPO / "rules" / "research-example.xml", [str(folder)], out, SECRETS,
                       source=Source("dimse", calling_aet="MR_PARIS"))
    text = out.getvalue()
    assert code == 0, text
    assert text.count("== ") == 2
    assert "rules fired: deidentify, clinical-trial-attributes, site-paris" in text
    assert "+ ClinicalTrialSubjectID = ACME042-01-001" in text  # CT_small's PatientID 1CT1, from the table
    assert "+ ClinicalTrialSiteID = 01" in text
    assert "~ PatientID: 1CT1 -> ACME042-01-001" in text
    assert "- (0009,1001) (was GE_GENESIS_FF)" in text
    assert "decision: store" in text and "forward to: ACME_CORE_LAB" in text
    assert "throwaway key" not in text
    # Nothing was written next to the inputs.
    assert sorted(p.name for p in folder.iterdir()) == ["CT_small.dcm", "MR_small.dcm"]


def test_try_quarantine_decision_and_throwaway_key(tmp_path):
    out = io.StringIO()
    code = try_command(REPO / "rules" / "research-example.xml", [get_testdata_file("CT_small.dcm")], out,
                       source=Source("dimse", calling_aet="SOMEONE"))
    text = out.getvalue()
    assert code == 0
    assert "note: no secrets given; a throwaway key is used for this dry run" in text
    assert "rules fired: unknown-sender" in text
    assert "decision: quarantine (not sent by a scanner of study ACME-042)" in text
    assert "added: 0" in text and "changed: 0" in text and "removed: 0" in text


def test_try_reports_failures_and_unreadable_files(tmp_path):
    rules = tmp_path / "r.xml"
    rules.write_text('<RuleSet name="t"><Rule name="age"><Action><AgeFromBirthDate/></Action></Rule></RuleSet>')
    junk = tmp_path / "junk.dcm"
    junk.write_bytes(b"not dicom")
    out = io.StringIO()
    code = try_command(rules, [get_testdata_file("CT_small.dcm"), str(junk)], out, SECRETS)
    text = out.getvalue()
    assert code == 1
    assert "error: rule 'age' <AgeFromBirthDate> (line 1): PatientBirthDate is missing or empty" in text
    assert "decision: not stored" in text
    assert f"== {junk}\n   cannot read:" in text


def test_try_with_an_invalid_rule_set(tmp_path):
    rules = tmp_path / "r.xml"
    rules.write_text("<RuleSet name='t'><Rule><Action><Nope/></Action></Rule></RuleSet>")
    out = io.StringIO()
    assert try_command(rules, [get_testdata_file("CT_small.dcm")], out, SECRETS) == 1
    assert "line 1, column 33: unknown action <Nope>" in out.getvalue()
