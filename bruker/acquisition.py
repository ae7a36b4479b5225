"""Acquisition parameters: ``visu_pars`` first, ``method``/``acqp`` as fallbacks.

Values are returned in DICOM units (ms, degrees, MHz, T, s/mm²).  Per-frame
values (echo time, diffusion) are looked up through the frame layout.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

import numpy as np

from .frames import Frame, Layout
from .params import Parameters

__all__ = ["collect", "echo_time", "diffusion", "parse_datetime", "parse_date"]

# Larmor frequency of 1H in MHz/T: turns the 1H base frequency into a field strength.
_GAMMA_1H = 42.577478518


def collect(params: Parameters, layout: Layout) -> dict[str, Any]:
    acq: dict[str, Any] = {
        "repetition_time": params.number("VisuAcqRepetitionTime", "PVM_RepetitionTime", "ACQ_repetition_time"),
        "inversion_time": params.number("VisuAcqInversionTime", "PVM_InversionTime", "ACQ_inversion_time"),
        "flip_angle": params.number("VisuAcqFlipAngle", "ACQ_flip_angle"),
        "imaging_frequency": params.number("VisuAcqImagingFrequency", "SFO1", "BF1"),
        "nucleus": params.text("VisuAcqImagedNucleus", "PVM_Nucleus1", "NUC1"),
        "sequence_name": params.text("VisuAcqSequenceName", "Method", "PULPROG"),
        "averages": params.number("VisuAcqNumberOfAverages", "PVM_NAverages", "NA"),
        "echo_train_length": params.number("VisuAcqEchoTrainLength", "PVM_RareFactor", "ACQ_rare_factor"),
        "pixel_bandwidth": params.number("VisuAcqPixelBandwidth"),
        "phase_steps": params.number("VisuAcqPhaseEncSteps"),
        "echo_sequence": params.text("VisuAcqEchoSequenceType"),
        "protocol": params.text("VisuAcquisitionProtocol", "ACQ_protocol_name", "ACQ_scan_name"),
        "spatial_dim": int(params.number("VisuAcqSpatialDim", "ACQ_dim", default=layout.dim) or layout.dim),
        "scan_time_ms": params.number("VisuAcqScanTime"),
        "encoding_order": params.text("PVM_EncOrder1", "ACQ_phase_encoding_mode"),
    }
    strength = params.number("VisuMagneticFieldStrength")
    if strength is None:
        base = params.number("BF1")
        nucleus = acq["nucleus"] or "1H"
        if base is None and nucleus == "1H":
            base = acq["imaging_frequency"]
        if base is not None and nucleus == "1H":
            strength = round(base / _GAMMA_1H, 3)
    acq["field_strength"] = strength
    if acq["inversion_time"] is not None and acq["inversion_time"] <= 0:
        acq["inversion_time"] = None
    return acq


def scanning_sequence(acq: dict[str, Any]) -> list[str]:
    kind = acq["echo_sequence"].lower()
    codes = []
    if "spin" in kind:
        codes.append("SE")
    elif "gradient" in kind:
        codes.append("GR")
    if acq["inversion_time"]:
        codes.append("IR")
    if "epi" in acq["sequence_name"].lower():
        codes.append("EP")
    # "RM" (research mode) for sequences ParaVision does not classify.
    return codes or ["RM"]


def echo_time(layout: Layout, frame: Frame, params: Parameters) -> float | None:
    value = layout.value("VisuAcqEchoTime", frame.param_index, frame.param_volume)
    if value is None:
        return params.number("PVM_EchoTime", "ACQ_echo_time")
    return float(np.atleast_1d(value).ravel()[0])


def diffusion(layout: Layout, frame: Frame, params: Parameters) -> dict[str, Any] | None:
    """b-value, direction and B-matrix of one frame in patient coordinates.

    ParaVision gives the B-matrix (``VisuAcqDiffusionBMatrix``, per
    diffusion frame; ``PVM_DwBMat`` in ``method`` as fallback) in the image
    frame of the scan, whose axes are the rows of ``VisuCoreOrientation``.
    With O those rows, a vector g in that frame is ``O.T @ g`` in patient
    coordinates and a B-matrix becomes ``O.T @ B @ O``.
    """
    matrix = layout.value("VisuAcqDiffusionBMatrix", frame.param_index, frame.param_volume)
    if matrix is None:
        matrix = _method_diffusion(layout, frame, params, "PVM_DwBMat")
    if matrix is None:
        return None
    b_local = np.asarray(matrix, dtype=float).reshape(3, 3)
    o = frame.orientation
    b = o.T @ b_local @ o
    b = (b + b.T) / 2
    b_value = float(np.trace(b))
    direction = None
    if b_value > 1e-6:
        eigenvalues, eigenvectors = np.linalg.eigh(b)
        direction = eigenvectors[:, int(np.argmax(eigenvalues))]
        # Sign of an eigenvector is arbitrary: make the largest component positive.
        if direction[int(np.argmax(np.abs(direction)))] < 0:
            direction = -direction
    return {"b_value": b_value, "direction": direction, "b_matrix": b}


def _method_diffusion(layout: Layout, frame: Frame, params: Parameters, name: str) -> Any:
    raw = params.get(name)
    if raw is None:
        return None
    raw = np.asarray(raw, dtype=float).reshape(-1, 9)
    group = next((i for i, g in enumerate(layout.groups) if g.name == "FG_DIFFUSION"), None)
    index = frame.param_index[group] if group is not None else frame.param_volume
    return raw[index] if index < len(raw) else None


_PV5 = re.compile(r"^(\d{1,2}):(\d{2}):(\d{2})\s+(\d{1,2})\s+([A-Za-z]{3})\w*\s+(\d{4})$")
_ISO = re.compile(r"^(\d{4})-(\d{2})-(\d{2})[T ](\d{2}):(\d{2}):(\d{2})(?:[.,](\d+))?")


def parse_datetime(text: str) -> datetime | None:
    """ParaVision 5 ``11:59:49  5 Nov 2013`` or PV 6+ ``2013-11-05T11:59:49,123+0100``."""
    text = " ".join(str(text or "").split())
    match = _ISO.match(text)
    if match:
        y, mo, d, h, mi, s, frac = match.groups()
        micro = int((frac or "0")[:6].ljust(6, "0"))
        return datetime(int(y), int(mo), int(d), int(h), int(mi), int(s), micro)
    match = _PV5.match(text)
    if match:
        h, mi, s, d, mon, y = match.groups()
        try:
            return datetime.strptime(f"{y} {mon.title()} {d} {h} {mi} {s}", "%Y %b %d %H %M %S")
        except ValueError:
            return None
    return None


def parse_date(text: str) -> str:
    """A birth date in any ParaVision spelling as DICOM DA, or ''."""
    text = " ".join(str(text or "").split())
    for fmt in ("%d %b %Y", "%Y-%m-%d", "%Y%m%d", "%d.%m.%Y"):
        try:
            return datetime.strptime(text, fmt).strftime("%Y%m%d")
        except ValueError:
            continue
    stamp = parse_datetime(text)
    return stamp.strftime("%Y%m%d") if stamp else ""


def dicom_date_time(text: str) -> tuple[str, str]:
    stamp = parse_datetime(text)
    if stamp is None:
        return "", ""
    return stamp.strftime("%Y%m%d"), stamp.strftime("%H%M%S") + (f".{stamp.microsecond:06d}" if stamp.microsecond else "")
