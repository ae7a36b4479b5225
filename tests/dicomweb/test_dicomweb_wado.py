"""WADO-RS and WADO-URI through dicomweb-client (library and CLI) and plain HTTP, on a loaded `dopamine serve`."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import numpy as np
import requests
from PIL import Image
from pydicom import dcmread
from pydicom.encaps import generate_frames

DICOM_ACCEPT = 'multipart/related; type="application/dicom"'
EXPLICIT_LE, IMPLICIT_LE = "1.2.840.10008.1.2.1", "1.2.840.10008.1.2"


def multipart_parts(response: requests.Response) -> list[tuple[dict[str, str], bytes]]:
    """(headers, body) of each part of a multipart/related response, parsed independently of the server."""
    content_type = response.headers["Content-Type"]
    assert content_type.startswith("multipart/related"), content_type
    boundary = content_type.split("boundary=")[1].split(";")[0].strip('"').encode()
    body = response.content
    assert body.rstrip().endswith(b"--" + boundary + b"--"), "missing closing boundary"
    chunks = body.split(b"--" + boundary)[1:-1]
    parts = []
    for chunk in chunks:
        assert chunk.startswith(b"\r\n") and chunk.endswith(b"\r\n")
        head, content = chunk[2:-2].split(b"\r\n\r\n", 1)
        headers = dict(line.split(": ", 1) for line in head.decode().split("\r\n"))
        parts.append(({k.lower(): v for k, v in headers.items()}, content))
    return parts


def instance_url(server, sample) -> str:
    study, series, sop = sample.uids
    return f"{server.dicomweb_url}/studies/{study}/series/{series}/instances/{sop}"


def test_instances_come_back_byte_identical_in_their_stored_syntax(archive_server, samples):
    for sample in samples.values():
        response = requests.get(instance_url(archive_server, sample), headers={"Accept": DICOM_ACCEPT}, timeout=30)
        assert response.status_code == 200, (sample.name, response.text)
        [(headers, content)] = multipart_parts(response)
        stored_ts = sample.ds.file_meta.TransferSyntaxUID
        assert headers["content-type"] == f"application/dicom; transfer-syntax={stored_ts}"
        assert content == sample.path.read_bytes(), sample.name


def test_study_and_series_retrieval_with_the_library(client, samples):
    sc = samples["SC_rgb.dcm"]
    in_study = sorted(s.uids[2] for s in samples.values() if s.uids[0] == sc.uids[0])
    assert len(in_study) == 2
    study = client.retrieve_study(sc.uids[0])
    assert sorted(str(ds.SOPInstanceUID) for ds in study) == in_study
    series = client.retrieve_series(sc.uids[0], sc.uids[1])
    assert sorted(str(ds.SOPInstanceUID) for ds in series) == in_study
    # Streamed: the same through chunked transfer encoding.
    streamed = list(client.iter_study(sc.uids[0]))
    assert sorted(str(ds.SOPInstanceUID) for ds in streamed) == in_study


def test_transfer_syntax_of_the_accept_header(client, archive_server, samples):
    j2k = samples["JPEG2000.dcm"]
    original = dcmread(j2k.path)
    explicit = client.retrieve_instance(*j2k.uids, media_types=(("application/dicom", EXPLICIT_LE),))
    assert explicit.file_meta.TransferSyntaxUID == EXPLICIT_LE
    assert np.array_equal(explicit.pixel_array, original.pixel_array)
    as_stored = client.retrieve_instance(*j2k.uids, media_types=(("application/dicom", "*"),))
    assert as_stored.file_meta.TransferSyntaxUID == original.file_meta.TransferSyntaxUID
    dose = samples["rtdose.dcm"]  # stored implicit VR
    converted = client.retrieve_instance(*dose.uids, media_types=(("application/dicom", EXPLICIT_LE),))
    assert converted.file_meta.TransferSyntaxUID == EXPLICIT_LE
    assert converted.PixelData == dcmread(dose.path).PixelData
    ct = samples["CT_small.dcm"]
    # dicomweb-client will not ask for implicit VR: plain HTTP does.
    response = requests.get(instance_url(archive_server, ct), timeout=30,
                            headers={"Accept": f"{DICOM_ACCEPT}; transfer-syntax={IMPLICIT_LE}"})
    [(headers, content)] = multipart_parts(response)
    assert headers["content-type"] == f"application/dicom; transfer-syntax={IMPLICIT_LE}"
    implicit = dcmread(io.BytesIO(content))
    assert implicit.file_meta.TransferSyntaxUID == IMPLICIT_LE
    assert implicit.PixelData == dcmread(ct.path).PixelData


def test_a_transfer_syntax_we_cannot_produce_is_406(archive_server, samples):
    accept = f'{DICOM_ACCEPT}; transfer-syntax=1.2.840.10008.1.2.4.50'
    response = requests.get(instance_url(archive_server, samples["CT_small.dcm"]), headers={"Accept": accept}, timeout=30)
    assert response.status_code == 406
    assert "1.2.840.10008.1.2.4.50" in response.text
    # A fallback in the same Accept header is taken.
    response = requests.get(instance_url(archive_server, samples["CT_small.dcm"]),
                            headers={"Accept": f"{accept}, {DICOM_ACCEPT}; transfer-syntax={EXPLICIT_LE}"}, timeout=30)
    assert response.status_code == 200


def test_metadata_at_each_level(client, samples):
    ct = samples["CT_small.dcm"]
    instance = client.retrieve_instance_metadata(*ct.uids)
    assert instance["00100010"]["Value"] == [{"Alphabetic": "CompressedSamples^CT1"}]
    assert instance["00083002"]["Value"] == [EXPLICIT_LE]  # Available Transfer Syntax UID
    assert "InlineBinary" not in instance["7FE00010"] and "BulkDataURI" in instance["7FE00010"]
    [pixels] = client.retrieve_bulkdata(instance["7FE00010"]["BulkDataURI"])
    assert pixels == dcmread(ct.path).PixelData
    sc = samples["SC_rgb.dcm"]
    study = client.retrieve_study_metadata(sc.uids[0])
    series = client.retrieve_series_metadata(sc.uids[0], sc.uids[1])
    expected = sorted(s.uids[2] for s in samples.values() if s.uids[0] == sc.uids[0])
    assert sorted(m["00080018"]["Value"][0] for m in study) == expected
    assert sorted(m["00080018"]["Value"][0] for m in series) == expected


def test_bulk_data_inside_a_sequence(client, samples):
    ecg = samples["waveform_ecg.dcm"]
    metadata = client.retrieve_instance_metadata(*ecg.uids)
    first_waveform = metadata["54000100"]["Value"][0]["54001010"]
    assert first_waveform["BulkDataURI"].endswith("/bulkdata/54000100/1/54001010")
    [data] = client.retrieve_bulkdata(first_waveform["BulkDataURI"])
    assert data == dcmread(ecg.path).WaveformSequence[0].WaveformData


def test_native_frames(client, samples):
    mri = samples["emri_small.dcm"]
    original = dcmread(mri.path)
    frame_bytes = original.Rows * original.Columns * original.BitsAllocated // 8
    frames = client.retrieve_instance_frames(*mri.uids, frame_numbers=[1, 3, 10])
    assert frames == [original.PixelData[(n - 1) * frame_bytes: n * frame_bytes] for n in (1, 3, 10)]
    seg = samples["liver.dcm"]  # 1 bit per pixel: frames do not start on byte boundaries
    original = dcmread(seg.path)
    [second] = client.retrieve_instance_frames(*seg.uids, frame_numbers=[2])
    unpacked = np.unpackbits(np.frombuffer(second, dtype=np.uint8), bitorder="little")
    assert np.array_equal(unpacked[: original.Rows * original.Columns].reshape(original.Rows, original.Columns),
                          original.pixel_array[1])


def test_compressed_frames_as_stored_or_decoded(client, samples):
    jpeg = samples["SC_rgb_jpeg_dcmtk.dcm"]
    original = dcmread(jpeg.path)
    [stored] = client.retrieve_instance_frames(*jpeg.uids, frame_numbers=[1])  # Accept: */*
    assert stored == next(generate_frames(original.PixelData, number_of_frames=1))
    [decoded] = client.retrieve_instance_frames(*jpeg.uids, frame_numbers=[1],
                                                media_types=(("application/octet-stream", "*"),))
    assert decoded == original.pixel_array.astype("<u1").tobytes()
    [as_jpeg] = client.retrieve_instance_frames(*jpeg.uids, frame_numbers=[1], media_types=("image/jpeg",))
    assert as_jpeg == stored


def test_rendered_and_thumbnails(client, archive_server, samples):
    ct = samples["CT_small.dcm"]
    jpeg = Image.open(io.BytesIO(client.retrieve_instance_rendered(*ct.uids)))
    assert jpeg.format == "JPEG" and jpeg.size == (ct.ds.Columns, ct.ds.Rows)
    png = Image.open(io.BytesIO(client.retrieve_instance_rendered(*ct.uids, media_types=("image/png",),
                                                                  params={"window": "40,400", "viewport": "64,64"})))
    assert png.format == "PNG" and png.size == (64, 64)
    assert len(np.unique(np.asarray(png))) > 10, "a windowed CT slice has more than a few grey levels"
    mri = samples["emri_small.dcm"]
    frame = Image.open(io.BytesIO(client.retrieve_instance_frames_rendered(*mri.uids, frame_numbers=[5])))
    assert frame.size == (mri.ds.Columns, mri.ds.Rows)
    rgb = samples["SC_rgb.dcm"]
    colour = Image.open(io.BytesIO(client.retrieve_instance_rendered(*rgb.uids, media_types=("image/png",))))
    assert colour.mode == "RGB"
    assert np.array_equal(np.asarray(colour), dcmread(rgb.path).pixel_array)
    study_url = f"{archive_server.dicomweb_url}/studies/{rgb.uids[0]}"
    for url in (f"{study_url}/thumbnail", f"{study_url}/series/{rgb.uids[1]}/thumbnail",
                f"{instance_url(archive_server, mri)}/frames/2/thumbnail"):
        response = requests.get(url, headers={"Accept": "image/png"}, timeout=30)
        assert response.status_code == 200 and response.headers["Content-Type"] == "image/png"
        assert max(Image.open(io.BytesIO(response.content)).size) <= 128


def test_wado_uri(archive_server, samples):
    ct = samples["CT_small.dcm"]
    study, series, sop = ct.uids
    url = f"{archive_server.dicomweb_url}/wado"
    params = {"requestType": "WADO", "studyUID": study, "seriesUID": series, "objectUID": sop}
    response = requests.get(url, params={**params, "contentType": "application/dicom"}, timeout=30)
    assert response.status_code == 200 and response.headers["Content-Type"] == "application/dicom"
    assert response.content == ct.path.read_bytes()
    response = requests.get(url, params=params, timeout=30)  # image/jpeg is the default for images
    assert response.headers["Content-Type"] == "image/jpeg"
    assert Image.open(io.BytesIO(response.content)).size == (ct.ds.Columns, ct.ds.Rows)
    response = requests.get(url, params={**params, "rows": "32"}, timeout=30)
    assert Image.open(io.BytesIO(response.content)).size == (32, 32)
    plan = samples["rtplan.dcm"]
    response = requests.get(url, params={"requestType": "WADO", "studyUID": plan.uids[0], "seriesUID": plan.uids[1],
                                         "objectUID": plan.uids[2]}, timeout=30)
    assert response.headers["Content-Type"] == "application/dicom"  # not an image: the object itself
    assert response.content == plan.path.read_bytes()


def test_command_line_client_retrieves(archive_server, samples, tmp_path):
    mri = samples["emri_small.dcm"]
    study, series, sop = mri.uids
    tool = str(Path(sys.executable).parent / "dicomweb_client")
    base = [tool, "--url", archive_server.dicomweb_url, "retrieve", "instances", "--study", study,
            "--series", series, "--instance", sop]
    proc = subprocess.run(base + ["full", "--save", "--output-dir", str(tmp_path)], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    [saved] = list(tmp_path.glob("*.dcm"))
    assert dcmread(saved).SOPInstanceUID == sop
    proc = subprocess.run(base + ["metadata"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert sop in proc.stdout


def test_metadata_as_xml(archive_server, samples):
    ct = samples["CT_small.dcm"]
    response = requests.get(instance_url(archive_server, ct) + "/metadata", timeout=30,
                            headers={"Accept": 'multipart/related; type="application/dicom+xml"'})
    assert response.status_code == 200
    [(headers, content)] = multipart_parts(response)
    assert headers["content-type"] == "application/dicom+xml"
    assert b'<DicomAttribute tag="00080018" vr="UI" keyword="SOPInstanceUID"><Value number="1">' \
           + ct.uids[2].encode() in content
    assert b'<BulkData uri="' in content
