"""DICOM files (PS3.10) around data sets received or sent over the network, without parsing them."""

from __future__ import annotations

import io
import struct
from typing import BinaryIO

from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filewriter import dcmwrite
from pydicom.tag import BaseTag

PREAMBLE = b"\0" * 128 + b"DICM"
PADDING = " \0"
# Explicit VRs whose elements have a 4-byte length (after 2 reserved bytes), PS3.5 7.1.2
LONG_LENGTH_VRS = frozenset({b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"})


def encode_part10(ds: Dataset) -> bytes:
    """A data set (with its File Meta Information) as a Part 10 file, as ``dcmwrite(...,
    enforce_file_format=True)`` writes it."""
    buffer = io.BytesIO()
    dcmwrite(buffer, ds, enforce_file_format=True)
    return buffer.getvalue()


def _element(element: int, vr: bytes, value: bytes) -> bytes:
    if len(value) % 2:
        value += b" " if vr in (b"SH", b"AE") else b"\0"
    if vr == b"OB":
        return struct.pack("<HH2sHI", 2, element, vr, 0, len(value)) + value
    return struct.pack("<HH2sH", 2, element, vr, len(value)) + value


def file_header(sop_class: str, sop_instance: str, transfer_syntax: str, *, implementation_class_uid: str,
                implementation_version: str, source_aet: str = "") -> bytes:
    """Preamble and File Meta Information for a data set received as it is (PS3.10 7.1). The values are
    written without the padding they may come with (an AE title padded with NULs, a UID with a NUL): a
    reader of the file, ``file_meta`` included, takes the bytes as they are."""
    elements = (_element(0x0001, b"OB", b"\0\1")
                + _element(0x0002, b"UI", sop_class.strip(PADDING).encode())
                + _element(0x0003, b"UI", sop_instance.strip(PADDING).encode())
                + _element(0x0010, b"UI", transfer_syntax.strip(PADDING).encode())
                + _element(0x0012, b"UI", implementation_class_uid.encode())
                + _element(0x0013, b"SH", implementation_version.encode()))
    source_aet = source_aet.strip(PADDING)
    if source_aet:
        elements += _element(0x0016, b"AE", source_aet.encode("ascii", "replace"))
    return PREAMBLE + _element(0x0000, b"UL", struct.pack("<I", len(elements))) + elements


def skip_file_meta(stream: BinaryIO) -> None:
    """Position a Part 10 stream on its data set (after the preamble and the group 0002 elements)."""
    if stream.read(132)[128:] != b"DICM":
        raise ValueError("not a DICOM file: no DICM prefix")
    while True:
        start = stream.tell()
        head = stream.read(8)
        if len(head) < 8 or struct.unpack_from("<H", head)[0] != 0x0002:
            stream.seek(start)
            return
        vr = head[4:6]
        if vr in LONG_LENGTH_VRS:
            length = struct.unpack("<I", stream.read(4))[0]
        else:
            length = struct.unpack_from("<H", head, 6)[0]
        stream.seek(length, 1)


def file_meta(header: bytes) -> FileMetaDataset:
    """The File Meta Information of a header made by ``file_header`` (explicit VR little endian, group 0002
    only), without pydicom's file reader: it is rebuilt for every data set received. Its elements are
    encoded, as pydicom's reader leaves them: decoded when read, copied as they are when written."""
    elements = {}
    offset = len(PREAMBLE)
    while offset < len(header):
        element, vr = struct.unpack_from("<2xH2s", header, offset)
        if vr in LONG_LENGTH_VRS:
            length = struct.unpack_from("<I", header, offset + 8)[0]
            offset += 12
        else:
            length = struct.unpack_from("<H", header, offset + 6)[0]
            offset += 8
        tag = BaseTag(0x00020000 | element)
        elements[tag] = RawDataElement(tag, vr.decode(), length, header[offset:offset + length], offset,
                                       False, True, True, False)
        offset += length
    meta = FileMetaDataset(elements)
    meta.set_original_encoding(False, True, "iso8859")  # as pydicom's reader marks a meta group it read
    return meta
