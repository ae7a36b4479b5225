"""The access-control model: principals, services, rules and the identity of whoever is asking.

A rule says: this principal may use this service on the data sets matching these constraints.
Anything no rule allows is denied. The constraints are DICOM matching keys, parsed by
``dopamine_py.matching`` so that they mean exactly what the same keys mean in C-FIND and QIDO-RS.
"""

from __future__ import annotations

import enum
import functools
import re
from dataclasses import dataclass, field

from dopamine_py.archive import COMPUTED
from dopamine_py.document import UnknownAttribute, describe_tag, parse_tag
from dopamine_py.matching import Query, QueryError, parse_pairs


class AclError(ValueError):
    """A principal, service, constraint or name that cannot be used; the message says which and why."""


class Service(str, enum.Enum):
    ECHO = "Echo"
    STORE = "Store"
    QUERY = "Query"
    RETRIEVE = "Retrieve"
    ADMIN = "Admin"  # rules, users, tokens and peers
    MODIFY = "Modify"  # reserved: nothing enforces it yet
    DELETE = "Delete"  # reserved: nothing enforces it yet

    @classmethod
    def parse(cls, text: str) -> "Service":
        for service in cls:
            if service.value.lower() == text.strip().lower():
                return service
        raise AclError(f"unknown service {text!r} (one of {', '.join(s.value for s in cls)})")

    @property
    def on_data(self) -> bool:
        """Whether constraints on data sets mean anything for this service."""
        return self in (Service.STORE, Service.QUERY, Service.RETRIEVE, Service.MODIFY, Service.DELETE)


class PrincipalKind(str, enum.Enum):
    USER = "user"
    GROUP = "group"
    AET = "aet"
    ANONYMOUS = "anonymous"
    ANY_AUTHENTICATED = "*"


# Names of users and groups: printable, no separator we use in principals, no LDAP-significant control bytes.
_NAME = re.compile(r"^[^\s:@*\x00-\x1f\x7f][^:@\x00-\x1f\x7f]{0,127}$")


def check_name(name: str, what: str = "user name") -> str:
    if not _NAME.match(name) or name != name.strip():
        raise AclError(f"invalid {what} {name!r}: 1 to 128 characters, no ':', '@', control characters, "
                       "leading '*' or surrounding spaces")
    return name


def check_aet(aet: str) -> str:
    if not 1 <= len(aet) <= 16 or "\\" in aet or not aet.isascii() or aet.strip() != aet or "@" in aet:
        raise AclError(f"invalid AE title {aet!r}: 1 to 16 ASCII characters, no backslash, '@' or surrounding spaces")
    return aet


@dataclass(frozen=True)
class Principal:
    """Who a rule applies to. ``str()`` gives the syntax of the command line, which is also what is stored."""

    kind: PrincipalKind
    name: str | None = None  # user, group or AE title
    host: str | None = None  # only for an AE title bound to a peer address

    def __str__(self) -> str:
        if self.kind in (PrincipalKind.ANONYMOUS, PrincipalKind.ANY_AUTHENTICATED):
            return self.kind.value
        text = f"{self.kind.value}:{self.name}"
        return f"{text}@{self.host}" if self.host else text

    @classmethod
    def parse(cls, text: str) -> "Principal":
        text = text.strip()
        if text == "*":
            return cls(PrincipalKind.ANY_AUTHENTICATED)
        if text.lower() == "anonymous":
            return cls(PrincipalKind.ANONYMOUS)
        kind, sep, rest = text.partition(":")
        if not sep or kind.lower() not in ("user", "group", "aet"):
            raise AclError(f"invalid principal {text!r}: expected user:NAME, group:NAME, aet:AETITLE, "
                           "aet:AETITLE@HOST, anonymous or *")
        kind = kind.lower()
        if kind == "aet":
            aet, at, host = rest.partition("@")
            if at and not host.strip():
                raise AclError(f"invalid principal {text!r}: no host after '@'")
            return cls(PrincipalKind.AET, check_aet(aet), host.strip().lower() or None)
        return cls(PrincipalKind(kind), check_name(rest, "group name" if kind == "group" else "user name"))


ANONYMOUS = Principal(PrincipalKind.ANONYMOUS)
ANY_AUTHENTICATED = Principal(PrincipalKind.ANY_AUTHENTICATED)


@dataclass(frozen=True)
class Identity:
    """Whoever is asking, as the protocol layer established it.

    ``method`` says how the user was authenticated: "password" (local users or LDAP), "token" (an API
    token), "username" (a DIMSE user name without password, trusted only by configuration), or "none"
    (nobody authenticated: only the calling AE title and the address speak for the peer).
    """

    user: str | None = None
    groups: frozenset[str] = frozenset()
    calling_aet: str | None = None
    peer_host: str | None = None
    peer_port: int | None = None
    method: str = "none"
    protocol: str = "?"  # "dimse", "dicomweb", "cli"
    authenticator: str | None = None  # which authenticator vouched: "local", "ldap", "token"

    @property
    def authenticated(self) -> bool:
        return self.user is not None

    def describe(self) -> str:
        """Who, for log lines: the user and groups, the AE title, the address."""
        parts = [f"user:{self.user}" if self.user else "anonymous"]
        if self.groups:
            parts.append("groups " + ",".join(sorted(self.groups)))
        if self.calling_aet:
            parts.append(f"aet:{self.calling_aet}")
        return " ".join(parts)

    @property
    def peer(self) -> str:
        if not self.peer_host:
            return "unknown address"
        return f"{self.peer_host}:{self.peer_port}" if self.peer_port else self.peer_host


def principals_of(identity: Identity) -> list[Principal]:
    """The principals whose rules apply to ``identity``.

    ``*`` covers authenticated users only and ``anonymous`` unauthenticated requests only: a rule for
    ``*`` never opens the archive to someone who did not log in. AE-title principals apply whether or
    not a user authenticated; one bound to a host applies only to peers at that address.
    """
    out: list[Principal] = []
    if identity.authenticated:
        out.append(Principal(PrincipalKind.USER, identity.user))
        out.extend(Principal(PrincipalKind.GROUP, g) for g in sorted(identity.groups))
        out.append(ANY_AUTHENTICATED)
    else:
        out.append(ANONYMOUS)
    if identity.calling_aet:
        out.append(Principal(PrincipalKind.AET, identity.calling_aet))
        if identity.peer_host:
            out.append(Principal(PrincipalKind.AET, identity.calling_aet, identity.peer_host.lower()))
    return out


Constraint = tuple[str, str]  # (keyword or tag, value) as written on the command line


def parse_constraints(texts: list[str]) -> tuple[Constraint, ...]:
    """``KEYWORD=VALUE`` strings into checked pairs; the value keeps DICOM matching syntax (``MR\\CT``, ``Doe*``)."""
    pairs = []
    for text in texts:
        key, sep, value = text.partition("=")
        key = key.strip()
        if not sep or not key:
            raise AclError(f"invalid constraint {text!r}: expected KEYWORD=VALUE")
        pairs.append((key, value))
    pairs_tuple = tuple(pairs)
    constraint_query(pairs_tuple)  # refuse now what could not be matched later
    return pairs_tuple


@functools.lru_cache(maxsize=1024)
def constraint_query(pairs: tuple[Constraint, ...]) -> Query:
    """The query of a rule's constraints (cached: rules are read on every decision)."""
    for key, value in pairs:
        try:
            tag = parse_tag(key)
        except UnknownAttribute as exc:
            raise AclError(f"invalid constraint {key}={value}: {exc}") from None
        if tag in COMPUTED:
            # The archive computes these per group; an instance never carries them, so no instance could match.
            raise AclError(f"invalid constraint {key}={value}: {describe_tag(tag)} is computed by the archive, "
                           "constrain the stored attribute instead (e.g. Modality)")
        if not value.strip(" ") or value.strip(" ") == "*":
            raise AclError(f"invalid constraint {key}={value!r}: a universal value constrains nothing; "
                           "leave the constraint out to grant the whole archive")
    try:
        return parse_pairs(pairs)
    except QueryError as exc:
        raise AclError(f"invalid constraint: {exc}") from None


@dataclass(frozen=True)
class Rule:
    id: int
    principal: Principal
    service: Service
    constraints: tuple[Constraint, ...] = ()
    created_at: str = ""
    created_by: str = ""

    @property
    def query(self) -> Query | None:
        """None when the rule covers the whole archive."""
        return constraint_query(self.constraints) if self.constraints else None

    def describe(self) -> str:
        where = " ".join(f"{k}={v}" for k, v in self.constraints) or "(whole archive)"
        return f"{self.id}: {self.principal} may {self.service.value} {where}"


def check_rule(principal: Principal, service: Service, constraints: tuple[Constraint, ...]) -> None:
    """Refuse rules that could not mean what their author expects."""
    if constraints and not service.on_data:
        raise AclError(f"{service.value} is not about data sets: it takes no --match constraints")
    if service == Service.ADMIN and principal.kind in (PrincipalKind.ANONYMOUS, PrincipalKind.AET):
        raise AclError(f"Admin needs an authenticated principal (user:, group: or *), not {principal}")


@dataclass(frozen=True)
class UserRecord:
    name: str
    password_hash: str
    groups: frozenset[str] = frozenset()
    created_at: str = ""


@dataclass(frozen=True)
class TokenRecord:
    id: str  # public part of the token, used to look it up
    user: str
    secret_hash: str  # SHA-256 of the secret part: tokens are random, so a fast hash suffices
    label: str = ""
    created_at: str = ""
    expires_at: str | None = None


@dataclass(frozen=True)
class AuditEntry:
    id: int
    at: str
    actor: str
    action: str  # e.g. "rule.add", "user.passwd"
    detail: dict = field(default_factory=dict)
