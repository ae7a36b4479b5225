"""The keyed derivations: HMAC-SHA256 as RFC 2104 defines it, whatever SHA-256 implementation computes it.

A UID, pseudonym or date offset derived once is stored; the next instance of the same subject must get
the same one from any version of the archive, so the derivation itself is pinned here."""

import hashlib
import hmac

import pytest

from routing import keyed

KEYS = [b"k", b"archive-secret", b"x" * 64, b"y" * 65, b"z" * 200, "clé".encode("utf-8")]
MESSAGES = [("uid", "1.2.3"), ("uid", ""), ("pseudonym", "P-0001"), ("shift-dates", "山田太郎"), ("uid", "9" * 64)]


@pytest.mark.parametrize("key", KEYS, ids=lambda k: f"{len(k)}-byte key")
def test_digest_is_hmac_sha256(key):
    for purpose, value in MESSAGES:
        expected = hmac.new(key, f"{purpose}\0{value}".encode("utf-8"), hashlib.sha256).digest()
        assert keyed._digest(key, purpose, value) == expected


def test_digest_states_are_not_consumed():
    first = keyed._digest(b"k", "uid", "1.2.3")
    keyed._digest(b"k", "uid", "4.5.6")
    assert keyed._digest(b"k", "uid", "1.2.3") == first


def test_replacement_uid_is_pinned():
    # Computed with hmac.new when the derivation was written; archives hold UIDs made this way.
    uid = keyed.replacement_uid.__wrapped__(b"archive-secret", "1.2.840.113619.2.55.3.604688119.969.1268071029.320")
    assert uid == "2.25.42703510525919206499942772231716426160"
