from __future__ import annotations

import pytest

from backends import TIERS, make_backend
from support import start_server


@pytest.fixture
def server(tmp_path):
    """A running `dopamine serve` on the embedded store, stopped after the test."""
    srv = start_server(tmp_path / "data")
    yield srv
    srv.stop()


@pytest.fixture(params=TIERS)
def backend(request, tmp_path):
    """Each storage tier in turn: the test id says which one ran (embedded, mongodb-standin, mongodb-real)."""
    store, dispose = make_backend(request.param, tmp_path)
    yield store
    dispose()


@pytest.fixture
def archive(backend):
    from dopamine_py.archive import ArchiveService

    return ArchiveService(backend)
