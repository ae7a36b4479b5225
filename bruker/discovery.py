"""Finding ParaVision reconstructions under a path (folder or zip).

Layout on disk::

    <study>/subject
    <study>/<expno>/acqp, method, (visu_pars in PV 6+), fid
    <study>/<expno>/pdata/<procno>/2dseq, visu_pars, reco, d3proc, id

A user may hand us any of the three levels, or a zip of any of them.  Each
reconstruction gets its parameter files from its own folder first, then the
scan folder, then the study folder: inner files override outer ones.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import zipfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

__all__ = [
    "PARAMETER_FILES",
    "Reconstruction",
    "ScanProblem",
    "discover",
    "opened",
    "UnsafeArchiveError",
]

PARAMETER_FILES = ("visu_pars", "reco", "d3proc", "id", "method", "acqp", "subject")

# How many folders above a reconstruction can hold its parameter files
# (pdata/<n> -> <expno> -> <study>).
_OUTER_LEVELS = 3


class UnsafeArchiveError(ValueError):
    """A zip member would land outside the extraction folder."""


@dataclass
class Reconstruction:
    """One ``pdata/<procno>`` folder and the parameter files that apply to it."""

    scan_id: str  # human-readable, relative to the input: "study/100/pdata/1"
    folder: Path
    files: dict[str, Path] = field(default_factory=dict)
    expno: str | None = None
    procno: str | None = None

    @property
    def pixel_file(self) -> Path:
        return self.folder / "2dseq"


@dataclass
class ScanProblem:
    """A scan folder that holds nothing convertible (e.g. raw data only)."""

    scan_id: str
    message: str


def discover(root: str | Path, contained: bool = False) -> list[Reconstruction | ScanProblem]:
    """Every reconstruction under ``root`` (a folder), in a stable order.

    ``contained`` keeps the search for parameter files inside ``root`` (for
    extracted zips); otherwise a reconstruction given directly still gets the
    ``method``/``acqp``/``subject`` of the scan and study folders around it.
    Scans with no reconstruction at all are reported as :class:`ScanProblem`
    so the caller can name them instead of skipping them silently.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"not a folder: {root}")
    found: list[Reconstruction | ScanProblem] = []
    scans_with_recon: set[Path] = set()
    scan_folders: list[Path] = []
    for folder in _walk(root):
        names = set(os.listdir(folder))
        if _is_reconstruction(folder, names):
            recon = _reconstruction(root, folder, contained)
            found.append(recon)
            if folder.parent.name == "pdata":
                scans_with_recon.add(folder.parent.parent)
        elif names & {"acqp", "method"}:
            scan_folders.append(folder)
    for scan in scan_folders:
        if scan not in scans_with_recon:
            found.append(ScanProblem(_label(root, scan), "no reconstruction (pdata/<n>/2dseq) in this scan"))
    found.sort(key=lambda item: _natural_key(item.scan_id))
    return found


def _walk(root: Path) -> Iterator[Path]:
    for dirpath, dirnames, _ in os.walk(root):
        dirnames.sort()
        yield Path(dirpath)


def _is_reconstruction(folder: Path, names: set[str]) -> bool:
    # A folder under pdata/ is a reconstruction even without 2dseq, so that a
    # missing 2dseq is reported rather than ignored; elsewhere 2dseq decides.
    return folder.parent.name == "pdata" or "2dseq" in names


def _reconstruction(root: Path, folder: Path, contained: bool) -> Reconstruction:
    search = [folder] + [
        outer
        for outer in folder.parents[:_OUTER_LEVELS]
        # A zip is extracted into a temporary folder: nothing above it is ours.
        if outer.name != "pdata" and not (contained and root not in (outer, *outer.parents))
    ]
    files: dict[str, Path] = {}
    for name in PARAMETER_FILES:
        for place in search:
            candidate = place / name
            if candidate.is_file():
                files[name] = candidate
                break
    expno = procno = None
    if folder.parent.name == "pdata":
        procno = folder.name
        expno = folder.parent.parent.name
    return Reconstruction(_label(root, folder, contained), folder, files, expno, procno)


def _label(root: Path, folder: Path, contained: bool = False) -> str:
    """"study/expno/pdata/procno" however deep the user pointed, so messages
    name the scan the same way whether given a study, a scan or a zip."""
    if folder.parent.name == "pdata" and len(folder.parents) >= 3:
        study = folder.parents[2]
        parts = [folder.parents[1].name, "pdata", folder.name]
        inside = study == root or root in study.parents
        if study.name and (inside or not contained):
            parts.insert(0, study.name)
        return "/".join(parts)
    rel = folder.relative_to(root)
    return "/".join([root.name, *rel.parts]) if root.name else "/".join(rel.parts) or str(folder)


def _natural_key(text: str) -> list:
    return [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", text)]


@contextmanager
def opened(path: str | Path) -> Iterator[tuple[Path, bool]]:
    """``(folder, contained)`` to discover in: ``path`` itself, or a zip
    extracted to a temporary folder (``contained`` is then true).

    The temporary folder lives until the ``with`` block ends, so pixel data
    can be memory-mapped while converting.
    """
    path = Path(path)
    if path.is_dir():
        yield path, False
        return
    if not path.exists():
        raise FileNotFoundError(f"no such file or folder: {path}")
    if not zipfile.is_zipfile(path):
        raise ValueError(f"{path}: neither a folder nor a zip file")
    tmp = tempfile.mkdtemp(prefix="bruker-")
    try:
        target = Path(tmp) / path.stem
        _safe_extract(path, target)
        yield target, True
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _safe_extract(zip_path: Path, target: Path) -> None:
    # Zips also arrive by HTTP upload: refuse members that escape the target.
    target.mkdir(parents=True)
    base = target.resolve()
    with zipfile.ZipFile(zip_path) as archive:
        for member in archive.infolist():
            destination = (target / member.filename).resolve()
            if destination != base and base not in destination.parents:
                raise UnsafeArchiveError(f"{zip_path.name}: member {member.filename!r} escapes the archive")
        archive.extractall(target)
