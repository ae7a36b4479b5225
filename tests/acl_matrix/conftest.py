"""One `dopamine serve` with access control enforced, loaded once for the whole matrix (see
acl_matrix_support.py for its data and rules), a real slapd for the LDAP group, a DCMTK storescp as the
C-MOVE destination, and API tokens."""

from __future__ import annotations

import importlib.util
import io
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from acl_matrix_support import (ALICE, LOCAL_USERS, MAX_RESULTS, RULES, RITA, Corpus, dopamine_cli, write_corpus)
from support import REPO, dopamine_command, free_port, require_tool, run, start_server

MOVE_DESTINATION = "MATRIXDEST"


def _load_slapd_helpers():
    # tests/acl/slapd.py is not on the path under a unique name (tests/acl has no package): load it by file.
    spec = importlib.util.spec_from_file_location("acl_tests_slapd", REPO / "tests" / "acl" / "slapd.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def matrix_slapd(tmp_path_factory):
    slapd = _load_slapd_helpers()
    server = slapd.start_slapd(tmp_path_factory.mktemp("matrix-slapd"))
    server.people, server.groups = slapd.PEOPLE, slapd.GROUPS
    yield server
    server.stop()


def _configure_access(data_dir: Path, config: Path) -> None:
    """Users and rules, with the `dopamine` commands' own parser and handlers, run in this process (one
    subprocess per rule would cost half a second each; one real subprocess sets rita's groups below)."""
    from acl.cli import open_store, run_with_store
    from dopamine_py.config import load_settings

    settings = load_settings(config, {"data_dir": str(data_dir)})

    def command(*argv: str, stdin: str = "") -> None:
        out = io.StringIO()
        status = run_with_store(list(argv), open_store(settings), stdin=io.StringIO(stdin), stdout=out)
        assert status == 0, f"dopamine {' '.join(argv)} failed: {out.getvalue()}"

    for name, password in LOCAL_USERS.items():
        command("user", "add", name, "--password-stdin", stdin=password + "\n")
    for principal, service, constraints in RULES:
        command("acl", "add", principal, service, *[f"--match={c}" for c in constraints])


@dataclass
class Destination:
    """A DCMTK storescp that the archive knows as a C-MOVE destination."""

    aet: str
    port: int
    folder: Path
    process: subprocess.Popen

    def clear(self) -> None:
        """Forget what earlier moves sent (the tests run one at a time)."""
        for path in self.folder.iterdir():
            path.unlink()

    def received(self) -> set[str]:
        """SOP Instance UIDs received so far (storescp names files MODALITY.UID)."""
        return {p.name.split(".", 1)[1] for p in self.folder.iterdir() if "." in p.name}

    def wait_quiet(self, seconds: float = 0.3) -> None:
        """storescp writes each file as it arrives; give a finished C-MOVE's last file time to land."""
        time.sleep(seconds)


@pytest.fixture(scope="session")
def matrix(tmp_path_factory, matrix_slapd):
    """The enforced server, its corpus and the tokens: everything the matrix tests share."""
    root = tmp_path_factory.mktemp("acl-matrix")
    corpus: Corpus = write_corpus(root / "corpus")
    data_dir = root / "data"
    config = root / "dopamine.toml"
    config.write_text(
        "[auth]\nenforce = true\n"
        # Failures per (name, address): the matrix tries a few wrong passwords for alice; the throttle test
        # uses a name of its own and needs 21 failures.
        "throttle_free_failures = 20\n"
        f"[dicomweb]\nmax_results = {MAX_RESULTS}\ncors_allow_origins = [\"http://viewer.example\"]\n"
        f"[ldap]\nurl = \"{matrix_slapd.url}\"\nuser_search_base = \"{matrix_slapd.people}\"\n"
        f"group_search_base = \"{matrix_slapd.groups}\"\n")
    run(dopamine_command("import", "--quiet", "--data-dir", str(data_dir), "--config", str(config),
                         *(str(i.path) for i in corpus.instances)))
    _configure_access(data_dir, config)

    storescp = require_tool("storescp")
    move_port = free_port()
    incoming = root / "moved"
    incoming.mkdir()
    destination_process = subprocess.Popen([storescp, "-aet", MOVE_DESTINATION, "-od", str(incoming), str(move_port)],
                                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    server = start_server(data_dir, config=config, access="enforced")
    server.extra["config"] = config
    try:
        # Real commands against the running archive's folder: they apply at once (rules are read per decision).
        dopamine_cli(server, "user", "groups", RITA.user, "radiology")
        dopamine_cli(server, "peer", "add", MOVE_DESTINATION, "127.0.0.1", str(move_port))
        token = dopamine_cli(server, "token", "create", ALICE.user, "--label", "matrix").stdout.strip()
        yield Matrix(server, corpus, {ALICE.user: token}, Destination(MOVE_DESTINATION, move_port, incoming,
                                                                       destination_process), root)
    finally:
        server.stop()
        destination_process.terminate()
        destination_process.wait(timeout=10)


@dataclass
class Matrix:
    server: object
    corpus: Corpus
    tokens: dict[str, str]
    destination: Destination
    root: Path

    @property
    def url(self) -> str:
        return self.server.dicomweb_url

    @property
    def base(self) -> str:
        return f"http://{self.server.host}:{self.server.http_port}"
