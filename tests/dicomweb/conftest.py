"""A `dopamine serve` loaded once with pydicom's sample files, shared by the read-only DICOMweb tests."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.data import get_charset_files, get_testdata_file
from pydicom.dataset import Dataset

from support import dopamine_command, run, start_server

SAMPLES = [
    "CT_small.dcm",  # CT, explicit VR little endian
    "MR_small.dcm",  # MR
    "JPEG2000.dcm",  # NM, JPEG 2000
    "emri_small.dcm",  # MR, 10 native frames
    "rtplan.dcm",  # RT Plan, implicit VR, no pixel data, sequences
    "rtdose.dcm",  # RT Dose, implicit VR, 15 frames
    "SC_rgb.dcm",  # secondary capture, RGB
    "SC_rgb_jpeg_dcmtk.dcm",  # same study, JPEG baseline
    "reportsi.dcm",  # structured report
    "waveform_ecg.dcm",  # bulk data inside a sequence
    "liver.dcm",  # segmentation, 1-bit frames
]
CHARSET_SAMPLES = ["chrGerm.dcm", "chrH31.dcm"]  # Latin-1 and Japanese person names


@dataclass
class Sample:
    name: str
    path: Path
    ds: Dataset  # without pixel data

    @property
    def uids(self) -> tuple[str, str, str]:
        return str(self.ds.StudyInstanceUID), str(self.ds.SeriesInstanceUID), str(self.ds.SOPInstanceUID)


def _sample_path(name: str) -> Path:
    found = get_testdata_file(name) or (get_charset_files(name) or [None])[0]
    if found is None:
        pytest.fail(f"pydicom test file {name} is missing (pip install pydicom-data)", pytrace=False)
    return Path(found)


@pytest.fixture(scope="session")
def samples() -> dict[str, Sample]:
    out = {}
    for name in SAMPLES + CHARSET_SAMPLES:
        path = _sample_path(name)
        out[name] = Sample(name, path, dcmread(path, stop_before_pixels=True))
    return out


@pytest.fixture(scope="session")
def archive_server(tmp_path_factory, samples):
    """The loaded server; tests using it only read (STOW tests have their own server)."""
    data_dir = tmp_path_factory.mktemp("dicomweb-read") / "data"
    run(dopamine_command("import", "--quiet", "--data-dir", str(data_dir), *(str(s.path) for s in samples.values())))
    server = start_server(data_dir)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def client(archive_server):
    from dicomweb_client.api import DICOMwebClient

    return DICOMwebClient(archive_server.dicomweb_url)

