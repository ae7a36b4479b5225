"""Media types: parsing Content-Type and Accept header fields, and choosing what to answer.

A DICOMweb Accept field lists media ranges such as
``multipart/related; type="application/dicom"; transfer-syntax=1.2.840.10008.1.2.1, application/dicom+json;q=0.5``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .errors import BadRequest, NotAcceptable


@dataclass(frozen=True)
class MediaRange:
    type: str  # "multipart/related", "application/dicom+json", "*/*", "image/*"
    params: dict[str, str] = field(default_factory=dict, hash=False, compare=False)
    q: float = 1.0

    @property
    def related_type(self) -> str | None:
        """For multipart/related, the media type of its parts (the ``type`` parameter)."""
        value = self.params.get("type")
        return value.lower() if value else None

    @property
    def transfer_syntax(self) -> str | None:
        return self.params.get("transfer-syntax")

    def covers(self, media_type: str) -> bool:
        """Whether this range accepts the concrete ``media_type`` (wildcards ``*/*`` and ``image/*``)."""
        return type_covers(self.type, media_type)

    def __str__(self) -> str:
        params = "".join(f'; {k}="{v}"' if k == "type" else f"; {k}={v}" for k, v in self.params.items())
        return self.type + params


def type_covers(pattern: str, media_type: str) -> bool:
    if pattern == "*/*" or pattern == media_type:
        return True
    major, _, minor = pattern.partition("/")
    return minor == "*" and media_type.split("/")[0] == major


def _split_outside_quotes(text: str, separator: str) -> list[str]:
    parts, current, quoted = [], [], False
    for ch in text:
        if ch == '"':
            quoted = not quoted
        if ch == separator and not quoted:
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
    parts.append("".join(current))
    return parts


def parse_media_type(text: str) -> MediaRange:
    """One media type with its parameters; raises BadRequest when it has no type/subtype."""
    pieces = _split_outside_quotes(text, ";")
    main = pieces[0].strip().lower()
    if "/" not in main or " " in main:
        raise BadRequest(f"malformed media type {text.strip()!r}")
    params: dict[str, str] = {}
    q = 1.0
    for piece in pieces[1:]:
        name, eq, value = piece.partition("=")
        name = name.strip().lower()
        if not name:
            continue
        if not eq:
            raise BadRequest(f"malformed media type parameter {piece.strip()!r} in {text.strip()!r}")
        value = value.strip().strip('"')
        if name == "q":
            try:
                q = float(value)
            except ValueError:
                raise BadRequest(f"malformed quality value {value!r} in {text.strip()!r}") from None
        else:
            params[name] = value
    return MediaRange(main, params, q)


def parse_accept(header: str | None) -> list[MediaRange]:
    """The acceptable media ranges, most preferred first; ``*/*`` when the header is absent."""
    if not header or not header.strip():
        return [MediaRange("*/*")]
    ranges = [parse_media_type(item) for item in _split_outside_quotes(header, ",") if item.strip()]
    ranges = [r for r in ranges if r.q > 0]
    # Stable sort: equal preferences keep the client's order.
    return sorted(ranges, key=lambda r: -r.q)


def accept_of(request) -> list[MediaRange]:
    """The Accept header, or the ``accept`` query parameter that PS3.18 allows instead of it."""
    query_accept = request.query_params.getlist("accept")
    if query_accept:
        return parse_accept(",".join(query_accept))
    return parse_accept(request.headers.get("accept"))


def wants_multipart_xml(accepted: list[MediaRange], resource: str) -> bool:
    """For resources answered in DICOM JSON or, when asked, multipart/related DICOM XML (QIDO-RS results,
    WADO-RS metadata): whether the client prefers the XML form; 406 when it accepts neither."""
    for wanted in accepted:
        if wanted.type == "multipart/related" and wanted.related_type == "application/dicom+xml":
            return True
        if wanted.covers("application/dicom+json") or wanted.covers("application/json"):
            return False
    raise NotAcceptable(f'{resource} available as application/dicom+json or multipart/related; '
                        'type="application/dicom+xml"')


def choose(accepted: list[MediaRange], offers: list[str]) -> str:
    """The first offer (single-part media types) the client accepts, in the client's order of preference."""
    for wanted in accepted:
        if wanted.type == "multipart/related":
            continue
        for offer in offers:
            if wanted.covers(offer):
                return offer
    raise NotAcceptable(f"cannot answer with any of: {', '.join(map(str, accepted))} "
                        f"(this resource is available as {', '.join(offers)})")
