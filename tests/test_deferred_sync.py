"""The embedded store's deferred flush (``put(..., sync=False)`` then ``sync()``), which STOW-RS relies on
to acknowledge a request's instances with one fsync instead of one each.

What a test can observe without pulling the power: that a deferred commit leaves SQLite's connection at
``synchronous=NORMAL`` only for that commit, and that ``sync()`` fsyncs the write-ahead log that holds it.
"""

from __future__ import annotations

import os

from dopamine_py.archive import ArchiveService, Source
from dopamine_py.storage.sqlite import SQLiteBackend
from factory import encode, make_dataset


def test_sync_fsyncs_the_write_ahead_log_holding_deferred_commits(tmp_path, monkeypatch):
    backend = SQLiteBackend(tmp_path / "store", ["PatientName"])
    archive = ArchiveService(backend)
    fsynced: list[str] = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (fsynced.append(os.readlink(f"/proc/self/fd/{fd}")), real_fsync(fd)))
    wal = f"{backend.db_path}-wal"
    before = os.path.getsize(wal)
    result = archive.store_bytes(encode(make_dataset()), Source(protocol="test"), sync=False)
    assert result.status == "stored", result.reason
    assert os.path.getsize(wal) > before, "the deferred commit is not in the write-ahead log"
    assert backend._writer.execute("PRAGMA synchronous").fetchone()[0] == 2, "FULL was not restored after the commit"
    assert not [p for p in fsynced if p.endswith("-wal")], "the write-ahead log was flushed before sync()"
    archive.sync()
    assert [p for p in fsynced if p.endswith("-wal")] == [os.path.realpath(wal)]
    backend.close()
