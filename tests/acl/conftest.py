"""Fixtures of the access-control tests: a store of each kind, a clock, a real slapd."""

from __future__ import annotations

import pytest

from acl_support import STORE_KINDS, FakeClock, make_store


@pytest.fixture(params=STORE_KINDS)
def store(request, tmp_path):
    """Each store kind in turn: the test id says which one ran."""
    acl_store = make_store(request.param, tmp_path)
    yield acl_store
    acl_store.close()


@pytest.fixture
def clock():
    return FakeClock()


@pytest.fixture(scope="session")
def slapd(tmp_path_factory):
    """A real OpenLDAP server with the test directory of tests/acl/slapd.py, for the whole session."""
    from slapd import start_slapd

    server = start_slapd(tmp_path_factory.mktemp("slapd"))
    yield server
    server.stop()
