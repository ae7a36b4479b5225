"""Synthetic PV 6, 7 and 360 reconstructions: 3D, multi-echo, diffusion, word types."""

from __future__ import annotations

import numpy as np
import pytest

from bruker.convert import convert_path
from pv_checks import dciodvfy_errors
from pv_synth import Scan, Sym, ramp


def convert_one(study, enhanced=False):
    results = list(convert_path(study, enhanced=enhanced))
    assert len(results) == 1 and results[0].ok, [(r.scan_id, r.error) for r in results]
    return results[0].datasets


def real_values(ds):
    return ds.pixel_array * float(ds.get("RescaleSlope", 1)) + float(ds.get("RescaleIntercept", 0))


# A rotated slab: image x along patient y, image y along -z, normal along -x (sagittal).
SAGITTAL = np.array([0, 1, 0, 0, 0, -1, -1, 0, 0], dtype=float)


def test_3d_volume_is_split_into_slices(tmp_path):
    data = ramp(6, 4, 5)  # 6 slices of 4 rows x 5 columns
    scan = Scan(data, dim=3, extent=(10.0, 6.0, 12.0), orientation=SAGITTAL[None], position=np.array([[3, -5, 7]]),
                version="360")
    scan.write(tmp_path / "study", 5)
    datasets = convert_one(tmp_path / "study")
    assert len(datasets) == 6
    normal = np.cross(SAGITTAL[:3], SAGITTAL[3:6])
    for k, ds in enumerate(datasets):
        np.testing.assert_allclose([float(v) for v in ds.ImagePositionPatient], np.array([3, -5, 7]) + k * 2.0 * normal)
        np.testing.assert_allclose([float(v) for v in ds.ImageOrientationPatient], SAGITTAL[:6])
        # 10 mm over 5 columns and 6 mm over 4 rows: DICOM lists the row spacing first.
        assert [float(v) for v in ds.PixelSpacing] == [1.5, 2.0]
        assert float(ds.SliceThickness) == 2.0
        assert ds.MRAcquisitionType == "3D"
        np.testing.assert_array_equal(ds.pixel_array, data[k])
    assert (datasets[0].Rows, datasets[0].Columns) == (4, 5)


def test_3d_enhanced_is_valid_and_indexed_by_slice(tmp_path):
    scan = Scan(ramp(6, 4, 5), dim=3, extent=(10.0, 6.0, 12.0), version="360")
    scan.write(tmp_path / "study", 5)
    ds = convert_one(tmp_path / "study", enhanced=True)[0]
    assert int(ds.NumberOfFrames) == 6
    positions = [float(i.PlanePositionSequence[0].ImagePositionPatient[2]) for i in ds.PerFrameFunctionalGroupsSequence]
    assert positions == [0.0, 2.0, 4.0, 6.0, 8.0, 10.0]
    stack = [int(i.FrameContentSequence[0].InStackPositionNumber) for i in ds.PerFrameFunctionalGroupsSequence]
    assert stack == [1, 2, 3, 4, 5, 6]
    assert dciodvfy_errors(ds, tmp_path) == []


def test_reverse_disk_slice_order_3d(tmp_path):
    data = ramp(4, 2, 2)
    scan = Scan(data, dim=3, extent=(2.0, 2.0, 4.0), version="7",
                extra={"VisuCoreDiskSliceOrder": Sym("disk_reverse_slice_order")})
    scan.write(tmp_path / "study", 6)
    datasets = convert_one(tmp_path / "study")
    # The first slice on disk is the last one in space.
    z = [float(ds.ImagePositionPatient[2]) for ds in datasets]
    assert z == [3.0, 2.0, 1.0, 0.0]
    np.testing.assert_array_equal(datasets[0].pixel_array, data[0])


def test_reverse_disk_slice_order_multislice(tmp_path):
    positions = np.array([[0, 0, -2.0], [0, 0, 0.0], [0, 0, 2.0]])
    scan = Scan(ramp(3, 2, 2), position=positions, version="6",
                frame_groups=[(3, "FG_SLICE", "", 0, 2)],
                dep_vals=[("VisuCoreOrientation", 0), ("VisuCorePosition", 0)],
                extra={"VisuCoreDiskSliceOrder": Sym("disk_reverse_slice_order")})
    scan.write(tmp_path / "study", 7)
    z = [float(ds.ImagePositionPatient[2]) for ds in convert_one(tmp_path / "study")]
    assert z == [2.0, 0.0, -2.0]


def test_multi_echo_multi_slice(tmp_path):
    # Echo varies fastest on disk (first frame group), then slice.
    echoes, slices = 3, 2
    positions = np.array([[0, 0, 0.0], [0, 0, 1.5]])
    scan = Scan(ramp(echoes * slices, 3, 3), position=positions, version="7",
                frame_groups=[(echoes, "FG_ECHO", "", 0, 1), (slices, "FG_SLICE", "", 1, 2)],
                dep_vals=[("VisuAcqEchoTime", 0), ("VisuCoreOrientation", 0), ("VisuCorePosition", 0)],
                extra={"VisuAcqEchoTime": np.array([5.0, 10.0, 15.0])})
    scan.write(tmp_path / "study", 8)
    datasets = convert_one(tmp_path / "study")
    echo_times = [float(ds.EchoTime) for ds in datasets]
    z = [float(ds.ImagePositionPatient[2]) for ds in datasets]
    assert echo_times == [5.0, 10.0, 15.0, 5.0, 10.0, 15.0]
    assert z == [0.0, 0.0, 0.0, 1.5, 1.5, 1.5]

    ds = convert_one(tmp_path / "study", enhanced=True)[0]
    dims = [item.DimensionIndexPointer for item in ds.DimensionIndexSequence]
    assert dims == [0x00189082, 0x00209057]  # EffectiveEchoTime, InStackPositionNumber
    index_values = [list(i.FrameContentSequence[0].DimensionIndexValues) for i in ds.PerFrameFunctionalGroupsSequence]
    assert index_values == [[1, 1], [2, 1], [3, 1], [1, 2], [2, 2], [3, 2]]
    per_frame_te = [i.MREchoSequence[0].EffectiveEchoTime for i in ds.PerFrameFunctionalGroupsSequence]
    assert per_frame_te == [5.0, 10.0, 15.0, 5.0, 10.0, 15.0]
    assert dciodvfy_errors(ds, tmp_path) == []


# Gradient frame of a sagittal slice package as ParaVision writes it (rows:
# read, phase, slice in ParaVision's subject coordinates x L->R, y P->A,
# z F->H); it is the sagittal package of the real PV 5.1 phantom.  In DICOM
# patient coordinates (x and y reversed) read is +z (head), phase is -y
# (anterior) and slice is -x (right), i.e. -image y, -image x and the normal
# of the SAGITTAL image above.
SAGITTAL_GRADIENTS = np.array([[0, 0, 1], [0, 1, 0], [1, 0, 0]], dtype=float)


def _diffusion_scan(gradients=SAGITTAL_GRADIENTS, where="method"):
    # B-matrices in the gradient frame (read, phase, slice), s/mm2.
    # Frame 0: b=0; 1: b=1000 along read; 2: b=700 along phase;
    # 3: b=800 along (read + phase)/sqrt(2), which has off-diagonal terms.
    b_mats = np.zeros((4, 3, 3))
    b_mats[1, 0, 0] = 1000.0
    b_mats[2, 1, 1] = 700.0
    oblique = np.array([1.0, 1.0, 0.0]) / np.sqrt(2)
    b_mats[3] = 800.0 * np.outer(oblique, oblique)
    scan = Scan(ramp(4, 4, 4), orientation=SAGITTAL[None], version="6",
                frame_groups=[(4, "FG_DIFFUSION", "<diffusion>", 0, 1)],
                dep_vals=[("VisuAcqDiffusionBMatrix", 0)],
                extra={"VisuAcqDiffusionBMatrix": b_mats.reshape(4, 9)})
    if gradients is not None:
        if where == "method":
            scan.method = {"PVM_SPackArrGradOrient": gradients[None]}
        else:
            scan.acqp = {"ACQ_grad_matrix": gradients[None]}
    return scan


def test_diffusion_is_rotated_from_the_gradient_frame_to_patient_coordinates(tmp_path):
    _diffusion_scan().write(tmp_path / "study", 9)
    datasets = convert_one(tmp_path / "study")
    assert [round(float(ds.DiffusionBValue), 6) for ds in datasets] == [0.0, 1000.0, 700.0, 800.0]
    assert "DiffusionGradientOrientation" not in datasets[0]
    # read -> patient z, phase -> patient y (sign-free for a direction).
    np.testing.assert_allclose(datasets[1].DiffusionGradientOrientation, [0, 0, 1], atol=1e-9)
    np.testing.assert_allclose(datasets[2].DiffusionGradientOrientation, [0, 1, 0], atol=1e-9)
    # (read + phase)/sqrt(2) is (0, -1, 1)/sqrt(2) in patient coordinates:
    # the y and z components have opposite signs (same signs would mean the
    # ParaVision -> DICOM axis reversal was missed).
    direction = np.array(datasets[3].DiffusionGradientOrientation)
    np.testing.assert_allclose(np.abs(direction), [0, 1 / np.sqrt(2), 1 / np.sqrt(2)], atol=1e-9)
    assert direction[1] * direction[2] < 0

    ds = convert_one(tmp_path / "study", enhanced=True)[0]
    assert ds.DimensionIndexSequence[0].DimensionIndexPointer == 0x00189087  # DiffusionBValue
    items = [i.MRDiffusionSequence[0] for i in ds.PerFrameFunctionalGroupsSequence]
    assert items[0].DiffusionDirectionality == "NONE"
    b = items[1].DiffusionBMatrixSequence[0]
    assert b.DiffusionBValueZZ == pytest.approx(1000.0) and b.DiffusionBValueXX == pytest.approx(0.0)
    assert items[2].DiffusionBMatrixSequence[0].DiffusionBValueYY == pytest.approx(700.0)
    oblique = items[3].DiffusionBMatrixSequence[0]
    assert oblique.DiffusionBValueYY == pytest.approx(400.0) and oblique.DiffusionBValueZZ == pytest.approx(400.0)
    assert oblique.DiffusionBValueYZ == pytest.approx(-400.0)
    assert oblique.DiffusionBValueXY == pytest.approx(0.0) and oblique.DiffusionBValueXZ == pytest.approx(0.0)
    assert "DIFFUSION" in ds.ImageType
    assert dciodvfy_errors(ds, tmp_path) == []


def test_diffusion_uses_acq_grad_matrix_without_method_orientation(tmp_path):
    _diffusion_scan(where="acqp").write(tmp_path / "study", 9)
    datasets = convert_one(tmp_path / "study")
    np.testing.assert_allclose(datasets[1].DiffusionGradientOrientation, [0, 0, 1], atol=1e-9)


def test_diffusion_without_gradient_orientation_keeps_only_the_b_value(tmp_path):
    _diffusion_scan(gradients=None).write(tmp_path / "study", 9)
    datasets = convert_one(tmp_path / "study")
    # The trace does not depend on the frame; the direction does.
    assert [round(float(ds.DiffusionBValue), 6) for ds in datasets] == [0.0, 1000.0, 700.0, 800.0]
    assert not any("DiffusionGradientOrientation" in ds for ds in datasets)
    # Enhanced MR requires the direction: the scan fails, named, with the reason.
    results = list(convert_path(tmp_path / "study", enhanced=True))
    assert len(results) == 1 and not results[0].ok
    assert "9/pdata/1" in results[0].message
    assert "diffusion gradient orientation unknown" in results[0].error


def test_gradient_frame_that_does_not_match_the_image_is_not_used(tmp_path):
    # An axial gradient frame for a sagittal image: it cannot be the one the
    # image was acquired with, so no direction is derived from it.
    _diffusion_scan(gradients=np.eye(3)).write(tmp_path / "study", 9)
    assert not any("DiffusionGradientOrientation" in ds for ds in convert_one(tmp_path / "study"))


def test_diffusion_falls_back_to_method(tmp_path):
    scan = _diffusion_scan(gradients=np.eye(3))
    scan.orientation = np.eye(3).ravel()[None]
    scan.data = ramp(3, 4, 4)
    scan.extra = {}
    scan.dep_vals = []
    scan.frame_groups = [(3, "FG_DIFFUSION", "", 0, 0)]
    b_mats = np.zeros((3, 3, 3))
    b_mats[1, 2, 2] = 500.0
    scan.method = {"PVM_DwBMat": b_mats, "PVM_SPackArrGradOrient": np.eye(3)[None]}
    scan.write(tmp_path / "study", 10)
    datasets = convert_one(tmp_path / "study")
    assert [float(ds.DiffusionBValue) for ds in datasets] == [0.0, 500.0, 0.0]
    np.testing.assert_allclose(datasets[1].DiffusionGradientOrientation, [0, 0, 1])


@pytest.mark.parametrize(
    "word_type, dtype",
    [
        ("_8BIT_UNSGN_INT", "u1"),
        ("_16BIT_SGN_INT", "i2"),
        ("_16BIT_UNSGN_INT", "u2"),
        ("_32BIT_SGN_INT", "i4"),
    ],
)
@pytest.mark.parametrize("byte_order", ["littleEndian", "bigEndian"])
def test_integer_word_types_and_byte_order(tmp_path, word_type, dtype, byte_order):
    data = ramp(2, 8, 8, start=3).astype(dtype)
    if dtype == "i4":
        data = data.astype(np.int64) * 100_000 - 2_000_000  # beyond int16: must be remapped
        data = data.astype(dtype)
    Scan(data, word_type=word_type, byte_order=byte_order, slope=[2.0, 0.5], offset=[1.0, -3.0], version="360",
         frame_groups=[(2, "FG_SLICE", "", 0, 1)], dep_vals=[("VisuCorePosition", 0)],
         position=np.array([[0, 0, 0], [0, 0, 1.0]])).write(tmp_path / "study", 11)
    datasets = convert_one(tmp_path / "study")
    for ds, frame, slope, offset in zip(datasets, data, [2.0, 0.5], [1.0, -3.0]):
        expected = frame.astype(np.float64) * slope + offset
        tolerance = abs(float(ds.get("RescaleSlope", 1))) / 2 + 1e-9
        np.testing.assert_allclose(real_values(ds), expected, atol=tolerance)
        assert ds.BitsAllocated == 16
        assert ds.PixelRepresentation == (0 if dtype in ("u1", "u2") else 1)


def test_float_data_is_remapped_with_a_rescale(tmp_path):
    rng = np.random.default_rng(1)
    data = (rng.normal(size=(2, 16, 16)) * 1e-4 + 5e-4).astype("f4")
    Scan(data, word_type="_32BIT_FLOAT", byte_order="bigEndian", version="360",
         frame_groups=[(2, "FG_CYCLE", "", 0, 0)]).write(tmp_path / "study", 12)
    datasets = convert_one(tmp_path / "study")
    for ds, frame in zip(datasets, data):
        span = float(frame.max() - frame.min())
        np.testing.assert_allclose(real_values(ds), frame, atol=span / 65534 + 1e-12)
        assert float(ds.RescaleSlope) != 1.0
    enhanced = convert_one(tmp_path / "study", enhanced=True)[0]
    for item, pixels, frame in zip(enhanced.PerFrameFunctionalGroupsSequence, enhanced.pixel_array, data):
        rwvm = item.RealWorldValueMappingSequence[0]
        real = pixels * rwvm.RealWorldValueSlope + rwvm.RealWorldValueIntercept
        np.testing.assert_allclose(real, frame, atol=float(frame.max() - frame.min()) / 65534 + 1e-12)
    assert enhanced.DimensionIndexSequence[0].DimensionIndexPointer == 0x00209128  # TemporalPositionIndex
    assert dciodvfy_errors(enhanced, tmp_path) == []


def test_identification_and_animal_subject(tmp_path):
    Scan(ramp(1, 4, 4), version="360").write(tmp_path / "study", 13, 2)
    ds = convert_one(tmp_path / "study")[0]
    assert ds.StudyInstanceUID == "2.25.1234567890"
    assert ds.SeriesInstanceUID == "2.25.101329"
    assert ds.SeriesNumber == 13002
    assert ds.SeriesDescription == "T1_FLASH_E13"
    assert str(ds.PatientName) == "Mouse^Synthetic" and ds.PatientID == "M-42"
    assert ds.PatientBirthDate == "20201102" and ds.PatientSex == "M"
    assert ds.StudyDate == "20210304" and ds.StudyTime == "100000"
    assert ds.AcquisitionDate == "20210304" and ds.AcquisitionTime.startswith("101500.5")
    assert ds.PatientPosition == "HFP"
    assert float(ds.MagneticFieldStrength) == 7.0
    # VisuSubjectWeight is in kg, as PatientWeight.
    assert float(ds.PatientWeight) == 0.025
    assert dciodvfy_errors(ds, tmp_path) == []


def test_inversion_time_and_scanning_sequence(tmp_path):
    Scan(ramp(1, 4, 4), version="6", extra={"VisuAcqInversionTime": np.array([1200.0]),
                                              "VisuAcqEchoSequenceType": Sym("SpinEcho")}).write(tmp_path / "s", 14)
    ds = convert_one(tmp_path / "s")[0]
    assert float(ds.InversionTime) == 1200.0
    assert list(ds.ScanningSequence) == ["SE", "IR"]
    enhanced = convert_one(tmp_path / "s", enhanced=True)[0]
    modifier = enhanced.SharedFunctionalGroupsSequence[0].MRModifierSequence[0]
    assert modifier.InversionRecovery == "YES" and float(modifier.InversionTimes) == 1200.0
    assert dciodvfy_errors(enhanced, tmp_path) == []


def test_variable_repetition_time_is_per_frame(tmp_path):
    # A RARE-VTR-like scan: one TR per frame of the first group.
    Scan(ramp(3, 4, 4), version="7", frame_groups=[(3, "FG_CYCLE", "<TR>", 0, 1)],
         dep_vals=[("VisuAcqRepetitionTime", 0)],
         extra={"VisuAcqRepetitionTime": np.array([400.0, 1200.0, 5000.0])}).write(tmp_path / "s", 15)
    assert [float(ds.RepetitionTime) for ds in convert_one(tmp_path / "s")] == [400.0, 1200.0, 5000.0]
    enhanced = convert_one(tmp_path / "s", enhanced=True)[0]
    per_frame = [float(i.MRTimingAndRelatedParametersSequence[0].RepetitionTime)
                 for i in enhanced.PerFrameFunctionalGroupsSequence]
    assert per_frame == [400.0, 1200.0, 5000.0]
    assert dciodvfy_errors(enhanced, tmp_path) == []


def test_acquisition_type_comes_from_the_encoding_not_the_storage(tmp_path):
    # A 3D acquisition stored as 2D frames (VisuCoreDim 2) is still 3D.
    scan = Scan(ramp(2, 4, 4), version="360", frame_groups=[(2, "FG_SLICE", "", 0, 1)],
                dep_vals=[("VisuCorePosition", 0)], position=np.array([[0, 0, 0], [0, 0, 1.0]]),
                extra={"VisuAcqEchoSequenceType": Sym("Both"),
                       "VisuAcqEncodingOrder": [Sym("LinearEncoding"), Sym("CentricEncoding")]})
    scan.acqp = {"ACQ_dim": 3}
    scan.write(tmp_path / "s", 16)
    ds = convert_one(tmp_path / "s")[0]
    assert ds.MRAcquisitionType == "3D"
    assert list(ds.ScanningSequence) == ["SE", "GR"]
    enhanced = convert_one(tmp_path / "s", enhanced=True)[0]
    assert enhanced.MRAcquisitionType == "3D"
    assert enhanced.EchoPulseSequence == "BOTH"
    assert enhanced.RectilinearPhaseEncodeReordering == "CENTRIC"
    assert dciodvfy_errors(enhanced, tmp_path) == []
