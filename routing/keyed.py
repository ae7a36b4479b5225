"""Keyed, stateless derivations: the same input and key always give the same output, on any node.

The key is a secret from the archive's configuration, never from a rule file: rules only name it
(``secret="deidentification"``). Without the key nobody can recompute the mapping, so replaced UIDs,
date offsets and pseudonyms cannot be reversed by guessing inputs.
"""

from __future__ import annotations

import hashlib
import hmac
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
    # The purpose separates the derivations, so a UID's image never equals a pseudonym's.
    return hmac.new(key, f"{purpose}\0{value}".encode("utf-8"), hashlib.sha256).digest()


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
