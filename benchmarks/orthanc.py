"""Debian's Orthanc as a reference archive for the benchmarks: started on free ports with a temporary
configuration and storage folder, stopped by itself.

    with start_orthanc(Path(tmp), allowed_peers={"BENCHSCU": "127.0.0.1"}) as orthanc:
        ... send to orthanc.aet @ orthanc.host : orthanc.dimse_port ...
        orthanc.count_instances()

Listening: Orthanc 1.10 has no bind-address option, so it listens on every interface. It is held to
the loopback otherwise: HTTP refuses remote clients (RemoteAccessAllowed false) and DICOM accepts only
the declared peers, from the declared hosts (DicomCheckModalityHost), under its own AE title.

TCP_NODELAY: Orthanc's ``TcpNoDelay`` option exists in 1.10.1 but only governs its HTTP server
(CivetWeb). Its DICOM sockets are DCMTK's, and Debian's DCMTK 3.6.7 leaves Nagle's algorithm on
unless the environment variable TCP_NODELAY=1 is set; we set both (checked with strace: the variable
makes libdcmnet call setsockopt(TCP_NODELAY) on each association socket).
"""

from __future__ import annotations

import ctypes
import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ORTHANC = "/usr/sbin/Orthanc"
DEBIAN_PLUGINS = Path("/usr/share/orthanc/plugins")


class OrthancUnavailable(RuntimeError):
    """Orthanc is not installed or did not start; the message says what to do."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def orthanc_binary() -> str:
    path = ORTHANC if os.access(ORTHANC, os.X_OK) else shutil.which("Orthanc")
    if path is None:
        raise OrthancUnavailable("Orthanc is not installed: `apt-get install orthanc` (or `make bench` as root)")
    return path


def orthanc_version() -> str:
    first_line = subprocess.run([orthanc_binary(), "--version"], capture_output=True, text=True,
                                timeout=10).stdout.split("\n")[0]
    return first_line.split()[-1] if first_line.strip() else "?"  # "/usr/sbin/Orthanc 1.10.1"


def die_with_parent() -> None:
    """In a child before exec: get SIGTERM if the benchmark dies, even by SIGKILL, so no server outlives it."""
    libc = ctypes.CDLL(None, use_errno=True)
    PR_SET_PDEATHSIG = 1
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


@dataclass
class Orthanc:
    """A running Orthanc listening on free ports."""

    aet: str
    dimse_port: int
    http_port: int
    work_dir: Path
    log_path: Path
    process: subprocess.Popen
    host: str = "127.0.0.1"

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.http_port}"

    def get(self, path: str, timeout: float = 10) -> Any:
        with urllib.request.urlopen(self.url + path, timeout=timeout) as response:
            return json.loads(response.read())

    def count_instances(self) -> int:
        return int(self.get("/statistics")["CountInstances"])

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def __enter__(self) -> "Orthanc":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def write_config(work_dir: Path, *, aet: str, dimse_port: int, http_port: int,
                 allowed_peers: dict[str, str], plugins: list[str], extra: dict[str, Any]) -> Path:
    storage = work_dir / "storage"
    storage.mkdir(parents=True, exist_ok=True)
    config = {
        "Name": "dopamine-benchmark",
        "StorageDirectory": str(storage),
        "IndexDirectory": str(storage),
        "Plugins": plugins,
        "HttpServerEnabled": True,
        "HttpPort": http_port,
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False,
        "KeepAlive": True,
        "TcpNoDelay": True,
        "DicomServerEnabled": True,
        "DicomAet": aet,
        "DicomPort": dimse_port,
        "DicomCheckCalledAet": True,
        "DicomAlwaysAllowEcho": False,
        "DicomAlwaysAllowStore": False,
        "DicomCheckModalityHost": True,
        "DicomModalities": {name.lower(): [name, host, 104] for name, host in allowed_peers.items()},
        # Defaults of 1.10.1 spelled out, since they decide what is measured: every file is fsync'ed
        # (as Dopamine does) and stored uncompressed, and a known SOP Instance UID is not overwritten.
        "SyncStorageArea": True,
        "StorageCompression": False,
        "OverwriteInstances": False,
        "SaveJobs": False,
        **extra,
    }
    path = work_dir / "orthanc.json"
    path.write_text(json.dumps(config, indent=2))
    return path


def start_orthanc(work_dir: Path, *, aet: str = "ORTHANC", allowed_peers: dict[str, str] | None = None,
                  plugins: list[str] = (), extra_config: dict[str, Any] | None = None,
                  timeout: float = 60) -> Orthanc:
    """Start Orthanc with its configuration, index and storage under ``work_dir``; returns once its REST
    API answers and its DICOM port accepts connections. ``allowed_peers`` maps AE titles allowed to
    associate to the host they must come from. ``plugins`` are paths (Debian's are in DEBIAN_PLUGINS)."""
    binary = orthanc_binary()
    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    dimse_port, http_port = free_port(), free_port()
    config = write_config(work_dir, aet=aet, dimse_port=dimse_port, http_port=http_port,
                          allowed_peers=allowed_peers or {}, plugins=list(plugins), extra=extra_config or {})
    log_path = work_dir / "orthanc.log"
    with open(log_path, "wb") as log_file:
        process = subprocess.Popen([binary, "--no-jobs", str(config)], stdout=log_file, stderr=subprocess.STDOUT,
                                   cwd=work_dir, env={**os.environ, "TCP_NODELAY": "1"},
                                   preexec_fn=die_with_parent)
    orthanc = Orthanc(aet, dimse_port, http_port, work_dir, log_path, process)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise OrthancUnavailable(f"Orthanc exited with {process.returncode}:\n{orthanc.log()[-4000:]}")
            if _answers(orthanc):
                return orthanc
            time.sleep(0.1)
        raise OrthancUnavailable(f"Orthanc did not start within {timeout}s:\n{orthanc.log()[-4000:]}")
    except BaseException:
        orthanc.stop()
        raise


def _answers(orthanc: Orthanc) -> bool:
    try:
        orthanc.get("/system", timeout=2)
        with socket.create_connection((orthanc.host, orthanc.dimse_port), timeout=2):
            return True
    except (OSError, urllib.error.URLError, ValueError):
        return False
