"""Passwords, the login throttle, API tokens, and what DIMSE and HTTP authentication answer."""

from __future__ import annotations

import base64
import logging
from datetime import datetime, timedelta, timezone

import pytest

from acl.access import AccessControl, AuthFailure
from acl.model import Identity, Principal, Service, parse_constraints
from acl.passwords import WeakPassword, hash_password, verify_password
from acl.throttle import LoginThrottle
from acl.tokens import new_token

PASSWORD = "correct horse battery"


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


@pytest.fixture
def access(store, clock):
    store.add_user("alice", hash_password(PASSWORD), frozenset({"radiology"}), "test")
    store.add_rule(Principal.parse("group:radiology"), Service.QUERY, parse_constraints(["Modality=MR"]), "test")
    store.add_rule(Principal.parse("anonymous"), Service.ECHO, (), "test")
    return AccessControl(store, throttle=LoginThrottle(free_failures=3, base_delay=2, max_delay=60, clock=clock))


# ----------------------------------------------------------------------------------------------- passwords


def test_password_hashes_are_salted_slow_and_never_the_password():
    first, second = hash_password(PASSWORD), hash_password(PASSWORD)
    assert first != second, "a salt makes equal passwords hash differently"
    scheme, n, r, p, _, _ = first.split("$")
    assert scheme == "scrypt" and int(n) >= 2**14 and int(r) >= 8
    assert PASSWORD not in first
    assert verify_password(PASSWORD, first) and verify_password(PASSWORD, second)
    assert not verify_password(PASSWORD + " ", first)
    assert not verify_password(PASSWORD, "plain:" + PASSWORD)
    assert not verify_password(PASSWORD, "scrypt$16384$8$1$not-base64!$xx")


def test_a_password_verified_lately_is_not_hashed_again_until_it_expires_or_changes(monkeypatch):
    """HTTP Basic sends the password with every request: one scrypt per user every few minutes, not one
    per request; wrong passwords always pay the full cost; a new password (a new hash) is verified anew."""
    import acl.passwords

    from acl.passwords import RecentlyVerified

    stored, changed = hash_password(PASSWORD), hash_password("another password")
    hashes = []
    real = acl.passwords._scrypt
    monkeypatch.setattr(acl.passwords, "_scrypt", lambda *args, **kwargs: hashes.append(1) or real(*args, **kwargs))
    now = [1000.0]
    recent = RecentlyVerified(seconds=300, clock=lambda: now[0])
    assert recent.verify(PASSWORD, stored) and len(hashes) == 1
    assert recent.verify(PASSWORD, stored) and recent.verify(PASSWORD, stored) and len(hashes) == 1
    assert not recent.verify(PASSWORD + "!", stored) and not recent.verify(PASSWORD + "!", stored)
    assert len(hashes) == 3  # a wrong password is never remembered
    assert not recent.verify(PASSWORD, changed) and len(hashes) == 4  # the password was changed since
    now[0] += 301
    assert recent.verify(PASSWORD, stored) and len(hashes) == 5
    assert PASSWORD.encode() not in b"".join(recent._until)


@pytest.mark.parametrize("password, message", [("short", "at least 8"), ("x" * 2000, "at most 1024")])
def test_weak_passwords_are_refused(password, message):
    with pytest.raises(WeakPassword, match=message):
        hash_password(password)


# ------------------------------------------------------------------------------------------------- throttle


def test_throttle_backs_off_exponentially_per_name_and_address(clock):
    throttle = LoginThrottle(free_failures=2, base_delay=1, max_delay=8, clock=clock)
    assert [throttle.failed("alice", "10.0.0.9") for _ in range(7)] == [0, 0, 1, 2, 4, 8, 8]
    assert throttle.wait_time("alice", "10.0.0.9") == 8
    assert throttle.wait_time("ALICE", "10.0.0.9") == 8, "names compare without case, as directories do"
    assert throttle.wait_time("alice", "10.0.0.10") == 0, "another address is not slowed by this one"
    assert throttle.wait_time("bob", "10.0.0.9") == 0
    clock.advance(5)
    assert throttle.wait_time("alice", "10.0.0.9") == 3
    clock.advance(3)
    assert throttle.wait_time("alice", "10.0.0.9") == 0
    throttle.succeeded("alice", "10.0.0.9")
    assert throttle.failed("alice", "10.0.0.9") == 0, "a success starts the count afresh"


def test_throttled_logins_are_refused_even_with_the_right_password(access, clock):
    for _ in range(3):
        failure = access.authenticate_http(basic("alice", "wrong password"), "10.0.0.9")
        assert isinstance(failure, AuthFailure) and failure.status == 401
    assert access.authenticate_http(basic("alice", "wrong password"), "10.0.0.9").status == 401  # 4th: now blocked
    throttled = access.authenticate_http(basic("alice", PASSWORD), "10.0.0.9")
    assert isinstance(throttled, AuthFailure) and throttled.status == 429
    assert throttled.headers() == {"Retry-After": "2"}
    assert isinstance(access.authenticate_http(basic("alice", PASSWORD), "10.0.0.77"), Identity), "other address"
    clock.advance(2)
    assert isinstance(access.authenticate_http(basic("alice", PASSWORD), "10.0.0.9"), Identity)


# ------------------------------------------------------------------------------------------------------ HTTP


def test_http_basic_login_gives_the_user_and_its_groups(access):
    identity = access.authenticate_http(basic("alice", PASSWORD), "10.0.0.9", 51000)
    assert identity == Identity("alice", frozenset({"radiology"}), None, "10.0.0.9", 51000, "password", "dicomweb", "local")
    decision = access.decide(identity, Service.QUERY)
    assert decision.allowed and decision.constraints is not None


@pytest.mark.parametrize("header, reason", [
    (basic("alice", "wrong password"), "wrong password"),
    (basic("mallory", PASSWORD), "unknown user"),
    ("Basic !!!not-base64", "malformed Basic credentials"),
    ("Basic " + base64.b64encode(b"no-colon").decode(), "malformed Basic credentials"),
    ("Bearer not-a-token", "malformed bearer token"),
    ("Digest username=alice", "unsupported authorization scheme 'Digest'"),
])
def test_http_credentials_that_fail_get_401_with_a_challenge(access, header, reason):
    failure = access.authenticate_http(header, "10.0.0.9")
    assert isinstance(failure, AuthFailure) and failure.status == 401
    assert reason in failure.reason
    assert failure.headers() == {"WWW-Authenticate": 'Basic realm="Dopamine-py", charset="UTF-8", Bearer realm="Dopamine-py"'}


def test_no_credentials_is_anonymous_and_a_denial_then_asks_to_log_in(access):
    nobody = access.authenticate_http(None, "10.0.0.9")
    assert nobody == Identity(None, frozenset(), None, "10.0.0.9", None, "none", "dicomweb")
    assert access.decide(nobody, Service.ECHO).allowed
    status, headers = access.http_denial(access.decide(nobody, Service.QUERY))
    assert status == 401 and "Basic realm=" in headers["WWW-Authenticate"]
    alice = access.authenticate_http(basic("alice", PASSWORD), "10.0.0.9")
    assert access.http_denial(access.decide(alice, Service.STORE)) == (403, {})


def test_denials_are_logged_with_principal_service_protocol_and_peer(access, caplog):
    alice = access.authenticate_http(basic("alice", PASSWORD), "10.0.0.9", 51000)
    with caplog.at_level(logging.WARNING, logger="dopamine.acl"):
        access.decide(alice, Service.RETRIEVE)
    message = caplog.records[-1].getMessage()
    assert message == ("denied Retrieve to user:alice groups radiology over dicomweb from 10.0.0.9:51000: "
                       "no rule allows Retrieve")


# ---------------------------------------------------------------------------------------------------- tokens


def test_bearer_tokens_log_in_as_their_user(access, store):
    text, record = new_token("alice", "viewer")
    store.add_token(record, "test")
    identity = access.authenticate_http(f"Bearer {text}", "10.0.0.9")
    assert (identity.user, identity.groups, identity.method) == ("alice", frozenset({"radiology"}), "token")
    # a token also works in place of the password (Basic, DIMSE user identity), for its own user only
    assert access.authenticate_http(basic("alice", text), "10.0.0.9").method == "token"
    assert isinstance(access.authenticate_http(basic("bob", text), "10.0.0.9"), AuthFailure)
    tampered = text[:-1] + ("A" if text[-1] != "A" else "B")
    assert isinstance(access.authenticate_http(f"Bearer {tampered}", "10.0.0.9"), AuthFailure)
    store.revoke_token(record.id, "test")
    failure = access.authenticate_http(f"Bearer {text}", "10.0.0.9")
    assert isinstance(failure, AuthFailure) and "revoked" in failure.reason


def test_expired_tokens_and_tokens_of_removed_users_are_refused(access, store):
    expired_text, expired = new_token("alice", valid_days=1, now=datetime.now(timezone.utc) - timedelta(days=2))
    store.add_token(expired, "test")
    assert isinstance(access.authenticate_http(f"Bearer {expired_text}", "10.0.0.9"), AuthFailure)
    orphan_text, orphan = new_token("ghost")
    store.add_token(orphan, "test")
    assert isinstance(access.authenticate_http(f"Bearer {orphan_text}", "10.0.0.9"), AuthFailure)


def test_bad_tokens_are_throttled_per_address(access, clock):
    for _ in range(4):
        access.authenticate_http("Bearer dpt_AAAAAAAAAAAA_" + "x" * 43, "10.0.0.9")
    assert access.authenticate_http("Bearer dpt_AAAAAAAAAAAA_" + "x" * 43, "10.0.0.9").status == 429


# ----------------------------------------------------------------------------------------------------- DIMSE


def test_dimse_username_and_password(access):
    ok, identity, response = access.authenticate_dimse(2, b"alice", PASSWORD.encode(), calling_aet="WS1  ",
                                                       peer_host="10.0.0.7", peer_port=40001)
    assert ok and response is None
    assert identity == Identity("alice", frozenset({"radiology"}), "WS1", "10.0.0.7", 40001, "password", "dimse", "local")
    ok, identity, _ = access.authenticate_dimse(2, b"alice", b"wrong password", calling_aet="WS1", peer_host="10.0.0.7")
    assert not ok and identity is None


def test_dimse_username_alone_is_trusted_only_when_configured_and_only_for_known_users(store):
    store.add_user("alice", hash_password(PASSWORD), frozenset({"radiology"}), "test")
    strict = AccessControl(store)
    assert strict.authenticate_dimse(1, b"alice", None, calling_aet="WS1")[0] is False
    trusting = AccessControl(store, dimse_trust_username_only=True)
    ok, identity, _ = trusting.authenticate_dimse(1, b"alice", None, calling_aet="WS1", peer_host="10.0.0.7")
    assert ok and identity.user == "alice" and identity.method == "username" and identity.groups == {"radiology"}
    assert trusting.authenticate_dimse(1, b"mallory", None, calling_aet="WS1")[0] is False


@pytest.mark.parametrize("kind, name", [(3, "Kerberos"), (4, "SAML"), (5, "JSON Web Token")])
def test_dimse_kerberos_saml_and_jwt_are_refused_clearly(access, caplog, kind, name):
    with caplog.at_level(logging.WARNING, logger="dopamine.acl"):
        assert access.authenticate_dimse(kind, b"ticket", None, calling_aet="WS1", peer_host="10.0.0.7") == (False, None, None)
    assert f"user identity type {kind} ({name}) is not supported" in caplog.text
    assert "from 10.0.0.7" in caplog.text


def test_dimse_association_without_user_identity(store):
    store.add_rule(Principal.parse("aet:SCANNER1@10.0.0.5"), Service.STORE, (), "test")
    access = AccessControl(store)
    scanner = access.dimse_identity("SCANNER1", "10.0.0.5", 40000)
    assert access.decide(scanner, Service.STORE).unrestricted
    strict = AccessControl(store, dimse_require_user_identity=True)
    decision = strict.decide(scanner, Service.STORE)
    assert not decision.allowed and "auth.dimse_require_user_identity" in decision.reason


def test_not_enforcing_lets_everything_through(store):
    access = AccessControl(store, enforce=False)
    decision = access.decide(Identity(None, protocol="dicomweb"), Service.DELETE)
    assert decision.unrestricted
