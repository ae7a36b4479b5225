from __future__ import annotations

import pytest

from support import start_server


@pytest.fixture
def server(tmp_path):
    """A running `dopamine serve` on the embedded store, stopped after the test."""
    srv = start_server(tmp_path / "data")
    yield srv
    srv.stop()
