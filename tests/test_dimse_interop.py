"""The archive over DIMSE with DCMTK's clients, as a user drives it: echoscu, storescu, findscu, getscu,
movescu (to a DCMTK storescp registered with `dopamine peer add`).

Two archives per module run: one holding a small synthesized cohort with known counts (queries, move,
cancel, parallel stores), and one receiving pydicom's sample files for the byte-for-byte round trips.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.data import get_charset_files, get_testdata_file
from pydicom.uid import CTImageStorage, generate_uid

from dimse_client import (
    dataset_bytes,
    getscu_command,
    image_keys,
    send_file,
    storescu_command,
    storescu_transmits,
    synthesize,
    transfer_syntax_of,
)
from support import dopamine_command, free_port, require_tool, run, start_server

SAMPLE_FILES = [
    "CT_small.dcm",
    "MR_small.dcm",
    "emri_small.dcm",  # Enhanced MR (pydicom-data)
    "JPEG2000.dcm",
    "JPEG-LL.dcm",  # pydicom-data
    "MR_small_RLE.dcm",
    "SC_rgb_rle.dcm",
    "MR_small_bigendian.dcm",
    "ExplVR_BigEnd.dcm",
]
# Character-set samples that are whole instances (chrSQEncoding*.dcm have no SOP Instance UID).
CHARSET_FILES = sorted(Path(p).name for p in get_charset_files("chr*.dcm") if "SQEncoding" not in p)


def sample_path(name: str) -> Path:
    found = get_testdata_file(name) or next(iter(get_charset_files(name)), None)
    if found is None:
        pytest.fail(f"sample file {name} is missing: install pydicom-data", pytrace=False)
    return Path(found)


def findscu(server, keys: dict[str, str], out_dir: Path, *, model: str = "-S",
            extra: tuple[str, ...] = ()) -> tuple[list, subprocess.CompletedProcess]:
    """Run a C-FIND; the answers as pydicom data sets (findscu extracts each response to a file)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for old in out_dir.glob("rsp*.dcm"):
        old.unlink()
    command = [require_tool("findscu"), "-v", model, "-X", "-od", str(out_dir), "-aec", server.aet, *extra]
    for key, value in keys.items():
        command += ["-k", key if value is None else f"{key}={value}"]
    proc = run(command + [server.host, str(server.dimse_port)])
    return [dcmread(p) for p in sorted(out_dir.glob("rsp*.dcm"))], proc


def values(ds, keyword: str) -> list:
    """The values of an attribute as a list, whatever its multiplicity."""
    elem = ds.data_element(keyword)
    if elem is None or elem.VM == 0:
        return []
    return list(elem.value) if elem.VM > 1 else [elem.value]


def store(server, files: list[Path]) -> None:
    """storescu each group of files of one transfer syntax as they are; every store must succeed."""
    storescu = require_tool("storescu")
    by_syntax: dict[str, list[Path]] = {}
    for f in files:
        by_syntax.setdefault(transfer_syntax_of(f), []).append(f)
    for group in by_syntax.values():
        proc = run(storescu_command(storescu, server, group))
        assert "Store Failed" not in proc.stderr, proc.stderr


# ------------------------------------------------------------------------------------------- cohort archive

# Patient -> studies -> series (modality, instance count): the counts every level answer must report.
COHORT = {
    ("COHORT-A", "Alpha^Ann"): [("20240110", [("MR", 3), ("CT", 2)]), ("20240220", [("MR", 1)])],
    ("COHORT-B", "Beta^Bob"): [("20230505", [("CT", 4)])],
}


@pytest.fixture(scope="module")
def cohort_server(tmp_path_factory):
    base = tmp_path_factory.mktemp("interop")
    server = start_server(base / "data")
    files: list[Path] = []
    studies: dict[str, dict] = {}
    for (patient_id, name), patient_studies in COHORT.items():
        for study_date, series_list in patient_studies:
            study_uid = generate_uid()
            studies[study_uid] = {"patient": patient_id, "series": series_list}
            for modality, count in series_list:
                series_uid = generate_uid()
                for n in range(count):
                    files.append(synthesize(
                        base / "cohort" / f"{len(files):03d}.dcm", patient_id=patient_id, patient_name=name,
                        study_uid=study_uid, series_uid=series_uid, modality=modality, study_date=study_date,
                        sop_class=CTImageStorage if modality == "CT" else "1.2.840.10008.5.1.4.1.1.4",
                        instance_number=n + 1,
                    ))
    try:
        store(server, files)
        server.extra.update(base=base, files=files, studies=studies)
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def bulk_series(cohort_server):
    """200 instances of one series, sent by four storescu processes at the same time."""
    base = cohort_server.extra["base"]
    study, series = generate_uid(), generate_uid()
    files = [synthesize(base / "bulk" / f"{i:03d}.dcm", patient_id="BULK", study_uid=study, series_uid=series,
                        instance_number=i + 1) for i in range(200)]
    storescu = require_tool("storescu")
    started = time.monotonic()
    processes = [subprocess.Popen(storescu_command(storescu, cohort_server, files[i::4]),
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for i in range(4)]
    outputs = [p.communicate(timeout=120)[0] for p in processes]
    return {"study": study, "series": series, "files": files, "outputs": outputs,
            "codes": [p.returncode for p in processes], "seconds": time.monotonic() - started}


def test_echoscu_is_answered(cohort_server):
    proc = run([require_tool("echoscu"), "-v", "-aec", cohort_server.aet, cohort_server.host,
                str(cohort_server.dimse_port)])
    assert "Received Echo Response (Success)" in proc.stdout + proc.stderr


def test_wrong_called_ae_title_is_rejected(cohort_server, tmp_path):
    echo = run([require_tool("echoscu"), "-aec", "NOT_DOPAMINE", cohort_server.host, str(cohort_server.dimse_port)],
               check=False)
    assert echo.returncode != 0
    assert "Called AE Title Not Recognized" in echo.stdout + echo.stderr
    lost = synthesize(tmp_path / "lost.dcm", patient_id="WRONG-AEC")
    stored = run(storescu_command(require_tool("storescu"), cohort_server, [lost], aec="NOT_DOPAMINE"), check=False)
    assert stored.returncode != 0
    answers, _ = findscu(cohort_server, {"QueryRetrieveLevel": "STUDY", "PatientID": "WRONG-AEC"}, tmp_path / "find")
    assert answers == [], "an instance sent to the wrong AE title was stored"


def test_find_patient_level_counts_studies_series_instances(cohort_server, tmp_path):
    answers, _ = findscu(cohort_server, {
        "QueryRetrieveLevel": "PATIENT", "PatientID": "COHORT-*", "PatientName": None,
        "NumberOfPatientRelatedStudies": None, "NumberOfPatientRelatedSeries": None,
        "NumberOfPatientRelatedInstances": None,
    }, tmp_path, model="-P")
    got = {a.PatientID: (str(a.PatientName), a.NumberOfPatientRelatedStudies, a.NumberOfPatientRelatedSeries,
                         a.NumberOfPatientRelatedInstances) for a in answers}
    assert got == {"COHORT-A": ("Alpha^Ann", 2, 3, 6), "COHORT-B": ("Beta^Bob", 1, 1, 4)}


def test_find_study_level_computed_keys(cohort_server, tmp_path):
    answers, _ = findscu(cohort_server, {
        "QueryRetrieveLevel": "STUDY", "PatientID": "COHORT-*", "StudyInstanceUID": None, "StudyDate": None,
        "ModalitiesInStudy": None, "NumberOfStudyRelatedSeries": None, "NumberOfStudyRelatedInstances": None,
    }, tmp_path)
    expected = {}
    for uid, study in cohort_server.extra["studies"].items():
        series = study["series"]
        expected[uid] = (sorted({m for m, _ in series}), len(series), sum(n for _, n in series))
    got = {a.StudyInstanceUID: (sorted(values(a, "ModalitiesInStudy")), a.NumberOfStudyRelatedSeries,
                                a.NumberOfStudyRelatedInstances) for a in answers}
    assert got == expected


def test_find_study_matches_on_modalities_in_study(cohort_server, tmp_path):
    """A study qualifies when one of its series has the modality; the answer lists all its modalities."""
    answers, _ = findscu(cohort_server, {
        "QueryRetrieveLevel": "STUDY", "PatientID": "COHORT-*", "ModalitiesInStudy": "CT", "StudyDate": None,
    }, tmp_path)
    got = {(a.StudyDate, tuple(sorted(values(a, "ModalitiesInStudy")))) for a in answers}
    assert got == {("20240110", ("CT", "MR")), ("20230505", ("CT",))}
    mr_only, _ = findscu(cohort_server, {"QueryRetrieveLevel": "STUDY", "PatientID": "COHORT-A",
                                         "ModalitiesInStudy": "MR", "StudyDate": None}, tmp_path)
    assert sorted(a.StudyDate for a in mr_only) == ["20240110", "20240220"]


def test_find_series_level_counts_instances(cohort_server, tmp_path):
    study_uid = next(uid for uid, s in cohort_server.extra["studies"].items() if len(s["series"]) == 2)
    answers, _ = findscu(cohort_server, {
        "QueryRetrieveLevel": "SERIES", "StudyInstanceUID": study_uid, "SeriesInstanceUID": None,
        "Modality": None, "NumberOfSeriesRelatedInstances": None,
    }, tmp_path)
    assert sorted((a.Modality, a.NumberOfSeriesRelatedInstances) for a in answers) == [("CT", 2), ("MR", 3)]


def test_find_image_level_lists_instances(cohort_server, tmp_path):
    study_uid = next(uid for uid, s in cohort_server.extra["studies"].items() if s["patient"] == "COHORT-B")
    answers, _ = findscu(cohort_server, {
        "QueryRetrieveLevel": "IMAGE", "StudyInstanceUID": study_uid, "SeriesInstanceUID": None,
        "SOPInstanceUID": None, "InstanceNumber": None,
    }, tmp_path)
    sent = {str(dcmread(f).SOPInstanceUID) for f in cohort_server.extra["files"]
            if dcmread(f, stop_before_pixels=True).StudyInstanceUID == study_uid}
    assert {a.SOPInstanceUID for a in answers} == sent
    assert sorted(a.InstanceNumber for a in answers) == [1, 2, 3, 4]


def test_parallel_storescu_associations_all_stored(cohort_server, bulk_series, tmp_path):
    assert bulk_series["codes"] == [0, 0, 0, 0], "\n".join(bulk_series["outputs"])
    answers, _ = findscu(cohort_server, {
        "QueryRetrieveLevel": "SERIES", "SeriesInstanceUID": bulk_series["series"],
        "NumberOfSeriesRelatedInstances": None,
    }, tmp_path)
    assert [a.NumberOfSeriesRelatedInstances for a in answers] == [200]


def test_find_cancel_is_honoured(cohort_server, bulk_series, tmp_path):
    answers, proc = findscu(cohort_server, {
        "QueryRetrieveLevel": "IMAGE", "StudyInstanceUID": bulk_series["study"], "SOPInstanceUID": None,
    }, tmp_path, extra=("--cancel", "3"))
    output = proc.stdout + proc.stderr
    assert "Sending Cancel Request" in output
    assert "Received Final Find Response (Cancel" in output, output[-2000:]
    # The acceptor reads a cancel between two responses: measured 10 to 30 answers here, even under CPU load.
    assert 3 <= len(answers) < 100, f"{len(answers)} answers after a cancel at 3"


def test_getscu_retrieves_a_study(cohort_server, tmp_path):
    study_uid = next(uid for uid, s in cohort_server.extra["studies"].items() if len(s["series"]) == 2)
    sent = {dcmread(f, stop_before_pixels=True).SOPInstanceUID: f for f in cohort_server.extra["files"]}
    run(getscu_command(require_tool("getscu"), cohort_server, tmp_path, "1.2.840.10008.1.2.1",
                       {"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": study_uid}))
    received = {p.name: p for p in tmp_path.iterdir()}
    expected = {uid for uid, f in sent.items() if dcmread(f, stop_before_pixels=True).StudyInstanceUID == study_uid}
    assert set(received) == expected
    for uid in expected:
        assert dataset_bytes(received[uid].read_bytes()) == dataset_bytes(sent[uid].read_bytes()), uid


def test_movescu_to_storescp_registered_as_peer(cohort_server, tmp_path):
    destination_dir = tmp_path / "storescp"
    destination_dir.mkdir()
    port = free_port()
    storescp = subprocess.Popen([require_tool("storescp"), "-aet", "MOVEDEST", "+B", "-od", str(destination_dir),
                                 "-v", str(port)],
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        run(dopamine_command("peer", "add", "MOVEDEST", "127.0.0.1", str(port),
                             "--data-dir", str(cohort_server.data_dir)))
        study_uid = next(uid for uid, s in cohort_server.extra["studies"].items() if s["patient"] == "COHORT-B")
        proc = run([require_tool("movescu"), "-v", "-S", "-aec", cohort_server.aet, "-aem", "MOVEDEST",
                    "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={study_uid}",
                    cohort_server.host, str(cohort_server.dimse_port)])
        assert "Received Final Move Response (Success)" in proc.stdout + proc.stderr
    finally:
        storescp.terminate()
        storescp.wait(timeout=10)
    received = {str(dcmread(p, stop_before_pixels=True).SOPInstanceUID): p for p in destination_dir.iterdir()}
    sent = {str(dcmread(f, stop_before_pixels=True).SOPInstanceUID): f for f in cohort_server.extra["files"]
            if dcmread(f, stop_before_pixels=True).StudyInstanceUID == study_uid}
    assert set(received) == set(sent)
    for uid, f in sent.items():
        assert dataset_bytes(received[uid].read_bytes()) == dataset_bytes(f.read_bytes()), uid


# ------------------------------------------------------------------------------------------ sample archive


@pytest.fixture(scope="module")
def samples_server(tmp_path_factory):
    """pydicom's samples reuse SOP Instance UIDs across encodings of one image (MR_small, its RLE and
    big endian versions): the archive replaces on duplicates so that each round trip sees its own file.
    Access rules are not what these tests are about: a configuration file turns their enforcement on by
    default, so this one turns it off."""
    base = tmp_path_factory.mktemp("samples")
    config = base / "dopamine.toml"
    config.write_text('[storage]\nduplicate_policy = "replace"\n\n[auth]\nenforce = false\n')
    server = start_server(base / "data", config=config)
    yield server
    server.stop()


def getscu_one(server, path: Path, out_dir: Path) -> bytes:
    """Retrieve the instance of ``path`` with getscu, accepting its own transfer syntax; its data set bytes."""
    syntax = transfer_syntax_of(path)
    out_dir.mkdir(parents=True, exist_ok=True)
    proc = run(getscu_command(require_tool("getscu"), server, out_dir, syntax, image_keys(path)), check=False)
    received = list(out_dir.iterdir())
    assert len(received) == 1, (f"getscu received {len(received)} files for {path.name} ({syntax}):\n"
                                f"{proc.stderr[-1500:]}\nserver log:\n{server.log()[-1500:]}")
    got = dcmread(received[0], stop_before_pixels=True).file_meta.TransferSyntaxUID
    assert got == syntax, f"{path.name} came back in {got.name}, sent in {syntax}"
    return dataset_bytes(received[0].read_bytes())


@pytest.mark.parametrize("name", SAMPLE_FILES + CHARSET_FILES)
def test_storescu_then_getscu_returns_identical_data_set(samples_server, name, tmp_path):
    """DIMSE never carries File Meta Information: the data set after it must come back bit for bit.

    The reference is what storescu transmits, which for a few files differs from the file (see
    ``storescu_transmits``); the next test compares with the files themselves.
    """
    path = sample_path(name)
    sent = storescu_transmits(require_tool("storescu"), require_tool("storescp"), path, tmp_path / "sent")
    store(samples_server, [path])
    assert getscu_one(samples_server, path, tmp_path / "got") == sent


@pytest.mark.parametrize("name", SAMPLE_FILES + CHARSET_FILES)
def test_file_sent_unchanged_comes_back_identical_to_the_file(samples_server, name, tmp_path):
    """pynetdicom sends a file's data set bytes as they are: getscu must return exactly the file's.

    A sender announces the SOP Instance UID of the file meta; where a file's meta disagrees with its data
    set (two of pydicom's Japanese samples), the archive refuses the data set with A900H instead."""
    path = sample_path(name)
    status = send_file(samples_server, path)
    ds = dcmread(path, stop_before_pixels=True)
    if ds.file_meta.MediaStorageSOPInstanceUID != ds.SOPInstanceUID:
        assert status is not None and status.Status == 0xA900, status
        assert "not the announced one" in status.get("ErrorComment", ""), status
        return
    assert status is not None and status.Status == 0x0000, status
    assert getscu_one(samples_server, path, tmp_path) == dataset_bytes(path.read_bytes())


@pytest.fixture(scope="module")
def move_destination(samples_server, tmp_path_factory):
    """storescp, bit-preserving and accepting every transfer syntax, registered as the C-MOVE peer MOVEBITS."""
    received = tmp_path_factory.mktemp("moved")
    port = free_port()
    storescp = subprocess.Popen([require_tool("storescp"), "-aet", "MOVEBITS", "+B", "+xa", "-od", str(received),
                                 str(port)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    run(dopamine_command("peer", "add", "MOVEBITS", "127.0.0.1", str(port), "--data-dir", str(samples_server.data_dir)))
    yield received
    storescp.terminate()
    storescp.wait(timeout=10)


def _stored_as_sent(name: str) -> bool:
    """Whether the archive accepts the file as sent (not so when its meta names another instance)."""
    ds = dcmread(sample_path(name), stop_before_pixels=True)
    return ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID


@pytest.mark.parametrize("name", [n for n in SAMPLE_FILES + CHARSET_FILES if _stored_as_sent(n)])
def test_file_moved_to_a_peer_arrives_identical_to_the_file(samples_server, move_destination, name):
    """C-MOVE sends the stored bytes too, not a data set decoded and encoded again by pynetdicom."""
    path = sample_path(name)
    ds = dcmread(path, stop_before_pixels=True)
    status = send_file(samples_server, path)
    assert status is not None and status.Status == 0x0000, status
    command = [require_tool("movescu"), "-S", "-aec", samples_server.aet, "-aem", "MOVEBITS"]
    for key, value in image_keys(path).items():
        command += ["-k", f"{key}={value}"]
    proc = run(command + [samples_server.host, str(samples_server.dimse_port)], check=False)
    moved = [p for p in move_destination.iterdir() if p.name.endswith(str(ds.SOPInstanceUID))]
    assert len(moved) == 1, f"{proc.stderr[-1500:]}\nserver log:\n{samples_server.log()[-1500:]}"
    try:
        assert dataset_bytes(moved[0].read_bytes()) == dataset_bytes(path.read_bytes())
    finally:
        moved[0].unlink()


CHARSET_SEARCHES = {
    "Äneas*": {"chrGerm.dcm"},  # sent in ISO_IR 100
    "Buc^J*": {"chrFren.dcm", "chrFrenMulti.dcm"},  # one SOP Instance UID: one answer
    "Διονυσιος": {"chrGreek.dcm"},  # ISO_IR 126
    "Люкceмбypг": {"chrRuss.dcm"},  # ISO_IR 144 (the name mixes Cyrillic and Latin letters)
    "שרון*": {"chrHbrw.dcm"},  # ISO_IR 138
    "قباني*": {"chrArab.dcm"},  # ISO_IR 127
    "山田*": {"chrH31.dcm", "chrH32.dcm"},  # ideographic group, ISO 2022 IR 87
    "홍^길동": {"chrI2.dcm"},  # phonetic group, ISO 2022 IR 149
    "Wang^XiaoDong": {"chrX1.dcm", "chrX2.dcm"},  # UTF-8 and GB18030
}


@pytest.fixture(scope="module")
def charset_files_stored(samples_server):
    store(samples_server, [sample_path(n) for n in CHARSET_FILES])
    return samples_server


@pytest.mark.parametrize("pattern", list(CHARSET_SEARCHES))
def test_find_by_unicode_name_whatever_the_senders_character_set(charset_files_stored, pattern, tmp_path):
    answers, _ = findscu(charset_files_stored, {
        "SpecificCharacterSet": "ISO_IR 192", "QueryRetrieveLevel": "IMAGE", "PatientName": pattern,
        "SOPInstanceUID": None,
    }, tmp_path)
    expected = {str(dcmread(sample_path(n)).SOPInstanceUID) for n in CHARSET_SEARCHES[pattern]}
    assert {a.SOPInstanceUID for a in answers} == expected
    for answer in answers:
        stored = dcmread(next(sample_path(n) for n in CHARSET_SEARCHES[pattern]
                              if dcmread(sample_path(n)).SOPInstanceUID == answer.SOPInstanceUID))
        assert str(answer.PatientName) == str(stored.PatientName)
