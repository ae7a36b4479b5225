"""Helpers of the rule engine's tests: rule sets from strings, sample data sets, a fixed test key."""

from __future__ import annotations

from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from routing.engine import RuleSet, load_ruleset

SECRETS = {"deidentification": "test key: never use in production"}


def ruleset(actions: str = "", condition: str | None = None, extra_rules: str = "") -> RuleSet:
    """A rule set of one rule (plus ``extra_rules`` XML after it) from XML fragments."""
    cond = f"<Condition>{condition}</Condition>" if condition else ""
    xml = f'<RuleSet name="test"><Rule name="r1">{cond}<Action>{actions}</Action></Rule>{extra_rules}</RuleSet>'
    return load_ruleset(xml.encode())


def sample(name: str = "CT_small.dcm") -> Dataset:
    return dcmread(get_testdata_file(name), force=True)  # rtstruct.dcm has no File Meta Information


def minimal(**attributes) -> Dataset:
    """A small CT-like data set with the identifying attributes tests look at."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.PatientName = "Doe^Jane"
    ds.PatientID = "P-0001"
    ds.PatientBirthDate = "19800220"
    ds.StudyDate = "20240115"
    ds.Modality = "MR"
    ds.SeriesDescription = "t1_mprage_sag"
    for keyword, value in attributes.items():
        setattr(ds, keyword, value)
    return ds
