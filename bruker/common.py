"""Attributes shared by both IODs: patient, study, series, equipment,
frame of reference, SOP common and file meta."""

from __future__ import annotations

from typing import Any

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, PYDICOM_IMPLEMENTATION_UID

from .acquisition import dicom_date_time, parse_date
from .context import ScanContext

__all__ = ["base_dataset", "finish", "clip", "anatomical_orientation_type", "UNKNOWN_SPECIES"]

# VisuSubjectSex / SUBJECT_sex: MALE, FEMALE, UNDEFINED, UNKNOWN.  UNKNOWN
# stays empty (DICOM's "unknown" for a Type 2 attribute); UNDEFINED (e.g. a
# phantom) is "O".
_SEX = {"MALE": "M", "FEMALE": "F", "UNDEFINED": "O", "OTHER": "O"}
# VisuSubjectPosition -> PatientPosition.  ParaVision spells feet-first
# entry of quadrupeds "Tail_*".
_POSITION = {
    "Head_Supine": "HFS",
    "Head_Prone": "HFP",
    "Head_Left": "HFDL",
    "Head_Right": "HFDR",
    "Foot_Supine": "FFS",
    "Foot_Prone": "FFP",
    "Foot_Left": "FFDL",
    "Foot_Right": "FFDR",
    "Tail_Supine": "FFS",
    "Tail_Prone": "FFP",
    "Tail_Left": "FFDL",
    "Tail_Right": "FFDR",
}
# VisuSubjectType (PV 6+) / SUBJECT_type: Biped, Quadruped, Phantom, Other,
# OtherAnimal (PV 5 writes Human for bipeds).  Only the two animal types
# say for certain that the subject is an animal: primates are Bipeds.
_ANIMAL_TYPES = {"Quadruped", "OtherAnimal"}
# ParaVision records no species or breed, so an animal's species is not known.
UNKNOWN_SPECIES = "unknown"


def subject_type(params) -> str:
    return params.text("VisuSubjectType", "SUBJECT_type")


def anatomical_orientation_type(params) -> str | None:
    """QUADRUPED where ParaVision expressed the geometry in quadruped terms.

    For a Quadruped, ParaVision's Visu coordinates are the subject's own
    left, dorsal and cranial directions, which is DICOM's QUADRUPED patient
    coordinate system; for every other subject type they are the biped
    LPS system.  None when the subject is not known to be an animal (the
    attribute then defaults to BIPED).
    """
    kind = subject_type(params)
    if kind == "Quadruped":
        return "QUADRUPED"
    if kind in _ANIMAL_TYPES:
        return "BIPED"
    return None


def clip(text: Any, length: int) -> str:
    """DICOM VRs have maximum lengths (SH 16, LO 64...); ParaVision's do not."""
    return str(text or "").strip().replace("\\", "/")[:length]


def base_dataset(ctx: ScanContext) -> Dataset:
    p = ctx.params
    ds = Dataset()
    # Patient
    ds.PatientName = clip(p.text("VisuSubjectName", "SUBJECT_name_string", "SUBJECT_name"), 64)
    ds.PatientID = clip(p.text("VisuSubjectId", "SUBJECT_id"), 64)
    ds.PatientBirthDate = parse_date(p.text("VisuSubjectBirthDate", "SUBJECT_dbirth"))
    ds.PatientSex = _SEX.get(p.text("VisuSubjectSex", "SUBJECT_sex").upper(), "")
    comment = p.text("VisuSubjectComment", "SUBJECT_remarks")
    if comment:
        ds.PatientComments = clip(comment, 10240)
    if subject_type(p) in _ANIMAL_TYPES:
        # Patient module attributes required for animals (PS3.3 C.7.1.1).
        # ParaVision has no species, breed, neutering or owner parameters:
        # the species says so rather than guessing, and no code sequence is
        # made up; the Type 2C attributes stay empty.
        ds.PatientSpeciesDescription = UNKNOWN_SPECIES
        ds.PatientBreedDescription = ""
        ds.PatientBreedCodeSequence = Sequence()
        ds.BreedRegistrationSequence = Sequence()
        ds.ResponsiblePerson = ""
        ds.ResponsibleOrganization = ""
        ds.PatientSexNeutered = ""
    # Study
    ds.StudyInstanceUID = ctx.study_uid
    ds.StudyDate, ds.StudyTime = dicom_date_time(p.text("VisuStudyDate", "SUBJECT_date"))
    ds.StudyID = clip(p.text("VisuStudyId", "SUBJECT_study_name"), 16)
    ds.AccessionNumber = ""
    ds.ReferringPhysicianName = clip(p.text("VisuStudyReferringPhysician", "SUBJECT_referral"), 64)
    description = p.text("VisuStudyDescription", "SUBJECT_study_name")
    if description:
        ds.StudyDescription = clip(description, 64)
    weight = p.number("VisuSubjectWeight", "SUBJECT_weight")
    if weight:
        ds.PatientWeight = f"{weight:.6g}"
    # Series
    ds.Modality = "MR"
    ds.SeriesInstanceUID = ctx.series_uid
    ds.SeriesNumber = ctx.series_number
    protocol = ctx.acq["protocol"]
    if protocol:
        ds.SeriesDescription = clip(protocol, 64)
        ds.ProtocolName = clip(protocol, 64)
    ds.SeriesDate, ds.SeriesTime = dicom_date_time(p.text("VisuSeriesDate", "VisuAcqDate", "VisuCreationDate"))
    ds.PatientPosition = _POSITION.get(p.text("VisuSubjectPosition", "SUBJECT_position", "ACQ_patient_pos"), "")
    orientation_type = anatomical_orientation_type(p)
    if orientation_type:
        ds.AnatomicalOrientationType = orientation_type
    # Frame of reference
    ds.FrameOfReferenceUID = ctx.frame_of_reference_uid
    ds.PositionReferenceIndicator = ""
    # Equipment
    origin = p.files.get("visu_pars").header.get("ORIGIN", "") if p.has_file("visu_pars") else ""
    ds.Manufacturer = clip(origin or "Bruker BioSpin", 64)
    ds.InstitutionName = clip(p.text("VisuInstitution"), 64)
    ds.StationName = clip(p.text("VisuStation"), 16)
    ds.ManufacturerModelName = clip(p.text("VisuSystemModelName", "VisuStation") or "ParaVision", 64)
    ds.DeviceSerialNumber = clip(p.text("VisuSystemOrderNumber") or "unknown", 64)
    version = p.text("VisuAcqSoftwareVersion", "VisuCreatorVersion")
    ds.SoftwareVersions = clip(f"ParaVision {version}" if version else "ParaVision", 64)
    # Acquisition date of the scan
    ds.AcquisitionDate, ds.AcquisitionTime = dicom_date_time(p.text("VisuAcqDate", "ACQ_time"))
    ds.ContentDate, ds.ContentTime = dicom_date_time(p.text("VisuCreationDate", "VisuAcqDate", "RECO_time"))
    if not ds.ContentDate:
        ds.ContentDate, ds.ContentTime = ds.SeriesDate, ds.SeriesTime
    if any(not _ascii(v) for v in (ds.PatientName, ds.PatientComments if "PatientComments" in ds else "",
                                   ds.SeriesDescription if "SeriesDescription" in ds else "", ds.InstitutionName)):
        ds.SpecificCharacterSet = "ISO_IR 100"  # ParaVision writes Latin-1
    return ds


def _ascii(value: Any) -> bool:
    return str(value).isascii()


def finish(ds: Dataset, sop_class_uid: str, sop_instance_uid: str) -> Dataset:
    """SOP common attributes and a file meta header, so the dataset saves as a Part 10 file."""
    ds.SOPClassUID = sop_class_uid
    ds.SOPInstanceUID = sop_instance_uid
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class_uid
    meta.MediaStorageSOPInstanceUID = sop_instance_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds.file_meta = meta
    return ds


def set_image_pixel(ds: Dataset, ctx: ScanContext) -> None:
    """The Image Pixel module of both IODs: 16-bit monochrome frames of the reconstruction's size."""
    ds.Rows = ctx.layout.rows
    ds.Columns = ctx.layout.columns
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 1 if ctx.pixels.signed_output else 0
