"""Reading ``2dseq`` frames and turning them into 16-bit DICOM pixels.

MR and Enhanced MR images hold 16-bit (or 8-bit) integers, so 8- and 16-bit
data pass through unchanged, while 32-bit integers that do not fit and
floating-point data are remapped linearly onto int16 with a per-frame
slope/intercept.  ParaVision's own ``VisuCoreDataSlope``/``VisuCoreDataOffs``
(real value = slope * stored + offset) are folded into the same mapping.

The file is memory-mapped and read one slice at a time, so a large ``2dseq``
is never loaded whole.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["WORD_TYPES", "PixelError", "PixelSource", "StoredFrame", "open_pixels"]

# ParaVision word type -> numpy kind (byte order added from VisuCoreByteOrder).
WORD_TYPES = {
    "_8BIT_UNSGN_INT": "u1",
    "_8BIT_SGN_INT": "i1",
    "_16BIT_SGN_INT": "i2",
    "_16BIT_UNSGN_INT": "u2",
    "_32BIT_SGN_INT": "i4",
    "_32BIT_UNSGN_INT": "u4",
    "_32BIT_FLOAT": "f4",
    "_64BIT_FLOAT": "f8",
}

_INT16_MAX = 32767


class PixelError(ValueError):
    """Pixel data that cannot be read as described by the parameters."""


@dataclass
class StoredFrame:
    """One slice ready for DICOM: stored values and the map to real values."""

    pixels: np.ndarray  # rows x columns, int16 or uint16, native byte order
    slope: float  # real value = slope * stored + intercept
    intercept: float


class PixelSource:
    """Slices of one ``2dseq`` in disk order."""

    def __init__(self, path: Path, dtype: np.dtype, rows: int, columns: int, slices: int) -> None:
        self.path = path
        self.dtype = dtype
        self.rows = rows
        self.columns = columns
        self.slices = slices
        self._map = np.memmap(path, dtype=dtype, mode="r", shape=(slices, rows, columns))

    @property
    def signed_output(self) -> bool:
        """Whether stored values are signed (DICOM PixelRepresentation 1)."""
        return self.dtype.kind != "u" or self.dtype.itemsize > 2

    def raw(self, index: int) -> np.ndarray:
        """The slice as written by ParaVision (a view into the file)."""
        return self._map[index]

    def stored(self, index: int, data_slope: float = 1.0, data_offset: float = 0.0) -> StoredFrame:
        raw = self.raw(index)
        kind, size = self.dtype.kind, self.dtype.itemsize
        if size <= 2 and kind in "iu":
            target = np.int16 if kind == "i" else np.uint16
            return StoredFrame(raw.astype(target), float(data_slope), float(data_offset))
        values = np.asarray(raw, dtype=np.float64)
        values = np.where(np.isfinite(values), values, 0.0)
        low, high = float(values.min()), float(values.max())
        if kind in "iu" and low >= -_INT16_MAX and high <= _INT16_MAX:
            step, centre = 1.0, 0.0
        elif high == low:
            step, centre = 1.0, low
        else:
            step, centre = (high - low) / (2 * _INT16_MAX), (high + low) / 2
        stored = np.clip(np.rint((values - centre) / step), -_INT16_MAX, _INT16_MAX).astype(np.int16)
        return StoredFrame(stored, float(data_slope) * step, float(data_slope) * centre + float(data_offset))


def open_pixels(path: Path, word_type: str, byte_order: str, rows: int, columns: int, slices: int) -> PixelSource:
    """Check ``2dseq`` against the parameters and open it."""
    if word_type not in WORD_TYPES:
        raise PixelError(f"unknown word type {word_type!r} (VisuCoreWordType)")
    if not path.is_file():
        raise PixelError("missing 2dseq (no pixel data in this reconstruction)")
    order = {"littleEndian": "<", "bigEndian": ">"}.get(byte_order)
    if order is None:
        raise PixelError(f"unknown byte order {byte_order!r} (VisuCoreByteOrder)")
    dtype = np.dtype(order + WORD_TYPES[word_type])
    expected = rows * columns * slices * dtype.itemsize
    actual = path.stat().st_size
    if actual < expected:
        raise PixelError(f"truncated pixel data: 2dseq has {actual} bytes, the parameters describe {expected}")
    if actual > expected:
        raise PixelError(
            f"2dseq has {actual} bytes but the parameters describe {expected}: frame structure not understood"
        )
    return PixelSource(path, dtype, rows, columns, slices)
