"""Bad input over DIMSE: each gets a DICOM failure status (or a refused context) with a reason, the archive
keeps serving, and what it already held stays retrievable and intact.

The store-side cases use a pynetdicom SCU sending files as they are (a path is sent without re-encoding),
which lets a test put on the wire what a careful client never would.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.uid import CTImageStorage, MRImageStorage, generate_uid
from pydicom.dataset import Dataset
from pynetdicom import AE
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind, Verification

from dimse_client import c_get, dataset_bytes, send_file, storescu_command, synthesize
from dopamine_py.storage.sqlite import SQLiteBackend
from support import require_tool, run, start_server

logging.getLogger("pynetdicom").setLevel(logging.CRITICAL)  # the tests provoke errors on purpose

SERIES_OF_RECORD = "1.2.826.0.1.3680043.8.498.1"  # the baseline series every test checks afterwards


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    base = tmp_path_factory.mktemp("bad-input")
    server = start_server(base / "data")
    study = generate_uid()
    baseline = [synthesize(base / "baseline" / f"{i}.dcm", patient_id="BASELINE", study_uid=study,
                           series_uid=SERIES_OF_RECORD, instance_number=i + 1) for i in range(3)]
    run(storescu_command(require_tool("storescu"), server, baseline))
    server.extra.update(base=base, baseline=baseline)
    yield server
    server.stop()


def assert_still_serving_and_intact(server) -> None:
    """Echo is answered, and the baseline instances come back over C-GET exactly as sent."""
    echo = run([require_tool("echoscu"), "-aec", server.aet, server.host, str(server.dimse_port)], check=False)
    assert echo.returncode == 0, f"the archive stopped answering C-ECHO:\n{echo.stderr}\n{server.log()[-2000:]}"
    received, status = c_get(server, {"QueryRetrieveLevel": "SERIES", "SeriesInstanceUID": SERIES_OF_RECORD},
                             [MRImageStorage])
    assert status == 0x0000, f"C-GET of the baseline ended with {status:#06x}" if status is not None else status
    for path in server.extra["baseline"]:
        uid = str(dcmread(path, stop_before_pixels=True).SOPInstanceUID)
        assert received.get(uid) == dataset_bytes(path.read_bytes()), f"baseline instance {uid} damaged or missing"


def is_stored(server, sop_instance_uid: str) -> bool:
    backend = SQLiteBackend(server.data_dir)
    try:
        return backend.get_document(sop_instance_uid) is not None
    finally:
        backend.close()


def with_meta(folder: Path, name: str, body: bytes, *, sop_class: str, sop_uid: str) -> Path:
    """A Part 10 file whose File Meta Information announces ``sop_class`` and ``sop_uid`` over ``body``:
    pynetdicom takes the C-STORE's Affected SOP Class and Instance from it."""
    donor = synthesize(folder / f"{name}-donor.dcm", sop_class=sop_class, sop_uid=sop_uid)
    data = donor.read_bytes()
    meta_end = len(data) - len(dataset_bytes(data))
    path = folder / f"{name}.dcm"
    path.write_bytes(data[:meta_end] + body)
    return path


def test_data_set_of_another_sop_class_than_announced_is_refused(archive, tmp_path):
    mr = synthesize(tmp_path / "mr.dcm", sop_class=MRImageStorage)
    uid = str(dcmread(mr).SOPInstanceUID)
    # The C-STORE says CT Image Storage; the data set inside is an MR image.
    crafted = with_meta(tmp_path, "announced-ct", dataset_bytes(mr.read_bytes()), sop_class=CTImageStorage, sop_uid=uid)
    status = send_file(archive, crafted, CTImageStorage)
    assert status.Status == 0xA900, f"expected 0xA900 (data set does not match SOP class), got {status.Status:#06x}"
    assert "SOP Class" in status.get("ErrorComment", ""), status
    assert not is_stored(archive, uid)
    assert_still_serving_and_intact(archive)


def test_data_set_with_another_instance_uid_than_announced_is_refused(archive, tmp_path):
    mr = synthesize(tmp_path / "mr.dcm")
    announced = generate_uid()
    crafted = with_meta(tmp_path, "other-uid", dataset_bytes(mr.read_bytes()), sop_class=MRImageStorage,
                        sop_uid=announced)
    status = send_file(archive, crafted, MRImageStorage)
    assert status.Status == 0xA900, f"{status.Status:#06x}"
    assert not is_stored(archive, announced) and not is_stored(archive, str(dcmread(mr).SOPInstanceUID))
    assert_still_serving_and_intact(archive)


def test_truncated_data_set_is_refused(archive, tmp_path):
    whole = synthesize(tmp_path / "whole.dcm", rows=64, columns=64)
    uid = str(dcmread(whole).SOPInstanceUID)
    body = dataset_bytes(whole.read_bytes())
    crafted = with_meta(tmp_path, "truncated", body[: len(body) - 1000], sop_class=MRImageStorage, sop_uid=uid)
    status = send_file(archive, crafted, MRImageStorage)
    assert status.Status & 0xF000 in (0xA000, 0xC000), f"a truncated data set got {status.Status:#06x}"
    assert "truncated" in status.get("ErrorComment", "").lower(), status
    assert not is_stored(archive, uid)
    assert_still_serving_and_intact(archive)


def test_bytes_that_are_not_a_data_set_are_refused(archive, tmp_path):
    uid = generate_uid()
    garbage = os.urandom(4096)
    crafted = with_meta(tmp_path, "garbage", garbage, sop_class=MRImageStorage, sop_uid=uid)
    status = send_file(archive, crafted, MRImageStorage)
    assert status.Status & 0xF000 in (0xA000, 0xC000), f"garbage got {status.Status:#06x}"
    assert status.get("ErrorComment"), "the refusal should say why"
    assert not is_stored(archive, uid)
    assert_still_serving_and_intact(archive)


def test_unknown_transfer_syntax_is_refused_at_negotiation(archive, tmp_path):
    ae = AE(ae_title="BADSENDER")
    ae.add_requested_context(Verification)  # so that the association itself is accepted
    ae.add_requested_context(MRImageStorage, "1.2.3.4.5.6.7")
    assoc = ae.associate(archive.host, archive.dimse_port, ae_title=archive.aet)
    try:
        assert assoc.is_established
        (rejected,) = assoc.rejected_contexts
        assert rejected.result == 0x04, "expected 'transfer syntaxes not supported'"
        with pytest.raises(ValueError):
            assoc.send_c_store(synthesize(tmp_path / "x.dcm"))
    finally:
        assoc.release()
    assert_still_serving_and_intact(archive)


def c_find(server, keys: dict[str, str], model=StudyRootQueryRetrieveInformationModelFind,
           private: tuple[int, str, str] | None = None) -> tuple[int, str, int]:
    """C-FIND with pynetdicom: the final status, its Error Comment, and how many matches came first."""
    identifier = Dataset()
    for key, value in keys.items():
        setattr(identifier, key, value)
    if private:
        identifier.add_new(*private)
    ae = AE(ae_title="BADQUERY")
    ae.add_requested_context(model)
    assoc = ae.associate(server.host, server.dimse_port, ae_title=server.aet)
    assert assoc.is_established
    matches, final, comment = 0, None, ""
    try:
        for status, answer in assoc.send_c_find(identifier, model):
            if status and status.Status in (0xFF00, 0xFF01):
                matches += 1
            elif status:
                final, comment = status.Status, str(status.get("ErrorComment", "") or (answer or {}).get("ErrorComment", ""))
    finally:
        assoc.release()
    return final, comment, matches


@pytest.mark.parametrize("keys, model, reason", [
    ({"QueryRetrieveLevel": "FOO", "PatientID": "*"}, StudyRootQueryRetrieveInformationModelFind, "FOO"),
    ({"QueryRetrieveLevel": "PATIENT", "PatientID": "*"}, StudyRootQueryRetrieveInformationModelFind, "Patient Root"),
    ({"QueryRetrieveLevel": "STUDY", "StudyDate": "yesterday"}, StudyRootQueryRetrieveInformationModelFind, "yesterday"),
    ({"QueryRetrieveLevel": "STUDY", "StudyDate": "20240101-2024x"}, StudyRootQueryRetrieveInformationModelFind, "range"),
    ({"QueryRetrieveLevel": "STUDY", "NumberOfStudyRelatedInstances": "3"}, StudyRootQueryRetrieveInformationModelFind,
     "computed"),
], ids=["unknown-level", "patient-in-study-root", "word-as-date", "bad-date-range", "match-on-count"])
def test_bad_query_identifier_gets_a_failure_status_with_a_reason(archive, keys, model, reason):
    status, comment, matches = c_find(archive, keys, model)
    assert status == 0xA900, f"expected 0xA900 (identifier does not match SOP class), got {status}"
    assert reason.lower() in comment.lower(), f"the Error Comment does not say what is wrong: {comment!r}"
    assert matches == 0
    assert_still_serving_and_intact(archive)


def test_findscu_shows_the_failure_of_a_bad_level(archive):
    command = [require_tool("findscu"), "-v", "-S", "-aec", archive.aet, "-k", "QueryRetrieveLevel=FOO",
               archive.host, str(archive.dimse_port)]
    proc = run(command, check=False)
    # DCMTK names status 0xA900 after its C-STORE meaning.
    assert "Received Final Find Response (Error: DataSetDoesNotMatchSOPClass)" in proc.stdout + proc.stderr
    assert_still_serving_and_intact(archive)


def test_unknown_private_key_matches_nothing_and_is_not_an_error(archive):
    status, _, matches = c_find(archive, {"QueryRetrieveLevel": "STUDY", "PatientID": "BASELINE"},
                                private=(0x00991001, "LO", "whatever"))
    assert status == 0x0000
    assert matches == 0, "no stored instance has that private attribute"
    status, _, matches = c_find(archive, {"QueryRetrieveLevel": "STUDY", "PatientID": "BASELINE"},
                                private=(0x00991001, "LO", ""))
    assert (status, matches) == (0x0000, 1), "an empty private key is universal matching"
    assert_still_serving_and_intact(archive)


def test_bad_retrieve_identifier_gets_a_failure_status(archive):
    getscu = run([require_tool("getscu"), "-v", "-S", "-aec", archive.aet, "-k", "QueryRetrieveLevel=NOPE",
                  archive.host, str(archive.dimse_port)], check=False)
    output = getscu.stdout + getscu.stderr
    assert "Received C-GET Response (Failed" in output or "Received C-GET Response (Error" in output, output[-1500:]
    # The archive means 0xA900 with its reason; anything else is the handler failing, not refusing.
    assert "DataSetDoesNotMatchSOPClass" in output, f"C-GET refusal is not 0xA900:\n{output[-800:]}"
    assert_still_serving_and_intact(archive)


def test_move_to_unknown_destination_gets_a_failure_status(archive):
    movescu = run([require_tool("movescu"), "-v", "-S", "-aec", archive.aet, "-aem", "NOBODY",
                   "-k", "QueryRetrieveLevel=SERIES", "-k", f"SeriesInstanceUID={SERIES_OF_RECORD}",
                   archive.host, str(archive.dimse_port)], check=False)
    assert "MoveDestinationUnknown" in movescu.stdout + movescu.stderr, movescu.stderr[-1500:]
    assert_still_serving_and_intact(archive)


# ------------------------------------------------------------------------------------------------ disk full

# The server runs with a file size limit (RLIMIT_FSIZE) and SIGXFSZ ignored, so that a write past the limit
# fails with EFBIG like a full disk would, without mounting anything. Python's subprocess resets SIGXFSZ in
# the child, so the limit is set from inside the server process, by a sitecustomize module on its path.
SITECUSTOMIZE = """\
import os, resource, signal
_limit = int(os.environ["DOPAMINE_TEST_FILE_SIZE_LIMIT"])
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (_limit, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
"""
FILE_SIZE_LIMIT = 4 * 1024 * 1024


@pytest.fixture(scope="module")
def full_disk(tmp_path_factory):
    """An archive whose files cannot grow past FILE_SIZE_LIMIT, holding a few instances stored before."""
    base = tmp_path_factory.mktemp("full-disk")
    hook = base / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(SITECUSTOMIZE)
    study, series = generate_uid(), generate_uid()
    baseline = [synthesize(base / "baseline" / f"{i}.dcm", patient_id="BEFORE-FULL", study_uid=study,
                           series_uid=series, instance_number=i + 1) for i in range(5)]
    env = {"PYTHONPATH": str(hook), "DOPAMINE_TEST_FILE_SIZE_LIMIT": str(FILE_SIZE_LIMIT)}
    server = start_server(base / "data", env=env)
    try:
        run(storescu_command(require_tool("storescu"), server, baseline))
        server.extra.update(base=base, baseline=baseline, series=series)
        yield server
    finally:
        server.stop()


def assert_baseline_survived(server) -> None:
    echo = run([require_tool("echoscu"), "-aec", server.aet, server.host, str(server.dimse_port)], check=False)
    assert echo.returncode == 0, "the archive stopped serving after the disk filled up"
    received, _ = c_get(server, {"QueryRetrieveLevel": "SERIES", "SeriesInstanceUID": server.extra["series"]},
                        [MRImageStorage])
    for path in server.extra["baseline"]:
        uid = str(dcmread(path, stop_before_pixels=True).SOPInstanceUID)
        assert received.get(uid) == dataset_bytes(path.read_bytes()), f"{uid} harmed by the full disk"


def test_full_disk_while_receiving_gets_out_of_resources(full_disk):
    """The incoming file itself cannot be written: the sender must get a failure status, not a dead
    association."""
    big = synthesize(full_disk.extra["base"] / "big.dcm", rows=1024, columns=1024, frames=3)  # 6 MB
    status = send_file(full_disk, big, MRImageStorage)
    assert_baseline_survived(full_disk)
    assert status is not None, ("no C-STORE response: the association broke when the incoming file could not "
                                "be written (see the server log)")
    assert status.Status & 0xFF00 == 0xA700, f"expected 0xA7xx (out of resources), got {status.Status:#06x}"


def test_full_disk_while_storing_gets_failure_statuses(full_disk):
    statuses = []
    for i in range(40):
        small = synthesize(full_disk.extra["base"] / "fill" / f"{i}.dcm", patient_id="FILLING", rows=256, columns=256)
        status = send_file(full_disk, small, MRImageStorage)
        statuses.append(status.Status if status is not None else None)
    assert_baseline_survived(full_disk)
    failures = [s for s in statuses if s != 0x0000]
    assert failures, "the store never filled up: the file size limit did not apply"
    assert None not in failures, f"some stores got no response at all: {statuses}"
    assert all(s & 0xFF00 == 0xA700 for s in failures), f"expected 0xA7xx (out of resources): {[hex(s) for s in failures]}"


def test_full_disk_freed_again_everything_acknowledged_is_there(full_disk, tmp_path):
    full_disk.stop()
    server = start_server(full_disk.data_dir)
    try:
        received, _ = c_get(server, {"QueryRetrieveLevel": "SERIES", "SeriesInstanceUID": full_disk.extra["series"]},
                            [MRImageStorage])
        assert set(received) == {str(dcmread(p).SOPInstanceUID) for p in full_disk.extra["baseline"]}
        status = send_file(server, synthesize(tmp_path / "after.dcm"), MRImageStorage)
        assert status is not None and status.Status == 0x0000, "the store no longer accepts instances"
    finally:
        server.stop()
