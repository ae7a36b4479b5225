"""Everything about one reconstruction that both IOD builders need.

:func:`prepare` reads and checks a reconstruction up front (parameters,
frame layout, pixel file size), so a scan that cannot be converted fails
before any dataset is produced.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from pydicom.uid import UID, generate_uid

from . import acquisition
from .discovery import Reconstruction
from .frames import Frame, Layout, LayoutError, build_layout
from .jcamp import JcampError
from .params import Parameters, load_parameters
from .pixels import PixelError, PixelSource, open_pixels

__all__ = ["ScanContext", "ConversionError", "prepare", "valid_uid"]

_UID = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*$")


class ConversionError(ValueError):
    """A reconstruction that cannot be converted; the message says why."""


@dataclass
class ScanContext:
    recon: Reconstruction
    params: Parameters
    layout: Layout
    pixels: PixelSource
    study_uid: str
    series_uid: str
    frame_of_reference_uid: str
    series_number: int
    frames: list[Frame] = field(default_factory=list)
    acq: dict[str, Any] = field(default_factory=dict)

    def value(self, frame: Frame, name: str, default: Any = None) -> Any:
        return self.layout.value(name, frame.param_index, frame.param_volume, default)


def valid_uid(text: str) -> bool:
    return bool(text) and len(text) <= 64 and bool(_UID.match(text))


def prepare(recon: Reconstruction) -> ScanContext:
    """Read and check one reconstruction; raise :class:`ConversionError`."""
    if "visu_pars" not in recon.files:
        if not recon.pixel_file.is_file():
            raise ConversionError("missing 2dseq and visu_pars: not a reconstruction")
        raise ConversionError("missing visu_pars: cannot tell what 2dseq holds")
    try:
        params = load_parameters(recon.files)
        layout = build_layout(params)
        frame_type = params.text("VisuCoreFrameType")
        if "SPECTR" in frame_type.upper():
            raise LayoutError(f"not an image: VisuCoreFrameType={frame_type} (spectroscopy is not supported)")
        pixels = open_pixels(
            recon.pixel_file,
            params.text("VisuCoreWordType", "RECO_wordtype"),
            params.text("VisuCoreByteOrder", "RECO_byte_order", default="littleEndian"),
            layout.rows,
            layout.columns,
            layout.frame_count,
        )
        frames = list(layout.frames())
    except (JcampError, LayoutError, PixelError) as exc:
        raise ConversionError(str(exc)) from None
    study_uid = _uid_or_derived(params.text("VisuStudyUid", "SUBJECT_study_instance_uid"), params, recon, "study")
    series_uid = _uid_or_derived(params.text("VisuUid", "RECO_base_image_uid"), params, recon, "series")
    # ParaVision places every scan of a study in the same magnet coordinates,
    # so the frame of reference is derived from the study, never reused from
    # the series UID.
    frame_of_reference = generate_uid(entropy_srcs=[study_uid, "bruker-frame-of-reference"])
    context = ScanContext(
        recon, params, layout, pixels, study_uid, series_uid, frame_of_reference, _series_number(params, recon)
    )
    context.frames = frames
    context.acq = acquisition.collect(params, layout)
    return context


def _uid_or_derived(value: str, params: Parameters, recon: Reconstruction, what: str) -> str:
    if valid_uid(value):
        return value
    # Deterministic (no temporary paths), so converting the same scan twice,
    # from a folder or a zip, gives the same UIDs.
    stable = [params.text(n) for n in ("VisuSubjectId", "VisuStudyDate", "VisuStudyId")]
    keys = [what, value, *stable]
    if what == "series":
        keys += [params.text("VisuAcqDate"), recon.scan_id]
    return generate_uid(entropy_srcs=keys)


def _series_number(params: Parameters, recon: Reconstruction) -> int:
    """``expno * 1000 + procno``: ParaVision shows scans as E<expno>P<procno>."""
    expno = params.number("VisuExperimentNumber")
    procno = params.number("VisuProcessingNumber")
    packed = params.number("VisuSeriesNumber")
    if expno is None and packed is not None:
        # PV 5 packs both numbers into VisuSeriesNumber: expno << 16 | procno.
        expno, procno = int(packed) >> 16, int(packed) & 0xFFFF
    if expno is None and recon.expno and recon.expno.isdigit():
        expno = int(recon.expno)
    if procno is None and recon.procno and recon.procno.isdigit():
        procno = int(recon.procno)
    return int(expno or 0) * 1000 + int(procno or 1)


def instance_uid(context: ScanContext, *parts: Any) -> UID:
    """Same scan, same frame -> same SOP Instance UID, so re-imports are duplicates."""
    return generate_uid(entropy_srcs=[context.series_uid, *map(str, parts)])
