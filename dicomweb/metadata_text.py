"""WADO-RS metadata made from the JSON text a backend stores, without decoding what needs no change.

The embedded store keeps each document as the text of ``json.dumps(doc, ensure_ascii=False,
separators=(",", ":"))``, small binary values in Base64 ``InlineBinary``: for most elements that is already
their wire form (what ``json_model.to_wire`` then ``json_model.dumps`` write). An element is *simple* when
it is ``{"vr":"XX"}`` with a non-empty ``Value`` list of strings, numbers, nulls or person names, or with
``InlineBinary``, or with ``"BulkData":true``, written as ``json.dumps`` writes them. Then:

- a document of simple elements in tag order (most documents; checked by one regular expression) is
  edited in place: bulk data elements get their ``BulkDataURI``, Specific Character Set becomes ISO_IR 192
  and Available Transfer Syntax UID is put in tag order, as ``wado`` does for every document;
- any other document is cut into its top-level elements by another expression: simple ones are copied
  (or edited as above), the others (sequences, unexpected shapes or escapes) decoded and written by
  ``to_wire`` one by one, and all are put in tag order;
- a document that cannot be cut (nesting deeper than the expression follows) gives None: the caller
  takes the element-by-element path for all of it.

``tests/dicomweb/test_metadata_text.py`` holds this and the element-by-element path to the same bytes.
"""

from __future__ import annotations

import bisect
import json
import re
from typing import Callable

from .json_model import dumps, to_wire

SPECIFIC_CHARACTER_SET = "00080005"
AVAILABLE_TRANSFER_SYNTAX = "00083002"
UTF8 = '{"vr":"CS","Value":["ISO_IR 192"]}'

# What json.dumps(..., ensure_ascii=False) writes for a string: other escapes (\u00e9, \/) are not its own.
_STRING = r'"(?:[^"\\\x00-\x1f]++|\\["\\bfnrt]|\\u00[01][0-9a-f])*+"'
_NUMBER = r"-?(?:0|[1-9][0-9]*+)(?:\.[0-9]++)?(?:e[-+][0-9]++)?"
_NAME = rf"\{{(?:{_STRING}:{_STRING}(?:,{_STRING}:{_STRING})*+)?\}}"  # a person name's groups
_VALUE = rf"(?:{_STRING}|{_NUMBER}|null|{_NAME})"
_SIMPLE = (rf'\{{"vr":"(?P<vr>[A-Z]{{2}})"'
           rf'(?:,"Value":\[{_VALUE}(?:,{_VALUE})*+\]|,"InlineBinary":{_STRING}|(?P<bulk>,"BulkData":true))?\}}')


def _nested_object(depth: int) -> str:
    """Any JSON object nested at most ``depth`` deep (a regular expression cannot count further)."""
    string = r'"(?:[^"\\]++|\\.)*+"'  # any escape: this part is decoded
    inner = rf'\{{(?:[^{{}}"]++|{string})*+\}}'
    for _ in range(depth - 1):
        inner = rf'\{{(?:[^{{}}"]++|{string}|{inner})*+\}}'
    return inner


# One top-level element: its key, and its object, simple (named groups) or not (group "other").
# Twelve levels: an element in a sequence item is two deeper than the sequence, a person name one more.
_ELEMENT = re.compile(rf'"(?P<key>[0-9A-F]{{8}})":(?:(?P<simple>{_SIMPLE})(?=[,}}])|(?P<other>{_nested_object(12)}))')
# A document of simple elements only (most are).
_SIMPLE_DOCUMENT = re.compile(rf'\{{(?:"[0-9A-F]{{8}}":{_SIMPLE}(?:,(?=")|(?=\}}$)))*+\}}'.replace("?P<vr>", "?:").replace("?P<bulk>", "?:"))
KEY_END = '":{"vr":"'  # in a document of simple elements, follows every element key and nothing else
BULK_END = ',"BulkData":true}'
_BULK = re.compile(r'"([0-9A-F]{8})":\{"vr":"([A-Z]{2})","BulkData":true\}')


def wire_text(stored: str, bulk_uri: Callable[[str], str], transfer_syntax: str) -> bytes | None:
    """The metadata of one instance as ``json_model.dumps`` would write it, or None (see the module)."""
    syntax = f'{{"vr":"UI","Value":[{_string(transfer_syntax)}]}}'
    if _SIMPLE_DOCUMENT.fullmatch(stored):
        keys = [piece[-8:] for piece in stored.split(KEY_END)[:-1]]
        if keys == sorted(keys):
            text = _with_bulk_uris(stored, bulk_uri)
            if SPECIFIC_CHARACTER_SET in keys:
                text = _put(text, keys, SPECIFIC_CHARACTER_SET, UTF8)
            return _put(text, keys, AVAILABLE_TRANSFER_SYNTAX, syntax).encode("utf-8")
    return _rebuilt(stored, bulk_uri, syntax)


def _string(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)


def _bulk_element(key: str, vr: str, bulk_uri: Callable[[str], str]) -> str:
    return f'{{"vr":"{vr}","BulkDataURI":{_string(bulk_uri(key))}}}'


def _with_bulk_uris(text: str, bulk_uri: Callable[[str], str]) -> str:
    """Bulk data elements of a document of simple elements with their URIs (usually one: Pixel Data)."""
    pieces, done = [], 0
    while (end := text.find(BULK_END, done)) >= 0:
        m = _BULK.match(text, end - len('"7FE00010":{"vr":"OW"'))
        pieces += [text[done:m.start()], f'"{m[1]}":', _bulk_element(m[1], m[2], bulk_uri)]
        done = m.end()
    return "".join(pieces) + text[done:] if pieces else text


def _put(text: str, keys: list[str], key: str, element: str) -> str:
    """Put an element into a document of simple elements in tag order (``keys``): in place of the element
    with that key, or before the next key."""
    def position(i: int) -> int:
        return text.find(f'"{keys[i]}{KEY_END}') if i < len(keys) else len(text) - 1

    i = bisect.bisect_left(keys, key)
    new = f'"{key}":{element}'
    if i < len(keys) and keys[i] == key:
        end = position(i + 1) - (1 if i + 1 < len(keys) else 0)  # before the comma, or the closing brace
        return text[:position(i)] + new + text[end:]
    if i < len(keys):
        return text[:position(i)] + new + "," + text[position(i):]
    return text[:-1] + ("," if keys else "") + new + "}"


def _rebuilt(stored: str, bulk_uri: Callable[[str], str], syntax: str) -> bytes | None:
    """Any other document, element by element: simple ones copied, the others through ``to_wire``."""
    elements = {}
    covered = 0
    for m in _ELEMENT.finditer(stored):
        key, text = m["key"], m["simple"]
        if text is None:
            text = dumps(to_wire({key: json.loads(m["other"])}, bulk_uri)[key]).decode("utf-8")
        elif m["bulk"]:
            text = _bulk_element(key, m["vr"], bulk_uri)
        elements[key] = text
        covered += m.end() - m.start() + 1
    # The elements must tile the text ("{" element "," ... element "}"): else one was not recognized.
    tiled = covered + 1 == len(stored) if elements else stored == "{}"
    if not tiled:
        return None
    if SPECIFIC_CHARACTER_SET in elements:
        elements[SPECIFIC_CHARACTER_SET] = UTF8
    elements[AVAILABLE_TRANSFER_SYNTAX] = syntax
    return ("{" + ",".join(f'"{key}":{elements[key]}' for key in sorted(elements)) + "}").encode("utf-8")
