"""Attributes shared by both IODs: patient, study, series, equipment,
frame of reference, SOP common and file meta."""

from __future__ import annotations

from typing import Any

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, PYDICOM_IMPLEMENTATION_UID

from .acquisition import dicom_date_time, parse_date
from .context import ScanContext

__all__ = ["base_dataset", "finish", "clip"]

_SEX = {"MALE": "M", "FEMALE": "F", "OTHER": "O"}
_POSITION = {
    "Head_Supine": "HFS",
    "Head_Prone": "HFP",
    "Head_Left": "HFDL",
    "Head_Right": "HFDR",
    "Foot_Supine": "FFS",
    "Foot_Prone": "FFP",
    "Foot_Left": "FFDL",
    "Foot_Right": "FFDR",
}
# Parameter names under which ParaVision versions keep animal details.
_SPECIES = ("VisuSubjectSpecies", "SUBJECT_species", "VisuSubjectAnimalSpecies")
_BREED = ("VisuSubjectStrain", "SUBJECT_strain", "VisuSubjectBreed", "SUBJECT_breed")


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
    comment = p.text("VisuSubjectComment", "SUBJECT_remarks", "SUBJECT_comment")
    if comment:
        ds.PatientComments = clip(comment, 10240)
    species = p.text(*_SPECIES)
    if species:
        ds.PatientSpeciesDescription = clip(species, 64)
        ds.PatientBreedDescription = clip(p.text(*_BREED), 64)
        # Type 2C companions, required (possibly empty) for animal subjects.
        ds.PatientBreedCodeSequence = Sequence()
        ds.BreedRegistrationSequence = Sequence()
        ds.ResponsiblePerson = ""
        ds.PatientSexNeutered = ""  # ParaVision does not record it
        ds.ResponsibleOrganization = clip(p.text("VisuInstitution"), 64)
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
    ds.SeriesDate, ds.SeriesTime = dicom_date_time(p.text("VisuAcqDate", "VisuCreationDate"))
    ds.PatientPosition = _POSITION.get(p.text("VisuSubjectPosition", "ACQ_patient_pos"), "")
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
