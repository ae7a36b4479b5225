"""Writers for small synthetic ParaVision data sets (PV 6, 7 and 360 syntax).

Tests build their inputs with these into ``tmp_path``; no binary blob is
committed.  Values are written the way ParaVision writes them: shapes on the
``##$`` line, values on the next lines wrapped at 72 columns, character
arrays as ``( 65 )`` + ``<text>``, and (PV 6 and later) run-length encoding
``@N*(v)`` for repeated values.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

VERSIONS = {"6": "6.0.1", "7": "7.0.0", "360": "360.3.3"}


class Sym(str):
    """An enum value, written bare."""


def _format_scalar(value: Any) -> str:
    if isinstance(value, Sym):
        return str(value)
    if isinstance(value, str):
        return "<" + value.replace("\\", "\\\\").replace(">", "\\>").replace("<", "\\<") + ">"
    if isinstance(value, tuple):
        return "(" + ", ".join(_format_scalar(v) for v in value) + ")"
    if isinstance(value, (bool, np.bool_)):
        return "Yes" if value else "No"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    return repr(float(value))


def _wrap(tokens: list[str], width: int = 72) -> str:
    lines, line = [], ""
    for token in tokens:
        if line and len(line) + 1 + len(token) > width:
            lines.append(line)
            line = token
        else:
            line = f"{line} {token}" if line else token
    lines.append(line)
    return "\n".join(lines)


def _run_length(tokens: list[str]) -> list[str]:
    out: list[str] = []
    i = 0
    while i < len(tokens):
        j = i
        while j < len(tokens) and tokens[j] == tokens[i]:
            j += 1
        out.append(f"@{j - i}*({tokens[i]})" if j - i > 2 else " ".join(tokens[i:j]))
        i = j
    return out


def format_parameter(name: str, value: Any, run_length: bool) -> str:
    if isinstance(value, str) and not isinstance(value, Sym):
        return f"##${name}=( {max(65, len(value) + 1)} )\n{_format_scalar(value)}"
    if isinstance(value, list) and value and all(isinstance(v, str) and not isinstance(v, Sym) for v in value):
        return f"##${name}=( {len(value)}, 65 )\n" + _wrap([_format_scalar(v) for v in value])
    if isinstance(value, (list, np.ndarray)):
        array = np.asarray(value, dtype=object if isinstance(value, list) else None)
        shape = array.shape if not isinstance(value, list) else (len(value),)
        items = list(value) if isinstance(value, list) else list(array.ravel())
        tokens = [_format_scalar(v) for v in items]
        if run_length:
            tokens = _run_length(tokens)
        dims = ", ".join(str(d) for d in shape)
        return f"##${name}=( {dims} )\n" + _wrap(tokens)
    return f"##${name}={_format_scalar(value)}"


def write_params(path: Path, params: dict[str, Any], version: str = "360", kind: str = "visu_pars") -> None:
    pv = VERSIONS[version]
    lines = [
        f"##TITLE=Parameter List, ParaVision {pv}",
        "##JCAMPDX=4.24",
        "##DATATYPE=Parameter Values",
        "##ORIGIN=Bruker BioSpin MRI GmbH",
        "##OWNER=nmrsu",
        "$$ 2021-03-04 10:15:22.123 +0100  nmrsu",
        f"$$ /opt/PV-{pv}/data/nmrsu/synthetic/{kind}",
    ]
    for name, value in params.items():
        lines.append(format_parameter(name, value, run_length=version != "5"))
    lines.append("##END=")
    path.write_bytes(("\n".join(lines) + "\n").encode("latin-1"))


@dataclass
class Scan:
    """A synthetic reconstruction; ``data`` is in disk order: (frames, rows, columns)."""

    data: np.ndarray
    word_type: str = "_16BIT_SGN_INT"
    byte_order: str = "littleEndian"
    dim: int = 2
    size: tuple[int, ...] | None = None  # VisuCoreSize (x, y[, z]); from data if None
    extent: tuple[float, ...] | None = None
    frame_groups: list[tuple[int, str, str, int, int]] = field(default_factory=list)
    dep_vals: list[tuple[str, int]] = field(default_factory=list)
    orientation: np.ndarray | None = None  # (n, 9)
    position: np.ndarray | None = None  # (n, 3)
    thickness: float = 1.0
    slope: float | list[float] = 1.0
    offset: float | list[float] = 0.0
    extra: dict[str, Any] = field(default_factory=dict)
    method: dict[str, Any] = field(default_factory=dict)
    acqp: dict[str, Any] = field(default_factory=dict)
    version: str = "360"

    def visu_pars(self, expno: int, procno: int) -> dict[str, Any]:
        frames_on_disk, rows, columns = self.data.shape
        size = self.size or ((columns, rows, frames_on_disk) if self.dim == 3 else (columns, rows))
        volumes = frames_on_disk // (size[2] if self.dim == 3 else 1)
        extent = self.extent or tuple(float(s) for s in size)
        orientation = self.orientation if self.orientation is not None else np.tile(np.eye(3).ravel(), (volumes, 1))
        position = self.position if self.position is not None else np.zeros((volumes, 3))
        slopes = self.slope if isinstance(self.slope, list) else [self.slope] * volumes
        offsets = self.offset if isinstance(self.offset, list) else [self.offset] * volumes
        params: dict[str, Any] = {
            "VisuVersion": 3,
            "VisuUid": f"2.25.{1000 + expno}{procno}9",
            "VisuCreator": "ParaVision",
            "VisuCreatorVersion": VERSIONS[self.version],
            "VisuCreationDate": "2021-03-04T10:20:00,000+0100",
            "VisuCoreFrameCount": volumes,
            "VisuCoreDim": self.dim,
            "VisuCoreSize": np.array(size),
            "VisuCoreDimDesc": [Sym("spatial")] * self.dim,
            "VisuCoreExtent": np.array(extent),
            "VisuCoreFrameThickness": np.array([self.thickness]),
            "VisuCoreUnits": ["mm"] * self.dim,
            "VisuCoreOrientation": np.asarray(orientation, dtype=float).reshape(-1, 9),
            "VisuCorePosition": np.asarray(position, dtype=float).reshape(-1, 3),
            "VisuCoreDataOffs": np.array(offsets, dtype=float),
            "VisuCoreDataSlope": np.array(slopes, dtype=float),
            "VisuCoreFrameType": Sym("MAGNITUDE_IMAGE"),
            "VisuCoreWordType": Sym(self.word_type),
            "VisuCoreByteOrder": Sym(self.byte_order),
            "VisuCoreDiskSliceOrder": Sym("disk_normal_slice_order"),
        }
        if self.frame_groups:
            params["VisuFGOrderDescDim"] = len(self.frame_groups)
            params["VisuFGOrderDesc"] = [tuple(g) for g in self.frame_groups]
            params["VisuGroupDepVals"] = [tuple(d) for d in self.dep_vals]
        params.update(
            {
                "VisuSubjectName": "Mouse^Synthetic",
                "VisuSubjectId": "M-42",
                "VisuSubjectBirthDate": "2020-11-02",
                "VisuSubjectSex": Sym("MALE"),
                "VisuSubjectType": Sym("Quadruped"),
                "VisuSubjectWeight": 0.025,
                "VisuStudyUid": "2.25.1234567890",
                "VisuStudyDate": "2021-03-04T10:00:00,000+0100",
                "VisuStudyId": "1",
                "VisuStudyNumber": 1,
                "VisuExperimentNumber": expno,
                "VisuProcessingNumber": procno,
                "VisuSubjectPosition": Sym("Head_Prone"),
                "VisuAcqSoftwareVersion": VERSIONS[self.version],
                "VisuInstitution": "Synthetic Lab",
                "VisuStation": "BioSpec",
                "VisuAcqDate": "2021-03-04T10:15:00,500+0100",
                "VisuAcqSequenceName": "FLASH (pvm)",
                "VisuAcqEchoSequenceType": Sym("GradientEcho"),
                "VisuAcqImagingFrequency": 300.3,
                "VisuAcqImagedNucleus": "1H",
                "VisuAcqRepetitionTime": np.array([250.0]),
                "VisuAcqEchoTime": np.array([3.5]),
                "VisuAcqFlipAngle": 25.0,
                "VisuAcqNumberOfAverages": 2,
                "VisuAcquisitionProtocol": f"T1_FLASH_E{expno}",
                "VisuAcqScanTime": 64000,
                "VisuMagneticFieldStrength": 7.0,
            }
        )
        params.update(self.extra)
        # None in ``extra`` removes a parameter, as older ParaVision versions lack some.
        return {name: value for name, value in params.items() if value is not None}

    def write(self, study: Path, expno: int, procno: int = 1) -> Path:
        recon = study / str(expno) / "pdata" / str(procno)
        recon.mkdir(parents=True, exist_ok=True)
        write_params(recon / "visu_pars", self.visu_pars(expno, procno), self.version)
        kind = {"_8BIT_UNSGN_INT": "u1", "_8BIT_SGN_INT": "i1", "_16BIT_SGN_INT": "i2", "_16BIT_UNSGN_INT": "u2",
                "_32BIT_SGN_INT": "i4", "_32BIT_UNSGN_INT": "u4", "_32BIT_FLOAT": "f4"}.get(self.word_type, "i2")
        order = ">" if self.byte_order == "bigEndian" else "<"
        (recon / "2dseq").write_bytes(np.ascontiguousarray(self.data).astype(order + kind).tobytes())
        method = {"Method": Sym("Bruker:FLASH"), "PVM_EchoTime": 3.5, "PVM_RepetitionTime": 250.0}
        method.update(self.method)
        write_params(study / str(expno) / "method", method, self.version, "method")
        acqp = {"ACQ_flip_angle": 25.0, "BF1": 300.3}
        acqp.update(self.acqp)
        write_params(study / str(expno) / "acqp", acqp, self.version, "acqp")
        if not (study / "subject").exists():
            write_params(
                study / "subject",
                {"SUBJECT_id": "M-42", "SUBJECT_name_string": "Mouse^Synthetic", "SUBJECT_type": Sym("Quadruped")},
                self.version,
                "subject",
            )
        return recon


def ramp(frames: int, rows: int, columns: int, dtype: str = "i2", start: int = 0) -> np.ndarray:
    """Distinct values everywhere, so a swapped axis or frame shows up."""
    values = np.arange(frames * rows * columns, dtype=np.int64) + start
    return values.reshape(frames, rows, columns).astype(dtype)
