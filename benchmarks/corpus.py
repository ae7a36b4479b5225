"""A synthetic CT corpus for the benchmarks: many small instances, identical for a given seed.

The instances are spread over several patients, studies and series, with the attributes a CT scanner
writes, so that the archives index realistic headers. Pixel data are a 12-bit phantom slice with
seeded noise, small enough that per-instance overhead (not bandwidth) dominates an ingest benchmark.

    python benchmarks/corpus.py OUT_DIR --instances 2000 --seed 1
"""

from __future__ import annotations

import argparse
import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, PYDICOM_IMPLEMENTATION_UID

MANIFEST = "corpus.json"


@dataclass(frozen=True)
class CorpusSpec:
    """Everything that determines the corpus: same spec, same bytes."""

    instances: int = 2000
    seed: int = 1
    patients: int = 5
    studies_per_patient: int = 2
    series_per_study: int = 2
    rows: int = 128
    columns: int = 128

    @property
    def series_count(self) -> int:
        return self.patients * self.studies_per_patient * self.series_per_study

    @property
    def per_series(self) -> int:
        return -(-self.instances // self.series_count)  # ceiling: the last series may be shorter


def uid(spec: CorpusSpec, *path: object) -> str:
    """A UID under 2.25 (PS3.5 B.2) derived from the seed and the entity's position in the corpus."""
    digest = hashlib.sha256("/".join(map(str, (spec.seed, *path))).encode()).digest()
    return f"2.25.{int.from_bytes(digest[:16], 'big')}"


def _phantom(spec: CorpusSpec) -> np.ndarray:
    """A water cylinder with a denser insert, in stored values (HU + 1024)."""
    y, x = np.mgrid[: spec.rows, : spec.columns]
    cy, cx = (spec.rows - 1) / 2, (spec.columns - 1) / 2
    r = np.hypot(y - cy, x - cx)
    image = np.full((spec.rows, spec.columns), 24, dtype=np.int32)  # air, -1000 HU
    image[r < 0.45 * min(spec.rows, spec.columns)] = 1024  # water, 0 HU
    image[np.hypot(y - cy * 0.7, x - cx * 1.2) < 0.1 * spec.columns] = 1424  # +400 HU
    return image


def datasets(spec: CorpusSpec) -> Iterator[Dataset]:
    """The corpus, instance by instance, in series order."""
    rng = np.random.default_rng(spec.seed)
    base = _phantom(spec)
    for index in range(spec.instances):
        series_index, number = divmod(index, spec.per_series)
        patient, rest = divmod(series_index, spec.studies_per_patient * spec.series_per_study)
        study, series = divmod(rest, spec.series_per_study)
        noise = rng.normal(0, 12, base.shape).astype(np.int32)
        pixels = np.clip(base + noise, 0, 4095).astype(np.uint16)
        yield _instance(spec, patient, study, series, number, pixels)


def _instance(spec: CorpusSpec, patient: int, study: int, series: int, number: int, pixels: np.ndarray) -> Dataset:
    sop_uid = uid(spec, "instance", patient, study, series, number)
    study_date = f"2024{(patient % 12) + 1:02d}{(study * 7 % 28) + 1:02d}"
    z = -100.0 + 1.25 * number

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID

    ds = Dataset()
    ds.file_meta = meta
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = sop_uid
    ds.StudyDate = ds.SeriesDate = ds.AcquisitionDate = ds.ContentDate = study_date
    ds.StudyTime = f"{8 + study:02d}3000"
    ds.SeriesTime = f"{8 + study:02d}{31 + series:02d}00"
    ds.ContentTime = f"{8 + study:02d}{31 + series:02d}{number % 60:02d}"
    ds.AccessionNumber = f"ACC{spec.seed:03d}{patient:03d}{study:02d}"
    ds.Modality = "CT"
    ds.Manufacturer = "Dopamine Benchmarks"
    ds.InstitutionName = "Synthetic Imaging Lab"
    ds.ReferringPhysicianName = "Referrer^Ray"
    ds.StudyDescription = f"CT CHEST {study + 1}"
    ds.SeriesDescription = ["AXIAL 1.25 SOFT", "AXIAL 1.25 LUNG"][series % 2]
    ds.ManufacturerModelName = "Synth-CT"
    ds.PatientName = f"Bench^Patient{patient:03d}"
    ds.PatientID = f"BENCH-{spec.seed}-{patient:04d}"
    ds.PatientBirthDate = f"19{50 + patient % 50:02d}0101"
    ds.PatientSex = "MF"[patient % 2]
    ds.BodyPartExamined = "CHEST"
    ds.SliceThickness = "1.25"
    ds.KVP = "120"
    ds.ConvolutionKernel = ["STANDARD", "LUNG"][series % 2]
    ds.PatientPosition = "HFS"
    ds.StudyInstanceUID = uid(spec, "study", patient, study)
    ds.SeriesInstanceUID = uid(spec, "series", patient, study, series)
    ds.StudyID = f"{study + 1}"
    ds.SeriesNumber = series + 1
    ds.AcquisitionNumber = 1
    ds.InstanceNumber = number + 1
    ds.ImagePositionPatient = ["-160", "-160", f"{z:.2f}"]
    ds.ImageOrientationPatient = ["1", "0", "0", "0", "1", "0"]
    ds.FrameOfReferenceUID = uid(spec, "frame", patient, study)
    ds.PositionReferenceIndicator = ""
    ds.SliceLocation = f"{z:.2f}"
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = pixels.shape
    ds.PixelSpacing = ["2.5", "2.5"]
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    ds.WindowCenter = ["40", "-600"][series % 2]
    ds.WindowWidth = ["400", "1500"][series % 2]
    ds.RescaleIntercept = "-1024"
    ds.RescaleSlope = "1"
    ds.RescaleType = "HU"
    ds.PixelData = pixels.tobytes()
    return ds


def write_corpus(folder: Path, spec: CorpusSpec = CorpusSpec()) -> list[Path]:
    """Write the corpus as Part 10 files under ``folder`` and return their paths, in sending order.

    A folder already holding the corpus of the same spec (per its manifest) is reused as it is.
    """
    folder = Path(folder)
    manifest = folder / MANIFEST
    if manifest.exists():
        saved = json.loads(manifest.read_text())
        if saved.get("spec") == asdict(spec) and sorted(saved["files"]) == sorted(p.name for p in folder.glob("CT*.dcm")):
            return [folder / name for name in saved["files"]]
    folder.mkdir(parents=True, exist_ok=True)
    # Another spec's files would be sent along by a sender that scans the folder.
    manifest.unlink(missing_ok=True)
    for stale in folder.glob("CT*.dcm"):
        stale.unlink()
    width = len(str(spec.instances))
    paths = []
    for index, ds in enumerate(datasets(spec)):
        path = folder / f"CT{index:0{width}d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    # The manifest goes last: an interrupted write is never mistaken for a complete corpus.
    manifest.write_text(json.dumps({"spec": asdict(spec), "files": [p.name for p in paths]}, indent=1))
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--instances", type=int, default=CorpusSpec.instances)
    parser.add_argument("--seed", type=int, default=CorpusSpec.seed)
    args = parser.parse_args()
    paths = write_corpus(args.folder, CorpusSpec(instances=args.instances, seed=args.seed))
    total = sum(p.stat().st_size for p in paths)
    print(f"{len(paths)} instances, {total / 1e6:.1f} MB in {args.folder}")


if __name__ == "__main__":
    main()
