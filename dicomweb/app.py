"""The DICOMweb application (PS3.18), served by `dopamine serve` under /dicom-web.

Routes (relative to /dicom-web):
  QIDO-RS   GET  /studies  /series  /instances  /studies/{s}/series  /studies/{s}/instances
                 /studies/{s}/series/{se}/instances
  WADO-RS   GET  /studies/{s}[/series/{se}[/instances/{i}]]            instances (multipart/related)
                 .../metadata  .../rendered  .../thumbnail             at each of the three levels
                 .../instances/{i}/frames/{list}  .../frames/{n}/rendered|thumbnail  .../bulkdata/{path}
  STOW-RS   POST /studies  /studies/{s}
  WADO-URI  GET  /wado?requestType=WADO&studyUID=..&seriesUID=..&objectUID=..

Access control (docs/access-control.md): QIDO-RS asks for Query, WADO-RS and WADO-URI for Retrieve,
STOW-RS for Store. Each handler gets the archive through the request's decision (``ScopedArchive``);
/status and CORS preflight requests need no credentials.
"""

from __future__ import annotations

from typing import Callable

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.middleware.gzip import DEFAULT_EXCLUDED_CONTENT_TYPES, GZipMiddleware
from starlette.responses import JSONResponse
from starlette.routing import Route

from acl import AccessControl, Service
from dopamine_py.archive import ArchiveService
from dopamine_py.storage.base import Level

from . import qido, stow, wado, wado_uri
from .authorization import ScopedArchive, authorize
from .errors import DicomWebError, on_dicomweb_error, on_unexpected_error

BASE_PATH = "/dicom-web"
STUDY = "/studies/{study}"
SERIES = STUDY + "/series/{series}"
INSTANCE = SERIES + "/instances/{instance}"
# Instances and frames are already compressed or too large to be worth compressing on the fly.
NOT_GZIPPED = DEFAULT_EXCLUDED_CONTENT_TYPES + ("multipart/*", "application/dicom", "application/octet-stream")


def create_app(archive: ArchiveService, settings, access: AccessControl) -> Starlette:
    """The DICOMweb application; ``access`` decides every request (with ``auth.enforce = false`` it lets
    everything through, which is how tests about other things run)."""
    if not isinstance(access, AccessControl):
        raise TypeError("create_app needs the archive's acl.AccessControl (see dopamine_py.cli.open_access_control)")

    def route(path: str, handler: Callable, service: Service, *args) -> Route:
        # Plain functions: Starlette runs them in its thread pool, so archive calls (and password checks)
        # never block the loop.
        def endpoint(request):
            decision = authorize(access, request, service)
            return handler(ScopedArchive(archive, decision), request, *args)

        return Route(path, endpoint, methods=["GET"])

    def searching(level: Level) -> Callable:
        return lambda archive, request: qido.search(archive, settings, request, level)

    async def storing(request):
        # Before a byte of the body is read: a refused sender uploads nothing.
        decision = await run_in_threadpool(authorize, access, request, Service.STORE)
        return await stow.store_instances(ScopedArchive(archive, decision), settings, request)

    async def status(request):
        return JSONResponse({"archive": "dopamine-py", "storage": archive.backend.name})

    routes = [
        Route("/status", status),
        # QIDO-RS
        route("/studies", searching(Level.STUDY), Service.QUERY),
        route("/series", searching(Level.SERIES), Service.QUERY),
        route("/instances", searching(Level.IMAGE), Service.QUERY),
        route(STUDY + "/series", searching(Level.SERIES), Service.QUERY),
        route(STUDY + "/instances", searching(Level.IMAGE), Service.QUERY),
        route(SERIES + "/instances", searching(Level.IMAGE), Service.QUERY),
        # STOW-RS
        Route("/studies", storing, methods=["POST"]),
        Route(STUDY, storing, methods=["POST"]),
        # WADO-URI
        route("/wado", wado_uri.wado_uri, Service.RETRIEVE),
    ]
    for level in (STUDY, SERIES, INSTANCE):
        routes += [
            route(level, wado.retrieve_instances, Service.RETRIEVE),
            route(level + "/metadata", wado.retrieve_metadata, Service.RETRIEVE),
            route(level + "/rendered", wado.retrieve_rendered, Service.RETRIEVE),
            route(level + "/thumbnail", wado.retrieve_rendered, Service.RETRIEVE, True),
        ]
    routes += [
        route(INSTANCE + "/frames/{frames}", wado.retrieve_frames, Service.RETRIEVE),
        route(INSTANCE + "/frames/{frame}/rendered", wado.retrieve_rendered, Service.RETRIEVE),
        route(INSTANCE + "/frames/{frame}/thumbnail", wado.retrieve_rendered, Service.RETRIEVE, True),
        route(INSTANCE + "/bulkdata/{path:path}", wado.retrieve_bulkdata, Service.RETRIEVE),
    ]
    # Level 6: the same size as the default 9 on DICOM JSON, in a fraction of the time.
    middleware = [Middleware(GZipMiddleware, minimum_size=settings["dicomweb.gzip_minimum_size"],
                             compresslevel=6, exclude_content_types=NOT_GZIPPED)]
    origins = settings["dicomweb.cors_allow_origins"]
    if origins:
        # Outermost: a preflight (OPTIONS) is answered here, before any route asks for credentials.
        middleware.insert(0, Middleware(
            CORSMiddleware, allow_origins=origins, allow_methods=["GET", "POST", "OPTIONS"], allow_headers=["*"],
            expose_headers=["Warning", "Content-Type", "Content-Location", "WWW-Authenticate", "Retry-After"],
        ))
    return Starlette(
        routes=routes,
        middleware=middleware,
        exception_handlers={DicomWebError: on_dicomweb_error, Exception: on_unexpected_error},
    )
