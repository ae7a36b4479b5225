"""Keyed, stateless derivations: the same input and key always give the same output, on any node.

The key is a secret from the archive's configuration, never from a rule file: rules only name it
(``secret="deidentification"``). Without the key nobody can recompute the mapping, so replaced UIDs,
date offsets and pseudonyms cannot be reversed by guessing inputs.
"""

from __future__ import annotations

import hashlib
from functools import lru_cache
from typing import Mapping

from .errors import ActionFailed

DEFAULT_SECRET = "deidentification"


def secret_bytes(secrets: Mapping[str, object] | None, name: str, action: str) -> bytes:
    value = secrets.get(name) if secrets is not None else None
    if value in (None, "", b""):
        raise ActionFailed(f"{action} needs the secret {name!r}, which the configuration does not provide")
    return value if isinstance(value, bytes) else str(value).encode("utf-8")


def _digest(key: bytes, purpose: str, value: str) -> bytes:
    """HMAC-SHA256 of the purpose and the value. The purpose separates the derivations, so a UID's image
    never equals a pseudonym's."""
    inner, outer = _hmac_states(key)
    inner = inner.copy()
    inner.update(f"{purpose}\0{value}".encode("utf-8"))
    outer = outer.copy()
    outer.update(inner.digest())
    return outer.digest()


@lru_cache(maxsize=16)
def _hmac_states(key: bytes) -> tuple:
    """The two SHA-256 states HMAC (RFC 2104) starts from for ``key``, made once per key. hmac.new does the
    same work for every message, through OpenSSL: in the store path (its code and tables no longer in the
    CPU's caches) that took 13 us per new UID, the copies of these states 4 us."""
    if len(key) > SHA256_BLOCK:
        key = _sha256(key).digest()
    key = key.ljust(SHA256_BLOCK, b"\0")
    return _sha256(key.translate(_IPAD)), _sha256(key.translate(_OPAD))


SHA256_BLOCK = 64
_IPAD = bytes(byte ^ 0x36 for byte in range(256))
_OPAD = bytes(byte ^ 0x5C for byte in range(256))
try:  # Python's own SHA-256, without OpenSSL's set-up per object (private: _sha2 from 3.12, _sha256 before)
    from _sha2 import sha256 as _sha256
except ImportError:
    try:
        from _sha256 import sha256 as _sha256
    except ImportError:
        _sha256 = hashlib.sha256


@lru_cache(maxsize=4096)  # the study, series and frame of reference UIDs of a series' instances are the same
def replacement_uid(key: bytes, uid: str) -> str:
    """A UID under the 2.25 root (PS3.5 B.2): the decimal form of a UUID made from the keyed hash.

    The version nibble is set to 8 (RFC 9562 custom UUID) and the variant to RFC 4122, so the result is
    a well-formed UUID; at most 44 characters, within the 64 a UID allows.
    """
    raw = bytearray(_digest(key, "uid", uid.strip().rstrip("\0"))[:16])
    raw[6] = (raw[6] & 0x0F) | 0x80
    raw[8] = (raw[8] & 0x3F) | 0x80
    return "2.25." + str(int.from_bytes(raw, "big"))


def date_offset_days(key: bytes, subject: str, max_days: int) -> int:
    """How many days to move a subject's dates back: 1..max_days, the same for all of its data."""
    number = int.from_bytes(_digest(key, "shift-dates", subject.strip())[:8], "big")
    return 1 + number % max_days


@lru_cache(maxsize=4096)  # a patient's instances come together
def pseudonym(key: bytes, patient_id: str, prefix: str, length: int) -> str:
    """A pseudonymous ID: the prefix and ``length`` characters of the keyed hash (base 32, no 0/1 confusion)."""
    alphabet = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"
    number = int.from_bytes(_digest(key, "pseudonym", patient_id.strip()), "big")
    chars = []
    for _ in range(length):
        number, digit = divmod(number, len(alphabet))
        chars.append(alphabet[digit])
    return prefix + "".join(chars)
