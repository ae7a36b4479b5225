"""multipart/related (RFC 2387) framing: writing streamed responses and parsing streamed requests.

The parser is push-style: ``feed`` it chunks as they arrive and it returns events; it never holds more
than one chunk plus a delimiter's length, so a request of any size goes through in constant memory.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Iterable, Iterator

from .errors import BadRequest

MAX_HEADER_BYTES = 16 * 1024
MAX_PREAMBLE_BYTES = 64 * 1024


# ---------------------------------------------------------------------------------------------- writing


class MultipartWriter:
    """Frames parts as ``--boundary CRLF headers CRLF CRLF body CRLF`` ... ``--boundary--``."""

    def __init__(self, related_type: str, extra_params: str = "") -> None:
        self.boundary = uuid.uuid4().hex
        self.content_type = f'multipart/related; type="{related_type}"; boundary={self.boundary}{extra_params}'

    def part(self, content_type: str, body: Iterable[bytes], headers: dict[str, str] | None = None) -> Iterator[bytes]:
        lines = [f"--{self.boundary}", f"Content-Type: {content_type}"]
        lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
        yield ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        yield from body
        yield b"\r\n"

    def close(self) -> bytes:
        return f"--{self.boundary}--\r\n".encode("latin-1")


# ---------------------------------------------------------------------------------------------- parsing


class MalformedMultipart(BadRequest):
    pass


@dataclass
class PartStart:
    headers: dict[str, str]  # lower-case names

    @property
    def content_type(self) -> str | None:
        return self.headers.get("content-type")


@dataclass
class PartData:
    data: bytes


@dataclass
class PartEnd:
    pass


Event = PartStart | PartData | PartEnd


class MultipartParser:
    def __init__(self, boundary: str) -> None:
        if not boundary or len(boundary) > 70:
            raise MalformedMultipart("the multipart boundary must have 1 to 70 characters")
        # Every delimiter, the first one included once the CRLF below is prepended, is CRLF "--" boundary.
        self.delimiter = b"\r\n--" + boundary.encode("latin-1")
        self.buffer = bytearray(b"\r\n")
        self.state = "preamble"
        self.seen = 0  # bytes of preamble skipped
        self.parts = 0

    def feed(self, chunk: bytes) -> list[Event]:
        self.buffer += chunk
        events: list[Event] = []
        while self._step(events):
            pass
        return events

    def close(self) -> list[Event]:
        """The end of the body: anything but a closing delimiter before it is malformed."""
        events: list[Event] = []
        while self._step(events):
            pass
        if self.state != "epilogue":
            where = {"preamble": "no boundary delimiter found",
                     "after_delimiter": "the body ends right after a boundary",
                     "headers": "the body ends inside the headers of a part",
                     "body": f"the body ends inside part {self.parts} (no closing boundary)"}[self.state]
            raise MalformedMultipart(f"malformed multipart body: {where}")
        return events

    def _step(self, events: list[Event]) -> bool:
        """Advance by one state transition if the buffer allows it; False when more input is needed."""
        buf = self.buffer
        if self.state == "preamble":
            i = buf.find(self.delimiter)
            if i < 0:
                keep = len(self.delimiter) - 1
                self.seen += max(0, len(buf) - keep)
                if self.seen > MAX_PREAMBLE_BYTES:
                    raise MalformedMultipart("malformed multipart body: no boundary delimiter in the first 64 KiB")
                del buf[: max(0, len(buf) - keep)]
                return False
            del buf[: i + len(self.delimiter)]
            self.state = "after_delimiter"
            return True
        if self.state == "after_delimiter":
            stripped = buf.lstrip(b" \t")  # transport padding allowed after a delimiter
            if len(stripped) < 2:
                return False
            if stripped.startswith(b"--"):
                self.state = "epilogue"
                buf.clear()
                return False
            if not stripped.startswith(b"\r\n"):
                raise MalformedMultipart("malformed multipart body: a boundary delimiter is followed by "
                                         f"{bytes(stripped[:20])!r} instead of CRLF")
            del buf[: len(buf) - len(stripped) + 2]
            self.state = "headers"
            return True
        if self.state == "headers":
            if buf.startswith(b"\r\n"):  # a part without headers
                end, skip = 0, 2
            else:
                end = buf.find(b"\r\n\r\n")
                skip = 4
                if end < 0:
                    if len(buf) > MAX_HEADER_BYTES:
                        raise MalformedMultipart("malformed multipart body: part headers longer than 16 KiB")
                    return False
            headers = _parse_headers(bytes(buf[:end]))
            del buf[: end + skip]
            self.parts += 1
            events.append(PartStart(headers))
            self.state = "body"
            return True
        if self.state == "body":
            i = buf.find(self.delimiter)
            if i < 0:
                safe = len(buf) - (len(self.delimiter) - 1)
                if safe > 0:
                    events.append(PartData(bytes(buf[:safe])))
                    del buf[:safe]
                return False
            if i:
                events.append(PartData(bytes(buf[:i])))
            del buf[: i + len(self.delimiter)]
            events.append(PartEnd())
            self.state = "after_delimiter"
            return True
        buf.clear()  # epilogue: ignored
        return False


def _parse_headers(block: bytes) -> dict[str, str]:
    headers: dict[str, str] = {}
    for line in block.decode("latin-1").split("\r\n"):
        if not line.strip():
            continue
        name, colon, value = line.partition(":")
        if not colon or not name.strip():
            raise MalformedMultipart(f"malformed multipart body: bad part header line {line[:80]!r}")
        headers[name.strip().lower()] = value.strip()
    return headers
