"""LDAP authentication against a real slapd (tests/acl/slapd.py): DN template and search-then-bind,
groups from the directory, wrong passwords, StartTLS and LDAPS with certificate verification."""

from __future__ import annotations

import base64
import logging

import pytest

from acl.access import AccessControl, AuthFailure
from acl.authenticators import Refusal, Verified
from acl.ldap import LdapAuthenticator, LdapSettings
from acl.model import Principal, Service
from acl.passwords import hash_password
from acl_support import make_store
from slapd import GROUPS, PEOPLE, SERVICE_DN, SERVICE_PASSWORD, SUFFIX, USERS


def template_settings(slapd, **overrides) -> LdapSettings:
    values = dict(url=slapd.url, user_dn_template=f"uid={{username}},{PEOPLE}", group_search_base=GROUPS)
    return LdapSettings(**{**values, **overrides})


def search_settings(slapd, **overrides) -> LdapSettings:
    values = dict(url=slapd.url, user_search_base=PEOPLE, group_search_base=GROUPS)
    return LdapSettings(**{**values, **overrides})


def password(user: str) -> str:
    return USERS[user][1]


def test_bind_through_a_dn_template_with_groups_from_the_directory(slapd):
    ldap = LdapAuthenticator(template_settings(slapd))
    assert ldap.verify("alice", password("alice")) == Verified("alice", frozenset({"radiology", "mri-physics"}), "ldap")
    assert ldap.verify("bob", password("bob")) == Verified("bob", frozenset(), "ldap")


def test_search_then_bind_finds_users_a_template_cannot(slapd):
    carol = password("carol")  # her entry is under ou=students
    assert LdapAuthenticator(template_settings(slapd)).verify("carol", carol) == Refusal.WRONG_PASSWORD
    anonymous_search = LdapAuthenticator(search_settings(slapd))
    assert anonymous_search.verify("carol", carol) == Verified("carol", frozenset({"mri-physics"}), "ldap")
    service_search = LdapAuthenticator(search_settings(slapd, bind_dn=SERVICE_DN, bind_password=SERVICE_PASSWORD))
    assert service_search.verify("carol", carol) == Verified("carol", frozenset({"mri-physics"}), "ldap")
    assert service_search.verify("nobody", "whatever-password") == Refusal.UNKNOWN_USER


def test_the_user_name_is_spelled_as_the_directory_spells_it(slapd):
    verified = LdapAuthenticator(search_settings(slapd)).verify("ALICE", password("alice"))
    assert verified.user == "alice", "rules name user:alice; a login as ALICE must match them"


@pytest.mark.parametrize("settings_of", [template_settings, search_settings])
def test_wrong_and_empty_passwords_are_refused(slapd, settings_of):
    ldap = LdapAuthenticator(settings_of(slapd))
    assert ldap.verify("alice", password("bob")) == Refusal.WRONG_PASSWORD
    # an empty password would be an 'unauthenticated bind', which LDAP servers answer with success
    assert ldap.verify("alice", "") == Refusal.WRONG_PASSWORD


def test_injection_in_the_user_name_finds_nobody(slapd):
    ldap = LdapAuthenticator(search_settings(slapd))
    assert ldap.verify("*", password("alice")) == Refusal.UNKNOWN_USER
    assert ldap.verify("alice)(uid=*", password("alice")) == Refusal.UNKNOWN_USER
    assert LdapAuthenticator(template_settings(slapd)).verify("alice,ou=people", password("alice")) == Refusal.WRONG_PASSWORD


def test_starttls_with_the_right_ca_and_not_with_another(slapd, caplog):
    good = LdapAuthenticator(template_settings(slapd, start_tls=True, ca_file=str(slapd.certificates["ca"])))
    assert good.verify("alice", password("alice")).user == "alice"
    bad = LdapAuthenticator(template_settings(slapd, start_tls=True, ca_file=str(slapd.certificates["other_ca"])))
    with caplog.at_level(logging.ERROR, logger="dopamine.acl.ldap"):
        assert bad.verify("alice", password("alice")) == Refusal.UNAVAILABLE
    assert slapd.url in caplog.text, "the failure names the server"


def test_ldaps_with_certificate_verification(slapd):
    ldap = LdapAuthenticator(search_settings(slapd, url=slapd.ldaps_url, ca_file=str(slapd.certificates["ca"])))
    assert ldap.verify("carol", password("carol")).user == "carol"


def test_a_server_that_does_not_answer_is_unavailable_not_a_wrong_password(slapd):
    from support import free_port

    ldap = LdapAuthenticator(template_settings(slapd, url=f"ldap://127.0.0.1:{free_port()}", timeout=2))
    assert ldap.verify("alice", password("alice")) == Refusal.UNAVAILABLE
    wrong_service_password = LdapAuthenticator(search_settings(slapd, bind_dn=SERVICE_DN, bind_password="nope"))
    assert wrong_service_password.verify("carol", password("carol")) == Refusal.UNAVAILABLE


def test_groups_of_for_token_users(slapd):
    ldap = LdapAuthenticator(search_settings(slapd, bind_dn=SERVICE_DN, bind_password=SERVICE_PASSWORD))
    assert ldap.groups_of("alice") == frozenset({"radiology", "mri-physics"})
    assert ldap.groups_of("nobody") is None
    assert LdapAuthenticator(template_settings(slapd)).groups_of("nobody") is None


def test_settings_that_cannot_work_are_refused():
    with pytest.raises(ValueError, match="must start with ldap://"):
        LdapSettings(url="127.0.0.1:389", user_dn_template="uid={username}")
    with pytest.raises(ValueError, match="user_dn_template or ldap.user_search_base"):
        LdapSettings(url="ldap://x")
    with pytest.raises(ValueError, match="must contain {username}"):
        LdapSettings(url="ldap://x", user_dn_template=f"uid=alice,{SUFFIX}")
    with pytest.raises(ValueError, match="already TLS"):
        LdapSettings(url="ldaps://x", start_tls=True, user_dn_template="uid={username}")


def test_local_users_first_then_ldap_and_group_rules_from_the_directory(slapd, tmp_path):
    """The whole chain as DICOMweb and DIMSE use it."""
    from acl.authenticators import LocalUsers

    store = make_store("sqlite", tmp_path)
    store.add_user("bob", hash_password("local-bob-password"), frozenset(), "test")
    store.add_rule(Principal.parse("group:radiology"), Service.RETRIEVE, (), "test")
    access = AccessControl(store, [LocalUsers(store), LdapAuthenticator(template_settings(slapd))])

    def basic(user, secret):
        return "Basic " + base64.b64encode(f"{user}:{secret}".encode()).decode()

    alice = access.authenticate_http(basic("alice", password("alice")), "127.0.0.1")
    assert alice.authenticator == "ldap" and access.decide(alice, Service.RETRIEVE).allowed
    ok, over_dimse, _ = access.authenticate_dimse(2, b"alice", password("alice").encode(), calling_aet="WS1",
                                                  peer_host="127.0.0.1")
    assert ok and over_dimse.groups == alice.groups
    # the local bob decides for bob: his directory password does not open the local account
    assert access.authenticate_http(basic("bob", "local-bob-password"), "127.0.0.1").authenticator == "local"
    assert isinstance(access.authenticate_http(basic("bob", password("bob")), "127.0.0.1"), AuthFailure)
    assert not access.decide(access.authenticate_http(basic("bob", "local-bob-password"), "127.0.0.1"),
                             Service.RETRIEVE).allowed
    store.close()


def test_access_control_from_settings_builds_the_ldap_chain(slapd, tmp_path):
    from dopamine_py.config import load_settings

    config = tmp_path / "dopamine.toml"
    config.write_text(f'[ldap]\nurl = "{slapd.url}"\nstart_tls = true\nca_file = "{slapd.certificates["ca"]}"\n'
                      f'user_search_base = "{PEOPLE}"\ngroup_search_base = "{GROUPS}"\n'
                      '[auth]\nthrottle_free_failures = 2\n')
    store = make_store("sqlite", tmp_path)
    access = AccessControl.from_settings(load_settings(config), store)
    assert [a.name for a in access.authenticators] == ["local", "ldap"]
    assert access.check_password("carol", password("carol"), "127.0.0.1").groups == {"mri-physics"}
    for _ in range(3):
        access.check_password("carol", "wrong-password", "127.0.0.1")
    assert access.check_password("carol", password("carol"), "127.0.0.1").status == 429
    store.close()
