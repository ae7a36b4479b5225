"""An acknowledged store is durable: SIGKILL the archive in the middle of a stream of C-STOREs, restart it on
the same data directory, and every instance the sender saw acknowledged must be there, bit for bit."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from pydicom import dcmread
from pydicom.uid import MRImageStorage

from dimse_client import c_get, dataset_bytes, send_file, synthesize
from support import REPO, start_server

INSTANCES = 300
KILL_AFTER = 100  # acknowledgements seen before the kill: well inside the stream


def acknowledged(ack_file: Path) -> list[str]:
    if not ack_file.exists():
        return []
    # Whole lines only: the last one may be in the middle of being written.
    return [line for line in ack_file.read_text().split("\n")[:-1] if line]


def test_sigkill_mid_stream_loses_no_acknowledged_instance(tmp_path):
    data_dir = tmp_path / "data"
    sent_dir, ack_file = tmp_path / "sent", tmp_path / "acknowledged.txt"
    server = start_server(data_dir)
    client = subprocess.Popen(
        [sys.executable, str(REPO / "tests" / "dimse_client.py"), "stream", server.host, str(server.dimse_port),
         server.aet, str(sent_dir), str(ack_file), str(INSTANCES)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO / "tests",
    )
    try:
        deadline = time.monotonic() + 120
        while len(acknowledged(ack_file)) < KILL_AFTER:
            assert client.poll() is None, f"the client ended early:\n{client.communicate()}"
            assert time.monotonic() < deadline, "the stream is too slow to reach the kill point"
            time.sleep(0.01)
        server.kill()
        out, err = client.communicate(timeout=60)
    finally:
        server.kill()
        if client.poll() is None:
            client.kill()
    acked = acknowledged(ack_file)
    assert KILL_AFTER <= len(acked) < INSTANCES, f"the kill did not land mid-stream ({len(acked)} acknowledged)\n{err}"
    assert client.returncode == 1, f"the client should see the association break:\n{out}\n{err}"

    sent = {str(dcmread(p, stop_before_pixels=True).SOPInstanceUID): p for p in sent_dir.glob("*.dcm")}
    series = str(dcmread(next(iter(sent.values())), stop_before_pixels=True).SeriesInstanceUID)
    restarted = start_server(data_dir)
    try:
        received, status = c_get(restarted, {"QueryRetrieveLevel": "SERIES", "SeriesInstanceUID": series},
                                 [MRImageStorage])
        assert status == 0x0000, f"C-GET after the restart ended with {status}"
        missing = [uid for uid in acked if uid not in received]
        assert not missing, f"{len(missing)} of {len(acked)} acknowledged instances lost, e.g. {missing[:3]}"
        for uid, data in received.items():
            # Acknowledged or not, whatever the archive holds must be whole.
            assert data == dataset_bytes(sent[uid].read_bytes()), f"{uid} damaged by the crash"
        assert len(received) <= len(acked) + 1, "more instances than acknowledged (at most the one in flight)"
        # And the store keeps working where it stopped.
        extra = synthesize(tmp_path / "after.dcm", patient_id="AFTER-CRASH")
        status = send_file(restarted, extra, MRImageStorage)
        assert status is not None and status.Status == 0x0000
    finally:
        restarted.stop()
