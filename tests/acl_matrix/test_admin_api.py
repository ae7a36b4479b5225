"""The admin HTTP API (/admin): every route as the administrator, refused to other users (403) and to
anonymous requests (401), bad input answered 400 with the reason, every change in the audit trail."""

from __future__ import annotations

import contextlib
import json
import threading
import time

import pytest

from acl_matrix_support import ADMIN, ALICE, BOSS, Principal, c_find, http
from support import free_port

ROUTES = [
    ("GET", "/admin/acl/rules"), ("POST", "/admin/acl/rules"), ("DELETE", "/admin/acl/rules/1"),
    ("GET", "/admin/users"), ("POST", "/admin/users"), ("DELETE", "/admin/users/alice"),
    ("PUT", "/admin/users/alice/password"), ("PUT", "/admin/users/alice/groups"),
    ("GET", "/admin/tokens"), ("POST", "/admin/tokens"), ("DELETE", "/admin/tokens/abc"),
    ("GET", "/admin/audit"), ("GET", "/admin/peers"), ("POST", "/admin/peers"), ("DELETE", "/admin/peers/MATRIXDEST"),
]


def admin(matrix, method: str, path: str, body=None, principal: Principal = ADMIN, raw: bytes | None = None):
    headers = principal.http_headers(matrix.tokens)
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    if data is not None:
        headers["Content-Type"] = "application/json"
    return http(method, f"{matrix.base}{path}", headers, data)


def _latest_audit(matrix, count: int) -> list[dict]:
    answer = admin(matrix, "GET", f"/admin/audit?limit={count}")
    assert answer.status == 200
    return answer.json()


@pytest.mark.parametrize("method, path", ROUTES)
def test_every_route_refuses_non_admins(matrix, method, path):
    body = {"x": 1} if method in ("POST", "PUT") else None
    anonymous = admin(matrix, method, path, body, Principal("anonymous"))
    assert anonymous.status == 401 and anonymous.headers["www-authenticate"].startswith("Basic ")
    user = admin(matrix, method, path, body, ALICE)
    assert user.status == 403 and "Admin" in user.json()["error"]
    token = admin(matrix, method, path, body, Principal("token", token_of="alice"))
    assert token.status == 403
    # Nothing changed: alice and the move destination are still there.
    assert {u["name"] for u in admin(matrix, "GET", "/admin/users").json()} >= {"alice", "rita", "boss"}
    assert any(p["aet"] == "MATRIXDEST" for p in admin(matrix, "GET", "/admin/peers").json())


def test_rules_added_and_removed_through_the_api_apply_and_are_audited(matrix):
    keys = {"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": "", "PatientID": ""}
    newbie = Principal("newbie", "newbie", "newbie-pass-123")
    created = admin(matrix, "POST", "/admin/users", {"name": "newbie", "password": newbie.password,
                                                     "groups": ["trainees"]})
    assert created.status == 201 and created.json()["groups"] == ["trainees"]
    added = admin(matrix, "POST", "/admin/acl/rules", {"principal": "group:trainees", "service": "Query",
                                                        "match": {"PatientID": "LAB1"}})
    assert added.status == 201
    rule = added.json()
    assert rule["match"] == ["PatientID=LAB1"] and rule["created_by"] == "user:admin"
    assert rule in admin(matrix, "GET", "/admin/acl/rules").json()
    answers, status = c_find(matrix.server, newbie, keys)
    assert status == 0 and {str(a.PatientID) for a in answers} == {"LAB1"}
    assert admin(matrix, "DELETE", f"/admin/acl/rules/{rule['id']}").status == 200
    assert c_find(matrix.server, newbie, keys)[1] == 0x0124
    assert admin(matrix, "DELETE", f"/admin/acl/rules/{rule['id']}").status == 404
    audit = _latest_audit(matrix, 3)
    assert [(e["actor"], e["action"]) for e in audit] == [("user:admin", "user.add"), ("user:admin", "rule.add"),
                                                          ("user:admin", "rule.remove")]
    assert audit[1]["detail"]["constraints"] == ["PatientID=LAB1"]


def test_user_lifecycle_and_tokens(matrix):
    temp = Principal("temp", "temp-user", "temp-pass-123")
    assert admin(matrix, "POST", "/admin/users", {"name": temp.user, "password": temp.password}).status == 201
    assert admin(matrix, "POST", "/admin/users", {"name": temp.user, "password": temp.password}).status == 409
    assert admin(matrix, "POST", "/admin/acl/rules", {"principal": f"user:{temp.user}", "service": "Query"}).status == 201
    assert http("GET", f"{matrix.url}/studies", temp.http_headers({})).status == 200
    # A new password: the old one stops working.
    assert admin(matrix, "PUT", f"/admin/users/{temp.user}/password", {"password": "temp-pass-456"}).status == 200
    assert http("GET", f"{matrix.url}/studies", temp.http_headers({})).status == 401
    temp = Principal("temp", "temp-user", "temp-pass-456")
    assert http("GET", f"{matrix.url}/studies", temp.http_headers({})).status == 200
    groups = admin(matrix, "PUT", f"/admin/users/{temp.user}/groups", {"groups": ["a", "b"]})
    assert groups.status == 200 and groups.json()["groups"] == ["a", "b"]
    # A token, shown once; it works as Bearer; revoking it ends it.
    created = admin(matrix, "POST", "/admin/tokens", {"user": temp.user, "label": "viewer", "days": 1})
    assert created.status == 201
    token = created.json()["token"]
    assert token.startswith("dpt_") and created.json()["expires_at"]
    bearer = {"Authorization": f"Bearer {token}"}
    assert http("GET", f"{matrix.url}/studies", bearer).status == 200
    listed = admin(matrix, "GET", f"/admin/tokens?user={temp.user}").json()
    assert [t["id"] for t in listed] == [created.json()["id"]] and "token" not in listed[0]
    secret = token[len("dpt_") + len(created.json()["id"]) + 1:]
    assert len(secret) == 43 and secret not in json.dumps(_latest_audit(matrix, 20)), "the secret is never audited"
    assert admin(matrix, "DELETE", f"/admin/tokens/{created.json()['id']}").status == 200
    assert http("GET", f"{matrix.url}/studies", bearer).status == 401
    # Removing the user ends its logins.
    assert admin(matrix, "DELETE", f"/admin/users/{temp.user}").status == 200
    assert http("GET", f"{matrix.url}/studies", temp.http_headers({})).status == 401
    assert admin(matrix, "DELETE", f"/admin/users/{temp.user}").status == 404
    actions = [(e["actor"], e["action"]) for e in _latest_audit(matrix, 7)]
    assert actions == [("user:admin", a) for a in ("user.add", "rule.add", "user.passwd", "user.groups",
                                                   "token.create", "token.revoke", "user.remove")]
    users = admin(matrix, "GET", "/admin/users").json()
    assert temp.user not in {u["name"] for u in users} and all("password" not in json.dumps(u) for u in users)


def test_peers(matrix):
    created = admin(matrix, "POST", "/admin/peers", {"aet": "WORKSTATION9", "host": "127.0.0.1", "port": 11119})
    assert created.status == 201
    assert {"aet": "WORKSTATION9", "host": "127.0.0.1", "port": 11119} in admin(matrix, "GET", "/admin/peers").json()
    updated = admin(matrix, "POST", "/admin/peers", {"aet": "WORKSTATION9", "host": "127.0.0.2", "port": 11119})
    assert updated.status == 200
    assert admin(matrix, "DELETE", "/admin/peers/WORKSTATION9").status == 200
    assert admin(matrix, "DELETE", "/admin/peers/WORKSTATION9").status == 404
    assert all(p["aet"] != "WORKSTATION9" for p in admin(matrix, "GET", "/admin/peers").json())
    audit = _latest_audit(matrix, 3)
    assert [(e["actor"], e["action"], e["detail"]["host"]) for e in audit] == [
        ("user:admin", "peer.add", "127.0.0.1"), ("user:admin", "peer.update", "127.0.0.2"),
        ("user:admin", "peer.remove", "127.0.0.2")]


@pytest.mark.parametrize("method, path, body, reason", [
    ("POST", "/admin/acl/rules", {"principal": "user:x", "service": "Qery"}, "unknown service"),
    ("POST", "/admin/acl/rules", {"principal": "nobody", "service": "Query"}, "invalid principal"),
    ("POST", "/admin/acl/rules", {"principal": "anonymous", "service": "Admin"}, "authenticated principal"),
    ("POST", "/admin/acl/rules", {"principal": "user:x", "service": "Query", "match": ["PatientID=*"]}, "universal"),
    ("POST", "/admin/acl/rules", {"principal": "user:x", "service": "Query", "match": ["NoSuchKeyword=1"]},
     "NoSuchKeyword"),
    ("POST", "/admin/acl/rules", {"principal": "user:x", "service": "Echo", "match": ["Modality=MR"]}, "no --match"),
    ("POST", "/admin/acl/rules", {"principal": "user:x"}, "missing field"),
    ("POST", "/admin/acl/rules", {"principal": "user:x", "service": "Query", "extra": 1}, "unknown field"),
    ("POST", "/admin/acl/rules", ["user:x", "Query"], "JSON object"),
    ("DELETE", "/admin/acl/rules/abc", None, "whole number"),
    ("POST", "/admin/users", {"name": "shorty", "password": "short"}, "8"),
    ("POST", "/admin/users", {"name": "bad:name", "password": "long-enough-1"}, "invalid user name"),
    ("POST", "/admin/users", {"name": "grp", "password": "long-enough-1", "groups": "radiology"}, "array"),
    ("POST", "/admin/tokens", {"user": "alice", "days": 0}, "days"),
    ("POST", "/admin/tokens", {"user": "alice", "days": True}, "integer"),
    ("POST", "/admin/peers", {"aet": "X" * 17, "host": "127.0.0.1", "port": 104}, "AE title"),
    ("POST", "/admin/peers", {"aet": "OK", "host": "127.0.0.1", "port": 70000}, "port"),
    ("POST", "/admin/peers", {"aet": "OK", "host": "", "port": 104}, "host"),
    ("GET", "/admin/audit?limit=0", None, "limit"),
])
def test_bad_input_gets_400_with_the_reason_and_changes_nothing(matrix, method, path, body, reason):
    before = _latest_audit(matrix, 1)
    answer = admin(matrix, method, path, body)
    assert answer.status == 400, answer.body
    assert reason.lower() in answer.json()["error"].lower(), answer.json()
    assert _latest_audit(matrix, 1) == before


def test_a_body_that_is_not_json_is_refused(matrix):
    answer = admin(matrix, "POST", "/admin/users", raw=b"{name: alice")
    assert answer.status == 400 and "not valid JSON" in answer.json()["error"]
    wrong_type = http("POST", f"{matrix.base}/admin/users", {**ADMIN.http_headers({}), "Content-Type": "text/plain"},
                      b"name=alice")
    assert wrong_type.status == 415


def test_unknown_users_and_tokens_are_404(matrix):
    assert admin(matrix, "PUT", "/admin/users/nobody-here/password", {"password": "long-enough-1"}).status == 404
    assert admin(matrix, "PUT", "/admin/users/nobody-here/groups", {"groups": []}).status == 404
    assert admin(matrix, "DELETE", "/admin/tokens/AAAAAAAAAAAA").status == 404


@contextlib.contextmanager
def serving(app):
    """``app`` under uvicorn on 127.0.0.1 in a thread, as `dopamine serve` runs it; its base URL."""
    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    assert server.started, "uvicorn did not start"
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def test_extra_routes_get_the_same_admin_check(tmp_path):
    """Routes another module adds (``extra_routes``) are guarded without doing anything themselves."""
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    from acl import AccessControl, AclStore, Principal as AclPrincipal, Service
    from acl.passwords import hash_password
    from dicomweb.admin import actor_of, create_admin_app

    store = AclStore.for_sqlite(tmp_path / "acl.sqlite")
    store.add_user("root", hash_password("root-pass-1"), frozenset(), "test")
    store.add_user("plain", hash_password("plain-pass-1"), frozenset(), "test")
    store.add_rule(AclPrincipal.parse("user:root"), Service.ADMIN, (), "test")

    async def rulesets(request):
        return JSONResponse({"actor": actor_of(request)})

    app = create_admin_app(None, None, AccessControl(store), extra_routes=[Route("/rulesets", rulesets)])
    with serving(app) as base:
        assert http("GET", f"{base}/rulesets").status == 401
        assert http("GET", f"{base}/rulesets", Principal("plain", "plain", "plain-pass-1").http_headers({})).status == 403
        answer = http("GET", f"{base}/rulesets", Principal("root", "root", "root-pass-1").http_headers({}))
        assert answer.status == 200 and answer.json() == {"actor": "user:root"}
    store.close()


def test_the_admin_api_keeps_its_check_when_access_control_is_not_enforced(tmp_path):
    from acl import AccessControl, AclStore
    from dicomweb.admin import create_admin_app

    store = AclStore.for_sqlite(tmp_path / "acl.sqlite")
    app = create_admin_app(None, None, AccessControl(store, enforce=False))
    with serving(app) as base:
        assert http("GET", f"{base}/users").status == 401
    store.close()


def test_the_control_user_is_not_an_admin(matrix):
    assert admin(matrix, "GET", "/admin/users", principal=BOSS).status == 403
