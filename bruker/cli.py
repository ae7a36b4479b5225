"""Command bodies for ``dopamine bruker convert`` and ``dopamine bruker import``.

The argument parsing lives in ``dopamine_py/cli.py``; these functions do the
work, print per-scan messages and a summary, and return the exit code.
"""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any, TextIO

from .context import ConversionError
from .convert import datasets_for, iter_scans

__all__ = ["convert_command", "import_command", "EXIT_OK", "EXIT_PARTIAL", "EXIT_NOTHING"]

EXIT_OK = 0  # everything convertible converted
EXIT_PARTIAL = 1  # some scans failed, others converted
EXIT_NOTHING = 2  # nothing converted


def _exit_code(converted: int, failed: int) -> int:
    if converted == 0:
        return EXIT_NOTHING
    return EXIT_PARTIAL if failed else EXIT_OK


def _progress(total: int | None, out: TextIO, desc: str):
    """A tqdm bar on a terminal; silent otherwise (tests, pipes, CI logs)."""
    try:
        from tqdm import tqdm
    except ImportError:  # progress is a nicety, never a requirement
        return None
    return tqdm(total=total, unit="frame", desc=desc, file=sys.stderr, disable=not sys.stderr.isatty(), leave=False)


def convert_command(path: str, outdir: str, enhanced: bool = False, out: TextIO = sys.stdout) -> int:
    """Convert every reconstruction under ``path`` into ``outdir/<scan>/*.dcm``."""
    target = Path(outdir)
    converted = failed = files = 0
    try:
        scans = iter_scans(path)
        for scan_id, ctx, error in scans:
            if ctx is None:
                failed += 1
                print(f"FAILED {scan_id}: {error}", file=out)
                continue
            folder = target / _safe_name(scan_id)
            folder.mkdir(parents=True, exist_ok=True)
            bar = _progress(len(ctx.frames), out, scan_id)
            written = 0
            prefix = "EMR" if enhanced else "MR"  # both IODs can share an output folder
            try:
                for ds in datasets_for(ctx, enhanced):
                    written += 1
                    ds.save_as(folder / f"{prefix}{written:05d}.dcm", enforce_file_format=True)
                    if bar is not None:
                        bar.update(int(getattr(ds, "NumberOfFrames", 1) or 1))
            except (ConversionError, ValueError, OSError) as exc:
                failed += 1
                print(f"FAILED {scan_id}: conversion failed: {exc}", file=out)
                continue
            finally:
                if bar is not None:
                    bar.close()
            converted += 1
            files += written
            print(f"converted {scan_id}: {written} file(s) in {folder}", file=out)
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=out)
        return EXIT_NOTHING
    print(f"summary: {converted} scan(s) converted into {files} file(s), {failed} failed", file=out)
    return _exit_code(converted, failed)


def _safe_name(scan_id: str) -> str:
    return scan_id.replace("/pdata/", "_P").replace("/", "_").replace("..", "_")


def _source() -> Any:
    """The archive's Source for Bruker imports; a namespace until the core provides it."""
    try:
        from dopamine_py.archive import Source  # type: ignore[import-not-found]
    except ImportError:
        return SimpleNamespace(protocol="bruker", calling_aet=None, user=None, peer=None)
    return Source(protocol="bruker", calling_aet=None, user=None, peer=None)


def import_command(path: str, archive: Any, enhanced: bool = False, out: TextIO = sys.stdout) -> int:
    """Convert and store into ``archive`` (anything with ``store_dataset(ds, source)``)."""
    source = _source()
    counts = {"stored": 0, "duplicate": 0, "rejected": 0, "failed": 0}
    problems: list[str] = []
    scans_ok = scans_failed = 0
    try:
        for scan_id, ctx, error in iter_scans(path):
            if ctx is None:
                scans_failed += 1
                problems.append(f"{scan_id}: {error}")
                print(f"FAILED {scan_id}: {error}", file=out)
                continue
            bar = _progress(len(ctx.frames), out, scan_id)
            scan_counts = dict.fromkeys(counts, 0)
            try:
                for ds in datasets_for(ctx, enhanced):
                    result = archive.store_dataset(ds, source)
                    status = getattr(result, "status", "failed")
                    status = status if status in counts else "failed"
                    scan_counts[status] += 1
                    if status in ("rejected", "failed"):
                        reason = getattr(result, "reason", None) or "no reason given"
                        problems.append(f"{scan_id}: {ds.SOPInstanceUID} {status}: {reason}")
                    if bar is not None:
                        bar.update(int(getattr(ds, "NumberOfFrames", 1) or 1))
            except (ConversionError, ValueError, OSError) as exc:
                scans_failed += 1
                problems.append(f"{scan_id}: conversion failed: {exc}")
                print(f"FAILED {scan_id}: conversion failed: {exc}", file=out)
                continue
            finally:
                if bar is not None:
                    bar.close()
            for key, value in scan_counts.items():
                counts[key] += value
            if scan_counts["stored"] + scan_counts["duplicate"]:
                scans_ok += 1
            else:
                scans_failed += 1
            print(
                f"imported {scan_id}: {scan_counts['stored']} stored, {scan_counts['duplicate']} duplicate(s), "
                f"{scan_counts['rejected'] + scan_counts['failed']} failure(s)",
                file=out,
            )
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=out)
        return EXIT_NOTHING
    failures = counts["rejected"] + counts["failed"]
    print(
        f"summary: {counts['stored']} stored, {counts['duplicate']} duplicate(s), {failures} failure(s); "
        f"{scans_ok} scan(s) imported, {scans_failed} scan(s) failed",
        file=out,
    )
    for problem in problems:
        print(f"  - {problem}", file=out)
    return _exit_code(scans_ok, scans_failed or failures)
