"""The forward queue delivers to a real DCMTK storescp, retries, and survives a restart."""

from __future__ import annotations

import subprocess
import time

import pytest

from dopamine_py.archive import ArchiveService, Source
from dopamine_py.forwarding import ForwardQueue, RetryPolicy
from dopamine_py.storage.records import MongoRecords, SQLiteRecords
from factory import encode, make_dataset
from support import free_port, require_tool


@pytest.fixture(params=["embedded", "mongodb-standin"])
def records(request, tmp_path):
    if request.param == "embedded":
        store = SQLiteRecords(tmp_path / "records.sqlite")
        yield store
        store.close()
    else:
        import mongomock

        yield MongoRecords(mongomock.MongoClient().db)


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def start_storescp(folder, port):
    storescp = require_tool("storescp")
    folder.mkdir(exist_ok=True)
    proc = subprocess.Popen([storescp, "-aet", "STORESCP", "-od", str(folder), str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    echoscu = require_tool("echoscu")
    for _ in range(50):  # wait until it answers
        if subprocess.run([echoscu, "-aec", "STORESCP", "127.0.0.1", str(port)], capture_output=True).returncode == 0:
            return proc
        time.sleep(0.1)
    proc.kill()
    raise RuntimeError("storescp did not start")


def test_queue_retries_until_the_peer_is_up_and_survives_a_restart(records, tmp_path):
    from dopamine_py.storage.sqlite import SQLiteBackend

    archive = ArchiveService(SQLiteBackend(tmp_path / "store"))
    ds = make_dataset()
    assert archive.store_bytes(encode(ds), Source("test")).status == "stored"
    port = free_port()
    archive.backend.put_peer("STORESCP", "127.0.0.1", port)
    clock = Clock()
    queue = ForwardQueue(records, archive, calling_aet="DOPAMINE", retry=RetryPolicy(first_delay=10, max_attempts=5), clock=clock)
    queue.enqueue(ds.SOPInstanceUID, "STORESCP")

    assert queue.run_due() == 0                      # nobody listening yet
    [item] = queue.items("pending")
    assert item["attempts"] == 1 and "refused or failed" in item["last_error"]
    assert queue.run_due() == 0 and queue.items()[0]["attempts"] == 1   # not due before the backoff

    # A restart: a new queue object over the same records, the peer now up.
    received = tmp_path / "received"
    storescp = start_storescp(received, port)
    try:
        clock.now += 10
        restarted = ForwardQueue(records, archive, calling_aet="DOPAMINE", clock=clock)
        assert restarted.run_due() == 1, restarted.items()[0]["last_error"]
        assert restarted.items() == []
        [path] = list(received.iterdir())
        from pydicom import dcmread

        assert dcmread(path).SOPInstanceUID == ds.SOPInstanceUID
    finally:
        storescp.terminate()
        storescp.wait()


def test_unknown_destination_gives_up_after_max_attempts_and_can_be_retried(records, tmp_path):
    from dopamine_py.storage.sqlite import SQLiteBackend

    archive = ArchiveService(SQLiteBackend(tmp_path / "store"))
    clock = Clock()
    queue = ForwardQueue(records, archive, calling_aet="DOPAMINE", retry=RetryPolicy(first_delay=1, max_attempts=2), clock=clock)
    queue.enqueue("1.2.3", "NOWHERE")
    queue.run_due()
    clock.now += 100
    queue.run_due()
    [item] = queue.items("failed")
    assert item["attempts"] == 2 and "unknown destination NOWHERE" in item["last_error"]
    assert queue.retry_failed() == 1 and queue.items("pending")


def test_an_instance_is_forwarded_only_once_durable(records, tmp_path, monkeypatch):
    """A STOW-RS request commits its instances without a flush and flushes at its end: the queue flushes
    the archive before it sends anything, and waits when the disk refuses."""
    from dopamine_py.storage.sqlite import SQLiteBackend

    archive = ArchiveService(SQLiteBackend(tmp_path / "store"))
    ds = make_dataset()
    assert archive.store_bytes(encode(ds), Source("dicomweb"), sync=False).status == "stored"
    events = []
    queue = ForwardQueue(records, archive, calling_aet="DOPAMINE")
    monkeypatch.setattr(queue, "_deliver", lambda item: events.append(("send", item["sop_instance_uid"])))
    flush = archive.sync
    monkeypatch.setattr(archive, "sync", lambda: events.append(("flush",)) or flush())
    assert queue.run_due() == 0 and events == []  # nothing queued: no flush either
    queue.enqueue(ds.SOPInstanceUID, "STORESCP")
    assert queue.run_due() == 1
    assert events == [("flush",), ("send", ds.SOPInstanceUID)]

    def refused():
        raise OSError(5, "Input/output error")

    queue.enqueue(ds.SOPInstanceUID, "STORESCP")
    events.clear()
    monkeypatch.setattr(archive, "sync", refused)
    assert queue.run_due() == 0 and events == []
    [item] = queue.items("pending")
    assert item["attempts"] == 0  # not an attempt: it is tried again once the archive can flush
