"""Password hashing for local users: salted scrypt, never the password itself.

The stored form is ``scrypt$N$r$p$salt$hash`` (salt and hash in Base64), so the cost can be raised later
while old hashes still verify.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import threading
import time
from dataclasses import dataclass
from typing import Callable

MIN_PASSWORD_LENGTH = 8
MAX_PASSWORD_LENGTH = 1024  # scrypt cost does not depend on it, but nobody needs more


@dataclass(frozen=True)
class ScryptCost:
    n: int = 2**15  # about 32 MiB and 0.1 s per hash on a small server: slow for an attacker, fine for a login
    r: int = 8
    p: int = 1

    @property
    def maxmem(self) -> int:
        return 256 * self.n * self.r * self.p  # 2 x the 128*N*r bytes scrypt needs


DEFAULT_COST = ScryptCost()
SALT_BYTES = 16
HASH_BYTES = 32


class WeakPassword(ValueError):
    pass


def check_password(password: str) -> None:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise WeakPassword(f"password too short: at least {MIN_PASSWORD_LENGTH} characters")
    if len(password) > MAX_PASSWORD_LENGTH:
        raise WeakPassword(f"password too long: at most {MAX_PASSWORD_LENGTH} characters")


def hash_password(password: str, cost: ScryptCost = DEFAULT_COST) -> str:
    check_password(password)
    salt = os.urandom(SALT_BYTES)
    digest = _scrypt(password, salt, cost)
    encode = lambda b: base64.b64encode(b).decode("ascii")  # noqa: E731
    return f"scrypt${cost.n}${cost.r}${cost.p}${encode(salt)}${encode(digest)}"


def verify_password(password: str, stored: str) -> bool:
    """Whether ``password`` is the one ``stored`` was made from; False for any malformed hash."""
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        cost = ScryptCost(int(n), int(r), int(p))
        expected = base64.b64decode(digest, validate=True)
        actual = _scrypt(password, base64.b64decode(salt, validate=True), cost, len(expected))
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(actual, expected)


# Verified against when the user does not exist, so that a login for an unknown name costs the same time.
_DUMMY_HASH: str | None = None


def spend_verification_time(password: str) -> None:
    global _DUMMY_HASH
    if _DUMMY_HASH is None:
        _DUMMY_HASH = hash_password("not-a-real-password")
    verify_password(password, _DUMMY_HASH)


def _scrypt(password: str, salt: bytes, cost: ScryptCost, length: int = HASH_BYTES) -> bytes:
    return hashlib.scrypt(password.encode("utf-8"), salt=salt, n=cost.n, r=cost.r, p=cost.p,
                          maxmem=cost.maxmem, dklen=length)


class RecentlyVerified:
    """Passwords verified against a stored hash in the last ``seconds``, so that HTTP Basic, which sends
    the password with every request, costs a user one scrypt every few minutes instead of 0.1 s of CPU
    per request (a viewer makes hundreds). Only successes are kept, as HMACs under a key made for this
    process, never the passwords; a changed password has a new stored hash, which is not found here.
    """

    def __init__(self, seconds: float = 300, size: int = 1024, clock: Callable[[], float] = time.monotonic) -> None:
        self.seconds, self.size, self._clock = seconds, size, clock
        self._key = os.urandom(32)
        self._until: dict[bytes, float] = {}  # oldest first
        self._lock = threading.Lock()

    def verify(self, password: str, stored: str) -> bool:
        """``verify_password``, without scrypt when this password was verified against ``stored`` lately."""
        mark = hmac.new(self._key, f"{stored}\0{password}".encode("utf-8"), hashlib.sha256).digest()
        now = self._clock()
        with self._lock:
            if self._until.get(mark, 0.0) > now:
                return True
        if not verify_password(password, stored):
            return False
        with self._lock:
            self._until.pop(mark, None)
            self._until[mark] = now + self.seconds
            while len(self._until) > self.size:
                del self._until[next(iter(self._until))]
        return True
