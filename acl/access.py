"""``AccessControl``: what the protocol layers call. Authentication turns credentials into an ``Identity``;
``decide`` turns an identity and a service into a ``Decision``.

DIMSE (pynetdicom):
- ``evt.EVT_USER_ID`` handler: ``ok, identity, response = access.authenticate_dimse(event.user_id_type,
  event.primary_field, event.secondary_field, calling_aet=..., peer_host=..., peer_port=...)``, keep
  ``identity`` with the association, return ``(ok, response)``. A refusal rejects the association.
- an association that negotiated no user identity: ``access.dimse_identity(calling_aet, peer_host, peer_port)``.
- each request: ``decision = access.decide(identity, Service.X)``; refuse when not ``decision.allowed``
  (C-ECHO/C-STORE/C-FIND/C-GET/C-MOVE status 0x0124 Refused: Not Authorized), pass ``decision.restrict(query)``
  to the archive for Query and Retrieve, and check ``decision.permits(document)`` for each Store.

DICOMweb (HTTP):
- ``result = access.authenticate_http(request.headers.get("authorization"), peer_host, peer_port)``;
  an ``AuthFailure`` is answered with ``result.status`` (401, or 429 while throttled) and ``result.headers()``.
- ``decision = access.decide(result, Service.X)``; when denied answer ``access.http_denial(decision)``: 401 with
  ``WWW-Authenticate`` for an unauthenticated request (logging in may help), 403 for an authenticated one.
- a resource outside the allowed data (a study the user may not see) is 404, as if absent: the answer
  must not reveal that it exists. ``decision.restrict`` gives that for free.
"""

from __future__ import annotations

import base64
import binascii
import logging
from dataclasses import dataclass

from .authenticators import Authenticator, LocalUsers, Refusal, Verified
from .decision import Decision, decide, log_denial
from .model import Identity, Service
from .store import AclStore
from .throttle import LoginThrottle
from .tokens import split_token, token_valid

log = logging.getLogger("dopamine.acl")

# DIMSE User Identity Types (PS3.7 D.3.3.7.1).
USERNAME = 1
USERNAME_AND_PASSCODE = 2
KERBEROS = 3
SAML = 4
JWT = 5
_UNSUPPORTED_TYPES = {KERBEROS: "Kerberos", SAML: "SAML", JWT: "JSON Web Token"}

DEFAULT_REALM = "Dopamine-py"


@dataclass(frozen=True)
class AuthFailure:
    """Credentials were given and refused (or the name is throttled). For HTTP: the status and headers."""

    reason: str
    status: int = 401  # 429 while throttled
    realm: str = DEFAULT_REALM
    retry_after: int = 0  # seconds, for 429

    def headers(self) -> dict[str, str]:
        if self.status == 429:
            return {"Retry-After": str(max(1, self.retry_after))}
        return {"WWW-Authenticate": challenge(self.realm)}


def challenge(realm: str) -> str:
    """The WWW-Authenticate value: Basic (passwords, or a token as the password) and Bearer (tokens)."""
    return f'Basic realm="{realm}", charset="UTF-8", Bearer realm="{realm}"'


class AccessControl:
    def __init__(self, store: AclStore, authenticators: list[Authenticator] | None = None, *,
                 enforce: bool = True, throttle: LoginThrottle | None = None, realm: str = DEFAULT_REALM,
                 dimse_require_user_identity: bool = False, dimse_trust_username_only: bool = False) -> None:
        self.store = store
        self.authenticators = list(authenticators) if authenticators is not None else [LocalUsers(store)]
        self.enforce = enforce
        self.throttle = throttle or LoginThrottle()
        self.realm = realm
        self.dimse_require_user_identity = dimse_require_user_identity
        self.dimse_trust_username_only = dimse_trust_username_only

    @classmethod
    def from_settings(cls, settings, store: AclStore) -> "AccessControl":
        """The access control the ``auth.*`` and ``ldap.*`` options describe."""
        from .ldap import LdapAuthenticator, LdapSettings

        authenticators: list[Authenticator] = []
        if settings["auth.local_users"]:
            authenticators.append(LocalUsers(store))
        ldap_settings = LdapSettings.from_settings(settings)
        if ldap_settings is not None:
            authenticators.append(LdapAuthenticator(ldap_settings))
        throttle = LoginThrottle(free_failures=settings["auth.throttle_free_failures"],
                                 base_delay=settings["auth.throttle_base_seconds"],
                                 max_delay=settings["auth.throttle_max_seconds"])
        return cls(store, authenticators, enforce=settings["auth.enforce"], throttle=throttle,
                   realm=settings["auth.realm"],
                   dimse_require_user_identity=settings["auth.dimse_require_user_identity"],
                   dimse_trust_username_only=settings["auth.dimse_trust_username_only"])

    # ------------------------------------------------------------------------------------------ decision

    def decide(self, identity: Identity, service: Service) -> Decision:
        """Allowed or denied, and on which data sets. Denials are logged here, once."""
        if not self.enforce:
            return Decision(True, service, identity, None, (), "access control not enforced (auth.enforce = false)")
        if identity.protocol == "dimse" and self.dimse_require_user_identity and not identity.authenticated:
            decision = Decision(False, service, identity, (), (),
                                "the association negotiated no user identity (auth.dimse_require_user_identity)")
        else:
            decision = decide(self.store.list_rules(), identity, service)
        if not decision.allowed:
            log_denial(identity, service, decision.reason)
        return decision

    def refuse_data_set(self, decision: Decision, what: str) -> None:
        """Log a Store of a data set outside the allowed constraints (the DIMSE/STOW layer then refuses it)."""
        log_denial(decision.identity, decision.service, f"{what} matches none of the rules' constraints")

    def http_denial(self, decision: Decision) -> tuple[int, dict[str, str]]:
        """Status and headers for a denied HTTP request: 401 + challenge if nobody logged in, else 403."""
        if not decision.identity.authenticated:
            return 401, {"WWW-Authenticate": challenge(self.realm)}
        return 403, {}

    # ------------------------------------------------------------------------------------ authentication

    def check_password(self, username: str, secret: str, peer_host: str | None) -> Verified | AuthFailure:
        """A user name with a password, or with one of the user's API tokens in place of the password."""
        wait = self.throttle.wait_time(username, peer_host)
        if wait > 0:
            return AuthFailure(f"too many failed logins for {username!r}: retry in {wait:.0f} s", 429, self.realm,
                               int(wait + 0.999))
        verdict = self._verify(username, secret)
        if isinstance(verdict, Verified):
            self.throttle.succeeded(username, peer_host)
            return verdict
        if verdict != Refusal.UNAVAILABLE:  # an outage is not the user's guess
            self.throttle.failed(username, peer_host)
        return AuthFailure(f"login of {username!r} refused: {verdict.value}", 401, self.realm)

    def _verify(self, username: str, secret: str) -> Verified | Refusal:
        token = split_token(secret)
        if token is not None:
            verdict = self._verify_token(*token)
            if isinstance(verdict, Verified) and verdict.user != username:
                return Refusal.WRONG_PASSWORD
            return verdict
        for authenticator in self.authenticators:
            verdict = authenticator.verify(username, secret)
            if verdict != Refusal.UNKNOWN_USER:
                return verdict
        return Refusal.UNKNOWN_USER

    def _verify_token(self, token_id: str, secret: str) -> Verified | Refusal:
        record = self.store.get_token(token_id)
        if record is None or not token_valid(record, secret):
            return Refusal.WRONG_PASSWORD
        groups = self.groups_of(record.user)
        if groups is None:
            log.warning("API token %s belongs to %r, whom no authenticator knows any more", token_id, record.user)
            return Refusal.UNKNOWN_USER
        return Verified(record.user, groups, "token")

    def groups_of(self, username: str) -> frozenset[str] | None:
        """The groups of a user, from the first authenticator that knows it; None when none does."""
        for authenticator in self.authenticators:
            groups = authenticator.groups_of(username)
            if groups is not None:
                return groups
        return None

    def dimse_identity(self, calling_aet: str | None, peer_host: str | None, peer_port: int | None = None) -> Identity:
        """The identity of an association that negotiated no user identity: its AE title and address only."""
        return Identity(None, frozenset(), _aet(calling_aet), peer_host, peer_port, "none", "dimse")

    def authenticate_dimse(self, user_identity_type: int, primary_field: bytes | None, secondary_field: bytes | None,
                           *, calling_aet: str | None = None, peer_host: str | None = None,
                           peer_port: int | None = None) -> tuple[bool, Identity | None, bytes | None]:
        """For the ``evt.EVT_USER_ID`` handler: (accepted, identity, server response).

        Type 2 (user name and passcode; the passcode may be an API token) is verified. Type 1 (a user name
        alone) is trusted only with ``auth.dimse_trust_username_only``, and only for users an authenticator
        knows. Kerberos, SAML and JWT (3, 4, 5) are refused. The response is always None: positive responses
        exist only for types 3 to 5.
        """
        anonymous = self.dimse_identity(calling_aet, peer_host, peer_port)
        username = _text(primary_field)
        if user_identity_type in _UNSUPPORTED_TYPES:
            log_denial(anonymous, "association",
                       f"user identity type {user_identity_type} ({_UNSUPPORTED_TYPES[user_identity_type]}) "
                       "is not supported: use a user name and password (type 2)")
            return False, None, None
        if user_identity_type not in (USERNAME, USERNAME_AND_PASSCODE) or not username:
            log_denial(anonymous, "association", f"malformed user identity (type {user_identity_type})")
            return False, None, None
        if user_identity_type == USERNAME:
            if not self.dimse_trust_username_only:
                log_denial(anonymous, "association", f"user {username!r} sent no password, and user names "
                                                     "alone are not trusted (auth.dimse_trust_username_only)")
                return False, None, None
            groups = self.groups_of(username)
            if groups is None:
                log_denial(anonymous, "association", f"unknown user {username!r} (user name without password)")
                return False, None, None
            return True, Identity(username, groups, _aet(calling_aet), peer_host, peer_port, "username", "dimse",
                                  "username"), None
        verdict = self.check_password(username, _text(secondary_field) or "", peer_host)
        if isinstance(verdict, AuthFailure):
            log_denial(anonymous, "association", verdict.reason)
            return False, None, None
        return True, self._identity(verdict, calling_aet, peer_host, peer_port, "dimse"), None

    def authenticate_http(self, authorization: str | None, peer_host: str | None,
                          peer_port: int | None = None) -> Identity | AuthFailure:
        """The identity of an HTTP request from its Authorization header (Basic or Bearer).

        No header: an unauthenticated identity, to which only ``anonymous`` rules apply. A header that
        fails: an ``AuthFailure`` (answer it, never fall back to anonymous).
        """
        if not authorization or not authorization.strip():
            return Identity(None, frozenset(), None, peer_host, peer_port, "none", "dicomweb")
        scheme, _, credentials = authorization.strip().partition(" ")
        credentials = credentials.strip()
        anonymous = Identity(None, frozenset(), None, peer_host, peer_port, "none", "dicomweb")
        if scheme.lower() == "basic":
            try:
                decoded = base64.b64decode(credentials, validate=True).decode("utf-8")
            except (binascii.Error, UnicodeDecodeError):
                decoded = ""
            username, colon, password = decoded.partition(":")
            if not colon or not username:
                return self._http_failure(anonymous, "malformed Basic credentials")
            verdict = self.check_password(username, password, peer_host)
        elif scheme.lower() == "bearer":
            token = split_token(credentials)
            wait = self.throttle.wait_time("bearer", peer_host)
            if wait > 0:
                verdict = AuthFailure(f"too many invalid tokens: retry in {wait:.0f} s", 429, self.realm, int(wait + 0.999))
            elif token is None:
                self.throttle.failed("bearer", peer_host)
                verdict = AuthFailure("malformed bearer token (expected dpt_...)", 401, self.realm)
            else:
                checked = self._verify_token(*token)
                if isinstance(checked, Verified):
                    verdict = checked
                else:
                    self.throttle.failed("bearer", peer_host)
                    verdict = AuthFailure("unknown, revoked or expired API token", 401, self.realm)
        else:
            return self._http_failure(anonymous, f"unsupported authorization scheme {scheme!r} (use Basic or Bearer)")
        if isinstance(verdict, AuthFailure):
            log_denial(anonymous, "login", verdict.reason)
            return verdict
        return self._identity(verdict, None, peer_host, peer_port, "dicomweb")

    def _http_failure(self, identity: Identity, reason: str) -> AuthFailure:
        log_denial(identity, "login", reason)
        return AuthFailure(reason, 401, self.realm)

    @staticmethod
    def _identity(verified: Verified, calling_aet: str | None, peer_host: str | None, peer_port: int | None,
                  protocol: str) -> Identity:
        method = "token" if verified.authenticator == "token" else "password"
        return Identity(verified.user, verified.groups, _aet(calling_aet), peer_host, peer_port, method, protocol,
                        verified.authenticator)


def _text(field: bytes | str | None) -> str:
    if field is None:
        return ""
    if isinstance(field, str):
        return field
    return field.decode("utf-8", "replace")


def _aet(calling_aet: str | None) -> str | None:
    return calling_aet.strip() or None if calling_aet else None
