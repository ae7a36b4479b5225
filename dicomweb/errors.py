"""Errors of the DICOMweb layer: each carries its HTTP status and a short explanation for the client."""

from __future__ import annotations

import logging

from starlette.requests import Request
from starlette.responses import PlainTextResponse

log = logging.getLogger("dopamine.dicomweb")


class DicomWebError(Exception):
    status = 400

    def __init__(self, message: str, status: int | None = None, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        if status is not None:
            self.status = status
        self.headers = headers or {}


class BadRequest(DicomWebError):
    status = 400


class NotFound(DicomWebError):
    status = 404


class NotAcceptable(DicomWebError):
    status = 406


class UnsupportedMediaType(DicomWebError):
    status = 415


def error_response(status: int, message: str, headers: dict[str, str] | None = None) -> PlainTextResponse:
    # Plain text: the explanation is for the person reading the client's log, whatever the client is.
    return PlainTextResponse(message.rstrip() + "\n", status_code=status, headers=headers)


async def on_dicomweb_error(request: Request, exc: DicomWebError) -> PlainTextResponse:
    log.info("%s %s -> %d: %s", request.method, request.url.path, exc.status, exc)
    return error_response(exc.status, str(exc), exc.headers)


async def on_unexpected_error(request: Request, exc: Exception) -> PlainTextResponse:
    log.exception("%s %s failed", request.method, request.url.path)
    return error_response(500, f"internal error: {type(exc).__name__}: {exc}")
