"""QIDO-RS (PS3.18 10.6): search for studies, series and instances.

Every search is one ``archive.find`` call, the very one C-FIND makes, so that both protocols give the
same answers to the same query. Paging is done by the backend, in the order of the level's key.
"""

from __future__ import annotations

from functools import cached_property
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from dopamine_py.archive import COMPUTED, computed_attributes
from dopamine_py.document import UnknownAttribute, parse_tag, tag_key, vr_for_tag
from dopamine_py.matching import MatchOptions, Query, QueryError, SequenceMatch, Single, parse_pairs
from dopamine_py.storage.base import Found, Level

from .errors import BadRequest
from .json_model import dumps, to_wire
from .media import accept_of, wants_multipart_xml
from .multipart import MultipartWriter
from .resources import STUDY, SERIES, base_url, check_uid, instance_url, series_url, study_url
from .xml_model import to_xml

RESERVED_PARAMETERS = {"limit", "offset", "fuzzymatching", "includefield", "accept", "charset"}
SPECIFIC_CHARACTER_SET = 0x00080005
RETRIEVE_URL = 0x00081190
INSTANCE_AVAILABILITY = 0x00080056

# Attributes every answer carries (PS3.18 Tables 10.6.3-3 to -5), plus StudyDescription, which viewers list.
STUDY_ATTRIBUTES = (0x00080005, 0x00080020, 0x00080030, 0x00080050, 0x00080056, 0x00080061, 0x00080090,
                    0x00080201, 0x00081030, 0x00081190, 0x00100010, 0x00100020, 0x00100030, 0x00100040,
                    0x0020000D, 0x00200010, 0x00201206, 0x00201208)
SERIES_ATTRIBUTES = (0x00080005, 0x00080060, 0x00080201, 0x0008103E, 0x00081190, 0x0020000D, 0x0020000E,
                     0x00200011, 0x00201209, 0x00400244, 0x00400245, 0x00400275)
INSTANCE_ATTRIBUTES = (0x00080005, 0x00080016, 0x00080018, 0x00080056, 0x00080201, 0x00081190, 0x0020000D,
                       0x0020000E, 0x00200013, 0x00280008, 0x00280010, 0x00280011, 0x00280100)
# Study-level computed attributes are only known at the study level.
ONLY_AT = {0x00201206: Level.STUDY, 0x00201208: Level.STUDY, 0x00080061: Level.STUDY, 0x00080062: Level.STUDY,
           0x00201209: Level.SERIES}

LARGEST_COUNT = 2**62
ADDITIONAL_RESULTS = '"There are additional results that can be requested"'


class Search:
    """One QIDO-RS request, parsed."""

    def __init__(self, request: Request, level: Level, settings) -> None:
        self.level = level
        self.scope_study = request.path_params.get("study")
        self.scope_series = request.path_params.get("series")
        if self.scope_study:
            check_uid(self.scope_study, "Study Instance UID")
        if self.scope_series:
            check_uid(self.scope_series, "Series Instance UID")
        params = request.query_params
        self.fuzzy = _boolean(params.get("fuzzymatching"), "fuzzymatching")
        self.max_results = settings["dicomweb.max_results"]
        self.limit = _integer(params.get("limit"), "limit", minimum=1)
        self.offset = _integer(params.get("offset"), "offset", minimum=0) or 0
        self.include_all, self.included = _included(params.getlist("includefield"))
        defaults = settings.match_options
        self.options = MatchOptions(fold_person_names=self.fuzzy or defaults.fold_person_names,
                                    combine_datetime=defaults.combine_datetime)
        self.query = self._query(params)

    # ------------------------------------------------------------------------------------------- parsing

    def _query(self, params) -> Query:
        values: dict[str, list[str]] = {}
        for key, value in params.multi_items():
            if key in RESERVED_PARAMETERS:
                continue
            values.setdefault(key, []).append(value)
        flat, nested = [], []
        for key, given in values.items():
            value = "\\".join(given)  # a repeated key is a list of alternatives
            if "." in key:
                nested.append(self._sequence_condition(key, value))
                continue
            tag = _tag(key)
            if vr_for_tag(tag) == "UI":
                value = value.replace(",", "\\")  # PS3.18 writes UID lists with commas
            flat.append((tag, value))
        try:
            query = parse_pairs(flat, self.options)
        except QueryError as exc:
            raise BadRequest(f"bad query: {exc}") from None
        scope = []
        if self.scope_study:
            scope.append(Single(STUDY, "UI", self.scope_study))
        if self.scope_series:
            scope.append(Single(SERIES, "UI", self.scope_series))
        return Query(query.conditions + tuple(nested) + tuple(scope),
                     query.return_tags + tuple(c.tag for c in nested))

    def _sequence_condition(self, path: str, value: str) -> SequenceMatch:
        head, _, rest = path.partition(".")
        tag = _tag(head)
        if vr_for_tag(tag) != "SQ":
            raise BadRequest(f"bad query key {path!r}: {head} is not a sequence")
        try:
            if "." in rest:
                inner = Query((self._sequence_condition(rest, value),))
            else:
                inner = parse_pairs([(_tag(rest), value)], self.options)
        except QueryError as exc:
            raise BadRequest(f"bad query: {exc}") from None
        return SequenceMatch(tag, "SQ", inner)

    # ------------------------------------------------------------------------------------------- answers

    @cached_property
    def wanted_tags(self) -> set[str] | None:
        if self.include_all:
            return None
        tags = set(self.included) | set(self.query.return_tags)
        tags |= set(INSTANCE_ATTRIBUTES if self.level == Level.IMAGE else ())
        if self.level in (Level.SERIES, Level.IMAGE) and not self.scope_series:
            tags |= set(SERIES_ATTRIBUTES)
        if self.level == Level.STUDY or not self.scope_study:
            tags |= set(STUDY_ATTRIBUTES)
        return {tag_key(t) for t in tags if ONLY_AT.get(t, self.level) == self.level}

    def answer(self, found: Found, base: str) -> dict[str, Any]:
        doc = dict(found.document)
        doc.update(computed_attributes(found, self.level))
        wanted = self.wanted_tags
        study = _first(doc, STUDY)
        series = _first(doc, SERIES)
        if self.level == Level.STUDY:
            url = study_url(base, study)
        elif self.level == Level.SERIES:
            url = series_url(base, study, series)
        else:
            url = instance_url(base, study, series, _first(doc, 0x00080018))
        doc[tag_key(RETRIEVE_URL)] = {"vr": "UR", "Value": [url]}
        doc[tag_key(INSTANCE_AVAILABILITY)] = {"vr": "CS", "Value": ["ONLINE"]}
        if tag_key(SPECIFIC_CHARACTER_SET) in doc:
            # Documents hold Unicode and DICOM JSON is UTF-8, whatever the stored data set said.
            doc[tag_key(SPECIFIC_CHARACTER_SET)] = {"vr": "CS", "Value": ["ISO_IR 192"]}
        # Bulk data belongs to one instance: referenced at the instance level, left out above it.
        bulk = (lambda path: f"{url}/bulkdata/{path}") if self.level == Level.IMAGE else None
        wire = to_wire(doc, bulk, only=wanted)
        # Explicitly asked for but absent: present and empty, as C-FIND answers.
        for tag in set(self.included) | set(self.query.return_tags):
            key = tag_key(tag)
            if key not in wire and ONLY_AT.get(tag, self.level) == self.level and tag not in COMPUTED:
                wire[key] = {"vr": vr_for_tag(tag) or "UN"}
        return dict(sorted(wire.items()))


def search(archive, settings, request: Request, level: Level) -> Response:
    wants_xml = wants_multipart_xml(accept_of(request), "search results are")
    job = Search(request, level, settings)
    effective = job.max_results if job.limit is None else min(job.limit, job.max_results)
    try:
        found = archive.find(level, job.query, limit=effective + 1, offset=job.offset)
    except QueryError as exc:
        raise BadRequest(f"bad query: {exc}") from None
    more = len(found) > effective
    found = found[:effective]
    base = base_url(request)
    answers = [job.answer(f, base) for f in found]
    headers = {}
    if more and (job.limit is None or job.limit > job.max_results):
        # PS3.18 8.3.4.4: more matches than the server returns in one response.
        headers["Warning"] = f"299 {base}: {ADDITIONAL_RESULTS}"
    if wants_xml:
        writer = MultipartWriter("application/dicom+xml")
        body = b"".join(b"".join(writer.part("application/dicom+xml", [to_xml(a)])) for a in answers) + writer.close()
        return Response(body, media_type=None, headers={**headers, "Content-Type": writer.content_type})
    return Response(dumps(answers), headers={**headers, "Content-Type": "application/dicom+json"})


def _tag(key: str) -> int:
    try:
        return parse_tag(key)
    except UnknownAttribute:
        raise BadRequest(f"unknown query parameter {key!r}: not a DICOM keyword, a tag (ggggeeee) nor one of "
                         f"{', '.join(sorted(RESERVED_PARAMETERS))}") from None


def _included(values: list[str]) -> tuple[bool, list[int]]:
    tags: list[int] = []
    for value in values:
        for item in value.split(","):
            item = item.strip()
            if not item:
                continue
            if item.lower() == "all":
                return True, []
            tags.append(_tag(item.split(".")[0]))
    return False, tags


def _boolean(value: str | None, name: str) -> bool:
    if value is None:
        return False
    if value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise BadRequest(f"{name} must be true or false, not {value!r}")


def _integer(value: str | None, name: str, minimum: int) -> int | None:
    if value is None or value == "":
        return None
    if not value.isdigit():
        raise BadRequest(f"{name} must be a whole number, not {value!r}")
    number = int(value)
    if number < minimum:
        raise BadRequest(f"{name} must be at least {minimum}")
    # Past any archive's size; keeps the number within the backends' 64-bit integers.
    return min(number, LARGEST_COUNT)


def _first(doc: dict[str, Any], tag: int) -> str:
    values = (doc.get(tag_key(tag)) or {}).get("Value") or [""]
    return str(values[0])
