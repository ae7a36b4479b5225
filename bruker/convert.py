"""Library entry point: ParaVision path (study, scan, reconstruction or zip) -> DICOM datasets.

::

    for result in convert_path("study.zip", enhanced=True):
        if result.ok:
            for ds in result.datasets: ...
        else:
            print(result.scan_id, result.error)

A scan that cannot be converted yields a result with ``error`` set; the
others still convert.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from pydicom.dataset import Dataset

from .classic import mr_image_datasets
from .context import ConversionError, ScanContext, prepare
from .discovery import Reconstruction, ScanProblem, discover, opened
from .enhanced import enhanced_mr_dataset

__all__ = ["ConversionResult", "convert_path", "iter_scans", "datasets_for"]


@dataclass
class ConversionResult:
    scan_id: str  # "study/expno/pdata/procno"
    datasets: list[Dataset] = field(default_factory=list)
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def message(self) -> str:
        """One line naming the scan, for logs and HTTP responses."""
        if self.ok:
            return f"{self.scan_id}: {len(self.datasets)} dataset(s)"
        return f"{self.scan_id}: {self.error}"


def datasets_for(ctx: ScanContext, enhanced: bool = False) -> Iterator[Dataset]:
    """Datasets of one prepared reconstruction, produced lazily."""
    if enhanced:
        yield enhanced_mr_dataset(ctx)
    else:
        yield from mr_image_datasets(ctx)


def iter_scans(path: str | Path) -> Iterator[tuple[str, ScanContext | None, str | None]]:
    """``(scan_id, context, error)`` for each reconstruction under ``path``.

    The context is valid (its ``2dseq`` open) until the next item is
    requested; a zip is extracted for the duration of the iteration.
    """
    with opened(path) as (root, contained):
        for item in discover(root, contained):
            if isinstance(item, ScanProblem):
                yield item.scan_id, None, item.message
                continue
            try:
                ctx = prepare(item)
            except ConversionError as exc:
                yield item.scan_id, None, str(exc)
                continue
            yield item.scan_id, ctx, None


def convert_path(path: str | Path, enhanced: bool = False) -> Iterator[ConversionResult]:
    """One :class:`ConversionResult` per reconstruction (or problem scan) under ``path``."""
    for scan_id, ctx, error in iter_scans(path):
        if ctx is None:
            yield ConversionResult(scan_id, error=error)
            continue
        try:
            datasets = list(datasets_for(ctx, enhanced))
        except (ConversionError, ValueError, OSError) as exc:
            yield ConversionResult(scan_id, error=f"conversion failed: {exc}")
            continue
        yield ConversionResult(scan_id, datasets)


def convert_reconstruction(recon: Reconstruction, enhanced: bool = False) -> ConversionResult:
    try:
        return ConversionResult(recon.scan_id, list(datasets_for(prepare(recon), enhanced)))
    except ConversionError as exc:
        return ConversionResult(recon.scan_id, error=str(exc))
