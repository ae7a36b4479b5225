"""Shared fixtures: the real ParaVision 5.1 phantom and the dciodvfy validator."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest
from support import SHARED_DATA

sys.path.insert(0, str(Path(__file__).resolve().parent))  # for pv_synth and pv_checks

PHANTOM = SHARED_DATA / "bruker" / "pv51_multislice_phantom"


@pytest.fixture(scope="session")
def phantom() -> Path:
    """The real scan; its absence is a failure, never a silent skip."""
    if not (PHANTOM / "100" / "pdata" / "1" / "2dseq").is_file():
        pytest.fail(
            f"Bruker test data missing: expected the ParaVision 5.1 phantom at {PHANTOM} "
            "(shared/data/bruker/pv51_multislice_phantom beside the repository)"
        )
    return PHANTOM


@pytest.fixture
def phantom_copy(phantom: Path, tmp_path: Path) -> Path:
    """A writable copy of the phantom study, for tests that alter it."""
    target = tmp_path / "phantom"
    shutil.copytree(phantom, target)
    for path in target.rglob("*"):
        path.chmod(0o755 if path.is_dir() else 0o644)
    return target
