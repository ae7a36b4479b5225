"""STOW-RS against its own `dopamine serve`: stores, statuses, the round trip, and streaming of large bodies."""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import requests
from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from support import start_server

CT, MR, PLAN, J2K = "CT_small.dcm", "MR_small.dcm", "rtplan.dcm", "JPEG2000.dcm"
STUDY_UID_MISMATCH = 0xC409
MiB = 1 << 20


@pytest.fixture(scope="module")
def stow_server(tmp_path_factory):
    server = start_server(tmp_path_factory.mktemp("dicomweb-stow") / "data")
    yield server
    server.stop()


def fresh_copy(path: Path, out_dir: Path, study: str | None = None) -> Path:
    """The sample under new SOP Instance (and optionally Study) UIDs, so that each test stores new instances."""
    ds = dcmread(path)
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    if study:
        ds.StudyInstanceUID = study
    target = out_dir / f"{uuid.uuid4().hex}.dcm"
    ds.save_as(target)
    return target


def multipart(parts: list[tuple[str, bytes]], boundary: str = "dopamine-test-boundary") -> tuple[bytes, str]:
    body = b"".join(f"--{boundary}\r\nContent-Type: {ctype}\r\n\r\n".encode() + data + b"\r\n" for ctype, data in parts)
    return body + f"--{boundary}--\r\n".encode(), f'multipart/related; type="application/dicom"; boundary={boundary}'


def post(server, path: str, parts: list[tuple[str, bytes]], accept: str = "application/dicom+json") -> requests.Response:
    body, content_type = multipart(parts)
    return requests.post(server.dicomweb_url + path, data=body, timeout=60,
                         headers={"Content-Type": content_type, "Accept": accept})


def referenced(answer: dict) -> list[str]:
    return [item["00081155"]["Value"][0] for item in answer.get("00081199", {}).get("Value", [])]


def failures(answer: dict) -> list[tuple[str | None, int]]:
    return [((item.get("00081155", {}).get("Value") or [None])[0], item["00081197"]["Value"][0])
            for item in answer.get("00081198", {}).get("Value", [])]


def test_stow_then_wado_is_byte_identical(stow_server, samples, tmp_path):
    files = [fresh_copy(samples[name].path, tmp_path) for name in (CT, PLAN, J2K)]
    response = post(stow_server, "/studies", [("application/dicom", f.read_bytes()) for f in files])
    assert response.status_code == 200, response.text
    answer = response.json()
    assert referenced(answer) == [str(dcmread(f).SOPInstanceUID) for f in files]
    for f, item in zip(files, answer["00081199"]["Value"]):
        got = requests.get(item["00081190"]["Value"][0], headers={"Accept": 'multipart/related; type="application/dicom"'},
                           timeout=30)
        assert got.status_code == 200
        boundary = got.headers["Content-Type"].split("boundary=")[1].encode()
        [part] = got.content.split(b"--" + boundary)[1:-1]
        assert part.split(b"\r\n\r\n", 1)[1][:-2] == f.read_bytes()  # the instance part is the file sent


def test_library_and_command_line_store(stow_server, samples, tmp_path):
    from dicomweb_client.api import DICOMwebClient

    client = DICOMwebClient(stow_server.dicomweb_url)
    copy = dcmread(fresh_copy(samples[MR].path, tmp_path))
    answer = client.store_instances([copy])
    assert [item.ReferencedSOPInstanceUID for item in answer.ReferencedSOPSequence] == [copy.SOPInstanceUID]
    assert client.search_for_instances(search_filters={"SOPInstanceUID": copy.SOPInstanceUID})
    path = fresh_copy(samples[CT].path, tmp_path)
    proc = subprocess.run([str(Path(sys.executable).parent / "dicomweb_client"), "--url", stow_server.dicomweb_url,
                           "store", "instances", str(path)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    uid = str(dcmread(path).SOPInstanceUID)
    [found] = client.search_for_instances(search_filters={"SOPInstanceUID": uid})
    assert found["00080018"]["Value"] == [uid]


def test_storing_into_a_study_refuses_other_studies(stow_server, samples, tmp_path):
    study = generate_uid()
    ours = fresh_copy(samples[CT].path, tmp_path, study=study)
    theirs = fresh_copy(samples[MR].path, tmp_path)
    theirs_uid = str(dcmread(theirs).SOPInstanceUID)
    only_theirs = post(stow_server, f"/studies/{study}", [("application/dicom", theirs.read_bytes())])
    assert only_theirs.status_code == 409
    assert failures(only_theirs.json()) == [(theirs_uid, STUDY_UID_MISMATCH)]
    mixed = post(stow_server, f"/studies/{study}", [("application/dicom", ours.read_bytes()),
                                                     ("application/dicom", theirs.read_bytes())])
    assert mixed.status_code == 202
    assert referenced(mixed.json()) == [str(dcmread(ours).SOPInstanceUID)]
    assert failures(mixed.json()) == [(theirs_uid, STUDY_UID_MISMATCH)]
    assert mixed.json()["00081190"]["Value"][0].endswith(f"/studies/{study}")
    # The refused instance was not stored.
    search = requests.get(f"{stow_server.dicomweb_url}/instances", params={"SOPInstanceUID": theirs_uid}, timeout=30)
    assert search.json() == []


def test_parts_that_are_not_dicom_fail_alone(stow_server, samples, tmp_path):
    good = fresh_copy(samples[CT].path, tmp_path)
    response = post(stow_server, "/studies", [("application/dicom", b"this is not DICOM" * 20),
                                              ("text/plain", b"hello"),
                                              ("application/dicom", good.read_bytes())])
    assert response.status_code == 202
    answer = response.json()
    assert referenced(answer) == [str(dcmread(good).SOPInstanceUID)]
    reasons = [reason for _, reason in failures(answer)]
    assert reasons[0] == 0xC000  # cannot understand
    assert len(reasons) == 2
    nothing_good = post(stow_server, "/studies", [("application/dicom", b"\0" * 300)])
    assert nothing_good.status_code == 409


def test_storing_the_same_instance_twice_succeeds(stow_server, samples, tmp_path):
    copy = fresh_copy(samples[CT].path, tmp_path)
    for _ in range(2):
        response = post(stow_server, "/studies", [("application/dicom", copy.read_bytes())])
        assert response.status_code == 200
        assert referenced(response.json()) == [str(dcmread(copy).SOPInstanceUID)]


def test_xml_response(stow_server, samples, tmp_path):
    copy = fresh_copy(samples[CT].path, tmp_path)
    response = post(stow_server, "/studies", [("application/dicom", copy.read_bytes())], accept="application/dicom+xml")
    assert response.status_code == 200 and response.headers["Content-Type"].startswith("application/dicom+xml")
    assert str(dcmread(copy).SOPInstanceUID).encode() in response.content
    assert b'keyword="ReferencedSOPSequence"' in response.content


def test_json_metadata_with_bulk_data(stow_server, samples):
    original = dcmread(samples[CT].path)
    original.SOPInstanceUID = generate_uid()
    metadata = original.to_json_dict(bulk_data_threshold=1024, bulk_data_element_handler=lambda elem: "pixels")
    metadata["00020010"] = {"vr": "UI", "Value": [ExplicitVRLittleEndian]}
    boundary = "json-and-bulk"
    body = (f"--{boundary}\r\nContent-Type: application/dicom+json\r\n\r\n".encode() + json.dumps([metadata]).encode()
            + f"\r\n--{boundary}\r\nContent-Type: application/octet-stream\r\nContent-Location: pixels\r\n\r\n".encode()
            + original.PixelData + f"\r\n--{boundary}--\r\n".encode())
    response = requests.post(stow_server.dicomweb_url + "/studies", data=body, timeout=60, headers={
        "Content-Type": f'multipart/related; type="application/dicom+json"; boundary={boundary}'})
    assert response.status_code == 200, response.text
    assert referenced(response.json()) == [original.SOPInstanceUID]
    item_url = response.json()["00081199"]["Value"][0]["00081190"]["Value"][0]
    got = requests.get(item_url, headers={"Accept": 'multipart/related; type="application/dicom"'}, timeout=30)
    boundary = got.headers["Content-Type"].split("boundary=")[1].encode()
    [part] = got.content.split(b"--" + boundary)[1:-1]
    stored = dcmread(io.BytesIO(part.split(b"\r\n\r\n", 1)[1][:-2]))
    assert stored.PixelData == original.PixelData and stored.PatientName == original.PatientName


def peak_memory(pid: int) -> int:
    """Peak resident memory of a process (VmHWM), in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM in /proc status")


def test_large_bodies_stream_through_constant_memory(stow_server):
    """256 MiB in, 256 MiB out: the server's peak memory grows by far less than the instance."""
    frames, rows = 8, 4096  # 8 frames of 4096 x 4096 x 16 bits = 256 MiB of pixel data
    ds = Dataset()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.7"  # secondary capture
    ds.SOPInstanceUID, ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid(), generate_uid()
    ds.Modality, ds.PatientID, ds.PatientName = "OT", "BIG", "Big^Upload"
    ds.Rows = ds.Columns = rows
    ds.NumberOfFrames, ds.SamplesPerPixel, ds.PhotometricInterpretation = frames, 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID, ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPClassUID, ds.SOPInstanceUID
    header = io.BytesIO()
    ds.save_as(header, enforce_file_format=True)
    size = frames * rows * rows * 2
    pixel_header = b"\xe0\x7f\x10\x00OW\x00\x00" + size.to_bytes(4, "little")
    sent = hashlib.sha256()
    boundary = "big-upload"

    def body():
        yield f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode()
        for piece in (header.getvalue(), pixel_header):
            sent.update(piece)
            yield piece
        chunk = bytes(range(256)) * (4 * 1024)  # 1 MiB, not all zeros
        for _ in range(size // len(chunk)):
            sent.update(chunk)
            yield chunk
        yield f"\r\n--{boundary}--\r\n".encode()

    before = peak_memory(stow_server.process.pid)
    response = requests.post(stow_server.dicomweb_url + "/studies", data=body(), timeout=300, headers={
        "Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}'})
    assert response.status_code == 200, response.text
    after_store = peak_memory(stow_server.process.pid)
    url = response.json()["00081199"]["Value"][0]["00081190"]["Value"][0]
    received = hashlib.sha256()
    with requests.get(url, headers={"Accept": 'multipart/related; type="application/dicom"'}, stream=True,
                      timeout=300) as got:
        assert got.status_code == 200
        closing = f"\r\n--{got.headers['Content-Type'].split('boundary=')[1]}--\r\n".encode()
        pending = b""
        in_body = False
        for chunk in got.iter_content(MiB):
            pending += chunk
            if not in_body:
                if b"\r\n\r\n" not in pending:
                    continue
                pending = pending.split(b"\r\n\r\n", 1)[1]
                in_body = True
            # Hold back what could be the closing delimiter; hash the rest.
            received.update(pending[: -len(closing)])
            pending = pending[-len(closing):]
        assert pending == closing
    after_retrieve = peak_memory(stow_server.process.pid)
    assert received.hexdigest() == sent.hexdigest()  # 256 MiB round trip, byte for byte
    print(f"peak RSS: before {before / MiB:.0f} MiB, after a 256 MiB store {after_store / MiB:.0f} MiB, "
          f"after retrieving it {after_retrieve / MiB:.0f} MiB")
    assert after_store - before < 64 * MiB
    assert after_retrieve - before < 64 * MiB
