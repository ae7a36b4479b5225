"""Bad requests get the right 4xx and a short explanation; the server keeps serving."""

from __future__ import annotations

import pytest
import requests

from support import dopamine_command, run, start_server

DICOM_ACCEPT = 'multipart/related; type="application/dicom"'
MULTIPART = 'multipart/related; type="application/dicom"; boundary=b'


def get(server, path: str, **kwargs) -> requests.Response:
    return requests.get(server.dicomweb_url + path, timeout=30, **kwargs)


def instance_path(sample) -> str:
    study, series, sop = sample.uids
    return f"/studies/{study}/series/{series}/instances/{sop}"


def still_serving(server) -> None:
    response = get(server, "/studies", params={"limit": "1"})
    assert response.status_code == 200 and len(response.json()) == 1


@pytest.mark.parametrize("params,explains", [
    ({"NoSuchKeyword": "x"}, "NoSuchKeyword"),
    ({"0010002": "x"}, "0010002"),
    ({"includefield": "NotAnAttribute"}, "NotAnAttribute"),
    ({"fuzzymatching": "maybe"}, "fuzzymatching"),
    ({"limit": "-1"}, "limit"),
    ({"limit": "ten"}, "limit"),
    ({"offset": "-5"}, "offset"),
    ({"StudyDate": "yesterday"}, "StudyDate"),
    ({"NumberOfStudyRelatedInstances": "3"}, "NumberOfStudyRelatedInstances"),
    ({"PatientAge.Foo": "1"}, "PatientAge"),
    ({"Rows": "many"}, "Rows"),
])
def test_bad_query_parameters_are_400(archive_server, params, explains):
    response = get(archive_server, "/studies", params=params)
    assert response.status_code == 400
    assert explains in response.text
    still_serving(archive_server)


def test_a_limit_of_a_billion_is_served_up_to_the_maximum(archive_server):
    # PS3.18: a limit beyond what the server supports is answered with what it supports, not refused.
    response = get(archive_server, "/studies", params={"limit": "1000000000"})
    assert response.status_code == 200
    assert len(response.json()) == len(get(archive_server, "/studies").json()) > 0
    for offset in ("1000000000", "1" + "0" * 30):
        huge_offset = get(archive_server, "/studies", params={"offset": offset, "limit": "1" + "0" * 30})
        assert huge_offset.status_code == 200 and huge_offset.json() == []


@pytest.mark.parametrize("path", [
    "/studies/not-a-uid",
    "/studies/1.2.3.abc/metadata",
    "/studies/1.2.3/series/1..2",
    "/studies/" + "1." * 40 + "1",  # longer than 64 characters
    "/studies/1.2.3/series/4.5/instances/x/frames/1",
])
def test_invalid_uids_are_400(archive_server, path):
    response = get(archive_server, path, headers={"Accept": DICOM_ACCEPT})
    assert response.status_code == 400
    assert "UID" in response.text


def test_unknown_resources_are_404(archive_server, samples):
    for path in ("/studies/1.2.3.4", "/studies/1.2.3.4/metadata", "/studies/1.2.3.4/series/5.6/instances/7.8/frames/1"):
        response = get(archive_server, path)
        assert response.status_code == 404 and "1.2.3.4" in response.text
    # The instance exists, under another study: not found either.
    ct = samples["CT_small.dcm"]
    response = get(archive_server, f"/studies/1.2.3.4/series/{ct.uids[1]}/instances/{ct.uids[2]}")
    assert response.status_code == 404
    assert get(archive_server, "/no/such/route").status_code == 404


@pytest.mark.parametrize("path_of,accept", [
    (lambda s: "/studies", "image/png"),
    (lambda s: "/studies", "application/dicom+xml"),
    (lambda s: instance_path(s["CT_small.dcm"]), "text/html"),
    (lambda s: instance_path(s["CT_small.dcm"]), f"{DICOM_ACCEPT}; transfer-syntax=1.2.840.10008.1.2.4.90"),
    (lambda s: instance_path(s["CT_small.dcm"]) + "/metadata", "application/pdf"),
    (lambda s: instance_path(s["CT_small.dcm"]) + "/rendered", "image/gif"),
    (lambda s: instance_path(s["CT_small.dcm"]) + "/frames/1", 'multipart/related; type="image/jls"'),
    (lambda s: instance_path(s["SC_rgb_jpeg_dcmtk.dcm"]) + "/frames/1", 'multipart/related; type="image/jp2"'),
    (lambda s: instance_path(s["rtplan.dcm"]) + "/rendered", "image/jpeg"),  # no pixel data
])
def test_an_accept_header_nobody_can_satisfy_is_406(archive_server, samples, path_of, accept):
    response = get(archive_server, path_of(samples), headers={"Accept": accept})
    assert response.status_code == 406
    assert response.text.strip()
    still_serving(archive_server)


@pytest.mark.parametrize("frames,status", [("0", 400), ("a", 400), ("1,,2", 400), ("11", 404), ("1,99", 404)])
def test_bad_frame_numbers(archive_server, samples, frames, status):
    response = get(archive_server, instance_path(samples["emri_small.dcm"]) + f"/frames/{frames}")
    assert response.status_code == status
    assert response.text.strip()


@pytest.mark.parametrize("params,status", [
    ({"viewport": "big"}, 400), ({"window": "40"}, 400), ({"quality": "500"}, 400), ({"colour": "yes"}, 400),
])
def test_bad_rendering_parameters(archive_server, samples, params, status):
    response = get(archive_server, instance_path(samples["CT_small.dcm"]) + "/rendered", params=params)
    assert response.status_code == status and response.text.strip()


def test_bad_wado_uri_requests(archive_server, samples):
    study, series, sop = samples["CT_small.dcm"].uids
    good = {"requestType": "WADO", "studyUID": study, "seriesUID": series, "objectUID": sop}
    cases = [
        ({**good, "requestType": "WADO-RS"}, 400),
        ({k: v for k, v in good.items() if k != "objectUID"}, 400),
        ({**good, "objectUID": "1.2.3.4"}, 404),
        ({**good, "contentType": "video/mp4"}, 406),
        ({**good, "anonymize": "yes"}, 400),
        ({**good, "studyUID": "x"}, 400),
    ]
    for params, status in cases:
        response = get(archive_server, "/wado", params=params)
        assert response.status_code == status, (params, response.text)
        assert response.text.strip()


def test_bad_stow_requests(archive_server, samples):
    url = archive_server.dicomweb_url + "/studies"
    dicom = samples["CT_small.dcm"].path.read_bytes()
    cases = [
        ({"Content-Type": "application/json"}, b"{}", 415),
        ({"Content-Type": 'multipart/related; type="image/png"; boundary=b'}, b"--b--", 415),
        ({}, dicom, 415),
        ({"Content-Type": 'multipart/related; type="application/dicom"'}, dicom, 400),  # no boundary
        ({"Content-Type": MULTIPART}, b"--b\r\nContent-Type: application/dicom\r\n\r\n" + dicom, 400),  # unclosed
        ({"Content-Type": MULTIPART}, b"no delimiter at all", 400),
        ({"Content-Type": MULTIPART}, b"--b--\r\n", 400),  # no instance
        ({"Content-Type": MULTIPART}, b"--bXX\r\n\r\n--b--", 400),  # garbage after the delimiter
        ({"Content-Type": MULTIPART, "Accept": "text/csv"}, b"--b--", 406),
    ]
    for headers, body, status in cases:
        response = requests.post(url, data=body, headers=headers, timeout=30)
        assert response.status_code == status, (headers, body[:40], response.text)
        assert response.text.strip()
    assert requests.post(f"{url}/not-a-uid", data=b"", headers={"Content-Type": MULTIPART}, timeout=30).status_code == 400
    # Nothing of the refused bodies is left behind, and everything still works.
    assert not list((archive_server.data_dir / "incoming").glob("stow-*"))
    still_serving(archive_server)


@pytest.fixture(scope="module")
def capped_server(tmp_path_factory, samples):
    """A server returning at most 2 results per search, with CORS for one origin and gzip from 100 bytes."""
    root = tmp_path_factory.mktemp("dicomweb-capped")
    config = root / "dopamine.toml"
    config.write_text('[dicomweb]\nmax_results = 2\ncors_allow_origins = ["http://viewer.example"]\n'
                      "gzip_minimum_size = 100\n"
                      "[auth]\nenforce = false\n")  # not about access control (tests/acl_matrix is)
    names = ["CT_small.dcm", "MR_small.dcm", "rtplan.dcm", "reportsi.dcm", "SC_rgb.dcm"]
    run(dopamine_command("import", "--quiet", "--data-dir", str(root / "data"), *(str(samples[n].path) for n in names)))
    server = start_server(root / "data", config=config)
    yield server
    server.stop()


def test_results_beyond_the_maximum_carry_the_warning_header(capped_server):
    for params in ({}, {"limit": "1000000000"}):
        response = get(capped_server, "/studies", params=params)
        assert response.status_code == 200 and len(response.json()) == 2
        assert response.headers["Warning"].startswith("299 ")
        assert "additional results" in response.headers["Warning"]
    # A client asking for fewer pages deliberately: no warning; the last page: none either.
    assert "Warning" not in get(capped_server, "/studies", params={"limit": "1"}).headers
    last = get(capped_server, "/studies", params={"offset": "4"})
    assert len(last.json()) == 1 and "Warning" not in last.headers
    everything = []
    for offset in (0, 2, 4):
        everything += [a["0020000D"]["Value"][0] for a in get(capped_server, "/studies", params={"offset": offset}).json()]
    assert len(everything) == len(set(everything)) == 5


def test_cors_for_configured_origins_only(capped_server, archive_server):
    preflight = requests.options(capped_server.dicomweb_url + "/studies", timeout=30, headers={
        "Origin": "http://viewer.example", "Access-Control-Request-Method": "GET",
        "Access-Control-Request-Headers": "accept"})
    assert preflight.status_code == 200
    assert preflight.headers["Access-Control-Allow-Origin"] == "http://viewer.example"
    simple = get(capped_server, "/studies", headers={"Origin": "http://viewer.example"})
    assert simple.headers["Access-Control-Allow-Origin"] == "http://viewer.example"
    assert "Warning" in simple.headers["Access-Control-Expose-Headers"]
    other = get(capped_server, "/studies", headers={"Origin": "http://elsewhere.example"})
    assert "Access-Control-Allow-Origin" not in other.headers
    # Not configured (the default): no CORS headers at all.
    assert "Access-Control-Allow-Origin" not in get(archive_server, "/studies", headers={"Origin": "http://viewer.example"}).headers


def test_gzip_applies_to_json_not_to_dicom(capped_server, samples):
    json_response = get(capped_server, "/studies", headers={"Accept-Encoding": "gzip"})
    assert json_response.headers.get("Content-Encoding") == "gzip"
    ct = samples["CT_small.dcm"]
    dicom = get(capped_server, instance_path(ct), headers={"Accept-Encoding": "gzip", "Accept": DICOM_ACCEPT})
    assert dicom.status_code == 200 and "Content-Encoding" not in dicom.headers
