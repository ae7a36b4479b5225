"""Converted Bruker data are instances like any other: found by C-FIND, retrieved over DIMSE and DICOMweb."""

from __future__ import annotations

import json
import re
import urllib.request

import pytest
from pydicom import dcmread

from support import dopamine_command, require_tool, run, shared_data, start_server

PHANTOM = ("bruker", "pv51_multislice_phantom")


@pytest.fixture(scope="module")
def bruker_server(tmp_path_factory):
    data = tmp_path_factory.mktemp("bruker") / "data"
    proc = run(dopamine_command("bruker", "import", str(shared_data(*PHANTOM)), "--data-dir", str(data)))
    assert "3 stored" in proc.stdout
    server = start_server(data)
    yield server
    server.stop()


def test_bruker_series_are_found_by_c_find(bruker_server):
    findscu = require_tool("findscu")
    proc = run([findscu, "-S", "-aec", bruker_server.aet, "-k", "QueryRetrieveLevel=SERIES", "-k", "Modality=MR",
                "-k", "SeriesInstanceUID", "-k", "NumberOfSeriesRelatedInstances", "-k", "SeriesDescription",
                bruker_server.host, str(bruker_server.dimse_port)])
    output = proc.stdout + proc.stderr
    assert re.search(r"IS \[3 ?\]\s+#.*NumberOfSeriesRelatedInstances", output), output


def test_bruker_instances_come_back_over_c_get(bruker_server, tmp_path):
    getscu = require_tool("getscu")
    run([getscu, "-S", "-aec", bruker_server.aet, "-od", str(tmp_path), "-k", "QueryRetrieveLevel=STUDY",
         "-k", "PatientName=*", bruker_server.host, str(bruker_server.dimse_port)])
    files = sorted(tmp_path.iterdir())
    assert len(files) == 3
    positions = {tuple(round(float(v), 3) for v in dcmread(f).ImagePositionPatient) for f in files}
    assert len(positions) == 3  # three distinct slices, as the phantom has


def test_bruker_instances_are_served_by_dicomweb(bruker_server):
    with urllib.request.urlopen(f"{bruker_server.dicomweb_url}/instances?Modality=MR", timeout=30) as response:
        assert response.headers["Content-Type"].startswith("application/dicom+json")
        results = json.load(response)
    assert len(results) == 3
    study = results[0]["0020000D"]["Value"][0]
    series = results[0]["0020000E"]["Value"][0]
    url = f"{bruker_server.dicomweb_url}/studies/{study}/series/{series}/metadata"
    with urllib.request.urlopen(url, timeout=30) as response:
        metadata = json.load(response)
    assert len(metadata) == 3 and all("00200032" in m for m in metadata)
