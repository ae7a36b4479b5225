"""Validation helper: run dciodvfy (dicom3tools) on a dataset."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pydicom
import pytest

DCIODVFY = "/usr/bin/dciodvfy"


def dciodvfy_errors(ds: pydicom.Dataset, tmp_path: Path, name: str = "check.dcm") -> list[str]:
    """The 'Error' lines dciodvfy reports for a dataset saved as a file."""
    if not Path(DCIODVFY).is_file():
        pytest.fail(f"{DCIODVFY} not found: `make test` installs dicom3tools (Debian package), which provides it")
    path = tmp_path / name
    ds.save_as(path, enforce_file_format=True)
    run = subprocess.run([DCIODVFY, str(path)], capture_output=True, text=True, timeout=120)
    lines = (run.stdout + run.stderr).splitlines()
    return [line for line in lines if line.startswith("Error")]
