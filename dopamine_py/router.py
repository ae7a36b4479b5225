"""The router: which rule sets apply to an incoming data set, their versions in the database, applying them.

Rule sets (``routing/``, language in docs/rules.md) are stored as versions (record kind
``ruleset_version``: the XML, the tables it names, author, date). A binding (kind ``ruleset_binding``) says
which version of a rule set is active and for which inputs (protocol, calling AE title, user; each
optional, ``*`` and ``?`` allowed). Activating a version validates it first, so an invalid one is refused
and the previous one keeps running; switching is one record update, hence atomic. Several active rule
sets apply in the order they were first activated, each to the output of the previous one.
"""

from __future__ import annotations

import base64
import fnmatch
import json
import logging
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import lru_cache
from pathlib import Path
from typing import Any, Mapping

from lxml import etree
from pydicom.dataset import Dataset

from routing import RuleApplicationError, RuleSet, RuleSetError, load_ruleset
from routing.errors import Problem

from .storage.records import JSONText, RecordStore

log = logging.getLogger("dopamine.router")

VERSIONS = "ruleset_version"
BINDINGS = "ruleset_binding"
PROVENANCE = "provenance"
# Attributes of rule elements that name a table file read when the rule set is loaded.
FILE_ATTRIBUTES = ("file", "table")
REFRESH_SECONDS = 2.0


@dataclass(frozen=True)
class Selector:
    """Which inputs a rule set applies to; an empty field applies to all."""

    protocol: str | None = None
    calling_aet: str | None = None
    user: str | None = None

    def applies(self, source: Any) -> bool:
        for wanted, actual in ((self.protocol, source.protocol), (self.calling_aet, source.calling_aet),
                               (self.user, source.user)):
            if wanted and not fnmatch.fnmatchcase(actual or "", wanted):
                return False
        return True

    def describe(self) -> str:
        parts = [f"{k}={v}" for k, v in (("protocol", self.protocol), ("calling_aet", self.calling_aet),
                                         ("user", self.user)) if v]
        return ", ".join(parts) or "every input"


@dataclass
class RouteOutcome:
    """What the active rule sets made of one data set."""

    dataset: Dataset
    decision: str = "store"  # "store", "reject", "quarantine"
    reason: str | None = None
    forward: list[str] = field(default_factory=list)
    applied: list[dict[str, Any]] = field(default_factory=list)  # {name, version, fired}
    changes: list[Any] = field(default_factory=list)  # routing.Change, in order

    @property
    def modified(self) -> bool:
        return bool(self.changes)


def table_files(xml: bytes, base_dir: Path) -> dict[str, bytes]:
    """The tables a rule set names (MapValue file=, Pseudonymize table=), read so they are stored with it."""
    try:
        root = etree.fromstring(xml)
    except etree.XMLSyntaxError:
        return {}  # load_ruleset reports it, with line and column
    files: dict[str, bytes] = {}
    for element in root.iter():
        for attribute in FILE_ATTRIBUTES:
            name = element.get(attribute)
            if name and (base_dir / name).is_file():
                files[name] = (base_dir / name).read_bytes()
    return files


def _load(xml: bytes, files: Mapping[str, bytes], name: str, version: int) -> RuleSet:
    """A rule set from stored XML, its tables laid out in a scratch folder for the loader."""
    with tempfile.TemporaryDirectory(prefix="dopamine-ruleset-") as scratch:
        for relative, data in files.items():
            target = Path(scratch) / relative
            if Path(scratch) not in target.resolve().parents:
                raise RuleSetError([Problem(1, 1, f"table {relative!r} lies outside the rule set's folder")])
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
        ruleset = load_ruleset(xml, base_dir=scratch)
    ruleset.name = name
    ruleset.version = str(version)
    return ruleset


class RuleSetRegistry:
    def __init__(self, records: RecordStore) -> None:
        self.records = records

    def activate(self, name: str, xml: bytes, files: Mapping[str, bytes], selector: Selector,
                 author: str, comment: str | None = None) -> int:
        """Validate, store as a new version and make it the active one; returns the version number."""
        _load(xml, files, name, 0)  # raises RuleSetError: nothing is stored, the active version stays
        version = 1 + max((v["version"] for v in self.records.find(VERSIONS, name=name)), default=0)
        self.records.insert(VERSIONS, {
            "name": name, "version": version, "xml": xml.decode("utf-8"),
            "files": {k: base64.b64encode(v).decode("ascii") for k, v in files.items()},
            "author": author, "at": _now(), "comment": comment,
        })
        selector_fields = {"protocol": selector.protocol, "calling_aet": selector.calling_aet, "user": selector.user}
        binding = self.binding(name)
        if binding is None:
            self.records.insert(BINDINGS, {"name": name, "version": version, "active": True, **selector_fields,
                                           "changed_by": author, "changed_at": _now()})
        else:
            self.records.update(BINDINGS, binding["id"], version=version, active=True, changed_by=author,
                                changed_at=_now(), **selector_fields)
        log.info("rule set %s version %d activated by %s for %s", name, version, author, selector.describe())
        return version

    def deactivate(self, name: str, author: str) -> bool:
        binding = self.binding(name)
        if binding is None or not binding["active"]:
            return False
        self.records.update(BINDINGS, binding["id"], active=False, changed_by=author, changed_at=_now())
        log.info("rule set %s deactivated by %s", name, author)
        return True

    def binding(self, name: str) -> dict[str, Any] | None:
        found = self.records.find(BINDINGS, name=name)
        return found[0] if found else None

    def bindings(self) -> list[dict[str, Any]]:
        return self.records.find(BINDINGS)

    def history(self, name: str) -> list[dict[str, Any]]:
        return [{k: v for k, v in r.items() if k not in ("xml", "files")} for r in self.records.find(VERSIONS, name=name)]

    def version_record(self, name: str, version: int) -> dict[str, Any] | None:
        found = self.records.find(VERSIONS, name=name, version=version)
        return found[0] if found else None

    def load(self, name: str, version: int) -> RuleSet:
        record = self.version_record(name, version)
        if record is None:
            raise RuleSetError([Problem(1, 1, f"rule set {name} has no version {version}")])
        files = {k: base64.b64decode(v) for k, v in record["files"].items()}
        return _load(record["xml"].encode("utf-8"), files, name, version)


class Router:
    """Applies the active rule sets to incoming data sets. Safe to share between threads."""

    def __init__(self, registry: RuleSetRegistry, secrets: Mapping[str, Any] | None = None,
                 clock=time.monotonic) -> None:
        self.registry = registry
        self.secrets = dict(secrets or {})
        self._clock = clock
        self._lock = threading.Lock()
        # (when loaded, the active rule sets as (selector, rule set)): replaced whole, so that a store reads it
        # without the lock while it is fresh
        self._loaded: tuple[float, list[tuple[Selector, RuleSet]]] | None = None
        self._cache: dict[tuple[str, int], RuleSet] = {}

    def _rulesets(self) -> list[tuple[Selector, RuleSet]]:
        """The active rule sets, re-read every few seconds so activations from the CLI or another node apply."""
        loaded = self._loaded
        if loaded is not None and self._clock() - loaded[0] < REFRESH_SECONDS:
            return loaded[1]
        with self._lock:
            now = self._clock()
            if self._loaded is None or now - self._loaded[0] >= REFRESH_SECONDS:
                active = []
                for binding in self.registry.bindings():
                    if not binding["active"]:
                        continue
                    key = (binding["name"], binding["version"])
                    if key not in self._cache:
                        self._cache[key] = self.registry.load(*key)
                    selector = Selector(binding.get("protocol"), binding.get("calling_aet"), binding.get("user"))
                    active.append((selector, self._cache[key]))
                self._loaded = (now, active)
            return self._loaded[1]

    def refresh(self) -> None:
        with self._lock:
            self._loaded = None

    def route(self, ds: Dataset, source: Any) -> RouteOutcome | None:
        """The outcome of every rule set that applies to ``source``; None when none does.

        Raises RuleApplicationError when a rule fails on this data set (nothing half-processed is returned).
        """
        applicable = [rs for selector, rs in self._rulesets() if selector.applies(source)]
        if not applicable:
            return None
        outcome = RouteOutcome(ds)
        for ruleset in applicable:
            result = ruleset.apply(outcome.dataset, source, self.secrets)
            outcome.dataset = result.dataset
            outcome.applied.append({"name": ruleset.name, "version": int(ruleset.version), "fired": list(result.fired)})
            outcome.changes.extend(result.changes)
            outcome.forward.extend(d for d in result.forward if d not in outcome.forward)
            if result.decision != "store":
                outcome.decision, outcome.reason = result.decision, result.reason
                if result.decision == "reject":
                    break
        return outcome


def provenance_record(sop_uid: str, received_uid: str, source: Any, outcome: RouteOutcome,
                      keep_original_values: bool, at: str | None = None) -> dict[str, Any]:
    """What the router did to one instance: rule set versions, rules fired, attribute changes.

    Old values are kept only when the configuration allows (they may identify the patient); the records
    of this kind are readable by administrators only. Each change is stored as a list of CHANGE_FIELDS
    (one is written with every routed instance: field names repeated for each change made the record
    twice as long); ``provenance_of`` gives them back as dicts.
    """
    changes = outcome.changes if keep_original_values else [c._replace(old=None) for c in outcome.changes]
    return {
        "sop_instance_uid": sop_uid, "received_sop_instance_uid": received_uid, "at": at or _now(),
        "source": {"protocol": source.protocol, "calling_aet": source.calling_aet, "user": source.user,
                   "peer": source.peer},
        "rulesets": outcome.applied, "decision": outcome.decision, "reason": outcome.reason,
        "forward": outcome.forward, "old_values_kept": keep_original_values,
        "changes": JSONText("[" + ",".join(map(_change_json, changes)) + "]"),
    }


@lru_cache(maxsize=8192)
def _change_json(change: Any) -> str:
    """Remembered: the instances of a series mostly carry the same changes (see routing.changes._resolved)."""
    return json.dumps(change)


CHANGE_FIELDS = ("path", "tag", "kind", "old", "new", "rule")


def provenance_of(records: RecordStore, sop_uid: str) -> list[dict[str, Any]]:
    """The provenance records of an instance, by the UID it is stored under or the one it came with; each
    change a dict: path, tag (hexadecimal), kind, new, rule, and old when old values were kept."""
    found = records.find(PROVENANCE, sop_instance_uid=sop_uid) or records.find(
        PROVENANCE, received_sop_instance_uid=sop_uid)
    return [_with_change_dicts(record) for record in found]


def _with_change_dicts(record: dict[str, Any]) -> dict[str, Any]:
    changes = []
    for change in record["changes"]:
        if isinstance(change, dict):  # written so before 2026-11-22
            changes.append(change)
            continue
        entry = dict(zip(CHANGE_FIELDS, change))
        entry["tag"] = f"{entry['tag']:08X}"
        if not record.get("old_values_kept", True):
            del entry["old"]
        changes.append(entry)
    return {**record, "changes": changes}


def describe_provenance(record: dict[str, Any]) -> str:
    """A provenance record for a person: what came in, which rules changed what, and the values before
    (when kept), which is what it takes to undo a change."""
    source = record["source"]
    sender = " ".join(f"{k} {v}" for k, v in (("from", source.get("calling_aet")), ("user", source.get("user")),
                                                ("peer", source.get("peer"))) if v)
    received = record["received_sop_instance_uid"]
    lines = [f"{record['sop_instance_uid']}" + (f" (received as {received})" if received != record["sop_instance_uid"]
                                               else ""),
             f"  received {record['at']} over {source['protocol']}" + (f" {sender}" if sender else "")]
    for applied in record["rulesets"]:
        fired = ", ".join(str(f) for f in applied["fired"]) or "none"
        lines.append(f"  rule set {applied['name']} version {applied['version']}: rules fired: {fired}")
    decision = record["decision"] + (f" ({record['reason']})" if record.get("reason") else "")
    lines.append(f"  decision: {decision}" + (f", forward to {', '.join(record['forward'])}" if record["forward"] else ""))
    for change in record["changes"]:
        old = change["old"] if "old" in change else "<not kept: routing.keep_original_values is off>"
        if change["kind"] == "added":
            text = f"+ {change['path']} = {change['new']}"
        elif change["kind"] == "removed":
            text = f"- {change['path']} (was {old})"
        else:
            text = f"~ {change['path']}: {old} -> {change['new']}"
        lines.append(f"  {text}   [rule {change['rule']}]")
    return "\n".join(lines)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat()


__all__ = ["Router", "RuleSetRegistry", "RouteOutcome", "Selector", "RuleApplicationError", "RuleSetError",
           "describe_provenance", "provenance_of", "provenance_record", "table_files"]
