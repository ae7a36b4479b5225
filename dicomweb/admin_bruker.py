"""Admin HTTP API: upload a zipped Bruker ParaVision study (or scan, or reconstruction), converted to DICOM
and stored through the router like every other input. Mounted under /admin by ``dopamine serve``.

  POST /bruker[?enhanced=true]   body: the zip (application/zip), streamed to disk.
                                 200 with a summary per scan (stored, duplicates, failures with reasons);
                                 422 when nothing in the zip could be converted.
"""

from __future__ import annotations

import os
import tempfile
from collections import Counter
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from dopamine_py.archive import Source

from .admin import AdminError

MAX_UPLOAD = 16 * 1024 * 1024 * 1024  # a whole study of large 3D scans


def bruker_routes(archive, spool_dir) -> list[Route]:
    async def upload(request: Request) -> Response:
        media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if media_type not in ("application/zip", "application/x-zip-compressed"):
            raise AdminError("send the study as a zip file (Content-Type: application/zip)", 415)
        enhanced = request.query_params.get("enhanced", "false").lower() in ("1", "true", "yes")
        fd, path = tempfile.mkstemp(prefix="bruker-", suffix=".zip", dir=spool_dir)
        try:
            size = 0
            with os.fdopen(fd, "wb") as spool:
                async for chunk in request.stream():
                    size += len(chunk)
                    if size > MAX_UPLOAD:
                        raise AdminError("upload larger than 16 GiB", 413)
                    spool.write(chunk)
            source = Source(protocol="bruker", user=request.state.admin.user, peer=_peer(request))
            summary = await run_in_threadpool(_import, archive, path, enhanced, source)
        finally:
            os.unlink(path)
        converted = any(scan["instances"] for scan in summary["scans"])
        return JSONResponse(summary, status_code=200 if converted else 422)

    return [Route("/bruker", upload, methods=["POST"])]


def _peer(request: Request) -> str | None:
    return f"{request.client.host}:{request.client.port}" if request.client else None


def _import(archive, path: str, enhanced: bool, source: Source) -> dict[str, Any]:
    from bruker.convert import convert_path
    from bruker.discovery import UnsafeArchiveError

    totals: Counter[str] = Counter()
    scans = []
    try:
        results = list(convert_path(path, enhanced=enhanced))
    except (UnsafeArchiveError, OSError, ValueError) as exc:
        return {"scans": [], "totals": {}, "error": f"cannot read the zip: {exc}"}
    for result in results:
        entry: dict[str, Any] = {"scan": result.scan_id, "instances": len(result.datasets)}
        if result.error:
            entry["error"] = result.error
        outcomes: Counter[str] = Counter()
        failures = []
        for ds in result.datasets:
            stored = archive.store_dataset(ds, source)
            outcomes[stored.status] += 1
            if not stored.ok:
                failures.append({"sop_instance_uid": stored.sop_instance_uid, "reason": stored.reason})
        entry.update(outcomes)
        if failures:
            entry["failures"] = failures
        totals.update(outcomes)
        scans.append(entry)
    return {"scans": scans, "totals": dict(totals)}
