"""The command bodies behind `dopamine bruker convert` and `dopamine bruker import`."""

from __future__ import annotations

import io
from types import SimpleNamespace

import pydicom

from bruker.cli import convert_command, import_command
from pv_synth import Scan, ramp


class FakeArchive:
    """Records what it is given; answers 'duplicate' for a SOP Instance seen before."""

    def __init__(self, reject=()):
        self.datasets = []
        self.sources = []
        self.seen = set()
        self.reject = set(reject)

    def store_dataset(self, ds, source):
        self.datasets.append(ds)
        self.sources.append(source)
        if ds.SeriesNumber in self.reject:
            return SimpleNamespace(status="rejected", reason="rule says no")
        if ds.SOPInstanceUID in self.seen:
            return SimpleNamespace(status="duplicate", reason=None)
        self.seen.add(ds.SOPInstanceUID)
        return SimpleNamespace(status="stored", reason=None)


def _study(tmp_path, broken=False):
    study = tmp_path / "study"
    Scan(ramp(2, 4, 4), version="360", frame_groups=[(2, "FG_SLICE", "", 0, 0)]).write(study, 1)
    recon = Scan(ramp(1, 4, 4), version="360").write(study, 2)
    if broken:
        (recon / "2dseq").unlink()
    return study


def test_convert_writes_readable_files(phantom, tmp_path):
    out = io.StringIO()
    assert convert_command(str(phantom), str(tmp_path / "out"), out=out) == 0
    files = sorted((tmp_path / "out").rglob("*.dcm"))
    assert len(files) == 3
    ds = pydicom.dcmread(files[0])
    assert ds.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.1"
    assert "converted pv51_multislice_phantom/100/pdata/1: 3 file(s)" in out.getvalue()
    assert "summary: 1 scan(s) converted into 3 file(s), 0 failed" in out.getvalue()


def test_convert_enhanced(phantom, tmp_path):
    assert convert_command(str(phantom), str(tmp_path / "out"), enhanced=True, out=io.StringIO()) == 0
    (path,) = (tmp_path / "out").rglob("*.dcm")
    assert int(pydicom.dcmread(path).NumberOfFrames) == 3


def test_convert_partial_failure_exit_code(tmp_path):
    out = io.StringIO()
    assert convert_command(str(_study(tmp_path, broken=True)), str(tmp_path / "out"), out=out) == 1
    text = out.getvalue()
    assert "FAILED study/2/pdata/1: missing 2dseq" in text
    assert "1 scan(s) converted into 2 file(s), 1 failed" in text


def test_convert_nothing_converted_exit_code(tmp_path):
    (tmp_path / "empty").mkdir()
    assert convert_command(str(tmp_path / "empty"), str(tmp_path / "out"), out=io.StringIO()) == 2
    out = io.StringIO()
    assert convert_command(str(tmp_path / "missing"), str(tmp_path / "out"), out=out) == 2
    assert "error:" in out.getvalue()


def test_import_stores_and_summarises(tmp_path):
    archive = FakeArchive()
    out = io.StringIO()
    study = _study(tmp_path)
    assert import_command(str(study), archive, out=out) == 0
    assert len(archive.datasets) == 3
    assert all(s.protocol == "bruker" and s.calling_aet is None for s in archive.sources)
    assert "summary: 3 stored, 0 duplicate(s), 0 failure(s)" in out.getvalue()
    # Same input again: deterministic UIDs make every instance a duplicate.
    out = io.StringIO()
    assert import_command(str(study), archive, out=out) == 0
    assert "summary: 0 stored, 3 duplicate(s), 0 failure(s)" in out.getvalue()


def test_import_reports_rejections_and_broken_scans(tmp_path):
    archive = FakeArchive(reject={1001})
    out = io.StringIO()
    code = import_command(str(_study(tmp_path, broken=True)), archive, enhanced=True, out=out)
    text = out.getvalue()
    assert code == 2  # the only convertible scan was rejected
    assert "rejected: rule says no" in text
    assert "study/2/pdata/1: missing 2dseq" in text
