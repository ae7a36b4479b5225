"""Pluggable password checkers: the local users of the database, and LDAP (``ldap.py``).

An authenticator answers for one user name and password with ``Verified`` (the user and its groups) or
with why not. ``AccessControl`` asks them in order and the first that knows the user decides, so a local
account and a directory account of the same name never both open the door.
"""

from __future__ import annotations

import enum
from abc import ABC, abstractmethod
from dataclasses import dataclass

from .passwords import RecentlyVerified, spend_verification_time
from .store import AclStore


@dataclass(frozen=True)
class Verified:
    user: str
    groups: frozenset[str]
    authenticator: str  # "local", "ldap"


class Refusal(str, enum.Enum):
    UNKNOWN_USER = "unknown user"  # the next authenticator may know it
    WRONG_PASSWORD = "wrong password"
    UNAVAILABLE = "authentication service unavailable"


class Authenticator(ABC):
    name: str

    @abstractmethod
    def verify(self, username: str, password: str) -> Verified | Refusal: ...

    @abstractmethod
    def groups_of(self, username: str) -> frozenset[str] | None:
        """The groups of a user this authenticator knows (for API tokens), else None."""


class LocalUsers(Authenticator):
    """Users kept in the archive's database, with scrypt password hashes."""

    name = "local"

    def __init__(self, store: AclStore) -> None:
        self.store = store
        self.recent = RecentlyVerified()

    def verify(self, username: str, password: str) -> Verified | Refusal:
        record = self.store.get_user(username)
        if record is None:
            spend_verification_time(password)  # an unknown name costs what a wrong password costs
            return Refusal.UNKNOWN_USER
        if not self.recent.verify(password, record.password_hash):
            return Refusal.WRONG_PASSWORD
        return Verified(record.name, record.groups, self.name)

    def groups_of(self, username: str) -> frozenset[str] | None:
        record = self.store.get_user(username)
        return record.groups if record else None
