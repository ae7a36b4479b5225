"""The frame structure of a ``2dseq`` and the geometry of each frame.

ParaVision stores ``VisuCoreFrameCount`` frames of ``VisuCoreSize`` voxels.
A frame is 2D (one image) or 3D (a volume, split here into slices).  The
frames are organised in frame groups (``VisuFGOrderDesc``: length, group id,
comment, start and count in ``VisuGroupDepVals``); the first group varies
fastest on disk.  ``VisuGroupDepVals`` names the parameters that take one
value per position in a group (``VisuCorePosition`` per slice,
``VisuAcqEchoTime`` per echo...).

Geometry follows ParaVision's definitions, which are DICOM's: the rows of
``VisuCoreOrientation`` (the patient-to-image matrix) are the image x, y and
slice-normal directions in patient coordinates, and ``VisuCorePosition`` is
the centre of the first voxel of a frame, so voxel (i, j, k) lies at
``P + i*dx*O[0] + j*dy*O[1] + k*dz*O[2]`` and both go to DICOM unchanged.
ParaVision has already applied the subject position (``VisuSubjectPosition``)
to them; for a Quadruped the axes are the animal's left, dorsal and cranial
directions, which DICOM calls the QUADRUPED patient coordinate system.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator

import numpy as np

from .params import Parameters

__all__ = ["FrameGroup", "Frame", "Layout", "LayoutError", "build_layout"]


class LayoutError(ValueError):
    """The reconstruction is not an image series this converter handles."""


@dataclass(frozen=True)
class FrameGroup:
    name: str  # e.g. "FG_SLICE", "FG_ECHO"
    length: int
    comment: str
    dependents: tuple[tuple[str, int], ...]  # (parameter, start offset)


@dataclass(frozen=True)
class Frame:
    """One output image (one slice of one ParaVision frame)."""

    disk_index: int  # position of the slice in 2dseq, in slices
    volume: int  # ParaVision frame number on disk
    slice_in_volume: int  # k within a 3D frame (0 for 2D)
    group_index: tuple[int, ...]  # index in each frame group, as on disk
    param_index: tuple[int, ...]  # index used for per-group parameters
    param_volume: int  # linear frame number for per-frame parameter arrays
    spatial_slice: int  # k after disk slice order reversal
    orientation: np.ndarray  # 3x3, rows: image x, image y, normal
    position: np.ndarray  # centre of the first voxel, mm


@dataclass
class Layout:
    columns: int  # VisuCoreSize[0], image x
    rows: int  # VisuCoreSize[1], image y
    slices_per_volume: int  # VisuCoreSize[2] for 3D, else 1
    volumes: int  # VisuCoreFrameCount
    groups: list[FrameGroup]
    pixel_spacing: tuple[float, float]  # DICOM order: (row spacing, column spacing)
    slice_thickness: list[float]  # per volume
    slice_spacing: float | None  # 3D slice step
    reversed_slices: bool
    params: Parameters
    dim: int = 2  # VisuCoreDim

    @property
    def frame_count(self) -> int:
        return self.volumes * self.slices_per_volume

    @property
    def is_3d(self) -> bool:
        return self.dim == 3

    def frames(self) -> Iterator[Frame]:
        """Every output frame in disk order."""
        lengths = [g.length for g in self.groups]
        slice_group = next((i for i, g in enumerate(self.groups) if g.name == "FG_SLICE"), None)
        for disk in range(self.frame_count):
            volume, k = divmod(disk, self.slices_per_volume)
            group_index = _unravel(volume, lengths)
            param_index = list(group_index)
            if self.reversed_slices and not self.is_3d and slice_group is not None:
                param_index[slice_group] = lengths[slice_group] - 1 - group_index[slice_group]
            param_index_t = tuple(param_index)
            param_volume = _ravel(param_index_t, lengths)
            spatial = self.slices_per_volume - 1 - k if self.reversed_slices and self.is_3d else k
            orientation = _orientation(self.value("VisuCoreOrientation", param_index_t, param_volume))
            position = np.asarray(
                self.value("VisuCorePosition", param_index_t, param_volume), dtype=float
            ).reshape(3)
            if self.is_3d:
                position = position + spatial * (self.slice_spacing or 0.0) * orientation[2]
            yield Frame(
                disk, volume, k, group_index, param_index_t, param_volume, spatial, orientation, position
            )

    def value(self, name: str, param_index: tuple[int, ...], param_volume: int, default: Any = None) -> Any:
        """The value of ``name`` for one frame.

        A parameter listed in ``VisuGroupDepVals`` is indexed by its group;
        an array with one entry per frame by the frame; anything else is
        the same for all frames.
        """
        raw = self.params.get(name)
        if raw is None:
            return default
        if not isinstance(raw, np.ndarray):
            return raw
        for group, index in zip(self.groups, param_index):
            for dependent, offset in group.dependents:
                if dependent == name and offset + index < len(raw):
                    return raw[offset + index]
        if raw.ndim >= 1 and len(raw) == self.volumes and self.volumes > 1:
            return raw[param_volume]
        # Not frame-indexed: a single row (or a single value) holds for all frames.
        if raw.ndim == 2 or raw.shape == (1,):
            return raw[0]
        return raw

    def group_values(self, name: str) -> list[Any]:
        return [g for g in self.groups if any(d == name for d, _ in g.dependents)]


def _unravel(index: int, lengths: list[int]) -> tuple[int, ...]:
    out = []
    for length in lengths:  # first group varies fastest
        index, rem = divmod(index, length)
        out.append(rem)
    return tuple(out)


def _ravel(index: tuple[int, ...], lengths: list[int]) -> int:
    out, stride = 0, 1
    for i, length in zip(index, lengths):
        out += i * stride
        stride *= length
    return out


def _orientation(raw: Any) -> np.ndarray:
    matrix = np.asarray(raw, dtype=float).reshape(3, 3)
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    if np.any(norms == 0):
        raise LayoutError("VisuCoreOrientation has a zero row")
    # ParaVision prints cosines to limited precision; DICOM validators check
    # that direction cosines are unit vectors.
    return matrix / norms


def build_layout(params: Parameters) -> Layout:
    """Read the frame structure; raise :class:`LayoutError` for non-images."""
    dim = int(params.scalar("VisuCoreDim", default=0) or 0)
    size = params.get("VisuCoreSize")
    if size is None or dim == 0:
        raise LayoutError("visu_pars has no VisuCoreDim/VisuCoreSize")
    size = [int(s) for s in np.atleast_1d(size)]
    dim_desc = [str(d) for d in np.atleast_1d(params.get("VisuCoreDimDesc", default=np.array([])))]
    if any(d != "spatial" for d in dim_desc):
        raise LayoutError(f"not an image: dimensions are {' '.join(dim_desc)} (spectroscopy is not supported)")
    if dim not in (2, 3) or len(size) != dim:
        raise LayoutError(f"unsupported VisuCoreDim={dim} with VisuCoreSize={size}")
    extent = [float(e) for e in np.atleast_1d(params.get("VisuCoreExtent", default=np.array(size)))]
    if len(extent) != dim:
        raise LayoutError("VisuCoreExtent does not match VisuCoreDim")
    volumes = int(params.scalar("VisuCoreFrameCount", default=1) or 1)
    groups = _frame_groups(params, volumes)
    if params.get("VisuCoreOrientation") is None or params.get("VisuCorePosition") is None:
        raise LayoutError("visu_pars has no VisuCoreOrientation/VisuCorePosition")
    columns, rows = size[0], size[1]
    spacing = (extent[1] / rows, extent[0] / columns)
    nz = size[2] if dim == 3 else 1
    slice_spacing = extent[2] / nz if dim == 3 else None
    if dim == 3:
        thickness = [slice_spacing] * volumes
    else:
        raw = np.atleast_1d(params.get("VisuCoreFrameThickness", default=np.array([0.0]))).astype(float)
        thickness = [float(raw[i] if i < len(raw) else raw[0]) for i in range(volumes)]
    reversed_slices = str(params.scalar("VisuCoreDiskSliceOrder", default="")) == "disk_reverse_slice_order"
    return Layout(
        columns, rows, nz, volumes, groups, spacing, thickness, slice_spacing, reversed_slices, params, dim
    )


def _frame_groups(params: Parameters, volumes: int) -> list[FrameGroup]:
    desc = params.get("VisuFGOrderDesc")
    deps = params.get("VisuGroupDepVals")
    dep_list: list[tuple[str, int]] = []
    if deps is not None:
        for item in np.atleast_1d(deps).ravel():
            if isinstance(item, tuple) and len(item) >= 2:
                dep_list.append((str(item[0]), int(item[1])))
    groups: list[FrameGroup] = []
    if desc is not None:
        for item in np.atleast_1d(desc).ravel():
            if not (isinstance(item, tuple) and len(item) >= 5):
                raise LayoutError(f"malformed VisuFGOrderDesc entry {item!r}")
            length, name, comment, start, count = int(item[0]), str(item[1]), str(item[2]), int(item[3]), int(item[4])
            groups.append(FrameGroup(name, length, comment, tuple(dep_list[start : start + count])))
    total = int(np.prod([g.length for g in groups])) if groups else 1
    if total != volumes:
        if volumes % total:
            raise LayoutError(
                f"frame groups describe {total} frames but VisuCoreFrameCount is {volumes}"
            )
        # Frames not covered by any group (e.g. repetitions) become one more group.
        groups.append(FrameGroup("FG_UNDESCRIBED", volumes // total, "", ()))
    return groups
