"""The store of rules, users, tokens and audit entries, on SQLite and on MongoDB (mongomock stand-in)."""

from __future__ import annotations

import sqlite3

import pytest

from acl.model import Principal, Service, TokenRecord, parse_constraints
from acl.passwords import hash_password
from acl.store import AclConflict, AclStore
from acl.tokens import new_token, split_token
from acl_support import make_store
from dopamine_py.storage.sqlite import SQLiteBackend


def test_rules_round_trip_with_ids_that_are_never_reused(store):
    first = store.add_rule(Principal.parse("aet:CT1@10.0.0.5"), Service.STORE,
                           parse_constraints([r"Modality=CT\MR", "PatientName=Doe^*"]), "cli:tester")
    second = store.add_rule(Principal.parse("*"), Service.ECHO, (), "cli:tester")
    assert [r.describe() for r in store.list_rules()] == [
        f"{first.id}: aet:CT1@10.0.0.5 may Store Modality=CT\\MR PatientName=Doe^*",
        f"{second.id}: * may Echo (whole archive)",
    ]
    assert store.list_rules()[0] == first
    assert store.remove_rule(second.id, "cli:tester") == second
    third = store.add_rule(Principal.parse("anonymous"), Service.ECHO, (), "cli:tester")
    assert third.id > second.id, "an audit entry naming a removed rule's id must stay unambiguous"
    with pytest.raises(AclConflict, match=f"no rule with id {second.id}"):
        store.remove_rule(second.id, "cli:tester")


def test_users_round_trip_and_duplicates_are_refused(store):
    store.add_user("alice", "scrypt$fake", frozenset({"radiology", "mri"}), "cli:tester")
    with pytest.raises(AclConflict, match="already exists"):
        store.add_user("alice", "scrypt$other", frozenset(), "cli:tester")
    store.set_groups("alice", frozenset({"mri"}), "cli:tester")
    store.set_password("alice", "scrypt$new", "cli:tester")
    user = store.get_user("alice")
    assert (user.name, user.password_hash, user.groups) == ("alice", "scrypt$new", frozenset({"mri"}))
    assert store.get_user("Alice") is None
    for change in (lambda: store.set_password("nobody", "x", "t"), lambda: store.set_groups("nobody", frozenset(), "t"),
                   lambda: store.remove_user("nobody", "t")):
        with pytest.raises(AclConflict, match="no user 'nobody'"):
            change()


def test_removing_a_user_revokes_its_tokens(store):
    store.add_user("alice", "scrypt$fake", frozenset(), "cli:tester")
    _, alice_token = new_token("alice")
    _, bob_token = new_token("bob", "ci pipeline", valid_days=30)
    store.add_token(alice_token, "cli:tester")
    store.add_token(bob_token, "cli:tester")
    assert store.get_token(bob_token.id) == bob_token
    assert [t.id for t in store.list_tokens("alice")] == [alice_token.id]
    store.remove_user("alice", "cli:tester")
    assert store.get_token(alice_token.id) is None
    assert [t.id for t in store.list_tokens()] == [bob_token.id]
    assert store.revoke_token(bob_token.id, "cli:tester") == bob_token
    with pytest.raises(AclConflict, match="no token"):
        store.revoke_token(bob_token.id, "cli:tester")


def test_every_change_is_audited_with_who_when_and_what(store):
    rule = store.add_rule(Principal.parse("group:radiology"), Service.QUERY, parse_constraints(["Modality=MR"]), "cli:ana")
    store.add_user("alice", "scrypt$secret-hash", frozenset({"radiology"}), "cli:ana")
    store.set_password("alice", "scrypt$another-hash", "user:admin")
    store.set_groups("alice", frozenset(), "user:admin")
    _, token = new_token("alice", "viewer")
    store.add_token(token, "cli:ana")
    store.revoke_token(token.id, "cli:ana")
    store.remove_rule(rule.id, "user:admin")
    store.remove_user("alice", "cli:ana")
    entries = store.audit_entries()
    assert [(e.actor, e.action) for e in entries] == [
        ("cli:ana", "rule.add"), ("cli:ana", "user.add"), ("user:admin", "user.passwd"), ("user:admin", "user.groups"),
        ("cli:ana", "token.create"), ("cli:ana", "token.revoke"), ("user:admin", "rule.remove"), ("cli:ana", "user.remove"),
    ]
    assert entries[0].detail == {"id": rule.id, "principal": "group:radiology", "service": "Query",
                                 "constraints": ["Modality=MR"]}
    assert entries[1].detail == {"user": "alice", "groups": ["radiology"]}
    assert entries[4].detail["label"] == "viewer"
    assert all(e.at.startswith("20") and "T" in e.at for e in entries)
    assert "hash" not in repr(entries), "the audit trail never records password or token hashes"
    assert [e.action for e in store.audit_entries(limit=2)] == ["rule.remove", "user.remove"]


def test_a_failed_change_leaves_no_audit_entry(store):
    store.add_user("alice", "scrypt$fake", frozenset(), "cli:tester")
    with pytest.raises(AclConflict):
        store.add_user("alice", "scrypt$fake", frozenset(), "cli:tester")
    with pytest.raises(AclConflict):
        store.remove_rule(999, "cli:tester")
    assert [e.action for e in store.audit_entries()] == ["user.add"]


def test_sqlite_tables_live_beside_the_archive_in_its_file(tmp_path):
    backend = SQLiteBackend(tmp_path / "data")
    store = AclStore.for_backend(backend)
    store.add_user("alice", hash_password("correct horse battery"), frozenset(), "cli:tester")
    # a second connection (another process, another node) sees it: it is in the archive's file
    with sqlite3.connect(backend.db_path) as conn:
        names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        stored = conn.execute("SELECT password_hash FROM acl_users WHERE name = 'alice'").fetchone()[0]
    assert {"instances", "acl_rules", "acl_users", "acl_tokens", "acl_audit"} <= names
    assert stored.startswith("scrypt$") and "correct horse" not in stored
    raw = b"".join(p.read_bytes() for p in backend.db_path.parent.glob("dopamine.sqlite*"))
    assert b"correct horse" not in raw, "the password itself is never written"
    store.close()
    backend.close()


def test_mongodb_store_shares_the_archive_database_mongomock_standin():
    import mongomock

    from dopamine_py.storage.mongodb import MongoBackend

    database = mongomock.MongoClient()["acl_shared"]
    backend = MongoBackend(database)
    node_a, node_b = AclStore.for_backend(backend), AclStore.for_mongodb(database)
    node_a.add_user("alice", hash_password("correct horse battery"), frozenset({"mri"}), "cli:tester")
    assert node_b.get_user("alice").groups == frozenset({"mri"}), "another node sharing the database sees the user"
    document = database["acl_users"].find_one({"_id": "alice"})
    assert document["password_hash"].startswith("scrypt$") and "correct horse" not in str(document)


def test_token_records_keep_only_a_hash_of_the_secret(tmp_path):
    store = make_store("sqlite", tmp_path)
    text, record = new_token("alice")
    store.add_token(record, "cli:tester")
    secret = split_token(text)[1]  # the secret may itself hold "_": not the text after the last one
    assert len(secret) == 43
    assert secret not in repr(store.get_token(record.id))
    assert isinstance(store.get_token(record.id), TokenRecord)
    store.close()
