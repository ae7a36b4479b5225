"""Slowing down password guessing: after a few failed logins for one name from one address, that pair
must wait, twice as long after each further failure. Kept in memory: a restart forgets, which is fine for
a brake (it is not an account lock an administrator would have to lift).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Callable


@dataclass
class _Record:
    failures: int = 0
    blocked_until: float = 0.0
    last_failure: float = 0.0


class LoginThrottle:
    def __init__(self, free_failures: int = 5, base_delay: float = 1.0, max_delay: float = 300.0,
                 clock: Callable[[], float] = time.monotonic, forget_after: float = 3600.0) -> None:
        self.free_failures = free_failures
        self.base_delay = base_delay
        self.max_delay = max_delay
        self.clock = clock
        self.forget_after = forget_after  # a pair quiet this long starts afresh
        self._records: dict[tuple[str, str], _Record] = {}
        self._lock = threading.Lock()

    def wait_time(self, name: str, address: str | None) -> float:
        """Seconds before ``name`` may try again from ``address``; 0 when it may try now."""
        with self._lock:
            record = self._records.get(self._key(name, address))
            if record is None:
                return 0.0
            return max(0.0, record.blocked_until - self.clock())

    def failed(self, name: str, address: str | None) -> float:
        """Record a failed login; returns the wait now imposed (0 while under the free allowance)."""
        now = self.clock()
        with self._lock:
            self._prune(now)
            record = self._records.setdefault(self._key(name, address), _Record())
            if now - record.last_failure > self.forget_after and record.blocked_until <= now:
                record.failures = 0
            record.failures += 1
            record.last_failure = now
            excess = record.failures - self.free_failures
            if excess <= 0:
                return 0.0
            delay = min(self.max_delay, self.base_delay * 2 ** (excess - 1))
            record.blocked_until = now + delay
            return delay

    def succeeded(self, name: str, address: str | None) -> None:
        with self._lock:
            self._records.pop(self._key(name, address), None)

    @staticmethod
    def _key(name: str, address: str | None) -> tuple[str, str]:
        # Names are compared case-insensitively: LDAP directories usually do, so 'Alice' and 'alice' share a count.
        return (name.lower(), address or "")

    def _prune(self, now: float) -> None:
        if len(self._records) < 10_000:
            return
        stale = [k for k, r in self._records.items()
                 if now - r.last_failure > self.forget_after and r.blocked_until <= now]
        for key in stale:
            del self._records[key]
