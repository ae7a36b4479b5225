"""Enhanced MR Image Storage: one multi-frame instance per reconstruction.

Each frame gets the functional groups of the Enhanced MR IOD; a group whose
content is the same for all frames moves to the shared functional groups.
The dimension module has one dimension per ParaVision frame group
(``VisuFGOrderDesc``), plus the slice axis of 3D data.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.tag import Tag
from pydicom.uid import EnhancedMRImageStorage, generate_uid

from . import acquisition
from .classic import ds_number
from .common import base_dataset, clip, finish, set_image_pixel
from .context import ConversionError, ScanContext, instance_uid
from .frames import Frame

__all__ = ["enhanced_mr_dataset"]

_FRAME_TYPE = {
    "MAGNITUDE_IMAGE": "MAGNITUDE",
    "PHASE_IMAGE": "PHASE",
    "REAL_IMAGE": "REAL",
    "IMAGINARY_IMAGE": "IMAGINARY",
    "COMPLEX_IMAGE": "MIXED",
}

# Frame group -> (functional group sequence, attribute) the dimension points to.
_DIMENSION = {
    "FG_SLICE": ("FrameContentSequence", "InStackPositionNumber"),
    "FG_ECHO": ("MREchoSequence", "EffectiveEchoTime"),
    "FG_DIFFUSION": ("MRDiffusionSequence", "DiffusionBValue"),
    "FG_MOVIE": ("FrameContentSequence", "TemporalPositionIndex"),
    "FG_CYCLE": ("FrameContentSequence", "TemporalPositionIndex"),
}
_GENERIC_DIMENSION = ("FrameContentSequence", "FrameAcquisitionNumber")


def enhanced_mr_dataset(ctx: ScanContext) -> Dataset:
    ds = base_dataset(ctx)
    # The Enhanced MR IOD carries the acquisition time as AcquisitionDateTime.
    acquisition_date, acquisition_time = ds.AcquisitionDate, ds.AcquisitionTime
    del ds.AcquisitionDate, ds.AcquisitionTime
    acq = ctx.acq
    layout = ctx.layout
    frame_type = _FRAME_TYPE.get(ctx.params.text("VisuCoreFrameType"), "MAGNITUDE")
    is_diffusion = any(g.name == "FG_DIFFUSION" for g in layout.groups)
    flavor = "DIFFUSION" if is_diffusion else "VOLUME"
    ds.ImageType = ["ORIGINAL", "PRIMARY", flavor, "NONE"]
    _image_module(ds, ctx, frame_type)
    ds.AcquisitionDateTime = (acquisition_date + acquisition_time) if acquisition_date else ""
    _pulse_sequence_module(ds, acq)
    ds.AcquisitionContextSequence = Sequence()
    ds.InstanceNumber = 1
    ds.NumberOfFrames = len(ctx.frames)

    dimensions = _dimensions(ctx)
    per_frame = []
    pixel_chunks = []
    for frame in ctx.frames:
        groups, chunk = _frame_groups(ctx, frame, frame_type, flavor, dimensions)
        per_frame.append(groups)
        pixel_chunks.append(chunk)
    # Joining briefly holds the output twice; pydicom needs a bytes value.
    ds.PixelData = b"".join(pixel_chunks)
    del pixel_chunks
    shared, per_frame = _split_shared(per_frame)
    ds.SharedFunctionalGroupsSequence = Sequence([shared])
    ds.PerFrameFunctionalGroupsSequence = Sequence(per_frame)
    organization = generate_uid(entropy_srcs=[ctx.series_uid, "dimension-organization"])
    ds.DimensionOrganizationSequence = Sequence([_item(DimensionOrganizationUID=organization)])
    ds.DimensionIndexSequence = Sequence(
        [
            _item(
                DimensionOrganizationUID=organization,
                DimensionIndexPointer=Tag(attribute),
                FunctionalGroupPointer=Tag(sequence),
                DimensionDescriptionLabel=clip(label, 64),
            )
            for label, sequence, attribute, _ in dimensions
        ]
    )
    ds.DimensionOrganizationType = "3D" if _is_plain_volume(ctx, dimensions) else None
    if ds.DimensionOrganizationType is None:
        del ds.DimensionOrganizationType
    return finish(ds, EnhancedMRImageStorage, instance_uid(ctx, "enhanced-mr"))


def _item(**attributes: Any) -> Dataset:
    item = Dataset()
    for keyword, value in attributes.items():
        setattr(item, keyword, value)
    return item


def _image_module(ds: Dataset, ctx: ScanContext, frame_type: str) -> None:
    acq = ctx.acq
    layout = ctx.layout
    ds.AcquisitionDuration = (acq["scan_time_ms"] or 0.0) / 1000.0
    ds.ContentQualification = "RESEARCH"
    ds.ResonantNucleus = clip(acq["nucleus"] or "1H", 16)
    ds.KSpaceFiltering = "NONE"
    ds.MagneticFieldStrength = ds_number(acq["field_strength"]) if acq["field_strength"] is not None else "0"
    ds.ApplicableSafetyStandardAgency = "IEC"
    set_image_pixel(ds, ctx)
    ds.PresentationLUTShape = "IDENTITY"
    ds.BurnedInAnnotation = "NO"
    ds.LossyImageCompression = "00"
    ds.PixelPresentation = "MONOCHROME"
    ds.VolumetricProperties = "VOLUME"
    ds.VolumeBasedCalculationTechnique = "NONE"
    ds.ComplexImageComponent = frame_type
    ds.AcquisitionContrast = "DIFFUSION" if any(g.name == "FG_DIFFUSION" for g in layout.groups) else "UNKNOWN"


def _pulse_sequence_module(ds: Dataset, acq: dict[str, Any]) -> None:
    kind = acq["echo_sequence"].lower()
    ds.PulseSequenceName = clip(acq["sequence_name"] or "unknown", 16)
    ds.MRAcquisitionType = "3D" if acq["spatial_dim"] == 3 else "2D"
    ds.EchoPulseSequence = "BOTH" if kind == "both" else "SPIN" if "spin" in kind else "GRADIENT"
    if ds.EchoPulseSequence in ("SPIN", "BOTH"):
        ds.MultipleSpinEcho = "YES" if (acq["echo_train_length"] or 1) > 1 else "NO"
    ds.MultiPlanarExcitation = "NO"
    ds.PhaseContrast = "NO"
    ds.TimeOfFlightContrast = "NO"
    ds.SteadyStatePulseSequence = "NONE"
    ds.EchoPlanarPulseSequence = "YES" if "epi" in acq["sequence_name"].lower() else "NO"
    ds.SaturationRecovery = "NO"
    ds.SpectrallySelectedSuppression = "NONE"
    ds.OversamplingPhase = "NONE"
    ds.GeometryOfKSpaceTraversal = "RECTILINEAR"
    ds.RectilinearPhaseEncodeReordering = "CENTRIC" if "CENTRIC" in acq["encoding_order"].upper() else "LINEAR"
    ds.SegmentedKSpaceTraversal = "SINGLE"
    if ds.MRAcquisitionType == "3D":
        ds.CoverageOfKSpace = "FULL"
    ds.NumberOfKSpaceTrajectories = 1


def _dimensions(ctx: ScanContext) -> list[tuple[str, str, str, Any]]:
    """(label, functional group, attribute, index function) per dimension."""
    dims: list[tuple[str, str, str, Any]] = []
    used: set[str] = set()
    for position, group in enumerate(ctx.layout.groups):
        sequence, attribute = _DIMENSION.get(group.name, _GENERIC_DIMENSION)
        if attribute in used:  # two groups may not share an index attribute
            sequence, attribute = _GENERIC_DIMENSION
            if attribute in used:
                continue
        used.add(attribute)
        label = group.comment or group.name
        dims.append((label, sequence, attribute, lambda frame, i=position: frame.param_index[i] + 1))
    if ctx.layout.is_3d:
        # Slices of a 3D frame: the stack dimension (3D data has no FG_SLICE).
        dims.insert(
            0,
            ("slice", "FrameContentSequence", "InStackPositionNumber", lambda frame: frame.spatial_slice + 1),
        )
    if not dims:  # a single 2D frame: the module still needs one dimension
        dims.append(("frame", *_GENERIC_DIMENSION, lambda frame: frame.disk_index + 1))
    return dims


def _is_plain_volume(ctx: ScanContext, dimensions: list) -> bool:
    """One stack of parallel, equally spaced slices: a '3D' organisation."""
    return ctx.layout.is_3d and ctx.layout.volumes == 1


def _frame_groups(ctx: ScanContext, frame: Frame, frame_type: str, flavor: str, dimensions: list) -> tuple[Dataset, bytes]:
    layout = ctx.layout
    acq = ctx.acq
    item = Dataset()
    content = _item(DimensionIndexValues=[int(fn(frame)) for _, _, _, fn in dimensions])
    content.StackID = "1" if (layout.is_3d or _slice_group(ctx) is not None) else None
    if content.StackID is None:
        del content.StackID
    else:
        content.InStackPositionNumber = (
            frame.spatial_slice + 1 if layout.is_3d else frame.param_index[_slice_group(ctx)] + 1
        )
    for label, sequence, attribute, fn in dimensions:
        if sequence == "FrameContentSequence" and attribute not in ("InStackPositionNumber",):
            setattr(content, attribute, int(fn(frame)))
    content.FrameAcquisitionDateTime = ctx.params and _acq_datetime(ctx)
    content.FrameReferenceDateTime = content.FrameAcquisitionDateTime
    content.FrameAcquisitionDuration = (acq["scan_time_ms"] or 0.0)
    item.FrameContentSequence = Sequence([content])
    item.PixelMeasuresSequence = Sequence(
        [
            _item(
                PixelSpacing=[ds_number(v) for v in layout.pixel_spacing],
                SliceThickness=ds_number(layout.slice_thickness[frame.param_volume]),
                **({"SpacingBetweenSlices": ds_number(layout.slice_spacing)} if layout.slice_spacing else {}),
            )
        ]
    )
    item.PlanePositionSequence = Sequence([_item(ImagePositionPatient=[ds_number(v) for v in frame.position])])
    item.PlaneOrientationSequence = Sequence(
        [_item(ImageOrientationPatient=[ds_number(v) for v in frame.orientation[:2].ravel()])]
    )
    item.MRImageFrameTypeSequence = Sequence(
        [
            _item(
                FrameType=["ORIGINAL", "PRIMARY", flavor, "NONE"],
                PixelPresentation="MONOCHROME",
                VolumetricProperties="VOLUME",
                VolumeBasedCalculationTechnique="NONE",
                ComplexImageComponent=frame_type,
                AcquisitionContrast="DIFFUSION" if flavor == "DIFFUSION" else "UNKNOWN",
            )
        ]
    )
    timing = _item(
        RepetitionTime=ds_number(acquisition.repetition_time(layout, frame, ctx.params) or 0.0),
        FlipAngle=ds_number(acq["flip_angle"] or 0.0),
        EchoTrainLength=int(acq["echo_train_length"] or 1),
        RFEchoTrainLength=int(acq["echo_train_length"] or 1),
        GradientEchoTrainLength=0,
        # Required for ORIGINAL images but not recorded by ParaVision: a SAR of
        # 0 and normal operating modes are the neutral values, not measurements.
        SpecificAbsorptionRateSequence=Sequence(
            [_item(SpecificAbsorptionRateDefinition="IEC_WHOLE_BODY", SpecificAbsorptionRateValue=0.0)]
        ),
        OperatingModeSequence=Sequence(
            [_item(OperatingModeType=kind, OperatingMode="IEC_NORMAL") for kind in ("STATIC FIELD", "RF", "GRADIENT")]
        ),
    )
    item.MRTimingAndRelatedParametersSequence = Sequence([timing])
    te = acquisition.echo_time(layout, frame, ctx.params)
    item.MREchoSequence = Sequence([_item(EffectiveEchoTime=float(te or 0.0))])
    inversion = acquisition.inversion_time(layout, frame, ctx.params)
    modifier = _item(
        InversionRecovery="YES" if inversion else "NO",
        FlowCompensation="NONE",
        T2Preparation="NO",
        SpectrallySelectedExcitation="NONE",
        SpatialPresaturation="NONE",
        PartialFourier="NO",
        ParallelAcquisition="NO",
    )
    if inversion:
        modifier.InversionTimes = [inversion]
    item.MRModifierSequence = Sequence([modifier])
    imaging_modifier = _item(
        MagnetizationTransfer="NONE",
        BloodSignalNulling="NO",
        Tagging="NONE",
        TransmitterFrequency=float(acq["imaging_frequency"] or 0.0),
        PixelBandwidth=ds_number(acq["pixel_bandwidth"] or 0.0),
    )
    item.MRImagingModifierSequence = Sequence([imaging_modifier])
    item.MRReceiveCoilSequence = Sequence(
        [_item(ReceiveCoilName="unknown", ReceiveCoilManufacturerName="", ReceiveCoilType="VOLUME", QuadratureReceiveCoil="NO")]
    )
    item.MRTransmitCoilSequence = Sequence(
        [_item(TransmitCoilName="unknown", TransmitCoilManufacturerName="", TransmitCoilType="VOLUME")]
    )
    item.MRAveragesSequence = Sequence([_item(NumberOfAverages=ds_number(acq["averages"] or 1))])
    item.MRFOVGeometrySequence = Sequence(
        [
            _item(
                InPlanePhaseEncodingDirection="OTHER",
                MRAcquisitionFrequencyEncodingSteps=layout.columns,
                MRAcquisitionPhaseEncodingStepsInPlane=int(acq["phase_steps"] or layout.rows),
                PercentSampling=100.0,
                PercentPhaseFieldOfView=100.0,
                **({"MRAcquisitionPhaseEncodingStepsOutOfPlane": layout.slices_per_volume} if acq["spatial_dim"] == 3 else {}),
            )
        ]
    )
    item.FrameAnatomySequence = Sequence(
        [
            _item(
                FrameLaterality="U",
                AnatomicRegionSequence=Sequence(
                    [_item(CodeValue="38266002", CodingSchemeDesignator="SCT", CodeMeaning="Entire body")]
                ),
            )
        ]
    )
    diffusion = acquisition.diffusion(layout, frame, ctx.params)
    if diffusion is not None:
        if diffusion["b_value"] > 1e-6 and not diffusion["rotation_known"]:
            # The Enhanced MR diffusion macro requires the direction of a
            # diffusion-weighted frame; a made-up one would be worse than none.
            raise ConversionError(
                "diffusion gradient orientation unknown (no PVM_SPackArrGradOrient or ACQ_grad_matrix "
                "matching the image plane): convert this scan as MR Image Storage instead"
            )
        item.MRDiffusionSequence = Sequence([_diffusion_item(diffusion)])
    slope = float(ctx.value(frame, "VisuCoreDataSlope", 1.0) or 1.0)
    offset = float(ctx.value(frame, "VisuCoreDataOffs", 0.0) or 0.0)
    stored = ctx.pixels.stored(frame.disk_index, slope, offset)
    item.PixelValueTransformationSequence = Sequence(
        [_item(RescaleIntercept=ds_number(stored.intercept), RescaleSlope=ds_number(stored.slope), RescaleType="US")]
    )
    low, high = _stored_range(stored.pixels)
    item.RealWorldValueMappingSequence = Sequence(
        [
            _item(
                RealWorldValueFirstValueMapped=low,
                RealWorldValueLastValueMapped=high,
                RealWorldValueIntercept=stored.intercept,
                RealWorldValueSlope=stored.slope,
                LUTExplanation="ParaVision VisuCoreDataSlope/VisuCoreDataOffs",
                LUTLabel="PV_SCALE",
                MeasurementUnitsCodeSequence=Sequence(
                    [_item(CodeValue="1", CodingSchemeDesignator="UCUM", CodeMeaning="no units")]
                ),
            )
        ]
    )
    real = stored.pixels.astype(np.float64) * stored.slope + stored.intercept
    lo_real, hi_real = float(real.min()), float(real.max())
    item.FrameVOILUTSequence = Sequence(
        [_item(WindowCenter=ds_number((lo_real + hi_real) / 2), WindowWidth=ds_number(max(hi_real - lo_real, 1.0)))]
    )
    chunk = stored.pixels.astype(stored.pixels.dtype.newbyteorder("<"), copy=False).tobytes()
    return item, chunk


def _stored_range(pixels: np.ndarray) -> tuple[int, int]:
    # The mapping must cover every stored value; US/SS follow pixel representation.
    if pixels.dtype.kind == "u":
        return 0, 65535
    return -32768, 32767


def _diffusion_item(diffusion: dict[str, Any]) -> Dataset:
    b = diffusion["b_matrix"]
    item = _item(DiffusionBValue=float(diffusion["b_value"]))
    if diffusion["direction"] is None:
        item.DiffusionDirectionality = "NONE"
        return item
    item.DiffusionDirectionality = "BMATRIX"
    item.DiffusionGradientDirectionSequence = Sequence(
        [_item(DiffusionGradientOrientation=[float(v) for v in diffusion["direction"]])]
    )
    item.DiffusionBMatrixSequence = Sequence(
        [
            _item(
                DiffusionBValueXX=float(b[0, 0]),
                DiffusionBValueXY=float(b[0, 1]),
                DiffusionBValueXZ=float(b[0, 2]),
                DiffusionBValueYY=float(b[1, 1]),
                DiffusionBValueYZ=float(b[1, 2]),
                DiffusionBValueZZ=float(b[2, 2]),
            )
        ]
    )
    return item


def _slice_group(ctx: ScanContext) -> int | None:
    return next((i for i, g in enumerate(ctx.layout.groups) if g.name == "FG_SLICE"), None)


def _acq_datetime(ctx: ScanContext) -> str:
    date, time = acquisition.dicom_date_time(ctx.params.text("VisuAcqDate", "ACQ_time"))
    return date + time if date else ""


def _split_shared(per_frame: list[Dataset]) -> tuple[Dataset, list[Dataset]]:
    """Move functional groups identical in every frame to the shared item."""
    shared = Dataset()
    if not per_frame:
        return shared, per_frame
    for keyword in list(per_frame[0].dir()):
        first = per_frame[0][keyword]
        # FrameContentSequence is per-frame by definition in the IOD.
        if keyword == "FrameContentSequence":
            continue
        if all(keyword in f and f[keyword] == first for f in per_frame[1:]):
            setattr(shared, keyword, first.value)
            for f in per_frame:
                delattr(f, keyword)
    return shared, per_frame
