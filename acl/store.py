"""Where rules, local users, API tokens and the audit trail live: beside the archive, in the same database.

Two implementations: SQLite tables in the embedded store's file (``sqlite_store.py``) and MongoDB
collections in the archive's database (``mongodb_store.py``), so that every node sharing a MongoDB sees the
same users and rules. Every change to rules, users and tokens writes an audit entry in the same
transaction (SQLite) or right after it (MongoDB).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .model import AuditEntry, Constraint, Principal, Rule, Service, TokenRecord, UserRecord


class AclConflict(ValueError):
    """A user that already exists, an unknown user or rule: the message names it."""


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat()


class AclStore(ABC):
    # ------------------------------------------------------------------------------------------ opening

    @staticmethod
    def for_sqlite(path: str | Path) -> "AclStore":
        """Tables in the SQLite file at ``path`` (the embedded backend's ``db_path``)."""
        from .sqlite_store import SqliteAclStore

        return SqliteAclStore(Path(path))

    @staticmethod
    def for_mongodb(database: Any) -> "AclStore":
        """Collections in a pymongo (or mongomock) ``Database``."""
        from .mongodb_store import MongoAclStore

        return MongoAclStore(database)

    @staticmethod
    def for_backend(backend: Any) -> "AclStore":
        """The store beside an archive backend: its SQLite file, or its MongoDB database."""
        if getattr(backend, "db_path", None) is not None:
            return AclStore.for_sqlite(backend.db_path)
        if getattr(backend, "database", None) is not None:
            return AclStore.for_mongodb(backend.database)
        raise TypeError(f"no access-control store for backend {type(backend).__name__}")

    # -------------------------------------------------------------------------------------------- rules

    @abstractmethod
    def add_rule(self, principal: Principal, service: Service, constraints: tuple[Constraint, ...],
                 actor: str) -> Rule: ...

    @abstractmethod
    def list_rules(self) -> list[Rule]:
        """Every rule, by id."""

    @abstractmethod
    def remove_rule(self, rule_id: int, actor: str) -> Rule:
        """The removed rule; AclConflict when there is none with that id."""

    # -------------------------------------------------------------------------------------------- users

    @abstractmethod
    def add_user(self, name: str, password_hash: str, groups: frozenset[str], actor: str) -> UserRecord: ...

    @abstractmethod
    def get_user(self, name: str) -> UserRecord | None: ...

    @abstractmethod
    def list_users(self) -> list[UserRecord]: ...

    @abstractmethod
    def remove_user(self, name: str, actor: str) -> None:
        """Remove a user and revoke its tokens; AclConflict when unknown."""

    @abstractmethod
    def set_password(self, name: str, password_hash: str, actor: str) -> None: ...

    @abstractmethod
    def set_groups(self, name: str, groups: frozenset[str], actor: str) -> None: ...

    # ------------------------------------------------------------------------------------------- tokens

    @abstractmethod
    def add_token(self, record: TokenRecord, actor: str) -> None: ...

    @abstractmethod
    def get_token(self, token_id: str) -> TokenRecord | None: ...

    @abstractmethod
    def list_tokens(self, user: str | None = None) -> list[TokenRecord]: ...

    @abstractmethod
    def revoke_token(self, token_id: str, actor: str) -> TokenRecord:
        """The revoked (deleted) token; AclConflict when unknown."""

    # -------------------------------------------------------------------------------------------- audit

    @abstractmethod
    def audit_entries(self, limit: int = 100) -> list[AuditEntry]:
        """The latest entries, oldest first."""

    @abstractmethod
    def record(self, actor: str, action: str, detail: dict[str, Any]) -> None:
        """An audit entry for a change made elsewhere (the peer table, ...), written after that change."""

    @abstractmethod
    def close(self) -> None: ...


def rule_detail(rule: Rule) -> dict[str, Any]:
    """What the audit trail records of a rule."""
    return {"id": rule.id, "principal": str(rule.principal), "service": rule.service.value,
            "constraints": [f"{k}={v}" for k, v in rule.constraints]}


def token_detail(record: TokenRecord) -> dict[str, Any]:
    # Never the hash: the audit trail is read by more people than the token table.
    return {"id": record.id, "user": record.user, "label": record.label, "expires_at": record.expires_at}
