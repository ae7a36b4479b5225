"""The resources named by a DICOMweb path: UID checks, lookups in the archive and their URLs."""

from __future__ import annotations

import re
from dataclasses import dataclass

from starlette.requests import Request

from dopamine_py.archive import ArchiveService
from dopamine_py.matching import Query, Single
from dopamine_py.storage.base import StoredInstance

from .errors import BadRequest, NotFound

STUDY, SERIES, INSTANCE = 0x0020000D, 0x0020000E, 0x00080018


def check_uid(value: str, what: str) -> str:
    # Leading zeros are tolerated (some modalities write them); anything else than digits and dots is not a UID.
    if len(value) > 64 or not re.fullmatch(r"[0-9]+(\.[0-9]+)*", value):
        raise BadRequest(f"invalid {what} {value[:80]!r}: a UID is up to 64 digits and dots, like 1.2.840.10008")
    return value


def base_url(request: Request) -> str:
    """The service root (``http://host:port/dicom-web``) as the client reaches it, for RetrieveURL and BulkDataURI.

    A reverse proxy's X-Forwarded-Host wins. Otherwise the Host header, which some clients
    (dicomweb-client) send without the port: then the port the request arrived on is added.
    """
    headers = request.headers
    scheme = headers.get("x-forwarded-proto", request.url.scheme).split(",")[0].strip()
    host = headers.get("x-forwarded-host", "").split(",")[0].strip()
    if not host:
        host = headers.get("host") or ""
        server = request.scope.get("server")
        default_port = 443 if scheme == "https" else 80
        if server and not _has_port(host) and server[1] != default_port:
            host = f"{host or server[0]}:{server[1]}"
    return f"{scheme}://{host}{request.scope.get('root_path', '')}"


def _has_port(host: str) -> bool:
    return bool(re.search(r":\d+$", host)) and not host.endswith("]")


def study_url(base: str, study: str) -> str:
    return f"{base}/studies/{study}"


def series_url(base: str, study: str, series: str) -> str:
    return f"{base}/studies/{study}/series/{series}"


def instance_url(base: str, study: str, series: str, instance: str) -> str:
    return f"{base}/studies/{study}/series/{series}/instances/{instance}"


@dataclass(frozen=True)
class Target:
    """The study, series or instance a retrieve path names (the UIDs it gives, checked)."""

    study: str
    series: str | None = None
    instance: str | None = None

    @classmethod
    def from_path(cls, params: dict[str, str]) -> "Target":
        study = check_uid(params["study"], "Study Instance UID")
        series = check_uid(params["series"], "Series Instance UID") if "series" in params else None
        instance = check_uid(params["instance"], "SOP Instance UID") if "instance" in params else None
        return cls(study, series, instance)

    @property
    def query(self) -> Query:
        conditions = [Single(STUDY, "UI", self.study)]
        if self.series:
            conditions.append(Single(SERIES, "UI", self.series))
        if self.instance:
            conditions.append(Single(INSTANCE, "UI", self.instance))
        return Query(tuple(conditions))

    def describe(self) -> str:
        if self.instance:
            return f"instance {self.instance} in series {self.series} of study {self.study}"
        if self.series:
            return f"series {self.series} in study {self.study}"
        return f"study {self.study}"

    def instances(self, archive: ArchiveService) -> list[StoredInstance]:
        found = list(archive.instances(self.query))
        if not found:
            raise NotFound(f"no {self.describe()} in this archive")
        return found
