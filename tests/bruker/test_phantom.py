"""The real ParaVision 5.1 phantom: 3 orthogonal slices of 128x128, int16 LE."""

from __future__ import annotations

import numpy as np
import pytest
from pydicom.uid import EnhancedMRImageStorage, MRImageStorage

from bruker.convert import convert_path
from bruker.jcamp import read_jcamp
from pv_checks import dciodvfy_errors


def _convert(path, enhanced):
    results = list(convert_path(path, enhanced=enhanced))
    assert len(results) == 1, [r.scan_id for r in results]
    assert results[0].ok, results[0].error
    return results[0]


@pytest.fixture(scope="module")
def classic(phantom):
    return _convert(phantom, False).datasets


@pytest.fixture(scope="module")
def enhanced(phantom):
    return _convert(phantom, True).datasets[0]


@pytest.fixture(scope="module")
def visu(phantom):
    return read_jcamp(phantom / "100" / "pdata" / "1" / "visu_pars")


@pytest.fixture(scope="module")
def raw(phantom):
    return np.fromfile(phantom / "100" / "pdata" / "1" / "2dseq", dtype="<i2").reshape(3, 128, 128)


def test_both_iods(classic, enhanced):
    assert len(classic) == 3
    assert all(ds.SOPClassUID == MRImageStorage for ds in classic)
    assert enhanced.SOPClassUID == EnhancedMRImageStorage
    assert int(enhanced.NumberOfFrames) == 3
    assert len(enhanced.PerFrameFunctionalGroupsSequence) == 3


def test_dciodvfy_reports_no_errors(classic, enhanced, tmp_path):
    for i, ds in enumerate(classic):
        assert dciodvfy_errors(ds, tmp_path, f"mr{i}.dcm") == []
    assert dciodvfy_errors(enhanced, tmp_path, "emr.dcm") == []


def test_file_meta_is_complete(classic, enhanced):
    for ds in [*classic, enhanced]:
        assert ds.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.1"
        assert ds.file_meta.MediaStorageSOPClassUID == ds.SOPClassUID
        assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID


def test_pixels_equal_2dseq_after_rescale(classic, enhanced, raw, visu):
    slopes = visu["VisuCoreDataSlope"]
    for i, ds in enumerate(classic):
        real = ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
        np.testing.assert_allclose(real, raw[i] * slopes[i], rtol=1e-9)
    frames = enhanced.pixel_array
    for i, item in enumerate(enhanced.PerFrameFunctionalGroupsSequence):
        transform = (item if "PixelValueTransformationSequence" in item else enhanced.SharedFunctionalGroupsSequence[0])
        pvt = transform.PixelValueTransformationSequence[0]
        np.testing.assert_allclose(
            frames[i] * float(pvt.RescaleSlope) + float(pvt.RescaleIntercept), raw[i] * slopes[i], rtol=1e-9
        )


def _pixel_centre(ds, row, column):
    """Patient coordinates of the centre of pixel (row, column), from DICOM
    geometry alone: ImagePositionPatient is the centre of pixel (0, 0)."""
    iop = np.array([float(v) for v in ds.ImageOrientationPatient])
    row_spacing, column_spacing = (float(v) for v in ds.PixelSpacing)
    ipp = np.array([float(v) for v in ds.ImagePositionPatient])
    return ipp + column * column_spacing * iop[:3] + row * row_spacing * iop[3:]


def test_three_orthogonal_slices_land_where_the_phantom_says(classic, phantom):
    method = read_jcamp(phantom / "100" / "method")
    orientations = [str(o) for o in method["PVM_SPackArrSliceOrient"]]
    # One package per orientation, all at the isocentre (method and acqp).
    assert orientations == ["axial", "sagittal", "coronal"]
    for name in ("PVM_SPackArrReadOffset", "PVM_SPackArrPhase1Offset", "PVM_SPackArrSliceOffset"):
        assert not np.any(method[name]), name
    expected_normal_axis = {"axial": 2, "sagittal": 0, "coronal": 1}
    for ds, orient in zip(classic, orientations):
        iop = [float(v) for v in ds.ImageOrientationPatient]
        normal = np.cross(iop[:3], iop[3:])
        assert abs(normal[expected_normal_axis[orient]]) == pytest.approx(1.0), orient
        # VisuCorePosition is the centre of the first voxel and ParaVision's
        # Fourier reconstruction puts the field-of-view centre at the centre
        # of pixel (N/2, N/2): with 128 pixels, pixel (64, 64) is the isocentre
        # and pixel (63.5, 63.5) (the geometric middle of the pixel grid if
        # the position were a corner) is not.
        np.testing.assert_allclose(_pixel_centre(ds, 64, 64), [0, 0, 0], atol=1e-9)
        assert np.linalg.norm(_pixel_centre(ds, 63.5, 63.5)) > 0.1


def test_visu_geometry_matches_the_gradient_frame_in_paravision_coordinates(classic, phantom):
    """The convention the diffusion rotation relies on, checked on real data.

    PVM_SPackArrGradOrient rows are read/phase/slice in ParaVision's subject
    coordinates (x L->R, y P->A, z F->H).  Reversing x and y puts them in the
    DICOM frame of VisuCoreOrientation, where for all three packages the
    image axes are minus the in-plane gradient axes (phase along the row
    for sagittal and coronal, VisuAcqImagePhaseEncDir=row_dir) and the
    normal is the slice axis.  Read as DICOM coordinates without the
    reversal, the same rows break that rule for every package.
    """
    from bruker.acquisition import PV_TO_PATIENT, gradient_to_patient
    from bruker.params import Parameters

    method = read_jcamp(phantom / "100" / "method")
    visu = read_jcamp(phantom / "100" / "pdata" / "1" / "visu_pars")
    phase_dirs = [str(d) for d in visu["VisuAcqImagePhaseEncDir"]]
    params = Parameters({"method": method})
    for ds, phase_dir, grad in zip(classic, phase_dirs, method["PVM_SPackArrGradOrient"]):
        iop = np.array([float(v) for v in ds.ImageOrientationPatient])
        x, y = iop[:3], iop[3:]
        normal = np.cross(x, y)
        rotation = gradient_to_patient(params, normal)
        np.testing.assert_allclose(rotation, PV_TO_PATIENT @ grad.T)  # each package finds its own frame
        read, phase, slice_ = rotation.T
        if phase_dir == "col_dir":
            np.testing.assert_allclose([x, y], [-read, -phase], atol=1e-12)
        else:
            np.testing.assert_allclose([x, y], [-phase, -read], atol=1e-12)
        assert abs(np.dot(slice_, normal)) == pytest.approx(1.0)
        # The same rows read as DICOM coordinates break the rule for at least one axis.
        naive_read, naive_phase = grad[0], grad[1]
        expected = [-naive_read, -naive_phase] if phase_dir == "col_dir" else [-naive_phase, -naive_read]
        assert not np.allclose([x, y], expected)


def test_human_phantom_subject_has_no_animal_attributes(classic):
    ds = classic[0]
    # PV 5.1 records no VisuSubjectType: nothing says this is an animal.
    for keyword in ("AnatomicalOrientationType", "PatientSpeciesDescription", "PatientBreedDescription",
                    "PatientSpeciesCodeSequence", "ResponsiblePerson"):
        assert keyword not in ds, keyword


def test_geometry_copies_visu_core_parameters(classic, enhanced, visu):
    for i, ds in enumerate(classic):
        np.testing.assert_allclose([float(v) for v in ds.ImageOrientationPatient], visu["VisuCoreOrientation"][i][:6])
        np.testing.assert_allclose([float(v) for v in ds.ImagePositionPatient], visu["VisuCorePosition"][i])
        # 25 mm over 128 pixels, and the 1 mm slices of VisuCoreFrameThickness.
        assert [float(v) for v in ds.PixelSpacing] == [25 / 128, 25 / 128]
        assert float(ds.SliceThickness) == 1.0
    for i, item in enumerate(enhanced.PerFrameFunctionalGroupsSequence):
        ipp = item.PlanePositionSequence[0].ImagePositionPatient
        np.testing.assert_allclose([float(v) for v in ipp], visu["VisuCorePosition"][i])


def test_identification(classic, enhanced, visu):
    ds = classic[0]
    assert ds.StudyInstanceUID == visu["VisuStudyUid"]
    assert ds.SeriesInstanceUID == visu["VisuUid"]
    assert ds.FrameOfReferenceUID not in (ds.SeriesInstanceUID, ds.StudyInstanceUID)
    assert len({d.SOPInstanceUID for d in classic}) == 3
    assert str(ds.PatientName) == "jd_MultiSlicePhantom"
    assert ds.PatientID == "jd_MultiSlicePhantom"
    assert ds.PatientSex == "F"
    assert ds.StudyDate == "20130617" and ds.StudyTime == "150333"
    assert ds.SeriesDate == "20131105" and ds.SeriesTime == "115949"
    # VisuSeriesNumber 26214401 packs expno 400 and procno 1.
    assert ds.SeriesNumber == 400001
    assert ds.SeriesDescription == "01 mic_flash_ortho"
    assert ds.PatientPosition == "HFS"
    assert enhanced.StudyInstanceUID == ds.StudyInstanceUID


def test_acquisition(classic, enhanced):
    ds = classic[0]
    assert float(ds.RepetitionTime) == 60.0
    assert float(ds.EchoTime) == pytest.approx(1.61693334884488)
    assert float(ds.FlipAngle) == 30.0
    assert float(ds.ImagingFrequency) == pytest.approx(400.1515, abs=1e-3)
    # 400.15 MHz for 1H is a 9.4 T magnet.
    assert float(ds.MagneticFieldStrength) == pytest.approx(9.4, abs=0.01)
    assert ds.SequenceName == "mic_flash (pvm)"
    assert "InversionTime" not in ds
    shared = enhanced.SharedFunctionalGroupsSequence[0]
    assert float(shared.MRTimingAndRelatedParametersSequence[0].RepetitionTime) == 60.0
    assert shared.MREchoSequence[0].EffectiveEchoTime == pytest.approx(1.61693334884488)


def test_enhanced_dimensions_follow_the_slice_frame_group(enhanced):
    assert len(enhanced.DimensionIndexSequence) == 1
    pointer = enhanced.DimensionIndexSequence[0].DimensionIndexPointer
    assert pointer == 0x00209057  # InStackPositionNumber
    values = [item.FrameContentSequence[0].DimensionIndexValues for item in enhanced.PerFrameFunctionalGroupsSequence]
    assert [int(v) for v in values] == [1, 2, 3]


def test_conversion_is_repeatable(phantom, classic):
    again = _convert(phantom, False).datasets
    assert [d.SOPInstanceUID for d in again] == [d.SOPInstanceUID for d in classic]
