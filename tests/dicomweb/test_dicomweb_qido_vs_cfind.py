"""QIDO-RS and C-FIND (DCMTK findscu) give the same answers to the same queries on the same server."""

from __future__ import annotations

import pytest
import requests
from pydicom import dcmread

from support import require_tool, run

LEVEL_KEY = {"STUDY": ("StudyInstanceUID", "0020000D"), "SERIES": ("SeriesInstanceUID", "0020000E"),
             "IMAGE": ("SOPInstanceUID", "00080018")}
QIDO_PATH = {"STUDY": "/studies", "SERIES": "/series", "IMAGE": "/instances"}

# (level, keys) with values written as both protocols write them (DICOM '\' for lists).
QUERIES = [
    ("STUDY", {"PatientName": "CompressedSamples*"}),
    ("STUDY", {"PatientID": "1CT1"}),
    ("STUDY", {"StudyDate": "20030101-20041231"}),
    ("STUDY", {"StudyDate": "-20030801"}),
    ("STUDY", {"ModalitiesInStudy": "MR"}),
    ("STUDY", {"ModalitiesInStudy": "MR\\OT"}),
    ("STUDY", {"PatientName": "*^G", "StudyDate": "20170101"}),
    ("SERIES", {"Modality": "MR"}),
    ("SERIES", {"Modality": "RT*"}),
    ("SERIES", {"SeriesNumber": "1"}),
    ("IMAGE", {"Rows": "64"}),
    ("IMAGE", {"SOPClassUID": "1.2.840.10008.5.1.4.1.1.4\\1.2.840.10008.5.1.4.1.1.7"}),
    ("IMAGE", {"InstanceNumber": "1", "Modality": "CT\\MR"}),
    ("IMAGE", {"PatientName": "Yamada^Tarou"}),
]


def findscu(server, level: str, keys: dict[str, str], out_dir) -> list[str]:
    tool = require_tool("findscu")
    out_dir.mkdir()
    key_name = LEVEL_KEY[level][0]
    args = [tool, "-S", "-aec", server.aet, "-X", "-od", str(out_dir), "-k", f"QueryRetrieveLevel={level}",
            "-k", key_name]
    for name, value in keys.items():
        args += ["-k", f"{name}={value}"]
    run(args + [server.host, str(server.dimse_port)])
    return [str(dcmread(p).get(key_name, "")) for p in sorted(out_dir.glob("rsp*.dcm"))]


def qido(server, level: str, keys: dict[str, str]) -> list[str]:
    response = requests.get(server.dicomweb_url + QIDO_PATH[level], params=keys, timeout=30)
    assert response.status_code == 200, response.text
    tag = LEVEL_KEY[level][1]
    return [answer[tag]["Value"][0] for answer in response.json()]


@pytest.mark.parametrize("level,keys", QUERIES, ids=[f"{lvl}:{'&'.join(k)}" for lvl, k in QUERIES])
def test_qido_and_cfind_agree(archive_server, tmp_path, level, keys):
    by_dimse = findscu(archive_server, level, keys, tmp_path / "rsp")
    by_web = qido(archive_server, level, keys)
    assert by_web == by_dimse  # same matches, in the same order
    assert by_web, "each query is chosen to match something"


def test_both_refuse_a_malformed_date(archive_server, tmp_path):
    response = requests.get(archive_server.dicomweb_url + "/studies", params={"StudyDate": "2001-12-31"}, timeout=30)
    assert response.status_code == 400 and "StudyDate" in response.text
    tool = require_tool("findscu")
    proc = run([tool, "-v", "-S", "-aec", archive_server.aet, "-k", "QueryRetrieveLevel=STUDY", "-k", "StudyDate=2001-12-31",
                archive_server.host, str(archive_server.dimse_port)], check=False)
    assert "Received Final Find Response (Error: DataSetDoesNotMatchSOPClass)" in proc.stdout + proc.stderr
