"""The model and the decision: principals x services x constraints, OR-ing, anonymous vs *, AE titles bound
to a host, deny by default."""

from __future__ import annotations

import pytest

from acl.decision import decide
from acl.model import (
    AclError,
    Identity,
    Principal,
    PrincipalKind,
    Rule,
    Service,
    check_rule,
    parse_constraints,
    principals_of,
)
from dopamine_py.matching import parse_pairs

ALICE = Identity("alice", frozenset({"radiology"}), protocol="dicomweb", method="password", peer_host="10.0.0.9")
BOB = Identity("bob", frozenset(), protocol="dicomweb", method="password")
NOBODY = Identity(None, protocol="dicomweb", peer_host="10.0.0.9")
SCANNER = Identity(None, calling_aet="SCANNER1", peer_host="10.0.0.5", peer_port=40000, protocol="dimse")


def rule(rule_id: int, principal: str, service: str, *matches: str) -> Rule:
    return Rule(rule_id, Principal.parse(principal), Service.parse(service), parse_constraints(list(matches)))


def doc(**attributes) -> dict:
    """A minimal document in the DICOM JSON model."""
    from pydicom.dataset import Dataset

    from dopamine_py.document import to_document

    ds = Dataset()
    for keyword, value in attributes.items():
        setattr(ds, keyword, value)
    return to_document(ds)


# ---------------------------------------------------------------------------------------------- principals


@pytest.mark.parametrize("text, kind, name, host", [
    ("user:alice", PrincipalKind.USER, "alice", None),
    ("group:radiology", PrincipalKind.GROUP, "radiology", None),
    ("aet:SCANNER1", PrincipalKind.AET, "SCANNER1", None),
    ("aet:SCANNER1@10.0.0.5", PrincipalKind.AET, "SCANNER1", "10.0.0.5"),
    ("anonymous", PrincipalKind.ANONYMOUS, None, None),
    ("*", PrincipalKind.ANY_AUTHENTICATED, None, None),
])
def test_principal_syntax_round_trips(text, kind, name, host):
    principal = Principal.parse(text)
    assert (principal.kind, principal.name, principal.host) == (kind, name, host)
    assert str(principal) == text


@pytest.mark.parametrize("text, message", [
    ("alice", "expected user:NAME"),
    ("role:x", "expected user:NAME"),
    ("user:", "invalid user name"),
    ("user:a:b", "invalid user name"),
    ("aet:THIS_TITLE_IS_TOO_LONG", "invalid AE title"),
    ("aet:SCANNER@", "no host after '@'"),
])
def test_bad_principals_are_refused_with_the_reason(text, message):
    with pytest.raises(AclError, match=message):
        Principal.parse(text)


def test_star_is_only_for_authenticated_users_and_anonymous_only_for_the_others():
    assert [str(p) for p in principals_of(ALICE)] == ["user:alice", "group:radiology", "*"]
    assert [str(p) for p in principals_of(NOBODY)] == ["anonymous"]


def test_ae_title_principals_apply_with_and_without_a_user_and_bind_to_the_host():
    assert [str(p) for p in principals_of(SCANNER)] == ["anonymous", "aet:SCANNER1", "aet:SCANNER1@10.0.0.5"]
    logged_in = Identity("alice", calling_aet="WS1", peer_host="10.0.0.7", protocol="dimse", method="password")
    assert [str(p) for p in principals_of(logged_in)] == ["user:alice", "*", "aet:WS1", "aet:WS1@10.0.0.7"]


# ---------------------------------------------------------------------------------------------- decisions


def test_nothing_is_allowed_without_a_rule():
    for identity in (ALICE, NOBODY, SCANNER):
        for service in Service:
            decision = decide([], identity, service)
            assert not decision.allowed
            assert decision.constraints == ()
            assert not decision.permits(doc(PatientID="P1"))
            assert "no rule allows" in decision.reason


def test_a_rule_allows_only_its_principal_and_service():
    rules = [rule(1, "user:alice", "Query")]
    assert decide(rules, ALICE, Service.QUERY).allowed
    assert not decide(rules, ALICE, Service.RETRIEVE).allowed, "Query and Retrieve are separate rights"
    assert not decide(rules, BOB, Service.QUERY).allowed
    assert not decide(rules, NOBODY, Service.QUERY).allowed


def test_group_rules_apply_to_members():
    rules = [rule(1, "group:radiology", "Retrieve")]
    assert decide(rules, ALICE, Service.RETRIEVE).allowed
    assert not decide(rules, BOB, Service.RETRIEVE).allowed


def test_star_never_admits_anonymous_and_anonymous_never_admits_users():
    star = [rule(1, "*", "Echo")]
    assert decide(star, BOB, Service.ECHO).allowed
    assert not decide(star, NOBODY, Service.ECHO).allowed
    assert not decide(star, SCANNER, Service.ECHO).allowed
    anonymous = [rule(2, "anonymous", "Echo")]
    assert decide(anonymous, NOBODY, Service.ECHO).allowed
    assert not decide(anonymous, BOB, Service.ECHO).allowed


def test_ae_title_bound_to_a_host_admits_that_host_only():
    rules = [rule(1, "aet:SCANNER1@10.0.0.5", "Store")]
    assert decide(rules, SCANNER, Service.STORE).allowed
    elsewhere = Identity(None, calling_aet="SCANNER1", peer_host="10.0.0.66", protocol="dimse")
    assert not decide(rules, elsewhere, Service.STORE).allowed
    other_title = Identity(None, calling_aet="SCANNER2", peer_host="10.0.0.5", protocol="dimse")
    assert not decide(rules, other_title, Service.STORE).allowed
    unbound = [rule(2, "aet:SCANNER1", "Store")]
    assert decide(unbound, elsewhere, Service.STORE).allowed


def test_rules_for_one_principal_and_service_are_ored():
    rules = [rule(1, "user:alice", "Query", "Modality=MR"), rule(2, "group:radiology", "Query", "PatientID=P2"),
             rule(3, "user:alice", "Retrieve", "PatientID=P3")]
    decision = decide(rules, ALICE, Service.QUERY)
    assert decision.allowed and decision.rules == (1, 2)
    assert decision.permits(doc(Modality="MR", PatientID="P9"))
    assert decision.permits(doc(Modality="CT", PatientID="P2"))
    assert not decision.permits(doc(Modality="CT", PatientID="P3")), "a Retrieve rule does not widen Query"


def test_constraints_of_one_rule_are_anded():
    decision = decide([rule(1, "user:alice", "Store", "Modality=MR", "PatientID=LAB*")], ALICE, Service.STORE)
    assert decision.permits(doc(Modality="MR", PatientID="LAB7"))
    assert not decision.permits(doc(Modality="MR", PatientID="HOSP7"))
    assert not decision.permits(doc(Modality="CT", PatientID="LAB7"))


def test_a_rule_without_constraints_makes_the_whole_archive_allowed():
    rules = [rule(1, "user:alice", "Query", "Modality=MR"), rule(2, "*", "Query")]
    decision = decide(rules, ALICE, Service.QUERY)
    assert decision.unrestricted and decision.constraints is None
    query = parse_pairs([("PatientID", "P1")])
    assert decision.restrict(query) == query


def test_matching_semantics_are_those_of_c_find():
    decision = decide([rule(1, "user:alice", "Query", "PatientName=Doe^*", "StudyDate=2020-", r"Modality=MR\CT")],
                      ALICE, Service.QUERY)
    assert decision.permits(doc(PatientName="Doe^Jane", StudyDate="20240101", Modality="CT"))
    assert not decision.permits(doc(PatientName="Roe^Jane", StudyDate="20240101", Modality="CT"))
    assert not decision.permits(doc(PatientName="Doe^Jane", StudyDate="20191231", Modality="CT"))
    assert not decision.permits(doc(PatientName="Doe^Jane", StudyDate="20240101", Modality="US"))
    assert not decision.permits(doc(StudyDate="20240101", Modality="CT")), "a missing attribute does not match"


# -------------------------------------------------------------------------------------------- bad rules


@pytest.mark.parametrize("matches, message", [
    (["Modality"], "expected KEYWORD=VALUE"),
    (["Modalty=MR"], "unknown attribute"),
    (["StudyDate=yesterday"], "not a valid DA"),
    (["ModalitiesInStudy=MR"], "computed by the archive"),
    (["PatientID=*"], "universal value constrains nothing"),
    (["PatientID="], "universal value constrains nothing"),
])
def test_constraints_that_could_not_match_are_refused_when_the_rule_is_added(matches, message):
    with pytest.raises(AclError, match=message):
        parse_constraints(matches)


def test_constraints_only_for_services_on_data_and_admin_only_for_authenticated_principals():
    with pytest.raises(AclError, match="takes no --match"):
        check_rule(Principal.parse("user:alice"), Service.ECHO, parse_constraints(["Modality=MR"]))
    for principal in ("anonymous", "aet:PACS"):
        with pytest.raises(AclError, match="Admin needs an authenticated principal"):
            check_rule(Principal.parse(principal), Service.ADMIN, ())
    check_rule(Principal.parse("group:admins"), Service.ADMIN, ())


def test_services_parse_case_insensitively_and_name_the_choices():
    assert Service.parse("retrieve") is Service.RETRIEVE
    with pytest.raises(AclError, match="Echo, Store, Query, Retrieve, Admin, Modify, Delete"):
        Service.parse("Move")
