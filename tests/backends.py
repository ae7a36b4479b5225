"""The storage backends every behaviour test runs against, and which tier each one is.

- ``embedded``: the SQLite store, always.
- ``mongodb-standin``: the MongoDB backend's code driven against mongomock, always. It exercises our
  document path and the filters we build, not a MongoDB server: a stand-in for CI, never a product.
- ``mongodb-real``: the MongoDB backend against the server named by DOPAMINE_TEST_MONGODB_URI, when set
  (docker/compose.yaml starts one). When unset, it is reported as skipped with the reason.
"""

from __future__ import annotations

import os
import uuid

import pytest

MONGODB_URI_VARIABLE = "DOPAMINE_TEST_MONGODB_URI"
TIERS = ["embedded", "mongodb-standin", "mongodb-real"]


def make_backend(tier: str, tmp_path, indexed=("PatientName", "StudyDate", "StudyDescription")):
    """A fresh, empty backend of the given tier, and a function that disposes of it."""
    if tier == "embedded":
        from dopamine_py.storage.sqlite import SQLiteBackend

        backend = SQLiteBackend(tmp_path / f"store-{uuid.uuid4().hex[:8]}", list(indexed))
        return backend, backend.close
    if tier == "mongodb-standin":
        import mongomock
        import mongomock.gridfs

        from dopamine_py.storage.mongodb import MongoBackend

        mongomock.gridfs.enable_gridfs_integration()
        client = mongomock.MongoClient()
        backend = MongoBackend(client[f"standin_{uuid.uuid4().hex[:8]}"], list(indexed))
        return backend, client.close
    if tier == "mongodb-real":
        uri = os.environ.get(MONGODB_URI_VARIABLE)
        if not uri:
            pytest.skip(f"MongoDB tier not run: set {MONGODB_URI_VARIABLE} (e.g. `docker compose -f docker/compose.yaml up -d mongodb`)")
        import pymongo

        from dopamine_py.storage.mongodb import MongoBackend

        name = f"dopamine_test_{uuid.uuid4().hex[:8]}"
        backend = MongoBackend.connect(uri, name, list(indexed))

        def dispose():
            backend.close()
            with pymongo.MongoClient(uri) as client:
                client.drop_database(name)

        return backend, dispose
    raise ValueError(tier)
