"""WADO-RS (PS3.18 10.4): instances, metadata, bulk data, frames, rendered pictures and thumbnails.

Instances stream from their originals in chunks: a study of any size goes out in constant memory.
"""

from __future__ import annotations

import json
import logging
from typing import Any, Iterator

from pydicom import dcmread
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from dopamine_py.document import tag_key
from dopamine_py.storage.base import StoredInstance

from .errors import BadRequest, NotAcceptable, NotFound
from .json_model import dumps, to_wire
from .media import MediaRange, accept_of, choose, wants_multipart_xml
from .metadata_text import wire_text
from .multipart import MultipartWriter
from .pixels import PIXEL_DATA, FrameSource, PixelError, can_decode, can_transcode, transcode
from .render import RENDERED_TYPES, THUMBNAIL_SIZE, RenderOptions, render
from .resources import Target, base_url, instance_url
from .xml_model import to_xml

log = logging.getLogger("dopamine.dicomweb")

CHUNK = 1 << 20
METADATA_CHUNK = 256 << 10
DOCUMENT_BATCH = 500  # documents fetched by one query
STORED = "*"  # as stored, without transcoding
AVAILABLE_TRANSFER_SYNTAX = 0x00083002


# ------------------------------------------------------------------------------------------- instances


def dicom_transfer_syntaxes(accepted: list[MediaRange]) -> list[str]:
    """The transfer syntaxes the client takes for DICOM instances, most preferred first ("*": as stored).

    Without a transfer-syntax parameter we send what is stored (as Orthanc does), where PS3.18 would
    have Explicit VR Little Endian; the conformance statement says so.
    """
    wanted: list[str] = []
    for r in accepted:
        if r.type == "multipart/related" and (r.related_type in (None, "application/dicom", "*/*")):
            wanted.append(r.transfer_syntax or STORED)
        elif r.type == "*/*":
            wanted.append(STORED)
    if not wanted:
        raise NotAcceptable('instances are available as multipart/related; type="application/dicom" '
                            f"(asked for: {', '.join(map(str, accepted))})")
    return wanted


def retrieve_instances(archive, request: Request) -> Response:
    target = Target.from_path(request.path_params)
    wanted = dicom_transfer_syntaxes(accept_of(request))
    instances = target.instances(archive)
    plan: list[tuple[StoredInstance, str]] = []
    for inst in instances:
        ts = next((w for w in wanted if can_transcode(inst.transfer_syntax_uid, w)), None)
        if ts is None:
            raise NotAcceptable(f"instance {inst.sop_instance_uid} is stored in {inst.transfer_syntax_uid} and cannot "
                                f"be sent in {', '.join(wanted)} (available: as stored, or uncompressed "
                                "1.2.840.10008.1.2.1 / 1.2.840.10008.1.2 when its pixel data can be decoded)")
        plan.append((inst, inst.transfer_syntax_uid if ts == STORED else ts))
    writer = MultipartWriter("application/dicom")

    def body() -> Iterator[bytes]:
        for inst, ts in plan:
            try:
                with archive.open_original(inst.sop_instance_uid) as f:
                    chunks = _chunks(f) if ts == inst.transfer_syntax_uid else iter([transcode(f, ts)])
                    yield from writer.part(f"application/dicom; transfer-syntax={ts}", chunks)
            except (KeyError, OSError) as exc:
                # The status line is gone already: leave the instance out and say so in the log.
                log.error("WADO-RS: cannot read %s: %s", inst.sop_instance_uid, exc)
        yield writer.close()

    return StreamingResponse(coalesce(body(), CHUNK), headers={"Content-Type": writer.content_type})


def _chunks(f) -> Iterator[bytes]:
    while chunk := f.read(CHUNK):
        yield chunk


def coalesce(pieces: Iterator[bytes], size: int) -> Iterator[bytes]:
    """Join small pieces into chunks of about ``size`` bytes: Starlette runs every step of a streamed
    generator on its thread pool, so three small pieces per instance cost three round trips each."""
    buffer = bytearray()
    for piece in pieces:
        buffer += piece
        if len(buffer) >= size:
            yield bytes(buffer)
            buffer.clear()
    if buffer:
        yield bytes(buffer)


# -------------------------------------------------------------------------------------------- metadata


def metadata_documents(archive, request: Request, instances: list[StoredInstance]) -> Iterator[dict[str, Any]]:
    base = base_url(request)
    for batch in _batches(instances):
        documents = archive.get_documents([inst.sop_instance_uid for inst in batch])
        for inst in batch:
            if inst.sop_instance_uid in documents:
                yield _metadata_of(base, inst, documents[inst.sop_instance_uid])


def metadata_json(archive, request: Request, instances: list[StoredInstance]) -> Iterator[bytes]:
    """Each instance's metadata as DICOM JSON text; from the stored JSON text when the backend has it."""
    texts_of = getattr(archive.backend, "get_document_texts", None)
    if texts_of is None:
        yield from map(dumps, metadata_documents(archive, request, instances))
        return
    base = base_url(request)
    for batch in _batches(instances):
        texts = texts_of([inst.sop_instance_uid for inst in batch])
        for inst in batch:
            text = texts.get(inst.sop_instance_uid)
            if text is None:
                continue
            wire = wire_text(text, _bulk_uris(base, inst), inst.transfer_syntax_uid)
            yield wire if wire is not None else dumps(_metadata_of(base, inst, json.loads(text)))


def _batches(instances: list[StoredInstance]) -> Iterator[list[StoredInstance]]:
    for start in range(0, len(instances), DOCUMENT_BATCH):
        yield instances[start:start + DOCUMENT_BATCH]


def _bulk_uris(base: str, inst: StoredInstance):
    url = instance_url(base, inst.study_instance_uid, inst.series_instance_uid, inst.sop_instance_uid)
    return lambda path: f"{url}/bulkdata/{path}"


def _metadata_of(base: str, inst: StoredInstance, doc: dict[str, Any]) -> dict[str, Any]:
    wire = to_wire(doc, _bulk_uris(base, inst))
    wire[tag_key(AVAILABLE_TRANSFER_SYNTAX)] = {"vr": "UI", "Value": [inst.transfer_syntax_uid]}
    if "00080005" in wire:
        wire["00080005"] = {"vr": "CS", "Value": ["ISO_IR 192"]}  # DICOM JSON is UTF-8
    return dict(sorted(wire.items()))


def retrieve_metadata(archive, request: Request) -> Response:
    target = Target.from_path(request.path_params)
    as_xml = wants_multipart_xml(accept_of(request), "metadata is")
    instances = target.instances(archive)
    if as_xml:
        writer = MultipartWriter("application/dicom+xml")

        def xml_body() -> Iterator[bytes]:
            for wire in metadata_documents(archive, request, instances):
                yield from writer.part("application/dicom+xml", [to_xml(wire)])
            yield writer.close()

        return StreamingResponse(xml_body(), headers={"Content-Type": writer.content_type})

    def json_body() -> Iterator[bytes]:
        yield b"["
        for n, text in enumerate(metadata_json(archive, request, instances)):
            yield (b"," if n else b"") + text
        yield b"]"

    return StreamingResponse(coalesce(json_body(), METADATA_CHUNK), headers={"Content-Type": "application/dicom+json"})


# -------------------------------------------------------------------------------------- frames, bulk data


def _one_instance(archive, request: Request) -> StoredInstance:
    return Target.from_path(request.path_params).instances(archive)[0]


def parse_frame_list(text: str) -> list[int]:
    numbers = []
    for item in text.replace("%2C", ",").split(","):
        item = item.strip()
        if not item.isdigit() or int(item) < 1:
            raise BadRequest(f"bad frame list {text!r}: frame numbers are whole numbers from 1, separated by commas")
        numbers.append(int(item))
    return numbers


def frame_answer(accepted: list[MediaRange], source: FrameSource) -> tuple[str, str, bool]:
    """(part media type, its transfer syntax, decode?) for the frames of ``source`` the client takes."""
    stored_type = source.stored_media_type
    for r in accepted:
        part_type = r.related_type if r.type == "multipart/related" else r.type
        part_type = part_type or "*/*"
        ts = r.transfer_syntax
        if part_type == "*/*":
            if ts in (None, "*", source.transfer_syntax) or (source.is_native and ts == "1.2.840.10008.1.2.1"):
                return stored_type, source.transfer_syntax if not source.is_native else "1.2.840.10008.1.2.1", False
        if part_type == "application/octet-stream":
            if not source.is_native and ts == source.transfer_syntax:
                return "application/octet-stream", source.transfer_syntax, False
            if ts in (None, "*", "1.2.840.10008.1.2.1") and can_decode(source.transfer_syntax):
                return "application/octet-stream", "1.2.840.10008.1.2.1", True
        if not source.is_native and type_matches(part_type, stored_type) and ts in (None, "*", source.transfer_syntax):
            return stored_type, source.transfer_syntax, False
    raise NotAcceptable(f"frames of this instance are stored as {stored_type} ({source.transfer_syntax}); they can be "
                        'sent as such or as multipart/related; type="application/octet-stream" when decodable '
                        f"(asked for: {', '.join(map(str, accepted))})")


def type_matches(pattern: str, media_type: str) -> bool:
    return pattern == media_type or (pattern.endswith("/*") and media_type.startswith(pattern[:-1]))


def retrieve_frames(archive, request: Request) -> Response:
    inst = _one_instance(archive, request)
    numbers = parse_frame_list(request.path_params["frames"])
    accepted = accept_of(request)
    with archive.open_original(inst.sop_instance_uid) as f:
        try:
            source = FrameSource.open(f)
            for n in numbers:
                source.check(n)
        except PixelError as exc:
            raise NotFound(str(exc)) from None
        media_type, ts, decode = frame_answer(accepted, source)
        writer = MultipartWriter(media_type)
        content_type = f"{media_type}; transfer-syntax={ts}"
        try:
            parts = [b"".join(writer.part(content_type, [source.decoded_frame(n) if decode else source.stored_frame(n)]))
                     for n in numbers]
        except PixelError as exc:
            raise NotAcceptable(str(exc)) from None
    return Response(b"".join(parts) + writer.close(), headers={"Content-Type": writer.content_type})


def retrieve_bulkdata(archive, request: Request) -> Response:
    inst = _one_instance(archive, request)
    path = [p for p in request.path_params["path"].split("/") if p]
    accepted = accept_of(request)
    if not any(r.type in ("*/*", "application/octet-stream") or
               (r.type == "multipart/related" and r.related_type in (None, "*/*", "application/octet-stream"))
               for r in accepted):
        raise NotAcceptable('bulk data is available as multipart/related; type="application/octet-stream"')
    with archive.open_original(inst.sop_instance_uid) as f:
        if path == [tag_key(PIXEL_DATA)]:
            source = FrameSource.open(f)
            if not source.is_native:
                # Encapsulated pixel data: one part per frame, in its own media type.
                writer = MultipartWriter(source.stored_media_type)
                body = b"".join(b"".join(writer.part(f"{source.stored_media_type}; transfer-syntax={source.transfer_syntax}",
                                                       [source.stored_frame(n)]))
                                for n in range(1, source.number_of_frames + 1))
                return Response(body + writer.close(), headers={"Content-Type": writer.content_type})
        value = _bulk_value(f, path)
    writer = MultipartWriter("application/octet-stream")
    body = b"".join(writer.part("application/octet-stream", [value])) + writer.close()
    return Response(body, headers={"Content-Type": writer.content_type})


def _bulk_value(f, path: list[str]) -> bytes:
    f.seek(0)
    ds = dcmread(f)
    node: Any = ds
    try:
        for i, step in enumerate(path):
            if i % 2:
                node = node[int(step) - 1]
            else:
                node = node[int(step, 16)].value
    except (ValueError, KeyError, IndexError, TypeError):
        raise NotFound(f"no bulk data at {'/'.join(path)} in this instance") from None
    if not isinstance(node, (bytes, bytearray)):
        raise NotFound(f"{'/'.join(path)} is not a binary value")
    return bytes(node)


# ----------------------------------------------------------------------------------- rendered, thumbnail


def _renderable(archive, instances: list[StoredInstance]) -> StoredInstance:
    """The middle image of the instances (a representative picture of a series or a study)."""
    images = [i for i in instances if tag_key(PIXEL_DATA) in (archive.get_document(i.sop_instance_uid) or {})]
    if not images:
        raise NotAcceptable("nothing to render: no instance here has pixel data")
    return images[len(images) // 2]


def retrieve_rendered(archive, request: Request, thumbnail: bool = False) -> Response:
    target = Target.from_path(request.path_params)
    media_type = choose(accept_of(request), RENDERED_TYPES)
    options = RenderOptions.from_query(request.query_params, THUMBNAIL_SIZE if thumbnail else None)
    instances = target.instances(archive)
    inst = instances[0] if target.instance else _renderable(archive, instances)
    number = 1
    if "frame" in request.path_params:
        numbers = parse_frame_list(request.path_params["frame"])
        if len(numbers) != 1:
            raise BadRequest("a rendered frame resource names one frame")
        number = numbers[0]
    with archive.open_original(inst.sop_instance_uid) as f:
        try:
            source = FrameSource.open(f)
            source.check(number)
        except PixelError as exc:
            raise (NotAcceptable if "no Pixel Data" in str(exc) else NotFound)(str(exc)) from None
        try:
            picture = render(source, number, media_type, options)
        except PixelError as exc:
            raise NotAcceptable(f"cannot render this instance: {exc}") from None
    return Response(picture, media_type=media_type)
