"""The access-control store as tables in the embedded archive's SQLite file (WAL mode: our own connection
works beside the backend's)."""

from __future__ import annotations

import json
import sqlite3
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from dopamine_py.storage.sqlite_transaction import write_transaction

from .model import AuditEntry, Constraint, Principal, Rule, Service, TokenRecord, UserRecord
from .store import AclConflict, AclStore, now_iso, rule_detail, token_detail

SCHEMA = """
CREATE TABLE IF NOT EXISTS acl_rules (
    id INTEGER PRIMARY KEY AUTOINCREMENT,   -- never reused: an audit entry's rule id stays unambiguous
    principal TEXT NOT NULL,
    service TEXT NOT NULL,
    constraints TEXT NOT NULL,              -- JSON list of [keyword, value]
    created_at TEXT NOT NULL,
    created_by TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS acl_users (
    name TEXT PRIMARY KEY,
    password_hash TEXT NOT NULL,
    groups TEXT NOT NULL,                   -- JSON list
    created_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS acl_tokens (
    id TEXT PRIMARY KEY,
    user TEXT NOT NULL,
    secret_hash TEXT NOT NULL,
    label TEXT NOT NULL,
    created_at TEXT NOT NULL,
    expires_at TEXT
);
CREATE TABLE IF NOT EXISTS acl_audit (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at TEXT NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    detail TEXT NOT NULL
);
"""


class SqliteAclStore(AclStore):
    def __init__(self, path: Path) -> None:
        self.path = path
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self._conn().executescript(SCHEMA)

    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=60)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            self._local.conn = conn
            with self._lock:
                self._connections.append(conn)
        return conn

    @contextmanager
    def _change(self, actor: str, action: str) -> Iterator[tuple[sqlite3.Connection, dict[str, Any]]]:
        """A write transaction that also records its audit entry; the caller fills in ``detail``."""
        detail: dict[str, Any] = {}
        with write_transaction(self._conn()) as conn:
            yield conn, detail
            conn.execute("INSERT INTO acl_audit (at, actor, action, detail) VALUES (?, ?, ?, ?)",
                         (now_iso(), actor, action, json.dumps(detail, sort_keys=True)))

    def close(self) -> None:
        with self._lock:
            for conn in self._connections:
                conn.close()
            self._connections.clear()
        self._local = threading.local()

    # -------------------------------------------------------------------------------------------- rules

    def add_rule(self, principal: Principal, service: Service, constraints: tuple[Constraint, ...], actor: str) -> Rule:
        at = now_iso()
        with self._change(actor, "rule.add") as (conn, detail):
            cur = conn.execute(
                "INSERT INTO acl_rules (principal, service, constraints, created_at, created_by) VALUES (?,?,?,?,?)",
                (str(principal), service.value, json.dumps([list(c) for c in constraints]), at, actor))
            rule = Rule(cur.lastrowid, principal, service, constraints, at, actor)
            detail.update(rule_detail(rule))
        return rule

    def list_rules(self) -> list[Rule]:
        rows = self._conn().execute(
            "SELECT id, principal, service, constraints, created_at, created_by FROM acl_rules ORDER BY id").fetchall()
        return [_rule(row) for row in rows]

    def remove_rule(self, rule_id: int, actor: str) -> Rule:
        with self._change(actor, "rule.remove") as (conn, detail):
            row = conn.execute("SELECT id, principal, service, constraints, created_at, created_by FROM acl_rules "
                               "WHERE id = ?", (rule_id,)).fetchone()
            if row is None:
                raise AclConflict(f"no rule with id {rule_id}")
            conn.execute("DELETE FROM acl_rules WHERE id = ?", (rule_id,))
            rule = _rule(row)
            detail.update(rule_detail(rule))
        return rule

    # -------------------------------------------------------------------------------------------- users

    def add_user(self, name: str, password_hash: str, groups: frozenset[str], actor: str) -> UserRecord:
        at = now_iso()
        with self._change(actor, "user.add") as (conn, detail):
            try:
                conn.execute("INSERT INTO acl_users (name, password_hash, groups, created_at) VALUES (?,?,?,?)",
                             (name, password_hash, json.dumps(sorted(groups)), at))
            except sqlite3.IntegrityError:
                raise AclConflict(f"user {name!r} already exists") from None
            detail.update({"user": name, "groups": sorted(groups)})
        return UserRecord(name, password_hash, frozenset(groups), at)

    def get_user(self, name: str) -> UserRecord | None:
        row = self._conn().execute("SELECT name, password_hash, groups, created_at FROM acl_users WHERE name = ?",
                                   (name,)).fetchone()
        return _user(row) if row else None

    def list_users(self) -> list[UserRecord]:
        rows = self._conn().execute("SELECT name, password_hash, groups, created_at FROM acl_users ORDER BY name")
        return [_user(row) for row in rows.fetchall()]

    def remove_user(self, name: str, actor: str) -> None:
        with self._change(actor, "user.remove") as (conn, detail):
            if conn.execute("DELETE FROM acl_users WHERE name = ?", (name,)).rowcount == 0:
                raise AclConflict(f"no user {name!r}")
            revoked = [r[0] for r in conn.execute("SELECT id FROM acl_tokens WHERE user = ?", (name,))]
            conn.execute("DELETE FROM acl_tokens WHERE user = ?", (name,))
            detail.update({"user": name, "revoked_tokens": revoked})

    def set_password(self, name: str, password_hash: str, actor: str) -> None:
        with self._change(actor, "user.passwd") as (conn, detail):
            if conn.execute("UPDATE acl_users SET password_hash = ? WHERE name = ?", (password_hash, name)).rowcount == 0:
                raise AclConflict(f"no user {name!r}")
            detail["user"] = name

    def set_groups(self, name: str, groups: frozenset[str], actor: str) -> None:
        with self._change(actor, "user.groups") as (conn, detail):
            if conn.execute("UPDATE acl_users SET groups = ? WHERE name = ?",
                            (json.dumps(sorted(groups)), name)).rowcount == 0:
                raise AclConflict(f"no user {name!r}")
            detail.update({"user": name, "groups": sorted(groups)})

    # ------------------------------------------------------------------------------------------- tokens

    def add_token(self, record: TokenRecord, actor: str) -> None:
        with self._change(actor, "token.create") as (conn, detail):
            conn.execute("INSERT INTO acl_tokens (id, user, secret_hash, label, created_at, expires_at) "
                         "VALUES (?,?,?,?,?,?)", (record.id, record.user, record.secret_hash, record.label,
                                                  record.created_at, record.expires_at))
            detail.update(token_detail(record))

    def get_token(self, token_id: str) -> TokenRecord | None:
        row = self._conn().execute("SELECT id, user, secret_hash, label, created_at, expires_at FROM acl_tokens "
                                   "WHERE id = ?", (token_id,)).fetchone()
        return TokenRecord(*row) if row else None

    def list_tokens(self, user: str | None = None) -> list[TokenRecord]:
        sql = "SELECT id, user, secret_hash, label, created_at, expires_at FROM acl_tokens"
        rows = (self._conn().execute(sql + " WHERE user = ? ORDER BY created_at", (user,)) if user
                else self._conn().execute(sql + " ORDER BY created_at"))
        return [TokenRecord(*row) for row in rows.fetchall()]

    def revoke_token(self, token_id: str, actor: str) -> TokenRecord:
        with self._change(actor, "token.revoke") as (conn, detail):
            row = conn.execute("SELECT id, user, secret_hash, label, created_at, expires_at FROM acl_tokens "
                               "WHERE id = ?", (token_id,)).fetchone()
            if row is None:
                raise AclConflict(f"no token {token_id!r}")
            conn.execute("DELETE FROM acl_tokens WHERE id = ?", (token_id,))
            record = TokenRecord(*row)
            detail.update(token_detail(record))
        return record

    # -------------------------------------------------------------------------------------------- audit

    def record(self, actor: str, action: str, detail: dict[str, Any]) -> None:
        with self._change(actor, action) as (_, entry):
            entry.update(detail)

    def audit_entries(self, limit: int = 100) -> list[AuditEntry]:
        rows = self._conn().execute("SELECT id, at, actor, action, detail FROM acl_audit ORDER BY id DESC LIMIT ?",
                                    (limit,)).fetchall()
        return [AuditEntry(i, at, actor, action, json.loads(detail)) for i, at, actor, action, detail in reversed(rows)]


def _rule(row: tuple) -> Rule:
    rule_id, principal, service, constraints, created_at, created_by = row
    return Rule(rule_id, Principal.parse(principal), Service.parse(service),
                tuple((k, v) for k, v in json.loads(constraints)), created_at, created_by)


def _user(row: tuple) -> UserRecord:
    name, password_hash, groups, created_at = row
    return UserRecord(name, password_hash, frozenset(json.loads(groups)), created_at)
