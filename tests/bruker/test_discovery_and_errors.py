"""Finding reconstructions (folders, zips) and reporting unsupported ones."""

from __future__ import annotations

import zipfile

import numpy as np
import pytest

from bruker.convert import convert_path
from bruker.discovery import ScanProblem, UnsafeArchiveError, discover, opened
from pv_synth import Scan, Sym, ramp, write_params


def zip_folder(folder, target, prefix=""):
    with zipfile.ZipFile(target, "w") as archive:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                archive.write(path, prefix + str(path.relative_to(folder)))
    return target


def test_study_scan_and_reconstruction_levels_find_the_same_data(phantom):
    found = [discover(p) for p in (phantom, phantom / "100", phantom / "100" / "pdata" / "1")]
    for items in found:
        assert [r.scan_id for r in items] == ["pv51_multislice_phantom/100/pdata/1"]
        assert {"visu_pars", "method", "acqp", "reco"} <= set(items[0].files)


def test_inner_parameter_files_override_outer_ones(tmp_path):
    study = tmp_path / "study"
    recon = Scan(ramp(1, 2, 2), version="360").write(study, 3)
    # PV 6+ also keeps a visu_pars at the scan level: the reconstruction's wins.
    write_params(study / "3" / "visu_pars", {"VisuCoreFrameCount": 99}, "360")
    (item,) = discover(study)
    assert item.files["visu_pars"] == recon / "visu_pars"
    assert item.files["method"] == study / "3" / "method"
    assert item.files["subject"] == study / "subject"


def test_every_reconstruction_of_a_study_converts(tmp_path):
    study = tmp_path / "study"
    Scan(ramp(2, 2, 2), version="6", frame_groups=[(2, "FG_SLICE", "", 0, 0)]).write(study, 1)
    Scan(ramp(1, 2, 2), version="7").write(study, 2, 1)
    Scan(ramp(1, 2, 2), version="7").write(study, 2, 2)
    results = list(convert_path(study))
    assert [r.scan_id for r in results] == ["study/1/pdata/1", "study/2/pdata/1", "study/2/pdata/2"]
    assert [len(r.datasets) for r in results] == [2, 1, 1]
    assert len({r.datasets[0].SeriesInstanceUID for r in results}) == 3
    assert len({r.datasets[0].StudyInstanceUID for r in results}) == 1


def test_zip_of_a_study(phantom, tmp_path):
    archive = zip_folder(phantom, tmp_path / "phantom.zip", prefix="pv51_multislice_phantom/")
    (result,) = list(convert_path(archive))
    assert result.ok, result.error
    assert result.scan_id == "pv51_multislice_phantom/100/pdata/1"
    direct = next(iter(convert_path(phantom)))
    # Same parameters (method/acqp found inside the zip) give the same UIDs and pixels.
    assert [d.SOPInstanceUID for d in result.datasets] == [d.SOPInstanceUID for d in direct.datasets]
    assert result.datasets[0].PixelData == direct.datasets[0].PixelData
    assert float(result.datasets[0].FlipAngle) == 30.0


def test_zip_of_a_reconstruction(phantom, tmp_path):
    archive = zip_folder(phantom / "100" / "pdata" / "1", tmp_path / "recon.zip")
    (result,) = list(convert_path(archive, enhanced=True))
    assert result.ok, result.error
    assert int(result.datasets[0].NumberOfFrames) == 3


def test_zip_members_may_not_escape(tmp_path):
    archive = tmp_path / "evil.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("../outside.txt", "x")
    with pytest.raises(UnsafeArchiveError):
        with opened(archive):
            pass
    assert not (tmp_path / "outside.txt").exists()


def test_scan_without_reconstruction_is_reported(tmp_path):
    study = tmp_path / "study"
    (study / "4").mkdir(parents=True)
    write_params(study / "4" / "acqp", {"ACQ_flip_angle": 30.0}, "6")
    (problem,) = discover(study)
    assert isinstance(problem, ScanProblem) and problem.scan_id == "study/4"


# --- unsupported input: a clear message naming the scan, the rest converts ---


def _study_with_a_bad_scan(tmp_path, spoil):
    study = tmp_path / "study"
    Scan(ramp(1, 4, 4), version="360").write(study, 1)
    bad = Scan(ramp(2, 4, 4), version="360", frame_groups=[(2, "FG_SLICE", "", 0, 0)])
    recon = bad.write(study, 2)
    spoil(bad, recon, study)
    results = {r.scan_id: r for r in convert_path(study)}
    good = results["study/1/pdata/1"]
    assert good.ok and len(good.datasets) == 1
    failed = results["study/2/pdata/1"]
    assert not failed.ok and failed.datasets == []
    assert failed.message.startswith("study/2/pdata/1: ")
    return failed.error


def test_missing_2dseq(tmp_path):
    error = _study_with_a_bad_scan(tmp_path, lambda scan, recon, study: (recon / "2dseq").unlink())
    assert "missing 2dseq" in error


def test_truncated_pixel_data(tmp_path):
    def spoil(scan, recon, study):
        data = (recon / "2dseq").read_bytes()
        (recon / "2dseq").write_bytes(data[: len(data) - 10])

    assert "truncated pixel data" in _study_with_a_bad_scan(tmp_path, spoil)


def test_unknown_word_type(tmp_path):
    def spoil(scan, recon, study):
        scan.extra = {"VisuCoreWordType": Sym("_12BIT_PACKED")}
        scan.write(study, 2)

    assert "unknown word type '_12BIT_PACKED'" in _study_with_a_bad_scan(tmp_path, spoil)


def test_spectroscopy(tmp_path):
    def spoil(scan, recon, study):
        scan.extra = {"VisuCoreDimDesc": [Sym("spectroscopic")], "VisuCoreDim": 1, "VisuCoreSize": np.array([32]),
                      "VisuCoreExtent": np.array([5000.0])}
        scan.write(study, 2)

    error = _study_with_a_bad_scan(tmp_path, spoil)
    assert "spectroscop" in error and "not an image" in error


def test_non_image_reconstruction_without_visu_pars(tmp_path):
    assert "visu_pars" in _study_with_a_bad_scan(tmp_path, lambda scan, recon, study: (recon / "visu_pars").unlink())


def test_broken_parameter_file(tmp_path):
    def spoil(scan, recon, study):
        (recon / "visu_pars").write_text("##TITLE=x\n##$VisuCoreSize=( 2 )\n<unterminated\n")

    error = _study_with_a_bad_scan(tmp_path, spoil)
    assert "visu_pars" in error and "unterminated" in error
