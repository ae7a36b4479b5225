"""Forwarding: C-STORE of stored instances to peers, through a persistent queue with retries.

A routing rule's ``Forward destination="AET"`` enqueues the instance once it is stored. The queue lives in
the database (record kind ``forward``), so a restart loses nothing: the worker picks up where it left off.
Failed attempts are retried with exponential backoff; after ``max_attempts`` an item stays in the queue as
``failed`` (visible, never dropped) until an admin retries or removes it.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Callable

from pydicom import dcmread
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE

from .storage.records import RecordStore

log = logging.getLogger("dopamine.forward")
KIND = "forward"


@dataclass(frozen=True)
class RetryPolicy:
    first_delay: float = 5.0
    max_delay: float = 3600.0
    max_attempts: int = 50

    def delay(self, attempts: int) -> float:
        return min(self.first_delay * 2 ** max(attempts - 1, 0), self.max_delay)


class ForwardQueue:
    def __init__(self, records: RecordStore, archive, *, calling_aet: str,
                 retry: RetryPolicy = RetryPolicy(), clock: Callable[[], float] = time.time) -> None:
        self.records = records
        self.archive = archive
        self.calling_aet = calling_aet
        self.retry = retry
        self.clock = clock
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------------------------------- queue

    def entry(self, sop_instance_uid: str, destination: str) -> tuple[str, dict]:
        """(kind, record) of a new queue item: for ``Backend.put(..., when_stored=...)``, which writes it
        with the instance (no stored instance then lacks the forwards its rules decided), then ``wake()``."""
        return KIND, {"sop_instance_uid": sop_instance_uid, "destination": destination, "state": "pending",
                      "attempts": 0, "next_attempt": 0.0, "last_error": None, "enqueued_at": self.clock()}

    def enqueue(self, sop_instance_uid: str, destination: str) -> str:
        item_id = self.records.insert(*self.entry(sop_instance_uid, destination))
        self.wake()
        return item_id

    def wake(self) -> None:
        """Items were added: attempt them now rather than at the next poll."""
        self._wake.set()

    def items(self, state: str | None = None) -> list[dict]:
        return self.records.find(KIND, state=state) if state else self.records.find(KIND)

    def retry_failed(self) -> int:
        failed = self.records.find(KIND, state="failed")
        for item in failed:
            self.records.update(KIND, item["id"], state="pending", next_attempt=0.0)
        self._wake.set()
        return len(failed)

    def run_due(self) -> int:
        """Attempt every item that is due; returns how many were delivered."""
        delivered = 0
        now = self.clock()
        due = [item for item in self.records.find(KIND, state="pending") if item["next_attempt"] <= now]
        if not due:
            return 0
        try:
            # What a peer gets is durable here first: a STOW-RS request commits its instances (and their
            # forwards) without a flush, and flushes once at its end.
            self.archive.sync()
        except OSError as exc:
            log.warning("forwarding waits: the archive cannot flush its writes to disk: %s", exc)
            return 0
        for item in due:
            if self._stop.is_set():
                break
            error = self._deliver(item)
            if error is None:
                self.records.delete(KIND, item["id"])
                delivered += 1
                log.info("forwarded %s to %s", item["sop_instance_uid"], item["destination"])
                continue
            attempts = item["attempts"] + 1
            state = "failed" if attempts >= self.retry.max_attempts else "pending"
            self.records.update(KIND, item["id"], attempts=attempts, last_error=error, state=state,
                                next_attempt=self.clock() + self.retry.delay(attempts))
            log.warning("forward of %s to %s failed (attempt %d%s): %s", item["sop_instance_uid"],
                        item["destination"], attempts, ", giving up" if state == "failed" else "", error)
        return delivered

    # ------------------------------------------------------------------------------------------ worker

    def start(self, poll_interval: float = 2.0) -> None:
        def loop() -> None:
            while not self._stop.is_set():
                try:
                    self.run_due()
                except Exception:  # a broken item must not stop forwarding for the others
                    log.exception("forward worker")
                self._wake.wait(poll_interval)
                self._wake.clear()

        self._thread = threading.Thread(target=loop, name="forward", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread:
            self._thread.join(timeout=30)

    # ----------------------------------------------------------------------------------------- sending

    def _deliver(self, item: dict) -> str | None:
        """None when the peer acknowledged the instance, else what went wrong."""
        peer = self.archive.backend.get_peer(item["destination"])
        if peer is None:
            return f"unknown destination {item['destination']} (add it with `dopamine peer add`)"
        try:
            with self.archive.open_original(item["sop_instance_uid"]) as f:
                ds = dcmread(f)
        except KeyError:
            return "instance no longer stored"
        ae = AE(ae_title=self.calling_aet)
        for ts in dict.fromkeys([str(ds.file_meta.TransferSyntaxUID), ExplicitVRLittleEndian, ImplicitVRLittleEndian]):
            ae.add_requested_context(ds.SOPClassUID, ts)
        assoc = ae.associate(peer["host"], peer["port"], ae_title=peer["aet"])
        if not assoc.is_established:
            return f"association with {peer['aet']}@{peer['host']}:{peer['port']} refused or failed"
        try:
            status = assoc.send_c_store(ds)
        except Exception as exc:  # pynetdicom raises ValueError for unencodable data sets, and others
            return f"C-STORE failed: {exc}"
        finally:
            assoc.release()
        code = getattr(status, "Status", None)
        if code is None:
            return "no C-STORE response"
        if code != 0x0000 and not 0xB000 <= code <= 0xBFFF:
            return f"peer answered status 0x{code:04X}"
        return None
