"""Subject type, subject position and animal attributes (synthetic PV 6/7/360 scans).

ParaVision writes VisuCoreOrientation/VisuCorePosition in the subject's own
coordinates, with the subject position already applied, so they reach DICOM
unchanged whatever VisuSubjectPosition says; VisuSubjectType decides whether
those coordinates are biped (LPS) or quadruped (left, dorsal, cranial).
"""

from __future__ import annotations

import numpy as np
import pytest

from bruker.convert import convert_path
from pv_checks import dciodvfy_errors
from pv_synth import Scan, Sym, ramp

# An oblique slice: image x along (y+z)/sqrt(2), image y along -x, normal = x cross y.
_X = np.array([0.0, 1.0, 1.0]) / np.sqrt(2)
_Y = np.array([-1.0, 0.0, 0.0])
OBLIQUE = np.concatenate([_X, _Y, np.cross(_X, _Y)])


def convert(study, enhanced=False):
    results = list(convert_path(study, enhanced=enhanced))
    assert len(results) == 1 and results[0].ok, [(r.scan_id, r.error) for r in results]
    return results[0].datasets


def write(tmp_path, version="360", **extra):
    study = tmp_path / "study"
    Scan(ramp(1, 4, 6), orientation=OBLIQUE[None], position=np.array([[1.5, -2.0, 3.25]]), version=version,
         extra=extra).write(study, 3)
    return study


@pytest.mark.parametrize(
    "position, patient_position",
    [("Head_Prone", "HFP"), ("Head_Supine", "HFS"), ("Foot_Supine", "FFS"), ("Head_Left", "HFDL"),
     ("Tail_Prone", "FFP"), ("Tail_Right", "FFDR")],
)
def test_subject_position_is_recorded_but_never_reapplied(tmp_path, position, patient_position):
    ds = convert(write(tmp_path, VisuSubjectPosition=Sym(position)))[0]
    assert ds.PatientPosition == patient_position
    np.testing.assert_allclose([float(v) for v in ds.ImageOrientationPatient], OBLIQUE[:6], atol=1e-9)
    np.testing.assert_allclose([float(v) for v in ds.ImagePositionPatient], [1.5, -2.0, 3.25])


def test_quadruped_is_an_animal_in_quadruped_coordinates(tmp_path):
    study = write(tmp_path, VisuSubjectType=Sym("Quadruped"), VisuSubjectPosition=Sym("Head_Prone"))
    classic = convert(study)[0]
    enhanced = convert(study, enhanced=True)[0]
    for ds in (classic, enhanced):
        assert ds.AnatomicalOrientationType == "QUADRUPED"
        # ParaVision records no species: said plainly, and no invented code.
        assert ds.PatientSpeciesDescription == "unknown"
        assert "PatientSpeciesCodeSequence" not in ds
        # Type 2C animal attributes, present and empty: ParaVision has none of them.
        assert ds.PatientBreedDescription == "" and len(ds.PatientBreedCodeSequence) == 0
        assert len(ds.BreedRegistrationSequence) == 0
        assert ds.ResponsiblePerson == "" and ds.ResponsibleOrganization == "" and ds.PatientSexNeutered == ""
    assert dciodvfy_errors(classic, tmp_path, "mr.dcm") == []
    assert dciodvfy_errors(enhanced, tmp_path, "emr.dcm") == []


def test_other_animal_uses_the_biped_system(tmp_path):
    ds = convert(write(tmp_path, VisuSubjectType=Sym("OtherAnimal")))[0]
    assert ds.AnatomicalOrientationType == "BIPED"
    assert ds.PatientSpeciesDescription == "unknown"
    assert dciodvfy_errors(ds, tmp_path) == []


def test_subject_type_from_the_study_subject_file(tmp_path):
    # No VisuSubjectType in visu_pars: the subject file's SUBJECT_type (Quadruped) applies.
    ds = convert(write(tmp_path, version="6", VisuSubjectType=None))[0]
    assert ds.AnatomicalOrientationType == "QUADRUPED"


@pytest.mark.parametrize("subject_type", ["Biped", "Phantom", "Other"])
def test_non_animal_subject_types_get_no_animal_attributes(tmp_path, subject_type):
    ds = convert(write(tmp_path, VisuSubjectType=Sym(subject_type)))[0]
    for keyword in ("AnatomicalOrientationType", "PatientSpeciesDescription", "ResponsiblePerson"):
        assert keyword not in ds, keyword
    assert dciodvfy_errors(ds, tmp_path) == []


@pytest.mark.parametrize("sex, dicom", [("MALE", "M"), ("FEMALE", "F"), ("UNDEFINED", "O"), ("UNKNOWN", "")])
def test_subject_sex(tmp_path, sex, dicom):
    assert convert(write(tmp_path, VisuSubjectSex=Sym(sex)))[0].PatientSex == dicom


def test_series_date_prefers_visu_series_date(tmp_path):
    ds = convert(write(tmp_path, VisuSeriesDate="2021-03-04T11:00:00,000+0100"))[0]
    assert (ds.SeriesDate, ds.SeriesTime) == ("20210304", "110000")
