"""The DICOMweb application (PS3.18), served by `dopamine serve` under /dicom-web."""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route

from dopamine_py.archive import ArchiveService

BASE_PATH = "/dicom-web"


def create_app(archive: ArchiveService, settings) -> Starlette:
    async def status(request):
        return JSONResponse({"archive": "dopamine-py", "storage": archive.backend.name})

    return Starlette(routes=[Route("/status", status)])
