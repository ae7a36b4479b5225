"""The storage interface every backend implements, and what backends share.

A backend stores one record per SOP instance: the queryable document, a few extracted keys, and the
original bytes exactly as received. It answers level queries (patient, study, series, instance) compiled
from a ``matching.Query`` and streams originals back. Everything protocol-specific lives above it.
"""

from __future__ import annotations

import enum
import hashlib
import io
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Iterator, Sequence

import bson
import bson.errors

from ..matching import Query

# MongoDB refuses documents over 16 MiB; keep a margin for the driver's own framing.
MONGODB_DOCUMENT_LIMIT = 16 * 1024 * 1024
INLINE_MARGIN = 64 * 1024


class Level(str, enum.Enum):
    PATIENT = "PATIENT"
    STUDY = "STUDY"
    SERIES = "SERIES"
    IMAGE = "IMAGE"


class DuplicatePolicy(str, enum.Enum):
    KEEP_FIRST = "keep-first"
    REPLACE = "replace"
    REJECT = "reject"


class PutOutcome(str, enum.Enum):
    STORED = "stored"
    IDENTICAL_DUPLICATE = "identical-duplicate"  # same bytes as the stored instance: nothing to keep
    KEPT_FIRST = "kept-first"  # different bytes; the newcomer is kept aside in the superseded store
    REPLACED = "replaced"  # different bytes; the previous version moved to the superseded store
    REJECTED_DUPLICATE = "rejected-duplicate"


# The outcomes after which the instance counts as received (what its arrival sets off, such as forwarding).
STORED_OUTCOMES = frozenset({PutOutcome.STORED, PutOutcome.REPLACED, PutOutcome.KEPT_FIRST})


@dataclass
class InstanceRecord:
    """What the archive hands a backend for one received instance."""

    sop_instance_uid: str
    sop_class_uid: str
    study_instance_uid: str
    series_instance_uid: str
    patient_id: str
    modality: str
    transfer_syntax_uid: str
    document: dict[str, Any]
    size: int
    sha256: str
    received_at: str
    source: dict[str, Any] = field(default_factory=dict)

    def keys(self) -> dict[str, Any]:
        """The extracted keys, as both backends store them beside the document."""
        return {
            "sop_instance_uid": self.sop_instance_uid,
            "sop_class_uid": self.sop_class_uid,
            "study_instance_uid": self.study_instance_uid,
            "series_instance_uid": self.series_instance_uid,
            "patient_id": self.patient_id,
            "modality": self.modality,
            "transfer_syntax_uid": self.transfer_syntax_uid,
            "size": self.size,
            "sha256": self.sha256,
            "received_at": self.received_at,
            "source": self.source,
        }


@dataclass
class Original:
    """The original bytes: a file, or bytes in memory. An ``owned`` file may be moved instead of copied."""

    path: Path | None = None
    data: bytes | None = None
    owned: bool = False

    @property
    def size(self) -> int:
        return len(self.data) if self.data is not None else self.path.stat().st_size

    def read(self) -> bytes:
        return self.data if self.data is not None else self.path.read_bytes()

    def open(self) -> BinaryIO:
        return io.BytesIO(self.data) if self.data is not None else open(self.path, "rb")

    def sha256(self) -> str:
        if self.data is not None:
            return hashlib.sha256(self.data).hexdigest()
        digest = hashlib.sha256()
        with open(self.path, "rb") as f:  # streamed: large originals never sit whole in memory
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
        return digest.hexdigest()


@dataclass
class StoredInstance:
    """An instance as retrieval sees it."""

    sop_instance_uid: str
    sop_class_uid: str
    study_instance_uid: str
    series_instance_uid: str
    transfer_syntax_uid: str
    size: int


@dataclass
class Found:
    """One answer of a level query: the document of the group's first instance, and the group's counts."""

    document: dict[str, Any]
    instances: int
    series: int
    studies: int
    modalities: list[str]
    sop_classes: list[str]


LEVEL_KEY = {
    Level.PATIENT: "patient_id",
    Level.STUDY: "study_instance_uid",
    Level.SERIES: "series_instance_uid",
    Level.IMAGE: "sop_instance_uid",
}


def fits_inline(record: InstanceRecord, original_size: int) -> bool:
    """Whether the whole stored document, original bytes included, stays under MongoDB's limit.

    Measured on the encoded BSON, not guessed from the file size: a document with a large
    queryable part leaves less room for the original.
    """
    try:
        without_original = len(bson.encode({"_id": record.sop_instance_uid, **record.keys(), "ds": record.document}))
    except (OverflowError, bson.errors.InvalidDocument):
        # Not BSON-encodable (a UV value over 2**63): no MongoDB document can hold it; keep the
        # original outside, where its size does not matter. MongoDB refuses the document itself.
        return False
    return without_original + original_size + INLINE_MARGIN <= MONGODB_DOCUMENT_LIMIT


class StorageFull(OSError):
    """Raised when the store cannot take more data; the archive answers 'out of resources'."""


class Backend(ABC):
    """A place to keep instances. Implementations must be safe to call from several threads."""

    name: str = "?"

    @abstractmethod
    def put(self, record: InstanceRecord, original: Original, policy: DuplicatePolicy,
            extra_records: Sequence[tuple[str, dict[str, Any]]] = (), *,
            when_stored: Sequence[tuple[str, dict[str, Any]]] = (), sync: bool = True) -> PutOutcome:
        """Store durably; when this returns STORED, REPLACED or KEPT_FIRST the data survive a crash.

        ``sync=False`` lets a backend commit without flushing to disk; the data are durable once ``sync()``
        returns. STOW-RS stores a request's instances that way and syncs once before answering.

        ``extra_records`` (kind, record) go to the administrative records of the same database
        (storage.records), with the instance: written unless the outcome is REJECTED_DUPLICATE, and never
        missing once an instance is stored (routing's provenance, without a second commit of its own).
        ``when_stored`` likewise, but kept only when the outcome is one of STORED_OUTCOMES (routing's
        forwards: an identical copy sent again is not forwarded again).
        """

    def sync(self) -> None:
        """Flush what ``put(..., sync=False)`` committed (a no-op where every write is already durable)."""

    @abstractmethod
    def find(self, level: Level, query: Query, having: Query | None = None,
             limit: int | None = None, offset: int = 0) -> list[Found]:
        """Groups of instances matching ``query`` at ``level``, ordered by the level's key.

        ``having`` selects groups containing at least one instance that matches it (the way
        ModalitiesInStudy is matched).
        """

    @abstractmethod
    def count(self, level: Level, query: Query, having: Query | None = None) -> int:
        """How many groups ``find`` would return without a limit."""

    @abstractmethod
    def instances(self, query: Query) -> Iterator[StoredInstance]:
        """Every instance matching ``query``, ordered by study, series and instance UID."""

    @abstractmethod
    def open_original(self, sop_instance_uid: str) -> BinaryIO:
        """The original bytes of an instance, as a readable binary file; KeyError when unknown."""

    @abstractmethod
    def get_document(self, sop_instance_uid: str) -> dict[str, Any] | None:
        """The stored document of an instance, or None."""

    @abstractmethod
    def delete_instance(self, sop_instance_uid: str) -> bool:
        """Remove an instance and its original; False when it was not stored. (Used to release
        quarantined instances; deletion as a user service comes with the traceability work.)"""

    def get_documents(self, sop_instance_uids: list[str]) -> dict[str, dict[str, Any]]:
        """The documents of several instances (the stored ones among them), in as few queries as a backend can."""
        found = {}
        for uid in sop_instance_uids:
            doc = self.get_document(uid)
            if doc is not None:
                found[uid] = doc
        return found

    @abstractmethod
    def superseded_versions(self, sop_instance_uid: str) -> list[dict[str, Any]]:
        """The versions of an instance displaced by a duplicate policy: sha256, reason, at."""

    # Peers (C-MOVE destinations and, later, forward targets).
    @abstractmethod
    def put_peer(self, aet: str, host: str, port: int) -> None: ...

    @abstractmethod
    def get_peer(self, aet: str) -> dict[str, Any] | None: ...

    @abstractmethod
    def list_peers(self) -> list[dict[str, Any]]: ...

    @abstractmethod
    def remove_peer(self, aet: str) -> bool: ...

    @abstractmethod
    def close(self) -> None: ...
