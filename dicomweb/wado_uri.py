"""WADO-URI (PS3.18 9): ``/wado?requestType=WADO&studyUID=..&seriesUID=..&objectUID=..``.

Served inside the DICOMweb application, at ``/dicom-web/wado``.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from dopamine_py.document import tag_key

from .errors import BadRequest, NotAcceptable, NotFound
from .pixels import PIXEL_DATA, FrameSource, PixelError, can_transcode, transcode
from .render import RenderOptions, render
from .resources import Target
from .wado import _chunks

SUPPORTED = {"requestType", "studyUID", "seriesUID", "objectUID", "contentType", "transferSyntax", "frameNumber",
             "rows", "columns", "windowCenter", "windowWidth", "imageQuality", "charset"}
CONTENT_TYPES = ("application/dicom", "image/jpeg", "image/png")


def wado_uri(archive, request: Request) -> Response:
    params = request.query_params
    unsupported = sorted(set(params.keys()) - SUPPORTED)
    if unsupported:
        raise BadRequest(f"WADO-URI parameter(s) not supported: {', '.join(unsupported)}")
    if params.get("requestType") != "WADO":
        raise BadRequest("WADO-URI needs requestType=WADO")
    missing = [p for p in ("studyUID", "seriesUID", "objectUID") if not params.get(p)]
    if missing:
        raise BadRequest(f"WADO-URI needs {', '.join(missing)}")
    target = Target.from_path({"study": params["studyUID"], "series": params["seriesUID"],
                               "instance": params["objectUID"]})
    inst = target.instances(archive)[0]
    has_pixels = tag_key(PIXEL_DATA) in (archive.get_document(inst.sop_instance_uid) or {})
    content_type = _content_type(params.get("contentType"), has_pixels)
    if content_type == "application/dicom":
        wanted = params.get("transferSyntax") or inst.transfer_syntax_uid
        if not can_transcode(inst.transfer_syntax_uid, wanted):
            raise NotAcceptable(f"the instance is stored in {inst.transfer_syntax_uid} and cannot be sent in {wanted}")

        def body():
            with archive.open_original(inst.sop_instance_uid) as f:
                yield from (_chunks(f) if wanted == inst.transfer_syntax_uid else [transcode(f, wanted)])

        return StreamingResponse(body(), media_type="application/dicom")
    return _rendered(archive, inst, content_type, params)


def _content_type(asked: str | None, has_pixels: bool) -> str:
    if not asked:
        return "image/jpeg" if has_pixels else "application/dicom"
    for item in asked.split(","):
        media_type = item.split(";")[0].strip().lower()
        if media_type in ("*/*", "image/*"):
            media_type = "image/jpeg" if has_pixels else "application/dicom"
        if media_type in CONTENT_TYPES and (media_type == "application/dicom" or has_pixels):
            return media_type
    raise NotAcceptable(f"cannot answer with {asked}: this object is available as "
                        f"{', '.join(CONTENT_TYPES if has_pixels else CONTENT_TYPES[:1])}")


def _rendered(archive, inst, content_type: str, params) -> Response:
    number = _number(params.get("frameNumber"), "frameNumber") or 1
    rows, columns = _number(params.get("rows"), "rows"), _number(params.get("columns"), "columns")
    query = {}
    if rows or columns:
        query["viewport"] = f"{columns or rows},{rows or columns}"
    if params.get("windowCenter") or params.get("windowWidth"):
        query["window"] = f"{params.get('windowCenter', '')},{params.get('windowWidth', '')}"
    if params.get("imageQuality"):
        query["quality"] = params["imageQuality"]
    options = RenderOptions.from_query(query)
    with archive.open_original(inst.sop_instance_uid) as f:
        try:
            source = FrameSource.open(f)
            source.check(number)
        except PixelError as exc:
            raise NotFound(str(exc)) from None
        try:
            picture = render(source, number, content_type, options)
        except PixelError as exc:
            raise NotAcceptable(f"cannot render this object: {exc}") from None
    return Response(picture, media_type=content_type)


def _number(value: str | None, name: str) -> int | None:
    if value is None or value == "":
        return None
    if not value.isdigit() or int(value) < 1:
        raise BadRequest(f"{name} must be a whole number from 1")
    return int(value)
