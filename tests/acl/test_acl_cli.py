"""The acl, user and token commands: in-process on each store kind, and as a real process on a data folder."""

from __future__ import annotations

import base64
import io
import subprocess
import sys

import pytest

from acl.access import AccessControl
from acl.cli import run_with_store
from acl.first_run import first_run_advice, has_admin
from acl.model import Identity, Service
from acl.store import AclStore
from dopamine_py.storage.sqlite import SQLiteBackend
from support import REPO


def run(store, *argv, stdin: str = "") -> tuple[int, str]:
    out = io.StringIO()
    code = run_with_store(list(argv), store, io.StringIO(stdin), out)
    return code, out.getvalue()


def test_rules_are_added_listed_and_removed(store, capsys):
    code, out = run(store, "acl", "add", "group:radiology", "query", "--match", "Modality=MR", "--match", "StudyDate=2020-")
    assert code == 0 and out == "added rule 1: group:radiology may Query Modality=MR StudyDate=2020-\n"
    assert run(store, "acl", "add", "aet:SCANNER1@10.0.0.5", "Store")[0] == 0
    code, out = run(store, "acl", "list")
    assert out.splitlines() == ["1: group:radiology may Query Modality=MR StudyDate=2020-",
                                "2: aet:SCANNER1@10.0.0.5 may Store (whole archive)"]
    assert run(store, "acl", "remove", "1") == (0, "removed rule 1: group:radiology may Query Modality=MR StudyDate=2020-\n")
    assert run(store, "acl", "remove", "1")[0] == 1
    assert "no rule with id 1" in capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [
    (["acl", "add", "alice", "Query"], "invalid principal 'alice'"),
    (["acl", "add", "user:alice", "Move"], "unknown service 'Move'"),
    (["acl", "add", "user:alice", "Query", "--match", "PatientNmae=X"], "unknown attribute"),
    (["acl", "add", "anonymous", "Admin"], "Admin needs an authenticated principal"),
    (["acl", "add", "user:alice", "Echo", "--match", "Modality=MR"], "takes no --match"),
])
def test_bad_rules_are_refused_and_nothing_is_stored(store, capsys, argv, message):
    assert run(store, *argv)[0] == 1
    assert message in capsys.readouterr().err
    assert store.list_rules() == [] and store.audit_entries() == []


def test_users_and_their_passwords(store, capsys):
    assert run(store, "user", "add", "alice", "--password-stdin", "--group", "radiology", stdin="correct horse battery\n") == \
        (0, "added user alice in groups radiology\n")
    assert run(store, "user", "add", "alice", "--password-stdin", stdin="another password\n")[0] == 1
    assert "already exists" in capsys.readouterr().err
    assert run(store, "user", "add", "bob", "--password-stdin", stdin="short\n")[0] == 1
    assert "at least 8" in capsys.readouterr().err
    assert run(store, "user", "add", "bob")[0] == 1
    assert "--password-stdin" in capsys.readouterr().err
    access = AccessControl(store)
    assert access.check_password("alice", "correct horse battery", None).groups == {"radiology"}
    assert run(store, "user", "passwd", "alice", "--password-stdin", stdin="a new passphrase\n")[0] == 0
    assert access.check_password("alice", "correct horse battery", None).status == 401
    assert access.check_password("alice", "a new passphrase", None).user == "alice"
    assert run(store, "user", "groups", "alice", "mri", "physics") == (0, "groups of alice: mri, physics\n")
    code, out = run(store, "user", "list")
    assert out.startswith("alice\tgroups: mri, physics\tsince 20")
    assert "scrypt" not in out
    assert run(store, "user", "remove", "alice")[0] == 0
    assert run(store, "user", "list")[1] == "no local users\n"


def test_tokens_are_printed_once_and_work_until_revoked(store, capsys):
    run(store, "user", "add", "alice", "--password-stdin", stdin="correct horse battery\n")
    code, out = run(store, "token", "create", "alice", "--label", "viewer", "--days", "30")
    token = out.strip()
    assert code == 0 and token.startswith("dpt_")
    assert "shown only now" in capsys.readouterr().err
    token_id = token.split("_")[1]
    code, listing = run(store, "token", "list")
    assert listing.startswith(f"{token_id}\talice\tviewer\tcreated ") and token.split("_", 2)[2] not in listing
    access = AccessControl(store)
    assert access.authenticate_http(f"Bearer {token}", "127.0.0.1").user == "alice"
    assert run(store, "token", "revoke", token_id)[0] == 0
    assert access.authenticate_http(f"Bearer {token}", "127.0.0.1").status == 401
    run(store, "token", "create", "ldap-only-user")
    assert "not a local user" in capsys.readouterr().err


def test_every_cli_change_is_in_the_audit_trail(store):
    run(store, "user", "add", "alice", "--password-stdin", stdin="correct horse battery\n")
    run(store, "acl", "add", "user:alice", "Admin")
    run(store, "acl", "remove", "1")
    code, out = run(store, "acl", "audit")
    lines = out.splitlines()
    assert [line.split(" ")[2] for line in lines] == ["user.add", "rule.add", "rule.remove"]
    assert all(line.split(" ")[1].startswith("cli:") for line in lines)
    assert "principal=user:alice" in lines[1] and "service=Admin" in lines[1]


def test_first_run_advice_until_an_admin_exists_and_never_a_rule_by_itself(store):
    advice = first_run_advice(store)
    assert "dopamine user add admin --password-stdin" in advice and "dopamine acl add user:admin Admin" in advice
    assert store.list_rules() == [] and store.list_users() == [], "advice only: nothing is created"
    run(store, "acl", "add", "anonymous", "Echo")
    assert not has_admin(store) and first_run_advice(store) is not None
    run(store, "acl", "add", "group:admins", "Admin")
    assert has_admin(store) and first_run_advice(store) is None
    assert not AccessControl(store).decide(Identity(None, protocol="dicomweb"), Service.QUERY).allowed


def test_the_commands_as_a_real_process_on_a_data_folder(tmp_path):
    data = tmp_path / "data"

    def dopamine(*args, stdin=""):
        return subprocess.run([sys.executable, "-m", "acl.cli", *args, "--data-dir", str(data)], input=stdin,
                              capture_output=True, text=True, timeout=60, cwd=REPO)

    created = dopamine("user", "add", "admin", "--password-stdin", stdin="first admin password\n")
    assert created.returncode == 0, created.stderr
    assert dopamine("acl", "add", "user:admin", "Admin").returncode == 0
    bad = dopamine("acl", "add", "user:admin", "Query", "--match", "StudyDate=last week")
    assert bad.returncode == 1 and "not a valid DA" in bad.stderr
    token = dopamine("token", "create", "admin").stdout.strip()
    # what the server will see: the archive's backend and, beside it, the same users and rules
    backend = SQLiteBackend(data)
    access = AccessControl(AclStore.for_backend(backend))
    header = "Basic " + base64.b64encode(b"admin:first admin password").decode()
    admin = access.authenticate_http(header, "127.0.0.1")
    assert access.decide(admin, Service.ADMIN).allowed
    assert access.authenticate_http(f"Bearer {token}", "127.0.0.1").user == "admin"
    assert not access.decide(admin, Service.QUERY).allowed
    backend.close()
