"""Documents (dopamine_py.document) to the DICOM JSON model as it goes on the wire (PS3.18 F.2).

Documents keep small binary values as bytes (or as Base64 text when the backend stores JSON) and mark
bulk data with ``"BulkData": true``; the wire form has Base64 ``InlineBinary`` and ``BulkDataURI``.
"""

from __future__ import annotations

import base64
import json
from typing import Any, Callable

# Given the path of a bulk data element ("7FE00010", "00409096/1/00409212"), its URI; None drops the element.
BulkDataURIs = Callable[[str], str] | None


def to_wire(doc: dict[str, Any], bulk_uri: BulkDataURIs = None, only: set[str] | None = None,
            _path: str = "") -> dict[str, Any]:
    """The wire form of a document, restricted to the tags in ``only`` (top level) when given."""
    out: dict[str, Any] = {}
    for key in sorted(doc):
        if only is not None and key not in only:
            continue
        elem = doc[key]
        path = f"{_path}/{key}" if _path else key
        wire = _element(elem, bulk_uri, path)
        if wire is not None:
            out[key] = wire
    return out


def _element(elem: dict[str, Any], bulk_uri: BulkDataURIs, path: str) -> dict[str, Any] | None:
    vr = elem.get("vr", "UN")
    if elem.get("BulkData"):
        return None if bulk_uri is None else {"vr": vr, "BulkDataURI": bulk_uri(path)}
    if "InlineBinary" in elem:
        value = elem["InlineBinary"]
        if isinstance(value, (bytes, bytearray)):
            value = base64.b64encode(value).decode("ascii")
        return {"vr": vr, "InlineBinary": value}
    if vr == "SQ":
        items = elem.get("Value") or []
        wire = {"vr": "SQ"}
        if items:
            wire["Value"] = [to_wire(item, bulk_uri, _path=f"{path}/{n}") for n, item in enumerate(items, 1)]
        return wire
    wire = {"vr": vr}
    if elem.get("Value"):
        wire["Value"] = elem["Value"]
    return wire


def dumps(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode("utf-8")
