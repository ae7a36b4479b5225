"""The DICOMweb application (PS3.18), served by `dopamine serve` under /dicom-web.

Routes (relative to /dicom-web):
  QIDO-RS   GET  /studies  /series  /instances  /studies/{s}/series  /studies/{s}/instances
                 /studies/{s}/series/{se}/instances
  WADO-RS   GET  /studies/{s}[/series/{se}[/instances/{i}]]            instances (multipart/related)
                 .../metadata  .../rendered  .../thumbnail             at each of the three levels
                 .../instances/{i}/frames/{list}  .../frames/{n}/rendered|thumbnail  .../bulkdata/{path}
  STOW-RS   POST /studies  /studies/{s}
  WADO-URI  GET  /wado?requestType=WADO&studyUID=..&seriesUID=..&objectUID=..
"""

from __future__ import annotations

from typing import Callable

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.middleware.gzip import DEFAULT_EXCLUDED_CONTENT_TYPES, GZipMiddleware
from starlette.responses import JSONResponse
from starlette.routing import Route

from dopamine_py.archive import ArchiveService
from dopamine_py.storage.base import Level

from . import qido, stow, wado, wado_uri
from .errors import DicomWebError, on_dicomweb_error, on_unexpected_error

BASE_PATH = "/dicom-web"
STUDY = "/studies/{study}"
SERIES = STUDY + "/series/{series}"
INSTANCE = SERIES + "/instances/{instance}"
# Instances and frames are already compressed or too large to be worth compressing on the fly.
NOT_GZIPPED = DEFAULT_EXCLUDED_CONTENT_TYPES + ("multipart/*", "application/dicom", "application/octet-stream")


def create_app(archive: ArchiveService, settings, access=None) -> Starlette:
    def route(path: str, handler: Callable, *args, methods=("GET",)) -> Route:
        # Plain functions: Starlette runs them in its thread pool, so archive calls never block the loop.
        def endpoint(request):
            return handler(archive, request, *args)

        return Route(path, endpoint, methods=list(methods))

    def searching(level: Level) -> Callable:
        return lambda archive, request: qido.search(archive, settings, request, level)

    async def storing(request):
        return await stow.store_instances(archive, settings, request)

    async def status(request):
        return JSONResponse({"archive": "dopamine-py", "storage": archive.backend.name})

    routes = [
        Route("/status", status),
        # QIDO-RS
        route("/studies", searching(Level.STUDY)),
        route("/series", searching(Level.SERIES)),
        route("/instances", searching(Level.IMAGE)),
        route(STUDY + "/series", searching(Level.SERIES)),
        route(STUDY + "/instances", searching(Level.IMAGE)),
        route(SERIES + "/instances", searching(Level.IMAGE)),
        # STOW-RS
        Route("/studies", storing, methods=["POST"]),
        Route(STUDY, storing, methods=["POST"]),
        # WADO-URI
        route("/wado", wado_uri.wado_uri),
    ]
    for level in (STUDY, SERIES, INSTANCE):
        routes += [
            route(level, wado.retrieve_instances),
            route(level + "/metadata", wado.retrieve_metadata),
            route(level + "/rendered", wado.retrieve_rendered),
            route(level + "/thumbnail", wado.retrieve_rendered, True),
        ]
    routes += [
        route(INSTANCE + "/frames/{frames}", wado.retrieve_frames),
        route(INSTANCE + "/frames/{frame}/rendered", wado.retrieve_rendered),
        route(INSTANCE + "/frames/{frame}/thumbnail", wado.retrieve_rendered, True),
        route(INSTANCE + "/bulkdata/{path:path}", wado.retrieve_bulkdata),
    ]
    middleware = [Middleware(GZipMiddleware, minimum_size=settings["dicomweb.gzip_minimum_size"],
                             exclude_content_types=NOT_GZIPPED)]
    origins = settings["dicomweb.cors_allow_origins"]
    if origins:
        middleware.insert(0, Middleware(
            CORSMiddleware, allow_origins=origins, allow_methods=["GET", "POST", "OPTIONS"], allow_headers=["*"],
            expose_headers=["Warning", "Content-Type", "Content-Location"],
        ))
    return Starlette(
        routes=routes,
        middleware=middleware,
        exception_handlers={DicomWebError: on_dicomweb_error, Exception: on_unexpected_error},
    )
