"""`dopamine import PATH...` as a user runs it: files, folders and zip files; the summary it prints; its exit
status; and the stored originals, which must be the imported files byte for byte."""

from __future__ import annotations

import re
import subprocess
import zipfile
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.data import get_charset_files, get_testdata_file
from pydicom.uid import generate_uid

from dimse_client import dataset_bytes, synthesize
from dopamine_py.storage.sqlite import SQLiteBackend
from support import REPO, dopamine_command

SAMPLES = ["CT_small.dcm", "MR_small.dcm", "emri_small.dcm", "JPEG2000.dcm", "JPEG-LL.dcm", "MR_small_RLE.dcm",
           "SC_rgb_rle.dcm", "MR_small_bigendian.dcm", "ExplVR_BigEnd.dcm"]
CHARSETS = sorted(Path(p).name for p in get_charset_files("chr*.dcm") if "SQEncoding" not in p)
SUMMARY = re.compile(r"stored: (\d+), duplicates: (\d+), quarantined: (\d+), rejected: (\d+), failed: (\d+)")


def sample(name: str) -> Path:
    found = get_testdata_file(name) or next(iter(get_charset_files(name)), None)
    if found is None:
        pytest.fail(f"sample file {name} is missing: install pydicom-data", pytrace=False)
    return Path(found)


def dopamine_import(data_dir: Path, *paths: Path) -> tuple[subprocess.CompletedProcess, dict[str, int]]:
    proc = subprocess.run(dopamine_command("import", "--quiet", "--data-dir", str(data_dir), *map(str, paths)),
                          capture_output=True, text=True, cwd=REPO, timeout=120)
    match = SUMMARY.search(proc.stdout)
    assert match, f"no summary line in the output:\n{proc.stdout}\n{proc.stderr}"
    counts = dict(zip(("stored", "duplicates", "quarantined", "rejected", "failed"), map(int, match.groups())))
    assert counts.pop("quarantined") == 0, "no rule set is active in these tests: nothing may be quarantined"
    return proc, counts


def uid_disjoint_batches(paths: list[Path]) -> list[list[Path]]:
    """Split files so that no batch holds two files with one SOP Instance UID (the samples reuse some)."""
    batches: list[tuple[set[str], list[Path]]] = []
    for path in paths:
        uid = str(dcmread(path, stop_before_pixels=True).SOPInstanceUID)
        batch = next((b for b in batches if uid not in b[0]), None)
        if batch is None:
            batch = (set(), [])
            batches.append(batch)
        batch[0].add(uid)
        batch[1].append(path)
    return [files for _, files in batches]


def assert_stored_identical(data_dir: Path, files: list[Path]) -> None:
    backend = SQLiteBackend(data_dir)
    try:
        for path in files:
            uid = str(dcmread(path, stop_before_pixels=True).SOPInstanceUID)
            with backend.open_original(uid) as stored:
                assert stored.read() == path.read_bytes(), f"{path.name}: stored original differs from the file"
    finally:
        backend.close()


def test_import_files_keeps_every_byte(tmp_path):
    files = [sample(n) for n in SAMPLES + CHARSETS]
    for i, batch in enumerate(uid_disjoint_batches(files)):
        data_dir = tmp_path / f"archive{i}"
        proc, counts = dopamine_import(data_dir, *batch)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert counts == {"stored": len(batch), "duplicates": 0, "rejected": 0, "failed": 0}
        assert_stored_identical(data_dir, batch)


def test_import_folder_then_again_reports_duplicates(tmp_path):
    folder = tmp_path / "study"
    files = [synthesize(folder / "sub" / f"{i}.dcm", patient_id="FOLDER", instance_number=i) for i in range(5)]
    data_dir = tmp_path / "archive"
    proc, counts = dopamine_import(data_dir, folder)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert counts == {"stored": 5, "duplicates": 0, "rejected": 0, "failed": 0}
    proc, counts = dopamine_import(data_dir, folder)
    assert proc.returncode == 0, "importing the same files again is not a failure"
    assert counts == {"stored": 0, "duplicates": 5, "rejected": 0, "failed": 0}
    assert_stored_identical(data_dir, files)


def test_import_zip(tmp_path):
    files = [synthesize(tmp_path / "src" / f"{i}.dcm", patient_id="ZIP", instance_number=i) for i in range(3)]
    archive = tmp_path / "export.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for i, path in enumerate(files):
            zf.write(path, f"DICOM/{i:04d}")
        zf.writestr("README.txt", "not DICOM")
    data_dir = tmp_path / "archive"
    proc, counts = dopamine_import(data_dir, archive)
    assert counts == {"stored": 3, "duplicates": 0, "rejected": 0, "failed": 1}
    assert proc.returncode != 0
    assert f"{archive}:README.txt" in proc.stdout, "a failed zip member is named with its zip file"
    assert_stored_identical(data_dir, files)


def bad_files(folder: Path) -> dict[str, tuple[Path, str]]:
    """Each kind of bad input, with a word the failure reason must contain."""
    folder.mkdir(parents=True, exist_ok=True)
    good = synthesize(folder / "good.dcm", patient_id="GOOD")
    data = good.read_bytes()
    cases = {}

    truncated = folder / "truncated.dcm"
    truncated.write_bytes(data[: len(data) - 100])
    cases["truncated"] = (truncated, "truncated")

    text = folder / "notes.txt"
    text.write_text("patient list\n" * 20)
    cases["not DICOM"] = (text, "not a DICOM file")

    # A bare data set, as some scanners export: no preamble, no File Meta Information.
    bare = folder / "bare.dcm"
    bare.write_bytes(dataset_bytes(synthesize(folder / "tmp" / "bare.dcm").read_bytes()))
    cases["missing meta"] = (bare, "File Meta Information")

    unknown = folder / "unknown-ts.dcm"
    ds = dcmread(good)
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = "1.2.3.4.5.6.7"
    ds.save_as(unknown, enforce_file_format=True, implicit_vr=False, little_endian=True)
    cases["unknown transfer syntax"] = (unknown, "1.2.3.4.5.6.7")

    no_uid = sample("chrSQEncoding.dcm")  # a data set fragment: no SOP Instance UID
    cases["missing UIDs"] = (no_uid, "missing")
    return {"good": (good, "")} | cases


def test_bad_files_are_reported_with_reasons_and_the_rest_is_stored(tmp_path):
    cases = bad_files(tmp_path / "incoming")
    data_dir = tmp_path / "archive"
    already = synthesize(tmp_path / "earlier.dcm", patient_id="EARLIER")
    proc, _ = dopamine_import(data_dir, already)
    assert proc.returncode == 0
    proc, counts = dopamine_import(data_dir, *(path for path, _ in cases.values()))
    assert proc.returncode != 0, "a failed file must make the exit status non-zero"
    assert counts == {"stored": 1, "duplicates": 0, "rejected": 0, "failed": len(cases) - 1}, proc.stdout
    lines = proc.stdout.splitlines()
    for kind, (path, reason) in cases.items():
        if kind == "good":
            continue
        line = next((l for l in lines if l.strip().startswith(f"{path}:")), None)
        assert line is not None, f"{kind}: {path} is not listed among the failures:\n{proc.stdout}"
        assert reason.lower() in line.lower(), f"{kind}: the reason does not say {reason!r}: {line}"
    assert_stored_identical(data_dir, [cases["good"][0], already])


def test_missing_path_is_a_failure(tmp_path):
    good = synthesize(tmp_path / "good.dcm")
    proc, counts = dopamine_import(tmp_path / "archive", good, tmp_path / "nowhere")
    assert proc.returncode != 0
    assert counts["stored"] == 1 and counts["failed"] == 1
    assert f"{tmp_path / 'nowhere'}: no such file or folder" in proc.stdout
