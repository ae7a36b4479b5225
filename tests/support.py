"""Helpers shared by the tests: free ports, a real `dopamine serve`, the external tools the tests drive."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _shared_data_folder() -> Path:
    """``shared/data`` beside the repository (<somewhere>/main, <somewhere>/shared), or beside the repository
    this one was cloned from: a fresh clone in a temporary folder (as CI makes) finds the data too."""
    beside = REPO.parent / "shared" / "data"
    if beside.is_dir():
        return beside
    try:
        origin = subprocess.run(["git", "-C", str(REPO), "remote", "get-url", "origin"], capture_output=True,
                                text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return beside
    if origin and Path(origin).is_dir():
        cloned_from = Path(origin).resolve().parent / "shared" / "data"
        if cloned_from.is_dir():
            return cloned_from
    return beside  # missing: the tests that need it fail and say where they looked


SHARED_DATA = _shared_data_folder()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def system_tool(name: str) -> str | None:
    """The path of an external program, never a script of this Python environment: pynetdicom installs
    storescu, findscu, getscu, movescu, echoscu and storescp with options of their own, and an activated
    venv puts them before DCMTK's."""
    own_scripts = Path(sys.prefix, "bin").resolve()
    elsewhere = [d for d in os.get_exec_path() if d and Path(d).resolve() != own_scripts]
    return shutil.which(name, path=os.pathsep.join(elsewhere))


def require_tool(name: str) -> str:
    """The path of an external program the test drives; a loud failure (never a skip) when missing."""
    path = system_tool(name)
    if path is None:
        pytest.fail(f"{name} is not installed: `make test` installs it as root "
                    f"(Debian packages dcmtk, dicom3tools, slapd); run `make system-test-deps`", pytrace=False)
    return path


def shared_data(*parts: str) -> Path:
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.fail(f"test data missing: {path} (the repo is expected beside ../shared/, or cloned from a "
                    "repository that is)", pytrace=False)
    return path


@dataclass
class Server:
    """A `dopamine serve` process listening on 127.0.0.1."""

    data_dir: Path
    aet: str
    dimse_port: int
    http_port: int
    process: subprocess.Popen
    log_path: Path
    host: str = "127.0.0.1"
    extra: dict = field(default_factory=dict)

    @property
    def dicomweb_url(self) -> str:
        return f"http://{self.host}:{self.http_port}/dicom-web"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def kill(self) -> None:
        """SIGKILL: the crash tests' way of stopping."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def dopamine_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "dopamine_py.cli", *args]


def start_server(data_dir: Path, *, aet: str = "DOPAMINE", config: Path | None = None, access: str = "open",
                 extra_args: tuple[str, ...] = (), env: dict | None = None, timeout: float = 30) -> Server:
    """Start `dopamine serve`. ``access="open"`` (for tests about something else than access control)
    runs it with ``auth.enforce = false`` unless a config file is given; ``"enforced"`` runs it as shipped."""
    data_dir.mkdir(parents=True, exist_ok=True)
    if config is None and access == "open":
        config = data_dir.parent / f"open-access-{data_dir.name}.toml"
        config.write_text("[auth]\nenforce = false\n")
    dimse_port, http_port = free_port(), free_port()
    log_path = data_dir.parent / f"serve-{dimse_port}.log"
    args = ["serve", "--data-dir", str(data_dir), "--aet", aet, "--host", "127.0.0.1",
            "--dimse-port", str(dimse_port), "--http-port", str(http_port), *extra_args]
    if config is not None:
        args += ["--config", str(config)]
    log_file = open(log_path, "wb")
    process = subprocess.Popen(dopamine_command(*args), stdout=log_file, stderr=subprocess.STDOUT,
                               cwd=REPO, env={**os.environ, **(env or {})})
    server = Server(data_dir, aet, dimse_port, http_port, process, log_path)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"dopamine serve exited with {process.returncode}:\n{server.log()}")
        if "Dopamine-py ready" in server.log():
            return server
        time.sleep(0.1)
    server.kill()
    raise RuntimeError(f"dopamine serve did not start within {timeout}s:\n{server.log()}")


def run(cmd: list[str], timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess:
    """Run a command, capturing output; on failure the assertion shows what it printed."""
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} exited with {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}")
    return proc
