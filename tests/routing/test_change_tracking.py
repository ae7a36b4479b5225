"""What each rule changed is found by comparing snapshots taken before and after it (routing/changes.py).
The snapshots are kept per data set and compared element by element only where an element is not the
very one it was; these tests hold that to the plain way (a flat entry for every element, all compared),
kept here as the reference, on every sample file under rule sets that add, change, remove and empty
elements, sequences included. Compared as the provenance record shows them: the plain way also reports
elements pydicom decoded on its own (and unchanged), which describe to nothing."""

from __future__ import annotations

import io

import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.dataelem import DataElement, RawDataElement

from routing import changes, deidentify
from routing.context import Context
from routing.copying import cheap_copy, element_store, vr_of
from rules_helpers import SECRETS, ruleset
from test_encoding import RULE_SETS, parsed, quiet_samples

RULE_SETS = {
    **RULE_SETS,
    "sequences": lambda: ruleset('<EmptyElement tag="ReferencedSeriesSequence"/>'
                                 '<DeleteElement tag="RequestAttributesSequence"/>'
                                 '<SetElement tag="ReferencedImageSequence[0].ReferencedSOPInstanceUID" value="1.2.3"/>'
                                 '<ReplaceUIDs/>'),
    # Elements pydicom decodes in place while it decodes a sequence, then set by a rule.
    "decoded on the way": lambda: ruleset('<SetElement tag="PixelRepresentation" value="1"/>'
                                          '<SetElement tag="(0029,0011)" vr="LO" value="CHANGED CREATOR"/>'),
}


def flat_snapshot(ds, prefix=(), out=None):
    out = {} if out is None else out
    for tag, element in list(element_store(ds).items()):
        key = prefix + (int(tag),)
        if isinstance(element, RawDataElement) and vr_of(tag, element) == "SQ":
            element = ds[tag]
        if isinstance(element, DataElement) and element.VR == "SQ":
            items = element.value or []
            out[key] = (element, len(items), ds)
            for index, item in enumerate(items):
                flat_snapshot(item, key + (index,), out)
        elif isinstance(element, DataElement):
            out[key] = (element, element.value, ds)
        else:
            out[key] = (element, None, ds)
    return out


def flat_diff(before, after):
    found = [(key, entry, after.get(key)) for key, entry in before.items()
             if after.get(key) is None or not (after[key][0] is entry[0]
                                               and (after[key][1] is entry[1] or after[key][1] == entry[1]))]
    return found + [(key, None, entry) for key, entry in after.items() if key not in before]


def described(found):
    """The changes as the provenance record shows them."""
    return changes.resolve_all([changes.PendingChange(key, before, after, "rule") for key, before, after in found])


@pytest.mark.parametrize("rules", RULE_SETS)
def test_snapshots_find_what_comparing_every_element_finds(rules):
    """Each way on a data set of its own, parsed from the same bytes, as the engine sees it."""
    rule_set = RULE_SETS[rules]()
    compared = 0
    for path, data in quiet_samples():
        try:
            flat_work, work = cheap_copy(parsed(data)), cheap_copy(parsed(data))
        except Exception:
            continue
        flat_before, before = flat_snapshot(flat_work), changes.snapshot(work)
        try:
            for target in (flat_work, work):
                context = Context(target, None, SECRETS)
                for rule in rule_set.rules:
                    for placed in rule.actions:
                        placed.action.apply(context)
        except Exception:
            continue  # a data set these rules refuse: nothing to compare
        expected = described(flat_diff(flat_before, flat_snapshot(flat_work)))
        assert changes.resolve_all(changes.diff(before, changes.snapshot(work), "rule")) == expected, path.name
        compared += 1
    assert compared > 100


def test_a_value_assigned_in_place_and_an_emptied_sequence_are_changes():
    ds = dcmread(get_testdata_file("CT_small.dcm"), defer_size=1024)
    work = cheap_copy(ds)
    work.PatientName  # decoded: a value an action may then assign in place
    work.add_new(0x00081115, "SQ", [cheap_copy(ds)])  # Referenced Series Sequence with one item
    before = changes.snapshot(work)
    work[0x00100010].value = "Other^Name"
    work[0x00081115].value = []
    keys = [p.key for p in changes.diff(before, changes.snapshot(work), "r")]
    assert (0x00100010,) in keys and (0x00081115,) in keys
    assert (0x00081115, 0, 0x00100010) in keys  # the item's elements are gone with it


JOURNALED = {
    "basic profile": RULE_SETS["basic profile"],
    "profile with options": RULE_SETS["profile with options"],
    "profile after other rules": lambda: ruleset(
        '<Pseudonymize/><SetElement tag="ReferencedImageSequence[0].ReferencedSOPInstanceUID" value="1.2.3"/>',
        extra_rules='<Rule name="r2"><Action><Deidentify profile="basic" retainUIDs="true" cleanDescriptors="true"/>'
                    '</Action></Rule>'),
    # The second finds what the first made (its replacements, its record with the code sequence still
    # encoded) and replaces some of it: changes the first described at once are then described again.
    "profile twice in one rule": lambda: ruleset(
        '<Deidentify profile="basic" retainUIDs="true"/><Deidentify profile="basic" cleanDescriptors="true"/>'),
    # The second finds the first's record, its code sequence still encoded, and replaces it.
    "profile twice": lambda: ruleset(
        '<Deidentify profile="basic"/>',
        extra_rules='<Rule name="r2"><Action><Deidentify profile="basic" retainUIDs="true" cleanDescriptors="true"/>'
                    '</Action></Rule>'),
}


def forget_descriptions():
    """Each way describes its changes afresh: a description remembered by one must not serve the other."""
    for cache in (changes._resolved, changes._decoded_raw, changes.path_text, changes._item_snapshots,
                  changes._added_sequence, deidentify.remembered_outcomes):
        cache.cache_clear()


def applied(rule_set, data):
    try:
        return rule_set.apply(parsed(data), None, SECRETS).changes
    except Exception as exc:
        return type(exc)


@pytest.mark.parametrize("rules", JOURNALED)
def test_a_journal_finds_what_snapshots_find(rules, monkeypatch):
    """A rule whose actions say what they touch (the profile) is not compared whole: the changes, in their
    order, are those that snapshots of the whole data set find, on every sample file (character sets
    included); a data set refused one way is refused the other way too."""
    rule_set = JOURNALED[rules]()
    assert any(rule.reports_changes for rule in rule_set.rules)
    compared = 0
    for path, data in quiet_samples():
        forget_descriptions()
        journaled = applied(rule_set, data)
        forget_descriptions()
        with monkeypatch.context() as patched:
            patched.setattr(type(rule_set.rules[0]), "reports_changes", property(lambda rule: False))
            assert not any(rule.reports_changes for rule in rule_set.rules)
            compared_whole = applied(rule_set, data)
        assert journaled == compared_whole, path.name
        compared += isinstance(journaled, list)
    assert compared > 100


def test_a_journal_keeps_what_the_profile_decoded_in_place_as_it_was(monkeypatch):
    """The profile reads names and private creators (decoding them in place, in the data set's character
    set) before it touches them: their old values are still those a snapshot would have kept."""
    from rules_helpers import minimal

    ds = minimal(SpecificCharacterSet="ISO_IR 192", PatientName="M\u00fcller^J\u00fcrgen")
    ds.add_new(0x00190010, "LO", "Fa\u00e7ade Corp")
    ds.add_new(0x00191001, "LO", "x")
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    rule_set = ruleset('<Deidentify profile="basic" cleanDescriptors="true"/>')
    forget_descriptions()
    journaled = applied(rule_set, buffer.getvalue())
    forget_descriptions()
    monkeypatch.setattr(type(rule_set.rules[0]), "reports_changes", property(lambda rule: False))
    assert {c.path for c in journaled} >= {"PatientName", "(0019,0010)"}
    assert journaled == applied(rule_set, buffer.getvalue())


def test_equal_numbers_that_show_differently_are_described_as_they_are():
    """0.0 and -0.0 are equal: a description remembered for one must not serve the other."""
    from rules_helpers import minimal

    rule_set = ruleset('<DeleteElement tag="DiffusionBValue"/>')
    first, second = minimal(), minimal()
    first.DiffusionBValue, second.DiffusionBValue = 0.0, -0.0
    assert rule_set.apply(first, None, SECRETS).changes[0].old == "0.0"
    assert rule_set.apply(second, None, SECRETS).changes[0].old == "-0.0"


def test_a_journal_sees_private_elements_removed_from_items():
    """The profile removes private elements inside sequences before it walks the data set: the sequence
    is touched before the first of them goes, so their removal is a change of its own."""
    ds = dcmread(get_testdata_file("CT_small.dcm"))
    item = ds.ReferencedImageSequence[0] if "ReferencedImageSequence" in ds else None
    if item is None:
        from pydicom.dataset import Dataset

        item = Dataset()
        item.ReferencedSOPInstanceUID = "1.2.3.4"
        ds.ReferencedImageSequence = [item]
    item.add_new(0x00090010, "LO", "ACME")
    item.add_new(0x00091001, "LO", "identifying")
    result = RULE_SETS["basic profile"]().apply(ds, None, SECRETS)
    removed = {c.path for c in result.changes if c.kind == "removed"}
    assert {"ReferencedImageSequence[0].(0009,0010)", "ReferencedImageSequence[0].(0009,1001)"} <= removed, removed


def test_a_series_next_instance_takes_what_the_profile_remembered(monkeypatch):
    """The profile remembers what it made of each encoded value (and the change that was): the next
    instance of a series gets, for the values it shares with the first, what they got, without working
    them out again, and for its own values what it gets when nothing is remembered."""
    from dopamine_py.part10 import encode_part10

    first = open(get_testdata_file("CT_small.dcm"), "rb").read()
    ds = dcmread(io.BytesIO(first))
    ds.SOPInstanceUID, ds.StudyDate, ds.AccessionNumber = "1.2.826.0.1.3680043.2.1125.1.1", "20010203", "A-2"
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    second = buffer.getvalue()
    rule_set = RULE_SETS["basic profile"]()
    forget_descriptions()
    afresh = rule_set.apply(parsed(second), None, SECRETS)
    forget_descriptions()
    rule_set.apply(parsed(first), None, SECRETS)
    worked_out = []
    original = deidentify._Run.outcome
    monkeypatch.setattr(deidentify._Run, "outcome", lambda run, *a: worked_out.append(a[0]) or original(run, *a))
    remembered = rule_set.apply(parsed(second), None, SECRETS)
    assert sorted(worked_out) == [0x00080018, 0x00080020, 0x00080050]  # its own values only
    assert len(afresh.changes) > 20 and remembered.changes == afresh.changes
    assert encode_part10(remembered.dataset) == encode_part10(afresh.dataset)


@pytest.mark.parametrize("patient_id, charset", [("PID-2", None), ("K\u00fchn-7", "ISO_IR 100")])
def test_the_patient_name_and_id_are_remembered_by_their_own_values(monkeypatch, patient_id, charset):
    """Patient's Name (emptied) and Patient ID (the pseudonym made from it) are remembered like the other
    elements: another patient's instance gets its own pseudonym, the one the general path makes. A Patient
    ID that may read differently in another character set is never remembered: the general path makes it."""
    from dopamine_py.part10 import encode_part10

    def instance(uid, name, pid):
        ds = dcmread(get_testdata_file("CT_small.dcm"))
        ds.SOPInstanceUID, ds.PatientName, ds.PatientID = uid, name, pid
        if charset:
            ds.SpecificCharacterSet = charset
        buffer = io.BytesIO()
        ds.save_as(buffer, enforce_file_format=True)
        return buffer.getvalue()

    first = instance("1.2.826.0.1.3680043.2.1125.1.1", "Doe^Jane", "PID-1")
    second = instance("1.2.826.0.1.3680043.2.1125.1.2", "Roe^Richard", patient_id)
    rule_set = RULE_SETS["basic profile"]()
    forget_descriptions()
    afresh = rule_set.apply(parsed(second), None, SECRETS)
    forget_descriptions()
    first_id = rule_set.apply(parsed(first), None, SECRETS).dataset.PatientID
    rule_set.apply(parsed(second), None, SECRETS)  # its values remembered now
    worked_out, pseudonyms_made = [], []
    outcome, dummy_value = deidentify._Run.outcome, deidentify._Run.dummy_value
    monkeypatch.setattr(deidentify._Run, "outcome", lambda run, *a: worked_out.append(a[0]) or outcome(run, *a))
    monkeypatch.setattr(deidentify._Run, "dummy_value",
                        lambda run, tag, *a: pseudonyms_made.append(tag) or dummy_value(run, tag, *a))
    remembered = rule_set.apply(parsed(second), None, SECRETS)
    assert worked_out == []
    assert pseudonyms_made == ([] if patient_id.isascii() else [0x00100020])
    assert remembered.changes == afresh.changes
    assert encode_part10(remembered.dataset) == encode_part10(afresh.dataset)
    assert remembered.dataset.PatientID.startswith("ANON-") and remembered.dataset.PatientID != first_id
    described = {change.path: change for change in remembered.changes}
    assert described["PatientID"].old == patient_id and described["PatientName"].new == ""
