"""Small synthetic DICOM instances for tests."""

from __future__ import annotations

import io

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, MRImageStorage, generate_uid

SOP_CLASS_BY_MODALITY = {"CT": CTImageStorage, "MR": MRImageStorage}


def make_dataset(*, patient_id="P1", patient_name="Doe^Jane", study_uid=None, series_uid=None, sop_uid=None,
                 modality="CT", rows=8, columns=8, pixel_bytes: bytes | None = None, **attributes) -> Dataset:
    ds = Dataset()
    ds.SOPClassUID = SOP_CLASS_BY_MODALITY.get(modality, CTImageStorage)
    ds.SOPInstanceUID = sop_uid or generate_uid()
    ds.StudyInstanceUID = study_uid or generate_uid()
    ds.SeriesInstanceUID = series_uid or generate_uid()
    ds.PatientID = patient_id
    ds.PatientName = patient_name
    ds.Modality = modality
    ds.StudyDate = attributes.pop("StudyDate", "20240101")
    ds.StudyTime = attributes.pop("StudyTime", "120000")
    ds.SeriesNumber = attributes.pop("SeriesNumber", 1)
    ds.InstanceNumber = attributes.pop("InstanceNumber", 1)
    for keyword, value in attributes.items():
        setattr(ds, keyword, value)
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    if pixel_bytes is None:
        ds.Rows, ds.Columns = rows, columns
        pixel_bytes = np.arange(rows * columns, dtype="<u2").tobytes()
    else:
        ds.Rows = rows
        ds.Columns = len(pixel_bytes) // (2 * rows)
    ds.PixelData = pixel_bytes
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    return ds


def encode(ds: Dataset) -> bytes:
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def make_file(path, **kwargs) -> Dataset:
    ds = make_dataset(**kwargs)
    ds.save_as(path, enforce_file_format=True)
    return ds
