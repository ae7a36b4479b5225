"""Loading rule sets: the paper's example as written, the shipped rule sets, and every kind of bad
input reported as ``line L, column C: ...`` rather than a stack trace."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from routing.cli import check_command
from routing.engine import load_ruleset
from routing.errors import RuleSetError
from rules_helpers import minimal

REPO = Path(__file__).resolve().parents[2]
RULES = REPO / "rules"

PAPER_EXAMPLE = b"""<RuleSet name="paper">
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


def error_of(xml: str | bytes, **kwargs) -> RuleSetError:
    with pytest.raises(RuleSetError) as info:
        load_ruleset(xml.encode() if isinstance(xml, str) else xml, **kwargs)
    return info.value


def test_paper_example_works_as_written():
    ruleset = load_ruleset(PAPER_EXAMPLE)
    ds = minimal(PatientBirthDate="19800220", StudyDate="20240115")
    result = ruleset.apply(ds)
    assert result.fired == [1]
    assert result.dataset.PatientAge == "043Y"
    assert not result.dataset.PatientBirthDate
    assert "PatientBirthDate" in result.dataset  # emptied, not removed
    changes = {c.path: c for c in result.changes}
    assert changes["PatientAge"].kind == "added" and changes["PatientAge"].new == "043Y"
    assert changes["PatientBirthDate"].kind == "changed" and changes["PatientBirthDate"].old == "19800220"
    assert ds.PatientBirthDate == "19800220" and "PatientAge" not in ds  # the input is untouched


def test_paper_example_skips_data_sets_without_birth_date():
    ruleset = load_ruleset(PAPER_EXAMPLE)
    for ds in (minimal(PatientBirthDate=""), minimal()):
        if ds.PatientBirthDate:
            del ds.PatientBirthDate
        result = ruleset.apply(ds)
        assert result.fired == [] and result.changes == [] and "PatientAge" not in result.dataset


@pytest.mark.parametrize("name", ["basic-profile.xml", "normalization-example.xml", "research-example.xml"])
def test_shipped_rule_sets_are_valid(name):
    out = io.StringIO()
    assert check_command(RULES / name, out) == 0, out.getvalue()
    assert "is valid" in out.getvalue()


def test_unknown_action_is_located():
    xml = ('<RuleSet name="t">\n'
           '  <Rule>\n'
           '    <Action>\n'
           '        <EmptyElemnt tag="PatientName"/>\n'
           '    </Action>\n'
           '  </Rule>\n'
           '</RuleSet>\n')
    error = error_of(xml)
    assert str(error).startswith("line 4, column 9: unknown action <EmptyElemnt>")
    assert (error.line, error.column) == (4, 9)


def test_unknown_condition_and_attribute_are_located():
    xml = ('<RuleSet name="t">\n'
           '  <Rule><Condition><ElementMatches tag="Modality" value="MR"/></Condition>\n'
           '    <Action><EmptyElement tga="PatientName"/></Action></Rule>\n'
           '</RuleSet>\n')
    message = str(error_of(xml))
    assert "line 2, column 20: unknown condition <ElementMatches>" in message
    assert "line 3, column 13: <EmptyElement>: unknown attribute 'tga'" in message


def test_malformed_xml_gives_line_and_column():
    error = error_of('<RuleSet name="t">\n  <Rule>\n    <Action></Rule>\n</RuleSet>')
    assert error.line == 3 and "malformed XML" in str(error)
    assert str(error).startswith("line 3, column ")


def test_missing_required_attribute():
    message = str(error_of('<RuleSet name="t"><Rule><Action><Forward/></Action></Rule></RuleSet>'))
    assert "line 1, column 33: <Forward>: missing required attribute 'destination'" in message


def test_unknown_keyword_in_tag_and_template():
    xml = ('<RuleSet name="t"><Rule><Action>\n'
           '<DeleteElement tag="PatientNmae"/>\n'
           '<SetElement tag="PatientComments" template="{StudyDte}"/>\n'
           '<SetElement tag="ReferencedSeriesSequence[0].Nope" value="x"/>\n'
           '</Action></Rule></RuleSet>')
    error = error_of(xml)
    lines = str(error).splitlines()
    assert len(lines) == 3  # all problems at once, not one per run
    assert lines[0].startswith("line 2, column 1: <DeleteElement> tag: unknown attribute 'PatientNmae'")
    assert lines[1].startswith("line 3, column 1: template '{StudyDte}': unknown attribute 'StudyDte'")
    assert lines[2].startswith("line 4, column 1: <SetElement> tag: unknown attribute 'Nope'")


def test_invalid_matching_value_and_regex():
    xml = ('<RuleSet name="t"><Rule><Condition>\n'
           '<ElementMatch tag="StudyDate" value="2024-13-99"/>\n'
           '<ElementMatch tag="SeriesDescription" regex="t1[("/>\n'
           '<ElementMatch tag="SeriesDescription" value="a" regex="b"/>\n'
           '</Condition><Action/></Rule></RuleSet>')
    lines = str(error_of(xml)).splitlines()
    assert lines[0].startswith("line 2, column 1: <ElementMatch> value '2024-13-99'")
    assert lines[1].startswith("line 3, column 1: <ElementMatch> regex 't1[(' is not a valid regular expression")
    assert lines[2] == "line 4, column 1: <ElementMatch> needs exactly one of value=\"...\" or regex=\"...\""


def test_map_value_csv_that_does_not_exist(tmp_path):
    rule_file = tmp_path / "r.xml"
    rule_file.write_text('<RuleSet name="t"><Rule><Action>\n'
                         '  <MapValue tag="SeriesDescription" file="missing.csv"/>\n'
                         '</Action></Rule></RuleSet>')
    error = error_of(rule_file.read_bytes(), base_dir=tmp_path)
    assert str(error).startswith("line 2, column 3: file 'missing.csv' does not exist")
    out = io.StringIO()
    assert check_command(rule_file, out) == 1
    assert f"{rule_file}: line 2, column 3: file 'missing.csv' does not exist" in out.getvalue()
    assert "1 problem" in out.getvalue()


def test_map_value_csv_without_the_right_header(tmp_path):
    (tmp_path / "names.csv").write_text("source,target\nT1*,T1_3D\n")
    (tmp_path / "r.xml").write_text('<RuleSet name="t"><Rule><Action>'
                                    '<MapValue tag="SeriesDescription" file="names.csv"/></Action></Rule></RuleSet>')
    message = str(error_of((tmp_path / "r.xml").read_bytes(), base_dir=tmp_path))
    assert "names.csv: the header must name the columns from, to (found: source, target)" in message


def test_semantic_checks():
    cases = {
        '<SetElement tag="PatientName"/>': "exactly one of value=",
        '<SetElement tag="(0029,xx10)" creator="ACME" value="1"/>': "give its vr=",
        '<SetElement tag="(0029,xx10)" value="1" vr="LO"/>': "give its private creator",
        '<SetElement tag="ReferencedSeriesSequence" value="1"/>': "is a sequence",
        '<SetElement tag="PatientName" template="{PatientID"/>': "unbalanced '{'",
        '<SetElement tag="PatientName" template="{@callingAet}"/>': "unknown source field '@callingAet'",
        '<MapValue tag="SeriesDescription"/>': "has no entries",
        '<AgeFromBirthDate reference="PatientName"/>': "must be a top-level DA attribute",
        '<Deidentify profile="basic" retainLongitudinalFullDates="true" retainLongitudinalModifiedDates="true"/>':
            "exclude each other",
        '<Deidentify profile="basic"><Keep creator="X"/></Deidentify>': "only retainSafePrivate",
        '<Deidentify profile="extended"/>': "attribute 'profile'",
        '<Forward destination="A_VERY_LONG_AE_TITLE_X"/>': "attribute 'destination'",
        '<EmptyElement tag="PatientName[0]"/>': "an index [n] only applies to a sequence",
        '<EmptyElement tag="PatientName" creator="ACME"/>': "applies only to private tags",
    }
    for action, expected in cases.items():
        message = str(error_of(f'<RuleSet name="t"><Rule><Action>{action}</Action></Rule></RuleSet>'))
        assert message.startswith("line 1, column "), message
        assert expected in message, (action, message)


def test_not_takes_one_condition_and_duplicate_rule_names():
    message = str(error_of('<RuleSet name="t"><Rule><Condition><Not><True/><False/></Not></Condition>'
                           '<Action/></Rule></RuleSet>'))
    assert "<Not> takes exactly one condition" in message
    message = str(error_of('<RuleSet name="t"><Rule name="a"><Action/></Rule>\n<Rule name="a"><Action/></Rule>'
                           '</RuleSet>'))
    assert "line 2, column 1: rule name 'a' is used more than once" in message


def test_missing_rule_file():
    with pytest.raises(RuleSetError) as info:
        load_ruleset(Path("/nonexistent/rules.xml"))
    assert "cannot read the rule set" in str(info.value) and "/nonexistent/rules.xml: line 1" in str(info.value)
