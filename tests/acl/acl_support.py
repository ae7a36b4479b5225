"""Helpers of the access-control tests (a module of its own: `conftest` names several modules in this suite)."""

from __future__ import annotations

import uuid

from acl.store import AclStore

# The MongoDB store runs on mongomock: a stand-in that exercises our documents and queries, not a server.
STORE_KINDS = ["sqlite", "mongodb-via-mongomock-standin"]


def make_store(kind: str, tmp_path) -> AclStore:
    if kind == "sqlite":
        return AclStore.for_sqlite(tmp_path / f"acl-{uuid.uuid4().hex[:8]}.sqlite")
    import mongomock

    return AclStore.for_mongodb(mongomock.MongoClient()[f"acl_{uuid.uuid4().hex[:8]}"])


class FakeClock:
    """A monotonic clock the throttle tests move by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds
