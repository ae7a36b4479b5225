"""Pixel data of stored instances: frames as stored or decoded, and transcoding to uncompressed syntaxes.

Everything here reads one instance; none of it is asked to hold a whole study.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import BinaryIO

import numpy as np
from pydicom import dcmread
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.encaps import get_frame
from pydicom.pixels import get_decoder, pixel_array
from pydicom.uid import (
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)

PIXEL_DATA = 0x7FE00010
NATIVE = {ImplicitVRLittleEndian, ExplicitVRLittleEndian, ExplicitVRBigEndian, DeflatedExplicitVRLittleEndian}
# What we can write when asked for another transfer syntax than the stored one.
TRANSCODE_TARGETS = {ExplicitVRLittleEndian, ImplicitVRLittleEndian}

# Media types of compressed frames (PS3.18 Table 8.7.3-2 and -4).
FRAME_MEDIA_TYPES = {
    "1.2.840.10008.1.2.5": "image/dicom-rle",
    "1.2.840.10008.1.2.4.50": "image/jpeg",
    "1.2.840.10008.1.2.4.51": "image/jpeg",
    "1.2.840.10008.1.2.4.57": "image/jpeg",
    "1.2.840.10008.1.2.4.70": "image/jpeg",
    "1.2.840.10008.1.2.4.80": "image/jls",
    "1.2.840.10008.1.2.4.81": "image/jls",
    "1.2.840.10008.1.2.4.90": "image/jp2",
    "1.2.840.10008.1.2.4.91": "image/jp2",
    "1.2.840.10008.1.2.4.92": "image/jpx",
    "1.2.840.10008.1.2.4.93": "image/jpx",
    "1.2.840.10008.1.2.4.201": "image/jphc",
    "1.2.840.10008.1.2.4.202": "image/jphc",
    "1.2.840.10008.1.2.4.203": "image/jphc",
    "1.2.840.10008.1.2.4.100": "video/mpeg2",
    "1.2.840.10008.1.2.4.101": "video/mpeg2",
    "1.2.840.10008.1.2.4.102": "video/mp4",
    "1.2.840.10008.1.2.4.103": "video/mp4",
    "1.2.840.10008.1.2.4.104": "video/mp4",
    "1.2.840.10008.1.2.4.105": "video/mp4",
    "1.2.840.10008.1.2.4.106": "video/mp4",
}


class PixelError(ValueError):
    """Pixel data that cannot be served the way it was asked for."""


def can_decode(transfer_syntax: str) -> bool:
    if transfer_syntax in NATIVE:
        return True
    try:
        return get_decoder(transfer_syntax).is_available
    except (NotImplementedError, ValueError):
        return False


def can_transcode(stored: str, wanted: str) -> bool:
    """Whether an instance stored in ``stored`` can be sent in ``wanted`` ("*" is whatever is stored)."""
    if wanted in ("*", stored):
        return True
    if wanted not in TRANSCODE_TARGETS:
        return False
    # Big endian pixel data would need swapping that pydicom does not do on writing; refuse rather than corrupt.
    return stored != ExplicitVRBigEndian and can_decode(stored)


def transcode(f: BinaryIO, wanted: str) -> bytes:
    """The instance re-encoded in an uncompressed little endian transfer syntax, as a Part 10 file."""
    ds = dcmread(f)
    if UID(ds.file_meta.TransferSyntaxUID).is_compressed and PIXEL_DATA in ds:
        ds.decompress()  # to Explicit VR Little Endian, colour converted to RGB where the codec says so
    ds.file_meta.TransferSyntaxUID = wanted
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True, implicit_vr=wanted == ImplicitVRLittleEndian, little_endian=True)
    return buffer.getvalue()


@dataclass
class FrameSource:
    """The frames of one stored instance, read from its original without loading the whole Pixel Data."""

    f: BinaryIO
    ds: Dataset
    transfer_syntax: str

    @classmethod
    def open(cls, f: BinaryIO) -> "FrameSource":
        ds = dcmread(f, defer_size=256)
        if PIXEL_DATA not in ds:
            raise PixelError("this instance has no Pixel Data")
        return cls(f, ds, str(ds.file_meta.TransferSyntaxUID))

    @property
    def number_of_frames(self) -> int:
        try:
            return max(int(self.ds.get("NumberOfFrames", 1) or 1), 1)
        except (TypeError, ValueError):
            return 1

    @property
    def is_native(self) -> bool:
        return self.transfer_syntax in NATIVE

    @property
    def stored_media_type(self) -> str:
        return "application/octet-stream" if self.is_native else FRAME_MEDIA_TYPES.get(self.transfer_syntax, "application/octet-stream")

    def check(self, number: int) -> None:
        if not 1 <= number <= self.number_of_frames:
            raise PixelError(f"frame {number} does not exist: the instance has {self.number_of_frames} frame(s)")

    def _pixel_offset(self) -> tuple[int, int]:
        raw = self.ds.get_item(PIXEL_DATA)
        if isinstance(raw, RawDataElement) and raw.value is None:
            return raw.value_tell, raw.length
        return -1, -1  # already read into memory (small data set)

    def stored_frame(self, number: int) -> bytes:
        """A frame as stored: compressed bytes for encapsulated data, little endian pixels for native."""
        self.check(number)
        if not self.is_native:
            offset, _ = self._pixel_offset()
            if offset >= 0:
                self.f.seek(offset)
                return get_frame(self.f, number - 1, number_of_frames=self.number_of_frames)
            return get_frame(self.ds.PixelData, number - 1, number_of_frames=self.number_of_frames)
        return self._native_frame(number)

    def _native_frame(self, number: int) -> bytes:
        if self.transfer_syntax == DeflatedExplicitVRLittleEndian or int(self.ds.BitsAllocated) == 1:
            return self.decoded_frame(number)
        bits = int(self.ds.BitsAllocated)
        length = int(self.ds.Rows) * int(self.ds.Columns) * int(self.ds.get("SamplesPerPixel", 1)) * bits // 8
        offset, _ = self._pixel_offset()
        if offset >= 0:
            self.f.seek(offset + (number - 1) * length)
            data = self.f.read(length)
        else:
            data = bytes(self.ds.PixelData[(number - 1) * length: number * length])
        if len(data) != length:
            raise PixelError(f"frame {number} is truncated in the stored Pixel Data")
        if self.transfer_syntax == ExplicitVRBigEndian and bits > 8:
            data = np.frombuffer(data, dtype=f">u{bits // 8}").astype(f"<u{bits // 8}").tobytes()
        return data

    def decoded_frame(self, number: int) -> bytes:
        """A frame as uncompressed little endian pixels (Explicit VR Little Endian), decoding if needed."""
        self.check(number)
        if self.is_native and self.transfer_syntax != DeflatedExplicitVRLittleEndian and int(self.ds.BitsAllocated) != 1:
            return self._native_frame(number)
        array = self.array(number)
        if int(self.ds.BitsAllocated) == 1:
            return np.packbits(array.astype(np.uint8).ravel(), bitorder="little").tobytes()
        return np.ascontiguousarray(array).astype(array.dtype.newbyteorder("<")).tobytes()

    def array(self, number: int) -> np.ndarray:
        self.check(number)
        if not can_decode(self.transfer_syntax):
            raise PixelError(f"no decoder here for transfer syntax {self.transfer_syntax}")
        self.f.seek(0)
        try:
            return pixel_array(self.f, index=number - 1)
        except Exception as exc:  # codecs raise many types for damaged data
            raise PixelError(f"cannot decode frame {number}: {type(exc).__name__}: {exc}") from None
