"""MR Image Storage: one single-frame instance per output frame."""

from __future__ import annotations

from typing import Iterator

import numpy as np
from pydicom.dataset import Dataset
from pydicom.uid import MRImageStorage

from . import acquisition
from .common import base_dataset, clip, finish, set_image_pixel
from .context import ScanContext, instance_uid
from .frames import Frame

__all__ = ["mr_image_datasets"]


def ds_number(value: float) -> str:
    """A DS string: at most 16 characters."""
    text = f"{value:.10g}"
    return text if len(text) <= 16 else f"{value:.6g}"


def mr_image_datasets(ctx: ScanContext) -> Iterator[Dataset]:
    """Datasets one at a time: only one frame's pixels are in memory at once."""
    base = base_dataset(ctx)
    acq = ctx.acq
    base.ImageType = ["ORIGINAL", "PRIMARY", "OTHER"]
    # Laterality is unknown for a ParaVision scan; "U" says so explicitly.
    base.ImageLaterality = "U"
    base.ScanningSequence = acquisition.scanning_sequence(acq)
    base.SequenceVariant = ["NONE"]
    base.ScanOptions = ""
    base.MRAcquisitionType = "3D" if acq["spatial_dim"] == 3 else "2D"
    base.SequenceName = clip(acq["sequence_name"], 16)
    base.EchoTrainLength = int(acq["echo_train_length"]) if acq["echo_train_length"] else None
    if acq["flip_angle"] is not None:
        base.FlipAngle = ds_number(acq["flip_angle"])
    if acq["imaging_frequency"] is not None:
        base.ImagingFrequency = ds_number(acq["imaging_frequency"])
    if acq["field_strength"] is not None:
        base.MagneticFieldStrength = ds_number(acq["field_strength"])
    if acq["nucleus"]:
        base.ImagedNucleus = clip(acq["nucleus"], 16)
    if acq["averages"] is not None:
        base.NumberOfAverages = ds_number(acq["averages"])
    if acq["pixel_bandwidth"] is not None:
        base.PixelBandwidth = ds_number(acq["pixel_bandwidth"])
    layout = ctx.layout
    set_image_pixel(base, ctx)
    base.PixelSpacing = [ds_number(v) for v in layout.pixel_spacing]
    if layout.is_3d and layout.slice_spacing:
        base.SpacingBetweenSlices = ds_number(layout.slice_spacing)
    for number, frame in enumerate(ctx.frames, start=1):
        yield _instance(ctx, base, frame, number)


def _instance(ctx: ScanContext, base: Dataset, frame: Frame, number: int) -> Dataset:
    ds = Dataset()
    ds.update(base)
    ds.InstanceNumber = number
    ds.ImageOrientationPatient = [ds_number(v) for v in frame.orientation[:2].ravel()]
    ds.ImagePositionPatient = [ds_number(v) for v in frame.position]
    ds.SliceThickness = ds_number(ctx.layout.slice_thickness[frame.param_volume])
    ds.SliceLocation = ds_number(float(np.dot(frame.position, frame.orientation[2])))
    tr = acquisition.repetition_time(ctx.layout, frame, ctx.params)
    ds.RepetitionTime = ds_number(tr) if tr is not None else None
    te = acquisition.echo_time(ctx.layout, frame, ctx.params)
    ds.EchoTime = ds_number(te) if te is not None else None
    ti = acquisition.inversion_time(ctx.layout, frame, ctx.params)
    if ti is not None:
        ds.InversionTime = ds_number(ti)
    diff = acquisition.diffusion(ctx.layout, frame, ctx.params)
    if diff is not None:
        ds.DiffusionBValue = diff["b_value"]
        if diff["direction"] is not None:
            ds.DiffusionGradientOrientation = [float(v) for v in diff["direction"]]
    slope = float(ctx.value(frame, "VisuCoreDataSlope", 1.0) or 1.0)
    offset = float(ctx.value(frame, "VisuCoreDataOffs", 0.0) or 0.0)
    stored = ctx.pixels.stored(frame.disk_index, slope, offset)
    if stored.slope != 1.0 or stored.intercept != 0.0:
        ds.RescaleIntercept = ds_number(stored.intercept)
        ds.RescaleSlope = ds_number(stored.slope)
        ds.RescaleType = "US"  # ParaVision's scale is in arbitrary units
    ds.PixelData = stored.pixels.astype(stored.pixels.dtype.newbyteorder("<"), copy=False).tobytes()
    ds.WindowCenter, ds.WindowWidth = _window(stored)
    return finish(ds, MRImageStorage, instance_uid(ctx, "mr", frame.disk_index))


def _window(stored) -> tuple[str, str]:
    real = stored.pixels.astype(np.float64) * stored.slope + stored.intercept
    low, high = float(real.min()), float(real.max())
    return ds_number((low + high) / 2), ds_number(max(high - low, 1.0))
