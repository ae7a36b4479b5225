"""The client side of the end-to-end DIMSE tests.

Imported by the tests: DCMTK command lines (storescu, getscu, findscu) chosen so that files travel in
their own transfer syntax, synthesized instances, and the comparison of data sets without their File Meta
Information. Run as a program (``python dimse_client.py stream ...``) it is a pynetdicom storage SCU that
records each instance the moment the archive acknowledges it, for the crash test.
"""

from __future__ import annotations

import argparse
import io
import os
import sys
from pathlib import Path

from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLosslessSV1,
    JPEGLSLossless,
    MRImageStorage,
    RLELossless,
    generate_uid,
)

from dopamine_py import part10

# How to make storescu propose a file's own transfer syntax (it would otherwise convert the file), and
# getscu accept it: the option for each transfer syntax.
STORESCU_PROPOSE = {
    ExplicitVRLittleEndian: "-xe",
    ImplicitVRLittleEndian: "-xi",
    ExplicitVRBigEndian: "-xb",
    DeflatedExplicitVRLittleEndian: "-xd",
    JPEGBaseline8Bit: "-xy",
    JPEGExtended12Bit: "-xx",
    JPEGLosslessSV1: "-xs",
    JPEGLSLossless: "-xt",
    JPEG2000Lossless: "-xv",
    JPEG2000: "-xw",
    RLELossless: "-xr",
}
GETSCU_PREFER = {ts: "+" + option[1:] for ts, option in STORESCU_PROPOSE.items()}
GETSCU_PREFER[DeflatedExplicitVRLittleEndian] = "+xd"

# Explicit VR lengths of 4 bytes (PS3.5 7.1.2); every other VR has a 2-byte length.
def dataset_bytes(data: bytes) -> bytes:
    """The bytes of a Part 10 file after its File Meta Information: what DIMSE carries.

    Walks the meta elements (``part10.skip_file_meta``) rather than trusting the group length, which some
    writers get wrong.
    """
    stream = io.BytesIO(data)
    part10.skip_file_meta(stream)
    return stream.read()


def transfer_syntax_of(path: Path) -> str:
    return str(dcmread(path, stop_before_pixels=True).file_meta.TransferSyntaxUID)


def storescu_command(storescu: str, server, files: list[Path], *, aec: str | None = None) -> list[str]:
    """storescu sending ``files`` (all of one transfer syntax) as they are, over one association."""
    syntax = transfer_syntax_of(files[0])
    option = STORESCU_PROPOSE.get(syntax)
    if option is None:
        raise ValueError(f"no storescu option proposes {syntax}")
    # -R: one context per SOP class of the files, offering only the chosen syntax first.
    return [storescu, "-R", option, "-aec", aec or server.aet, server.host, str(server.dimse_port), *map(str, files)]


def storescu_transmits(storescu: str, storescp: str, path: Path, scratch: Path) -> bytes:
    """The data set bytes storescu really puts on the wire for ``path``.

    storescu re-encodes as it sends (it drops trailing padding, recomputes group lengths, gives sequences
    explicit lengths), so the reference for a round trip is captured by a bit-preserving DCMTK storescp.
    """
    import subprocess
    import time
    from types import SimpleNamespace

    from support import free_port, run

    scratch.mkdir(parents=True, exist_ok=True)
    port = free_port()
    receiver = subprocess.Popen([storescp, "-aet", "CAPTURE", "+B", "+xa", "-od", str(scratch), str(port)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        capture = SimpleNamespace(aet="CAPTURE", host="127.0.0.1", dimse_port=port)
        deadline = time.monotonic() + 10
        while True:  # storescp has no ready signal: retry until it listens
            proc = run(storescu_command(storescu, capture, [path]), check=False)
            if proc.returncode == 0 or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        if proc.returncode != 0:
            raise AssertionError(f"storescu to a capturing storescp failed:\n{proc.stderr}")
    finally:
        receiver.terminate()
        receiver.wait(timeout=10)
    (captured,) = list(scratch.iterdir())
    return dataset_bytes(captured.read_bytes())


def getscu_command(getscu: str, server, out_dir: Path, transfer_syntax: str, keys: dict[str, str]) -> list[str]:
    """getscu (study root) writing what it receives, bit for bit, to ``out_dir``."""
    command = [getscu, "-S", "+B", GETSCU_PREFER[transfer_syntax], "-aec", server.aet, "-od", str(out_dir)]
    for key, value in keys.items():
        command += ["-k", f"{key}={value}"]
    return command + [server.host, str(server.dimse_port)]


def image_keys(path: Path) -> dict[str, str]:
    """The study-root IMAGE level identifier that retrieves exactly the instance in ``path``."""
    ds = dcmread(path, stop_before_pixels=True)
    return {
        "QueryRetrieveLevel": "IMAGE",
        "StudyInstanceUID": ds.StudyInstanceUID,
        "SeriesInstanceUID": ds.SeriesInstanceUID,
        "SOPInstanceUID": ds.SOPInstanceUID,
    }


def synthesize(
    path: Path,
    *,
    patient_id: str = "SYNTH",
    patient_name: str = "Synthetic^Subject",
    study_uid: str | None = None,
    series_uid: str | None = None,
    sop_uid: str | None = None,
    modality: str = "MR",
    sop_class: str = MRImageStorage,
    study_date: str = "20240102",
    instance_number: int = 1,
    rows: int = 16,
    columns: int = 16,
    frames: int = 1,
) -> Path:
    """Write a small valid image instance (Explicit VR Little Endian) with distinct pixel content."""
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop_uid or generate_uid()
    ds.StudyInstanceUID = study_uid or generate_uid()
    ds.SeriesInstanceUID = series_uid or generate_uid()
    ds.PatientID = patient_id
    ds.PatientName = patient_name
    ds.StudyDate = study_date
    ds.StudyTime = "101500"
    ds.Modality = modality
    ds.StudyID = "1"
    ds.SeriesNumber = 1
    ds.InstanceNumber = instance_number
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = rows, columns
    if frames > 1:
        ds.NumberOfFrames = frames
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    seed = instance_number.to_bytes(2, "little")
    ds.PixelData = (seed * (rows * columns * frames))[: rows * columns * frames * 2]
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def send_file(server, path: Path, sop_class: str | None = None, transfer_syntax: str | None = None,
              calling_aet: str = "PYNETDICOM") -> Dataset | None:
    """C-STORE the data set of ``path`` byte for byte, on a context for ``sop_class`` (default: the file's
    own); the response status data set (None when the association broke)."""
    from pynetdicom import AE, _config

    # Send the file's encoded data set as it is, instead of decoding and re-encoding it.
    _config.STORE_SEND_CHUNKED_DATASET = True
    meta = dcmread(path, stop_before_pixels=True).file_meta
    ae = AE(ae_title=calling_aet)
    ae.add_requested_context(sop_class or meta.MediaStorageSOPClassUID, transfer_syntax or meta.TransferSyntaxUID)
    assoc = ae.associate(server.host, server.dimse_port, ae_title=server.aet)
    if not assoc.is_established:
        raise AssertionError(f"the archive refused the association for {path.name}")
    try:
        status = assoc.send_c_store(path)
    finally:
        if assoc.is_established:
            assoc.release()
    return status or None


def c_get(server, keys: dict[str, str], sop_classes: list[str],
          transfer_syntax: str = ExplicitVRLittleEndian) -> tuple[dict[str, bytes], int | None]:
    """C-GET with pynetdicom, offering one transfer syntax for storage; the data set bytes received as
    they came off the wire, by SOP Instance UID, and the final status."""
    from pynetdicom import AE, build_role, evt
    from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelGet

    received: dict[str, bytes] = {}

    def on_store(event):
        raw = event.request.DataSet.getvalue()
        received[str(event.request.AffectedSOPInstanceUID)] = raw
        return 0x0000

    ae = AE(ae_title="GETTER")
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelGet)
    for sop_class in sop_classes:
        ae.add_requested_context(sop_class, transfer_syntax)
    roles = [build_role(sop_class, scp_role=True) for sop_class in sop_classes]
    assoc = ae.associate(server.host, server.dimse_port, ae_title=server.aet, ext_neg=roles,
                         evt_handlers=[(evt.EVT_C_STORE, on_store)])
    if not assoc.is_established:
        raise AssertionError("the archive refused the C-GET association")
    identifier = Dataset()
    for key, value in keys.items():
        setattr(identifier, key, value)
    final = None
    try:
        for status, _ in assoc.send_c_get(identifier, StudyRootQueryRetrieveInformationModelGet):
            if status and status.Status not in (0xFF00, 0xFF01):
                final = status.Status
    finally:
        assoc.release()
    return received, final


# --------------------------------------------------------------------------------- streaming SCU program


def stream(host: str, port: int, aet: str, sent_dir: Path, ack_file: Path, count: int) -> int:
    """Synthesize ``count`` instances under ``sent_dir``, send them one by one, and append each SOP
    Instance UID to ``ack_file`` (fsync'ed) as soon as its C-STORE response says Success.

    Exits 0 when all were acknowledged, 1 when the association broke (the expected end in the crash test).
    """
    from pynetdicom import AE, _config

    _config.STORE_SEND_CHUNKED_DATASET = True  # send each file's bytes as they are
    study, series = generate_uid(), generate_uid()
    files = [
        synthesize(sent_dir / f"{i:05d}.dcm", patient_id="CRASH", study_uid=study, series_uid=series,
                   instance_number=i + 1)
        for i in range(count)
    ]
    print("synthesized", flush=True)
    ae = AE(ae_title="CRASHTEST")
    # A killed server can leave a C-STORE response pending forever; give up on it quickly.
    ae.dimse_timeout = ae.network_timeout = 5
    ae.add_requested_context(MRImageStorage, ExplicitVRLittleEndian)
    assoc = ae.associate(host, port, ae_title=aet)
    if not assoc.is_established:
        print("association refused", file=sys.stderr)
        return 2
    acked = 0
    with open(ack_file, "a") as ack:
        for path in files:
            try:
                # A path is sent as the file's encoded data set, not re-encoded: the bytes we compare with.
                status = assoc.send_c_store(path)
            except Exception as exc:  # the server died under us
                print(f"send failed after {acked} acknowledged: {exc}", file=sys.stderr)
                return 1
            if not status or status.get("Status") != 0x0000:
                print(f"not acknowledged: {path.name} status {status.get('Status') if status else None}",
                      file=sys.stderr)
                if not assoc.is_established:
                    return 1
                continue
            ack.write(dcmread(path, stop_before_pixels=True).SOPInstanceUID + "\n")
            ack.flush()
            os.fsync(ack.fileno())
            acked += 1
    assoc.release()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    s = commands.add_parser("stream", help="send synthesized instances, recording each acknowledgement")
    s.add_argument("host")
    s.add_argument("port", type=int)
    s.add_argument("aet")
    s.add_argument("sent_dir", type=Path)
    s.add_argument("ack_file", type=Path)
    s.add_argument("count", type=int)
    args = parser.parse_args(argv)
    return stream(args.host, args.port, args.aet, args.sent_dir, args.ack_file, args.count)


if __name__ == "__main__":
    sys.exit(main())
