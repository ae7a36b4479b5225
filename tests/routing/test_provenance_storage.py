"""The provenance record of a routed instance is stored with the instance, on every storage tier: in the
instance's own transaction (SQLite: one commit, one fsync), or written durably just before it (MongoDB).
Either way no instance is stored without its record."""

from __future__ import annotations

import json

import pytest

from backends import TIERS, make_backend
from dopamine_py.archive import ArchiveService, Routing, Source
from dopamine_py.assembly import open_records
from dopamine_py.router import PROVENANCE, Router, RuleSetRegistry, Selector, provenance_of
from dopamine_py.storage.base import DuplicatePolicy, InstanceRecord, Original, PutOutcome
from factory import encode, make_dataset
from rules_helpers import SECRETS


@pytest.fixture(params=TIERS)
def tier(request):
    return request.param


@pytest.fixture
def store(tier, tmp_path):
    backend, dispose = make_backend(tier, tmp_path)
    yield backend, open_records(backend)
    dispose()


def instance(uid: str, data: bytes) -> tuple[InstanceRecord, Original]:
    original = Original(data=data)
    record = InstanceRecord(uid, "1.2.840.10008.5.1.4.1.1.2", "1.2.3", "1.2.3.4", "P1", "CT", "1.2.840.10008.1.2.1",
                            {}, original.size, original.sha256(), "2024-01-01T00:00:00+00:00")
    return record, original


def notes(records, uid: str) -> list[str]:
    return [r["note"] for r in records.find(PROVENANCE, sop_instance_uid=uid)]


def test_records_are_written_with_the_instance_unless_it_is_refused(store):
    backend, records = store
    assert records.kept_with(backend)

    def put(data: bytes, note: str, policy=DuplicatePolicy.KEEP_FIRST) -> PutOutcome:
        return backend.put(*instance("1.2.3.5", data), policy, [(PROVENANCE, {"sop_instance_uid": "1.2.3.5", "note": note})])

    assert put(b"first", "stored") == PutOutcome.STORED
    assert put(b"first", "identical") == PutOutcome.IDENTICAL_DUPLICATE
    assert put(b"other", "refused", DuplicatePolicy.REJECT) == PutOutcome.REJECTED_DUPLICATE
    assert put(b"other", "kept aside") == PutOutcome.KEPT_FIRST
    assert notes(records, "1.2.3.5") == ["stored", "identical", "kept aside"]


def test_a_record_that_cannot_be_written_stores_nothing(store):
    backend, records = store
    with pytest.raises(Exception):
        backend.put(*instance("1.2.3.6", b"data"), DuplicatePolicy.KEEP_FIRST, [(PROVENANCE, {"bad": object()})])
    assert backend.get_document("1.2.3.6") is None
    assert records.find(PROVENANCE) == []


def test_records_are_kept_only_with_the_backend_of_their_own_database(tier, tmp_path):
    backend, dispose = make_backend(tier, tmp_path)
    other, dispose_other = make_backend(tier, tmp_path)  # as the quarantine is
    try:
        assert open_records(backend).kept_with(backend)
        assert not open_records(backend).kept_with(other)
    finally:
        dispose_other()
        dispose()


def test_the_archive_stores_provenance_in_the_instances_commit(store, tier, tmp_path, monkeypatch):
    backend, records = store
    quarantine, dispose_quarantine = make_backend(tier, tmp_path)
    registry = RuleSetRegistry(records)
    registry.activate("ages", b"""<RuleSet name="ages"><Rule><Action><AgeFromBirthDate/>
        <EmptyElement tag="PatientBirthDate"/></Action></Rule></RuleSet>""", {}, Selector(), "tests")
    archive = ArchiveService(backend, routing=Routing(Router(registry, SECRETS), quarantine, records))

    def separate_insert(kind, record):
        raise AssertionError(f"a {kind} record written in a commit of its own")

    monkeypatch.setattr(records, "insert", separate_insert)
    ds = make_dataset(PatientBirthDate="19800115", StudyDate="20240601")
    try:
        assert archive.store_bytes(encode(ds), Source("dimse", calling_aet="MR1")).status == "stored"
        [provenance] = provenance_of(records, ds.SOPInstanceUID)
        assert provenance["source"]["calling_aet"] == "MR1"
        assert {c["path"]: c["old"] for c in provenance["changes"]}["PatientBirthDate"] == "19800115"
    finally:
        dispose_quarantine()


@pytest.mark.parametrize("keep_original_values", [True, False])
def test_changes_read_back_as_dicts_with_old_values_only_when_kept(store, tier, tmp_path, keep_original_values):
    backend, records = store
    quarantine, dispose_quarantine = make_backend(tier, tmp_path)
    registry = RuleSetRegistry(records)
    registry.activate("ages", b"""<RuleSet name="ages"><Rule name="age"><Action><AgeFromBirthDate/>
        <EmptyElement tag="PatientBirthDate"/></Action></Rule></RuleSet>""", {}, Selector(), "tests")
    routing = Routing(Router(registry, SECRETS), quarantine, records, keep_original_values=keep_original_values)
    archive = ArchiveService(backend, routing=routing)
    ds = make_dataset(PatientBirthDate="19800115", StudyDate="20240601")
    try:
        assert archive.store_bytes(encode(ds), Source("dimse")).status == "stored"
        [provenance] = provenance_of(records, ds.SOPInstanceUID)
        changes = {c["path"]: c for c in provenance["changes"]}
        assert changes["PatientBirthDate"]["tag"] == "00100030" and changes["PatientBirthDate"]["rule"] == "age"
        assert changes["PatientBirthDate"]["kind"] == "changed" and changes["PatientAge"]["kind"] == "added"
        assert changes["PatientAge"]["new"] == "044Y"
        if keep_original_values:
            assert changes["PatientBirthDate"]["old"] == "19800115"
        else:
            assert all("old" not in c for c in provenance["changes"])
            assert "19800115" not in str(records.find(PROVENANCE))  # not stored, not only not shown
    finally:
        dispose_quarantine()


def test_provenance_has_an_indexed_table_of_its_own_and_older_records_move_there(tmp_path):
    """Embedded store: a provenance record per routed instance is looked up through an index, not by
    reading every record; records written to the shared table by an earlier version are moved on open."""
    import json
    import sqlite3

    from dopamine_py.storage.records import SQLiteRecords

    db = tmp_path / "records.sqlite"
    records = SQLiteRecords(db)
    records.close()
    with sqlite3.connect(db) as conn:  # as an earlier version wrote it
        conn.execute("INSERT INTO records (kind, id, body) VALUES ('provenance', 'old1', ?)",
                     (json.dumps({"id": "old1", "sop_instance_uid": "1.2.3", "received_sop_instance_uid": "9.8.7"}),))
    records = SQLiteRecords(db)
    records.insert(PROVENANCE, {"sop_instance_uid": "1.2.4", "received_sop_instance_uid": "9.8.6"})
    assert [r["id"] for r in records.find(PROVENANCE, sop_instance_uid="1.2.3")] == ["old1"]
    assert [r["sop_instance_uid"] for r in records.find(PROVENANCE, received_sop_instance_uid="9.8.6")] == ["1.2.4"]
    assert [r["sop_instance_uid"] for r in records.find(PROVENANCE)] == ["1.2.3", "1.2.4"]
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT count(*) FROM records WHERE kind = 'provenance'").fetchone() == (0,)
        plan = conn.execute("EXPLAIN QUERY PLAN SELECT body FROM provenance WHERE sop_instance_uid = ?",
                            ("1.2.3",)).fetchall()
    assert "provenance_sop_instance_uid" in str(plan)
    [newer] = records.find(PROVENANCE, sop_instance_uid="1.2.4")
    assert records.update(PROVENANCE, newer["id"], sop_instance_uid="1.2.5", note="moved")
    assert records.find(PROVENANCE, sop_instance_uid="1.2.4") == []  # the indexed column follows the body
    assert [r["note"] for r in records.find(PROVENANCE, sop_instance_uid="1.2.5")] == ["moved"]
    assert records.get(PROVENANCE, newer["id"])["sop_instance_uid"] == "1.2.5"
    assert records.delete(PROVENANCE, "old1") and records.find(PROVENANCE, sop_instance_uid="1.2.3") == []
    records.close()


def test_forwards_are_stored_with_the_instance_and_not_again_for_an_identical_copy(store, tier, tmp_path,
                                                                                  monkeypatch):
    """A Forward decision is queued in the instance's own write, so that no stored instance lacks the
    forwards its rules decided (a crash between two writes could have lost them); resent unchanged, the
    instance is not queued again."""
    from dopamine_py.forwarding import KIND, ForwardQueue

    backend, records = store
    quarantine, dispose_quarantine = make_backend(tier, tmp_path)
    registry = RuleSetRegistry(records)
    registry.activate("send-on", b"""<RuleSet name="send-on"><Rule><Action><Forward destination="PEER1"/>
        <Forward destination="PEER2"/></Action></Rule></RuleSet>""", {}, Selector(), "tests")
    archive = ArchiveService(backend)
    forward = ForwardQueue(records, archive, calling_aet="DOPAMINE")
    archive.routing = Routing(Router(registry, SECRETS), quarantine, records, forward=forward)

    def separate_insert(kind, record):
        raise AssertionError(f"a {kind} record written in a write of its own")

    monkeypatch.setattr(records, "insert", separate_insert)
    data = encode(make_dataset())
    try:
        assert archive.store_bytes(data, Source("dimse", calling_aet="MR1")).status == "stored"
        queued = records.find(KIND)
        assert sorted(item["destination"] for item in queued) == ["PEER1", "PEER2"]
        assert {item["state"] for item in queued} == {"pending"}
        assert archive.store_bytes(data, Source("dimse", calling_aet="MR1")).outcome == PutOutcome.IDENTICAL_DUPLICATE
        assert len(records.find(KIND)) == 2
    finally:
        dispose_quarantine()


def test_values_given_as_json_text_are_written_as_they_are():
    from dopamine_py.storage.records import JSONText, record_json

    changes = [["PatientName", 0x00100010, "changed", "Doe^J\u00f6", "", "r1"]]
    for record in ({"id": "a", "changes": JSONText(json.dumps(changes)), "n": [1, None]},
                   {"changes": JSONText(json.dumps(changes))}, {"plain": {"x": 1}}):
        parsed = {key: json.loads(value) if isinstance(value, JSONText) else value for key, value in record.items()}
        assert json.loads(record_json(record)) == parsed
        assert json.loads(record_json(record, id="b", seq=7)) == {**parsed, "id": "b", "seq": 7}


def test_a_record_outlives_its_instance_and_keeps_its_order(store):
    """Whatever the store keeps a provenance record with (the instance's row on the embedded store), it is
    found by the instance's UID, its received UID and its id, in the order written, and stays when the
    instance is replaced or deleted; it can be updated and deleted as any record."""
    backend, records = store

    def put(data: bytes, note: str, policy=DuplicatePolicy.KEEP_FIRST) -> PutOutcome:
        return backend.put(*instance("1.2.3.7", data), policy,
                           [(PROVENANCE, {"sop_instance_uid": "1.2.3.7", "received_sop_instance_uid": "9.9", "note": note})])

    records.insert(PROVENANCE, {"sop_instance_uid": "1.2.3.7", "note": "quarantined first"})
    assert put(b"v1", "stored") == PutOutcome.STORED
    assert put(b"v2", "replacing", DuplicatePolicy.REPLACE) == PutOutcome.REPLACED
    assert notes(records, "1.2.3.7") == ["quarantined first", "stored", "replacing"]
    assert [r["note"] for r in records.find(PROVENANCE, received_sop_instance_uid="9.9")] == ["stored", "replacing"]
    replacing = records.find(PROVENANCE, sop_instance_uid="1.2.3.7")[-1]
    assert records.get(PROVENANCE, replacing["id"])["note"] == "replacing"
    assert backend.delete_instance("1.2.3.7")
    assert notes(records, "1.2.3.7") == ["quarantined first", "stored", "replacing"]
    assert put(b"v3", "stored again") == PutOutcome.STORED
    latest = records.find(PROVENANCE, sop_instance_uid="1.2.3.7")[-1]
    assert records.update(PROVENANCE, latest["id"], note="annotated")
    assert notes(records, "1.2.3.7") == ["quarantined first", "stored", "replacing", "annotated"]
    assert records.delete(PROVENANCE, replacing["id"])
    assert notes(records, "1.2.3.7") == ["quarantined first", "stored", "annotated"]


def test_the_embedded_store_keeps_a_record_in_its_instances_row(tmp_path):
    """No row and index entry of its own in each routed instance's commit; the row of an instance stored
    by an earlier version gets the column on open."""
    import sqlite3

    from dopamine_py.storage.sqlite import SQLiteBackend

    backend = SQLiteBackend(tmp_path / "store")
    records = open_records(backend)
    assert backend.put(*instance("1.2.3.8", b"data"), DuplicatePolicy.KEEP_FIRST,
                       [(PROVENANCE, {"sop_instance_uid": "1.2.3.8", "note": "kept"})]) == PutOutcome.STORED
    with sqlite3.connect(backend.db_path) as conn:
        assert conn.execute("SELECT count(*) FROM provenance").fetchone() == (0,)
        [(body,)] = conn.execute("SELECT provenance FROM instances WHERE sop_instance_uid = '1.2.3.8'").fetchall()
        plan = conn.execute("EXPLAIN QUERY PLAN SELECT provenance FROM instances WHERE provenance IS NOT NULL"
                            " AND sop_instance_uid = ?", ("1.2.3.8",)).fetchall()
    assert json.loads(body)["note"] == "kept" and "sop_instance_uid" in str(plan)  # found through its index
    records.close()
    backend.close()

    older = tmp_path / "older"
    SQLiteBackend(older).close()
    with sqlite3.connect(older / "dopamine.sqlite") as conn:  # as an earlier version made it
        conn.execute("ALTER TABLE instances DROP COLUMN provenance")
    backend = SQLiteBackend(older)
    records = open_records(backend)
    backend.put(*instance("1.2.3.9", b"data"), DuplicatePolicy.KEEP_FIRST,
                [(PROVENANCE, {"sop_instance_uid": "1.2.3.9", "note": "after the upgrade"})])
    assert notes(records, "1.2.3.9") == ["after the upgrade"]
    records.close()
    backend.close()
