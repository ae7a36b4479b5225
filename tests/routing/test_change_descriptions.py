"""What a rule changed is described from encoded values without pydicom for plain text VRs
(routing/changes.py); the description must be pydicom's, whatever the value's padding and backslashes."""

from __future__ import annotations

import warnings

from hypothesis import given, settings, strategies as st
from pydicom.dataelem import RawDataElement, convert_raw_data_element

from routing import changes

# The bytes senders put in text values: padding, separators, empty values, a few non-ASCII bytes.
value_bytes = st.lists(st.sampled_from([b"A", b"1", b".", b" ", b"\\", b"\x00", b"^", b"\xe9", b"-", b"Z9"]),
                       max_size=12).map(b"".join)


def reference(tag: int, vr: str, value: bytes) -> tuple[str, object]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # invalid values are the point
        element = convert_raw_data_element(RawDataElement(tag, vr, len(value), value, 0, False, True))
    return changes._vr_and_value(element, element.value)


@settings(max_examples=600, deadline=None)
@given(vr=st.sampled_from(sorted(changes.PLAIN_TEXT_VRS)), value=value_bytes)
def test_plain_text_values_read_as_pydicom_reads_them(vr, value):
    fast = changes._decoded_raw.__wrapped__(0x00100020, vr, value, False, True)
    assert fast == reference(0x00100020, vr, value)


def test_descriptions_of_changes_are_remembered_by_value_not_by_object():
    """Two instances with the same old and new values share one description (the cache that makes
    describing changes cheap); different values get their own."""
    def pending(old: bytes, new: bytes):
        before = RawDataElement(0x00080020, "DA", len(old), old, 10, False, True, True, False)
        after = RawDataElement(0x00080020, "DA", len(new), new, 0, False, True, True, False)
        return changes.PendingChange((0x00080020,), (before, None, None), (after, None, None), "r")

    first, second = pending(b"20240308", b"19000101").resolve(), pending(b"20240308", b"19000101").resolve()
    assert first is second
    assert first == changes.Change("StudyDate", 0x00080020, "changed", "20240308", "19000101", "r")
    assert pending(b"20240309", b"19000101").resolve().old == "20240309"
    assert pending(b"20240308", b"20240308").resolve() is None  # rewritten to the same value


uid_bytes = st.lists(st.sampled_from([b"1", b"2.25", b".", b"0", b" ", b"\\", b"\x00", b"1.2.840.10008.1.2"]),
                     max_size=8).map(b"".join)


@settings(max_examples=400, deadline=None)
@given(value=uid_bytes, dummy=st.booleans(), tag=st.sampled_from([0x00080018, 0x0020000D, 0x00081155]))
def test_mapped_uid_changes_are_described_as_their_elements_are(value, dummy, tag):
    """The profile describes the change of a UID it maps from the texts it mapped (a new SOP Instance UID
    in every instance); decoding both elements, as every other change is described, says the same."""
    from routing import encoded
    from routing.deidentify import mapped_uids

    uids = mapped_uids(b"key", tag, value, dummy)
    if uids is None:  # kept as it is: no change to describe
        assert dummy is False or changes.raw_values.uids(value) != [""]
        return
    old = RawDataElement(tag, "UI", len(value), value, 0, False, True)
    new = encoded.uid_element(tag, uids[1], (False, True))
    assert changes.mapped_uid_change(tag, *uids, "r") == changes.encoded_change(tag, old, new, "r")
