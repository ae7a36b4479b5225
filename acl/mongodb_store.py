"""The access-control store as collections in the archive's MongoDB database, shared by every node.

Collections: ``acl_rules``, ``acl_users`` (``_id`` is the name), ``acl_tokens`` (``_id`` is the token id),
``acl_audit`` and ``acl_counters`` (rule and audit numbers). A change and its audit entry are two writes:
without a replica-set transaction the audit entry follows the change; a crash between them loses the entry,
never the change's effect on access.
"""

from __future__ import annotations

from typing import Any

from pymongo import ASCENDING, DESCENDING, ReturnDocument
from pymongo.errors import DuplicateKeyError
from pymongo.write_concern import WriteConcern

from .model import AuditEntry, Constraint, Principal, Rule, Service, TokenRecord, UserRecord
from .store import AclConflict, AclStore, now_iso, rule_detail, token_detail

DURABLE = WriteConcern(w="majority", j=True)


class MongoAclStore(AclStore):
    def __init__(self, database: Any) -> None:
        self.database = database
        self._rules = database.get_collection("acl_rules", write_concern=DURABLE)
        self._users = database.get_collection("acl_users", write_concern=DURABLE)
        self._tokens = database.get_collection("acl_tokens", write_concern=DURABLE)
        self._audit = database.get_collection("acl_audit", write_concern=DURABLE)
        self._counters = database.get_collection("acl_counters", write_concern=DURABLE)
        self._tokens.create_index("user")

    def close(self) -> None:
        pass  # the database belongs to whoever opened it (the archive backend or a test)

    def _next(self, name: str) -> int:
        counter = self._counters.find_one_and_update({"_id": name}, {"$inc": {"seq": 1}}, upsert=True,
                                                     return_document=ReturnDocument.AFTER)
        return int(counter["seq"])

    def _audit_entry(self, actor: str, action: str, detail: dict[str, Any]) -> None:
        self._audit.insert_one({"_id": self._next("audit"), "at": now_iso(), "actor": actor, "action": action,
                                "detail": detail})

    # -------------------------------------------------------------------------------------------- rules

    def add_rule(self, principal: Principal, service: Service, constraints: tuple[Constraint, ...], actor: str) -> Rule:
        rule = Rule(self._next("rules"), principal, service, constraints, now_iso(), actor)
        self._rules.insert_one({"_id": rule.id, "principal": str(principal), "service": service.value,
                                "constraints": [list(c) for c in constraints], "created_at": rule.created_at,
                                "created_by": actor})
        self._audit_entry(actor, "rule.add", rule_detail(rule))
        return rule

    def list_rules(self) -> list[Rule]:
        return [_rule(doc) for doc in self._rules.find().sort("_id", ASCENDING)]

    def remove_rule(self, rule_id: int, actor: str) -> Rule:
        doc = self._rules.find_one_and_delete({"_id": rule_id})
        if doc is None:
            raise AclConflict(f"no rule with id {rule_id}")
        rule = _rule(doc)
        self._audit_entry(actor, "rule.remove", rule_detail(rule))
        return rule

    # -------------------------------------------------------------------------------------------- users

    def add_user(self, name: str, password_hash: str, groups: frozenset[str], actor: str) -> UserRecord:
        record = UserRecord(name, password_hash, frozenset(groups), now_iso())
        try:
            self._users.insert_one({"_id": name, "password_hash": password_hash, "groups": sorted(groups),
                                    "created_at": record.created_at})
        except DuplicateKeyError:
            raise AclConflict(f"user {name!r} already exists") from None
        self._audit_entry(actor, "user.add", {"user": name, "groups": sorted(groups)})
        return record

    def get_user(self, name: str) -> UserRecord | None:
        doc = self._users.find_one({"_id": name})
        return _user(doc) if doc else None

    def list_users(self) -> list[UserRecord]:
        return [_user(doc) for doc in self._users.find().sort("_id", ASCENDING)]

    def remove_user(self, name: str, actor: str) -> None:
        if self._users.delete_one({"_id": name}).deleted_count == 0:
            raise AclConflict(f"no user {name!r}")
        revoked = [doc["_id"] for doc in self._tokens.find({"user": name}, {"_id": 1})]
        self._tokens.delete_many({"user": name})
        self._audit_entry(actor, "user.remove", {"user": name, "revoked_tokens": revoked})

    def set_password(self, name: str, password_hash: str, actor: str) -> None:
        if self._users.update_one({"_id": name}, {"$set": {"password_hash": password_hash}}).matched_count == 0:
            raise AclConflict(f"no user {name!r}")
        self._audit_entry(actor, "user.passwd", {"user": name})

    def set_groups(self, name: str, groups: frozenset[str], actor: str) -> None:
        if self._users.update_one({"_id": name}, {"$set": {"groups": sorted(groups)}}).matched_count == 0:
            raise AclConflict(f"no user {name!r}")
        self._audit_entry(actor, "user.groups", {"user": name, "groups": sorted(groups)})

    # ------------------------------------------------------------------------------------------- tokens

    def add_token(self, record: TokenRecord, actor: str) -> None:
        self._tokens.insert_one({"_id": record.id, "user": record.user, "secret_hash": record.secret_hash,
                                 "label": record.label, "created_at": record.created_at,
                                 "expires_at": record.expires_at})
        self._audit_entry(actor, "token.create", token_detail(record))

    def get_token(self, token_id: str) -> TokenRecord | None:
        doc = self._tokens.find_one({"_id": token_id})
        return _token(doc) if doc else None

    def list_tokens(self, user: str | None = None) -> list[TokenRecord]:
        return [_token(doc) for doc in self._tokens.find({"user": user} if user else {}).sort("created_at", ASCENDING)]

    def revoke_token(self, token_id: str, actor: str) -> TokenRecord:
        doc = self._tokens.find_one_and_delete({"_id": token_id})
        if doc is None:
            raise AclConflict(f"no token {token_id!r}")
        record = _token(doc)
        self._audit_entry(actor, "token.revoke", token_detail(record))
        return record

    # -------------------------------------------------------------------------------------------- audit

    def record(self, actor: str, action: str, detail: dict[str, Any]) -> None:
        self._audit_entry(actor, action, detail)

    def audit_entries(self, limit: int = 100) -> list[AuditEntry]:
        docs = list(self._audit.find().sort("_id", DESCENDING).limit(limit))
        return [AuditEntry(d["_id"], d["at"], d["actor"], d["action"], d["detail"]) for d in reversed(docs)]


def _rule(doc: dict[str, Any]) -> Rule:
    return Rule(int(doc["_id"]), Principal.parse(doc["principal"]), Service.parse(doc["service"]),
                tuple((k, v) for k, v in doc["constraints"]), doc["created_at"], doc["created_by"])


def _user(doc: dict[str, Any]) -> UserRecord:
    return UserRecord(doc["_id"], doc["password_hash"], frozenset(doc["groups"]), doc["created_at"])


def _token(doc: dict[str, Any]) -> TokenRecord:
    return TokenRecord(doc["_id"], doc["user"], doc["secret_hash"], doc["label"], doc["created_at"], doc["expires_at"])
