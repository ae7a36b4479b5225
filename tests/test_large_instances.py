"""Large instances over DIMSE: one over 16 MB is kept as a file beside the database (a MongoDB document could
not hold it) and comes back intact; receiving a 1 GB instance does not load it into the server's memory."""

from __future__ import annotations

import shutil
import struct
import threading
import time
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from dimse_client import dataset_bytes, getscu_command, image_keys, storescu_command, storescu_transmits, synthesize
from dopamine_py.storage.sqlite import SQLiteBackend
from support import require_tool, run, start_server

MULTIFRAME_WORD_SC = "1.2.840.10008.5.1.4.1.1.7.3"
GIGABYTE_FRAMES = 512  # of 1024 x 1024 x 16 bits: 1 GiB of pixel data
ALLOWED_GROWTH = 300 * 1024 * 1024


def ultrasound_multiframe() -> Path:
    try:
        import deid_data
    except ImportError:
        pytest.fail("deid-data is not installed (pip install deid-data)", pytrace=False)
    path = Path(deid_data.__file__).parent / "data" / "ultrasounds" / "ultrasound-multiframe.dcm"
    if not path.exists():
        pytest.fail(f"{path} is missing from deid-data", pytrace=False)
    return path


def storage_of(data_dir: Path, sop_instance_uid: str) -> str:
    backend = SQLiteBackend(data_dir)
    try:
        return backend.storage_of(sop_instance_uid)
    finally:
        backend.close()


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    server = start_server(tmp_path_factory.mktemp("large") / "data")
    yield server
    server.stop()


def test_instance_over_16_mb_is_kept_as_a_file_and_comes_back_identical(archive, tmp_path):
    path = ultrasound_multiframe()
    assert path.stat().st_size > 16 * 1024 * 1024
    uid = str(dcmread(path, stop_before_pixels=True).SOPInstanceUID)
    sent = storescu_transmits(require_tool("storescu"), require_tool("storescp"), path, tmp_path / "sent")
    run(storescu_command(require_tool("storescu"), archive, [path]))
    assert storage_of(archive.data_dir, uid) == "file"
    out = tmp_path / "got"
    out.mkdir()
    run(getscu_command(require_tool("getscu"), archive, out, ExplicitVRLittleEndian, image_keys(path)))
    (received,) = list(out.iterdir())
    got = dcmread(received, stop_before_pixels=True).file_meta.TransferSyntaxUID
    assert got == ExplicitVRLittleEndian, f"sent as Explicit VR Little Endian, came back as {got.name}"
    assert dataset_bytes(received.read_bytes()) == sent


def test_small_instance_is_kept_inline(archive, tmp_path):
    path = synthesize(tmp_path / "small.dcm")
    run(storescu_command(require_tool("storescu"), archive, [path]))
    assert storage_of(archive.data_dir, str(dcmread(path).SOPInstanceUID)) == "inline"


def write_gigabyte_instance(path: Path, frames: int) -> str:
    """A multi-frame instance of ``frames`` 1024x1024 16-bit frames, written without holding it in memory:
    the header by pydicom, then the Pixel Data element header and its value in 16 MB chunks."""
    ds = Dataset()
    ds.SOPClassUID = MULTIFRAME_WORD_SC
    ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.PatientID, ds.PatientName, ds.Modality = "BIG", "Big^Volume", "OT"
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.Rows = ds.Columns = 1024
    ds.NumberOfFrames = frames
    ds.FrameIncrementPointer = 0x00181063
    ds.FrameTime = 100
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.save_as(path, enforce_file_format=True)
    length = 1024 * 1024 * 2 * frames
    chunk = bytes(range(256)) * (16 * 1024 * 1024 // 256)
    with open(path, "ab") as f:
        f.write(struct.pack("<HH2sHI", 0x7FE0, 0x0010, b"OW", 0, length))
        for _ in range(length // len(chunk)):
            f.write(chunk)
    return ds.SOPInstanceUID


def memory_of(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"{field} not in /proc/{pid}/status")


def test_receiving_a_1_gb_instance_keeps_server_memory_flat(tmp_path):
    """The server's resident memory grows by less than 300 MB while it receives and stores 1 GiB.

    Measured as the peak (VmHWM) after the store against the resident size (VmRSS) just before, on a
    server started for this test alone so that no earlier test's peak counts.
    """
    big = tmp_path / "gigabyte.dcm"
    uid = write_gigabyte_instance(big, GIGABYTE_FRAMES)
    server = start_server(tmp_path / "data")
    try:
        pid = server.process.pid
        before = memory_of(pid, "VmRSS")
        samples: list[int] = []
        done = threading.Event()

        def sample() -> None:
            while not done.is_set():
                samples.append(memory_of(pid, "VmRSS"))
                time.sleep(0.05)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        started = time.monotonic()
        proc = run(storescu_command(require_tool("storescu"), server, [big]), timeout=300)
        seconds = time.monotonic() - started
        done.set()
        sampler.join()
        peak = memory_of(pid, "VmHWM")
        growth = max(peak, *samples) - before
        print(f"1 GiB instance stored in {seconds:.1f} s; server RSS {before / 2**20:.0f} MB before, "
              f"peak {peak / 2**20:.0f} MB, growth {growth / 2**20:.0f} MB")
        assert "Store Failed" not in proc.stderr
        assert storage_of(server.data_dir, uid) == "file"
        assert growth < ALLOWED_GROWTH, f"server memory grew by {growth / 2**20:.0f} MB receiving 1 GiB"
    finally:
        server.stop()
        big.unlink(missing_ok=True)
        shutil.rmtree(tmp_path / "data", ignore_errors=True)  # a GiB that pytest would otherwise keep
