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

__all__ = ["collect", "echo_time", "diffusion", "gradient_to_patient", "PV_TO_PATIENT", "parse_datetime", "parse_date"]

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
        "spatial_dim": _spatial_dim(params, layout),
        "scan_time_ms": params.number("VisuAcqScanTime"),
        "encoding_order": _encoding_order(params),
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


def _spatial_dim(params: Parameters, layout: Layout) -> int:
    """2 or 3: how the scan was encoded (ACQ_dim, PVM_SpatDimEnum), which
    need not be how it is stored (VisuCoreDim, the last resort)."""
    dim = params.number("ACQ_dim")
    if dim in (2, 3):
        return int(dim)
    enum = params.text("PVM_SpatDimEnum").upper()
    if enum in ("2D", "3D"):
        return int(enum[0])
    return layout.dim


def _encoding_order(params: Parameters) -> str:
    """CENTRIC if any phase-encoding direction was encoded centrically.

    ``VisuAcqEncodingOrder`` has one entry per encoded dimension, the first
    being the read direction."""
    order = params.get("VisuAcqEncodingOrder")
    if order is not None:
        phase = [str(o) for o in np.atleast_1d(order).ravel()[1:]]
        return "CENTRIC" if any("CENTRIC" in o.upper() for o in phase) else "LINEAR"
    return params.text("ACQ_phase_encoding_mode")


def repetition_time(layout: Layout, frame: Frame, params: Parameters) -> float | None:
    """TR of one frame (ms): ``VisuAcqRepetitionTime`` varies by frame in
    variable-TR scans (e.g. RARE-VTR)."""
    return _per_frame(layout, frame, params, "VisuAcqRepetitionTime", "PVM_RepetitionTime", "ACQ_repetition_time")


def inversion_time(layout: Layout, frame: Frame, params: Parameters) -> float | None:
    """TI of one frame (ms), None without inversion."""
    value = _per_frame(layout, frame, params, "VisuAcqInversionTime", "PVM_InversionTime", "ACQ_inversion_time")
    return value if value is not None and value > 0 else None


def _per_frame(layout: Layout, frame: Frame, params: Parameters, visu: str, *fallbacks: str) -> float | None:
    value = layout.value(visu, frame.param_index, frame.param_volume)
    if value is None:
        return params.number(*fallbacks)
    return float(np.atleast_1d(value).ravel()[0])


def scanning_sequence(acq: dict[str, Any]) -> list[str]:
    kind = acq["echo_sequence"].lower()
    codes = []
    if "spin" in kind or kind == "both":
        codes.append("SE")
    if "gradient" in kind or kind == "both":
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


# ParaVision's own subject coordinates (x left->right, y posterior->anterior,
# z foot->head) against the DICOM/Visu ones (x right->left, y anterior->
# posterior, z foot->head): the first two axes are reversed.
PV_TO_PATIENT = np.diag([-1.0, -1.0, 1.0])
# How far (cosine) a gradient frame's slice axis may stray from the image
# normal and still be taken as the frame the image was acquired in.
_PARALLEL = 0.99


def diffusion(layout: Layout, frame: Frame, params: Parameters) -> dict[str, Any] | None:
    """b-value, direction and B-matrix of one frame in patient coordinates.

    The B-matrix (``VisuAcqDiffusionBMatrix``, which ParaVision's method
    toolbox fills from ``PVM_DwBMat``; ``PVM_DwBMat`` itself as fallback) is
    in the gradient frame of the acquisition: read, phase and slice.  The
    rows of the gradient orientation (``PVM_SPackArrGradOrient`` per slice
    package, or ``ACQ_grad_matrix`` per slice) are those axes in
    ParaVision's subject coordinates, which differ from DICOM's by
    :data:`PV_TO_PATIENT`.  With R = PV_TO_PATIENT @ G.T, a gradient vector
    g is R @ g in patient coordinates and a B-matrix becomes R @ B @ R.T.

    The b-value (the trace) does not depend on the frame.  When no gradient
    orientation matches the image plane, direction and B-matrix are None.
    """
    matrix = layout.value("VisuAcqDiffusionBMatrix", frame.param_index, frame.param_volume)
    if matrix is None:
        matrix = _method_diffusion(layout, frame, params, "PVM_DwBMat")
    if matrix is None:
        return None
    b_gradient = np.asarray(matrix, dtype=float).reshape(3, 3)
    b_gradient = (b_gradient + b_gradient.T) / 2
    b_value = float(np.trace(b_gradient))
    rotation = gradient_to_patient(params, frame.orientation[2])
    if rotation is None:
        return {"b_value": b_value, "direction": None, "b_matrix": None, "rotation_known": False}
    b = rotation @ b_gradient @ rotation.T
    direction = None
    if b_value > 1e-6:
        eigenvalues, eigenvectors = np.linalg.eigh(b)
        direction = eigenvectors[:, int(np.argmax(eigenvalues))]
        # Sign of an eigenvector is arbitrary: make the largest component positive.
        if direction[int(np.argmax(np.abs(direction)))] < 0:
            direction = -direction
    return {"b_value": b_value, "direction": direction, "b_matrix": b, "rotation_known": True}


def gradient_to_patient(params: Parameters, normal: np.ndarray) -> np.ndarray | None:
    """Rotation from (read, phase, slice) to patient coordinates for an image
    whose plane normal is ``normal``; None if no gradient frame fits it."""
    best, best_cosine = None, 0.0
    for name in ("PVM_SPackArrGradOrient", "ACQ_grad_matrix"):
        raw = params.get(name)
        if raw is None:
            continue
        try:
            candidates = np.asarray(raw, dtype=float).reshape(-1, 3, 3)
        except ValueError:
            continue
        for grad in candidates:
            rotation = PV_TO_PATIENT @ grad.T
            cosine = abs(float(np.dot(rotation[:, 2], normal)))
            if cosine > best_cosine:
                best, best_cosine = rotation, cosine
        if best is not None and best_cosine >= _PARALLEL:
            return best
    return None


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
