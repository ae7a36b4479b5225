"""The admin HTTP API, mounted by ``dopamine serve`` at /admin: access rules, users, API tokens, the audit
trail and the peer table, in JSON. Every route requires the Admin service (docs/access-control.md).

Routes (relative to /admin):
  GET    /acl/rules                  the rules
  POST   /acl/rules                  {"principal": "group:radiology", "service": "Query", "match": ["Modality=MR"]}
  DELETE /acl/rules/{id}
  GET    /users                      users and their groups (never a password hash)
  POST   /users                      {"name": "alice", "password": "...", "groups": ["radiology"]}
  DELETE /users/{name}               also revokes the user's tokens
  PUT    /users/{name}/password      {"password": "..."}
  PUT    /users/{name}/groups        {"groups": [...]}
  GET    /tokens[?user=NAME]         tokens (never their secrets)
  POST   /tokens                     {"user": "alice", "label": "viewer", "days": 90}: the token, shown once
  DELETE /tokens/{id}
  GET    /audit[?limit=N]            the latest changes, oldest first
  GET    /peers                      C-MOVE destinations
  POST   /peers                      {"aet": "WORKSTATION", "host": "10.0.0.7", "port": 104}
  DELETE /peers/{aet}

Other modules add their own admin routes with ``create_admin_app(..., extra_routes=[...])``: the Admin
check is made by the application for every route, so they need none of their own; a handler finds the
administrator's identity in ``request.state.admin`` and the audit actor in ``actor_of(request)``.
Every change is written to the audit trail with the administrator as actor (``user:NAME``).
"""

from __future__ import annotations

import json
import logging
from typing import Any, Callable, Sequence

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Receive, Scope, Send

from acl import AccessControl, AclConflict, AclError, Identity, Service, decide, log_denial
from acl.model import Principal, Rule, check_name, check_rule, parse_constraints
from acl.passwords import WeakPassword, check_password, hash_password
from acl.store import AclStore
from acl.tokens import new_token
from dopamine_py.config import _aet as aet_problem, _port as port_problem

from .authorization import authenticate
from .errors import DicomWebError

log = logging.getLogger("dopamine.admin")

MAX_BODY = 64 * 1024  # admin requests are small; anything bigger is a mistake
MAX_AUDIT = 1000


class AdminError(Exception):
    """An admin request that cannot be done: its status and a short explanation for the client."""

    def __init__(self, message: str, status: int = 400, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.headers = headers or {}


def error_response(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


# ------------------------------------------------------------------------------------------- the guard


def admin_decision(access: AccessControl, identity: Identity):
    """The Admin decision. Unlike the data services it is taken from the rules even when access control is
    not enforced (auth.enforce = false): an archive left open on a closed network must still not hand its
    users, tokens and peer table to whoever asks."""
    if access.enforce:
        return access.decide(identity, Service.ADMIN)
    decision = decide(access.store.list_rules(), identity, Service.ADMIN)
    if not decision.allowed:
        log_denial(identity, Service.ADMIN, decision.reason)
    return decision


class RequireAdmin:
    """ASGI middleware: every request reaching the admin routes comes from a principal holding Admin.

    Anonymous requests get 401 with the challenge, refused credentials 401 (or 429 while throttled),
    authenticated principals without Admin 403. The identity is left in ``request.state.admin``.
    """

    def __init__(self, app: ASGIApp, access: AccessControl) -> None:
        self.app = app
        self.access = access

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        try:
            # Password checks (scrypt, LDAP binds) block: they run in the thread pool.
            identity = await run_in_threadpool(self._admin, request)
        except AdminError as exc:
            await error_response(exc.status, str(exc), exc.headers)(scope, receive, send)
            return
        scope.setdefault("state", {})["admin"] = identity
        await self.app(scope, receive, send)

    def _admin(self, request: Request) -> Identity:
        try:
            identity = authenticate(self.access, request)
        except DicomWebError as exc:  # refused credentials: the same status and headers as DICOMweb gives
            raise AdminError(str(exc), exc.status, exc.headers) from None
        decision = admin_decision(self.access, identity)
        if not decision.allowed:
            if not identity.authenticated:
                _, headers = self.access.http_denial(decision)
                raise AdminError("authentication required", 401, headers)
            raise AdminError("not authorized to administer this archive (no rule grants Admin)", 403)
        return identity


def actor_of(request: Request) -> str:
    """Who made a change, for the audit trail."""
    return f"user:{request.state.admin.user}"


# ------------------------------------------------------------------------------------------ the routes


def create_admin_app(archive, settings, access: AccessControl,
                     extra_routes: Sequence[BaseRoute] = ()) -> Starlette:
    """The admin application. ``extra_routes`` (Starlette routes, relative to /admin) get the same Admin
    check and the same JSON error handling as the built-in ones."""
    api = AdminApi(archive, access.store)
    routes = [
        api.route("/acl/rules", api.list_rules),
        api.route("/acl/rules", api.add_rule, "POST"),
        api.route("/acl/rules/{id}", api.remove_rule, "DELETE"),
        api.route("/users", api.list_users),
        api.route("/users", api.add_user, "POST"),
        # {name:path}: a user name may hold a '/', which the client sends as %2F.
        api.route("/users/{name:path}/password", api.set_password, "PUT"),
        api.route("/users/{name:path}/groups", api.set_groups, "PUT"),
        api.route("/users/{name:path}", api.remove_user, "DELETE"),
        api.route("/tokens", api.list_tokens),
        api.route("/tokens", api.create_token, "POST"),
        api.route("/tokens/{id}", api.revoke_token, "DELETE"),
        api.route("/audit", api.audit),
        api.route("/peers", api.list_peers),
        api.route("/peers", api.put_peer, "POST"),
        api.route("/peers/{aet}", api.remove_peer, "DELETE"),
        *extra_routes,
    ]
    app = Starlette(routes=routes, exception_handlers={AdminError: _on_admin_error, Exception: _on_unexpected})
    app.add_middleware(RequireAdmin, access=access)
    return app


async def _on_admin_error(request: Request, exc: AdminError) -> Response:
    return error_response(exc.status, str(exc), exc.headers)


async def _on_unexpected(request: Request, exc: Exception) -> Response:
    log.exception("%s %s failed", request.method, request.url.path)
    return error_response(500, f"internal error: {type(exc).__name__}")


class AdminApi:
    """The built-in admin handlers. Each takes the request and its decoded JSON body (None for bodiless
    methods) and returns (status, JSON-able answer)."""

    def __init__(self, archive, store: AclStore) -> None:
        self.archive = archive
        self.store = store

    def route(self, path: str, handler: Callable[[Request, Any], tuple[int, Any]], method: str = "GET") -> Route:
        async def endpoint(request: Request) -> Response:
            body = await _json_body(request) if method in ("POST", "PUT") else None
            try:
                status, answer = await run_in_threadpool(handler, request, body)
            except (AclError, WeakPassword) as exc:
                raise AdminError(str(exc), 400) from None
            except AclConflict as exc:
                raise AdminError(str(exc), 409) from None
            return JSONResponse(answer, status_code=status)

        return Route(path, endpoint, methods=[method])

    # ------------------------------------------------------------------------------------------ rules

    def list_rules(self, request: Request, body: None) -> tuple[int, Any]:
        return 200, [_rule(r) for r in self.store.list_rules()]

    def add_rule(self, request: Request, body: Any) -> tuple[int, Any]:
        fields = _object(body, required={"principal": str, "service": str}, optional={"match": (list, dict)})
        principal = Principal.parse(fields["principal"])
        service = Service.parse(fields["service"])
        constraints = parse_constraints(_match_texts(fields.get("match", [])))
        check_rule(principal, service, constraints)
        rule = self.store.add_rule(principal, service, constraints, actor_of(request))
        log.info("%s added rule %s", actor_of(request), rule.describe())
        return 201, _rule(rule)

    def remove_rule(self, request: Request, body: None) -> tuple[int, Any]:
        text = request.path_params["id"]
        if not text.isdigit():
            raise AdminError(f"a rule id is a whole number, not {text!r}")
        rule_id = int(text)
        if all(r.id != rule_id for r in self.store.list_rules()):
            raise AdminError(f"no rule {rule_id}", 404)
        rule = self.store.remove_rule(rule_id, actor_of(request))
        return 200, _rule(rule)

    # ------------------------------------------------------------------------------------------ users

    def list_users(self, request: Request, body: None) -> tuple[int, Any]:
        return 200, [{"name": u.name, "groups": sorted(u.groups), "created_at": u.created_at}
                     for u in self.store.list_users()]

    def add_user(self, request: Request, body: Any) -> tuple[int, Any]:
        fields = _object(body, required={"name": str, "password": str}, optional={"groups": list})
        name = check_name(fields["name"])
        groups = _groups(fields.get("groups", []))
        check_password(fields["password"])
        if self.store.get_user(name) is not None:
            raise AdminError(f"user {name!r} already exists (change its password with PUT /admin/users/{name}/password)",
                             409)
        record = self.store.add_user(name, hash_password(fields["password"]), groups, actor_of(request))
        return 201, {"name": record.name, "groups": sorted(record.groups), "created_at": record.created_at}

    def remove_user(self, request: Request, body: None) -> tuple[int, Any]:
        name = self._known_user(request)
        self.store.remove_user(name, actor_of(request))
        return 200, {"removed": name, "note": f"its tokens are revoked; rules naming user:{name} stay"}

    def set_password(self, request: Request, body: Any) -> tuple[int, Any]:
        fields = _object(body, required={"password": str})
        name = self._known_user(request)
        check_password(fields["password"])
        self.store.set_password(name, hash_password(fields["password"]), actor_of(request))
        return 200, {"name": name, "password": "changed"}

    def set_groups(self, request: Request, body: Any) -> tuple[int, Any]:
        fields = _object(body, required={"groups": list})
        name = self._known_user(request)
        groups = _groups(fields["groups"])
        self.store.set_groups(name, groups, actor_of(request))
        return 200, {"name": name, "groups": sorted(groups)}

    def _known_user(self, request: Request) -> str:
        name = request.path_params["name"]
        if self.store.get_user(name) is None:
            raise AdminError(f"no local user {name!r}", 404)
        return name

    # ----------------------------------------------------------------------------------------- tokens

    def list_tokens(self, request: Request, body: None) -> tuple[int, Any]:
        user = request.query_params.get("user") or None
        return 200, [_token(t) for t in self.store.list_tokens(user)]

    def create_token(self, request: Request, body: Any) -> tuple[int, Any]:
        fields = _object(body, required={"user": str}, optional={"label": str, "days": int})
        user = check_name(fields["user"])
        days = fields.get("days")
        if days is not None and days <= 0:
            raise AdminError("days must be 1 or more (leave it out for a token valid until revoked)")
        text, record = new_token(user, fields.get("label", ""), days)
        self.store.add_token(record, actor_of(request))
        answer = {**_token(record), "token": text,
                  "note": "the token is shown only now: keep it safe"}
        if self.store.get_user(user) is None:
            answer["warning"] = f"{user!r} is not a local user: the token works only while LDAP knows {user!r}"
        return 201, answer

    def revoke_token(self, request: Request, body: None) -> tuple[int, Any]:
        token_id = request.path_params["id"]
        if self.store.get_token(token_id) is None:
            raise AdminError(f"no token {token_id!r}", 404)
        return 200, _token(self.store.revoke_token(token_id, actor_of(request)))

    # ------------------------------------------------------------------------------------------ audit

    def audit(self, request: Request, body: None) -> tuple[int, Any]:
        text = request.query_params.get("limit", "100")
        if not text.isdigit() or not 1 <= int(text) <= MAX_AUDIT:
            raise AdminError(f"limit must be a whole number from 1 to {MAX_AUDIT}, not {text!r}")
        return 200, [{"id": e.id, "at": e.at, "actor": e.actor, "action": e.action, "detail": e.detail}
                     for e in self.store.audit_entries(int(text))]

    # ------------------------------------------------------------------------------------------ peers

    def list_peers(self, request: Request, body: None) -> tuple[int, Any]:
        return 200, self.archive.backend.list_peers()

    def put_peer(self, request: Request, body: Any) -> tuple[int, Any]:
        fields = _object(body, required={"aet": str, "host": str, "port": int})
        aet, host, port = fields["aet"], fields["host"].strip(), fields["port"]
        problem = aet_problem(aet) or port_problem(port)
        if problem:
            raise AdminError(f"bad peer: {problem}")
        if not host or any(c.isspace() for c in host):
            raise AdminError(f"bad peer: host {host!r} must be a host name or an IP address")
        existed = self.archive.backend.get_peer(aet) is not None
        self.archive.backend.put_peer(aet, host, port)
        record_change(self.store, actor_of(request), "peer.update" if existed else "peer.add",
                      {"aet": aet, "host": host, "port": port})
        return (200 if existed else 201), {"aet": aet, "host": host, "port": port}

    def remove_peer(self, request: Request, body: None) -> tuple[int, Any]:
        aet = request.path_params["aet"]
        peer = self.archive.backend.get_peer(aet)
        if peer is None or not self.archive.backend.remove_peer(aet):
            raise AdminError(f"no peer {aet!r}", 404)
        record_change(self.store, actor_of(request), "peer.remove", dict(peer))
        return 200, peer


def record_change(store: AclStore, actor: str, action: str, detail: dict[str, Any]) -> None:
    """An audit entry for a change made outside the access-control store (the peer table). Written after
    the change, in a transaction of its own: the peer table is written by the backend's connection, which
    an open audit transaction on the same SQLite file would block."""
    store.record(actor, action, detail)


# ----------------------------------------------------------------------------------------- JSON helpers


async def _json_body(request: Request) -> Any:
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type != "application/json":
        raise AdminError("send the request body as JSON (Content-Type: application/json)", 415)
    data = b""
    async for chunk in request.stream():
        data += chunk
        if len(data) > MAX_BODY:
            raise AdminError(f"request body larger than {MAX_BODY // 1024} KiB", 413)
    try:
        return json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise AdminError(f"the body is not valid JSON: {exc}") from None


def _object(body: Any, required: dict[str, Any], optional: dict[str, Any] | None = None) -> dict[str, Any]:
    """The body as a JSON object with exactly the expected fields, of the expected types."""
    optional = optional or {}
    if not isinstance(body, dict):
        raise AdminError(f"the body must be a JSON object with {', '.join(required)}")
    unknown = sorted(set(body) - set(required) - set(optional))
    if unknown:
        raise AdminError(f"unknown field(s) {', '.join(unknown)} (expected {', '.join([*required, *optional])})")
    missing = [k for k in required if k not in body]
    if missing:
        raise AdminError(f"missing field(s) {', '.join(missing)}")
    for key, value in body.items():
        expected = required.get(key, optional.get(key))
        # JSON true/false are ints to Python: a port or a number of days is never a boolean.
        if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
            names = "/".join(t.__name__ for t in (expected if isinstance(expected, tuple) else (expected,)))
            raise AdminError(f"field {key!r} must be a JSON {_json_type(names)}")
    return body


def _json_type(python_names: str) -> str:
    return python_names.replace("str", "string").replace("int", "integer").replace("list", "array") \
        .replace("dict", "object")


def _match_texts(match: list | dict) -> list[str]:
    """Constraints as ``["KEYWORD=VALUE", ...]`` or ``{"KEYWORD": "VALUE"}``."""
    if isinstance(match, dict):
        items = list(match.items())
        if not all(isinstance(v, str) for _, v in items):
            raise AdminError("match values must be strings (DICOM matching syntax, e.g. \"MR\\\\CT\")")
        return [f"{k}={v}" for k, v in items]
    if not all(isinstance(t, str) for t in match):
        raise AdminError('match must be a list of "KEYWORD=VALUE" strings')
    return match


def _groups(groups: list) -> frozenset[str]:
    if not all(isinstance(g, str) for g in groups):
        raise AdminError("groups must be a list of group names")
    return frozenset(check_name(g, "group name") for g in groups)


def _rule(rule: Rule) -> dict[str, Any]:
    return {"id": rule.id, "principal": str(rule.principal), "service": rule.service.value,
            "match": [f"{k}={v}" for k, v in rule.constraints], "created_at": rule.created_at,
            "created_by": rule.created_by}


def _token(record) -> dict[str, Any]:
    return {"id": record.id, "user": record.user, "label": record.label, "created_at": record.created_at,
            "expires_at": record.expires_at}
