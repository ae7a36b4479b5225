"""Access control of the DICOMweb requests: who is asking (HTTP Basic or Bearer), whether the service is
allowed, and the archive as that decision lets the request see it.

Every protocol asks ``acl.AccessControl`` the same question (docs/access-control.md). The answer reaches
the request handlers as a ``ScopedArchive``: its find, count and instances carry the decision's
constraints into the backend query, so hidden data sets never appear, never count, never page, and a
hidden resource answers exactly like an absent one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, BinaryIO, Iterator

from starlette.requests import Request

from acl import AccessControl, AuthFailure, Decision, Identity, Service
from dopamine_py.archive import ArchiveService, Source, StoreResult
from dopamine_py.matching import Query
from dopamine_py.storage.base import Found, Level, StoredInstance

from .errors import DicomWebError


def peer_of(request: Request) -> tuple[str | None, int | None]:
    client = request.client
    return (client.host, client.port) if client else (None, None)


def authenticate(access: AccessControl, request: Request) -> Identity:
    """The identity behind the request's Authorization header; refused credentials are answered at once
    (401 with the challenge, or 429 with Retry-After), never treated as anonymous."""
    host, port = peer_of(request)
    result = access.authenticate_http(request.headers.get("authorization"), host, port)
    if isinstance(result, AuthFailure):
        # The body says no more than the status: "unknown user" and "wrong password" look the same.
        message = ("too many failed logins: try again later" if result.status == 429
                   else "the credentials were refused")
        raise DicomWebError(message, result.status, result.headers())
    return result


def authorize(access: AccessControl, request: Request, service: Service) -> Decision:
    """The allowed decision for ``service``, or the denial as an HTTP error (401 if nobody logged in, else 403).

    With access control not enforced (auth.enforce = false) credentials are not even read: every request
    goes through, including those of clients that send a meaningless header (the dicomweb_client command
    sends "Authorization: Bearer None" when given no token).
    """
    if not access.enforce:
        host, port = peer_of(request)
        return access.decide(Identity(None, frozenset(), None, host, port, "none", "dicomweb"), service)
    decision = access.decide(authenticate(access, request), service)
    if not decision.allowed:
        status, headers = access.http_denial(decision)
        message = "authentication required" if status == 401 else f"not authorized to {service.value}"
        raise DicomWebError(message, status, headers)
    return decision


class ScopedArchive:
    """The archive seen through one allowed decision: what the request handlers are given.

    Reads by UID (``open_original``, ``get_document``) are only ever made on instances that ``instances``
    or ``find`` returned through this view, so they need no check of their own.
    """

    def __init__(self, archive: ArchiveService, decision: Decision) -> None:
        if not decision.allowed:
            raise ValueError("a denied decision sees nothing: answer the denial instead")
        self._archive = archive
        self.decision = decision

    @property
    def backend(self):
        return self._archive.backend

    @property
    def user(self) -> str | None:
        return self.decision.identity.user

    def find(self, level: Level, query: Query, limit: int | None = None, offset: int = 0) -> list[Found]:
        return self._archive.find(level, self.decision.restrict(query), limit, offset)

    def count(self, level: Level, query: Query) -> int:
        return self._archive.count(level, self.decision.restrict(query))

    def instances(self, query: Query) -> Iterator[StoredInstance]:
        return self._archive.instances(self.decision.restrict(query))

    def store_file(self, path: str | Path, source: Source, **options: Any) -> StoreResult:
        """Store only what the Store decision covers; a data set outside it comes back rejected (0x0124)."""
        permits = None if self.decision.unrestricted else self.decision.permits
        return self._archive.store_file(path, source, permits=permits, **options)

    def store_bytes(self, data: bytes, source: Source, **options: Any) -> StoreResult:
        """As ``store_file``, for a data set received in memory."""
        permits = None if self.decision.unrestricted else self.decision.permits
        return self._archive.store_bytes(data, source, permits=permits, **options)

    def sync(self) -> None:
        self._archive.sync()

    def open_original(self, sop_instance_uid: str) -> BinaryIO:
        return self._archive.open_original(sop_instance_uid)

    def get_document(self, sop_instance_uid: str) -> dict[str, Any] | None:
        return self._archive.get_document(sop_instance_uid)

    def get_documents(self, sop_instance_uids: list[str]) -> dict[str, dict[str, Any]]:
        return self._archive.get_documents(sop_instance_uids)
