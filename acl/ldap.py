"""LDAP authentication with ldap3: bind as the user, read its groups from the directory.

Two ways to find the user's entry: a DN template (``uid={username},ou=people,dc=lab,dc=org``), or a search
(as a service account, or anonymously) under a base with a filter, then a bind with the entry found.
The connection is LDAPS (an ``ldaps://`` URL) or upgraded with StartTLS when asked; certificates are
always verified, against ``ca_file`` when given.
"""

from __future__ import annotations

import logging
import ssl
from dataclasses import dataclass

from ldap3 import ANONYMOUS, BASE, SIMPLE, SUBTREE, Connection, Server, Tls
from ldap3.core.exceptions import LDAPException
from ldap3.utils.conv import escape_filter_chars
from ldap3.utils.dn import escape_rdn

from .authenticators import Authenticator, Refusal, Verified

log = logging.getLogger("dopamine.acl.ldap")

INVALID_CREDENTIALS = 49


@dataclass(frozen=True)
class LdapSettings:
    url: str  # ldap://host:389 or ldaps://host:636
    start_tls: bool = False
    ca_file: str = ""  # CA certificates (PEM) that sign the server's certificate; empty: the system's
    user_dn_template: str = ""  # e.g. uid={username},ou=people,dc=example,dc=org
    bind_dn: str = ""  # service account for searching (empty: anonymous search)
    bind_password: str = ""
    user_search_base: str = ""
    user_search_filter: str = "(uid={username})"
    username_attribute: str = "uid"  # the user name as the directory spells it (case may differ from the login)
    group_search_base: str = ""
    group_search_filter: str = "(member={dn})"
    group_name_attribute: str = "cn"
    timeout: int = 10

    def __post_init__(self) -> None:
        if not self.url.startswith(("ldap://", "ldaps://")):
            raise ValueError(f"ldap.url must start with ldap:// or ldaps://, got {self.url!r}")
        if self.url.startswith("ldaps://") and self.start_tls:
            raise ValueError("ldap.start_tls upgrades a plain ldap:// connection; an ldaps:// URL is already TLS")
        if not self.user_dn_template and not self.user_search_base:
            raise ValueError("LDAP needs ldap.user_dn_template or ldap.user_search_base to find a user's entry")
        if self.user_dn_template and "{username}" not in self.user_dn_template:
            raise ValueError("ldap.user_dn_template must contain {username}")

    @classmethod
    def from_settings(cls, settings) -> "LdapSettings | None":
        """From the ``ldap.*`` options; None when ``ldap.url`` is not set."""
        if not settings["ldap.url"]:
            return None
        names = [f for f in cls.__dataclass_fields__]
        return cls(**{name: settings[f"ldap.{name}"] for name in names})


class LdapAuthenticator(Authenticator):
    name = "ldap"

    def __init__(self, settings: LdapSettings) -> None:
        self.settings = settings
        tls = None
        if settings.url.startswith("ldaps://") or settings.start_tls:
            tls = Tls(validate=ssl.CERT_REQUIRED, ca_certs_file=settings.ca_file or None,
                      version=ssl.PROTOCOL_TLS_CLIENT)
        self.server = Server(settings.url, tls=tls, connect_timeout=settings.timeout)

    # ------------------------------------------------------------------------------------------- public

    def verify(self, username: str, password: str) -> Verified | Refusal:
        if not password:
            # A simple bind with an empty password is an unauthenticated bind: servers answer success.
            return Refusal.WRONG_PASSWORD
        try:
            dn = self._user_dn(username)
            if dn is None:
                return Refusal.UNKNOWN_USER
            conn = self._open(dn, password)
            try:
                if not conn.bind():
                    if conn.result.get("result") == INVALID_CREDENTIALS:
                        return Refusal.WRONG_PASSWORD
                    log.error("LDAP bind of %s failed: %s", dn, conn.result.get("description"))
                    return Refusal.UNAVAILABLE
                name = self._canonical_name(conn, dn, username)
                groups = self._groups(conn, dn, name)
            finally:
                conn.unbind()
        except LDAPException as exc:
            log.error("LDAP server %s: %s: %s", self.settings.url, type(exc).__name__, exc)
            return Refusal.UNAVAILABLE
        return Verified(name, groups, self.name)

    def groups_of(self, username: str) -> frozenset[str] | None:
        try:
            dn = self._user_dn(username)
            if dn is None:
                return None
            conn = self._service_connection()
            try:
                if not conn.search(dn, "(objectClass=*)", BASE, attributes=[]):
                    return None
                return self._groups(conn, dn, username)
            finally:
                conn.unbind()
        except LDAPException as exc:
            log.error("LDAP server %s: %s: %s", self.settings.url, type(exc).__name__, exc)
            return None

    # ----------------------------------------------------------------------------------------- plumbing

    def _open(self, dn: str | None, password: str | None) -> Connection:
        """A connection, opened and (when configured) upgraded to TLS, not yet bound."""
        conn = Connection(self.server, user=dn, password=password, authentication=SIMPLE if dn else ANONYMOUS,
                          receive_timeout=self.settings.timeout, raise_exceptions=False, read_only=True)
        conn.open()
        if self.settings.start_tls and not conn.start_tls():
            conn.unbind()
            raise LDAPException(f"StartTLS refused: {conn.result.get('description')}")
        return conn

    def _service_connection(self) -> Connection:
        s = self.settings
        conn = self._open(s.bind_dn or None, s.bind_password or None)
        if not conn.bind():
            conn.unbind()
            raise LDAPException(f"service bind as {s.bind_dn or 'anonymous'} failed: {conn.result.get('description')}")
        return conn

    def _user_dn(self, username: str) -> str | None:
        s = self.settings
        if s.user_dn_template:
            return s.user_dn_template.format(username=escape_rdn(username))
        conn = self._service_connection()
        try:
            conn.search(s.user_search_base, s.user_search_filter.format(username=escape_filter_chars(username)),
                        SUBTREE, attributes=[], size_limit=2)
            entries = [e for e in conn.response or [] if e.get("type") == "searchResEntry"]
        finally:
            conn.unbind()
        if len(entries) > 1:
            log.warning("LDAP: %d entries match user %r under %s; refusing an ambiguous login",
                        len(entries), username, s.user_search_base)
            return None
        return entries[0]["dn"] if entries else None

    def _canonical_name(self, conn: Connection, dn: str, login: str) -> str:
        attribute = self.settings.username_attribute
        if attribute and conn.search(dn, "(objectClass=*)", BASE, attributes=[attribute]) and conn.entries:
            values = conn.entries[0][attribute].values
            for value in values:
                if str(value).lower() == login.lower():
                    return str(value)
        return login

    def _groups(self, conn: Connection, dn: str, username: str) -> frozenset[str]:
        s = self.settings
        if not s.group_search_base:
            return frozenset()
        query = s.group_search_filter.format(dn=escape_filter_chars(dn), username=escape_filter_chars(username))
        conn.search(s.group_search_base, query, SUBTREE, attributes=[s.group_name_attribute])
        names = set()
        for entry in conn.entries:
            names.update(str(v) for v in entry[s.group_name_attribute].values)
        return frozenset(names)
