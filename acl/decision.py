"""The one decision every protocol asks: may this identity use this service, and on which data sets?"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Iterable

from dopamine_py.matching import Query

from .model import Identity, Rule, Service, principals_of

log = logging.getLogger("dopamine.acl")


@dataclass(frozen=True)
class Decision:
    """The answer for one identity and one service.

    ``constraints`` is None when the allowed data are the whole archive, otherwise the alternatives (one
    query per rule) of which a data set must match at least one. A denial carries no alternatives, so that
    ``restrict`` and ``permits`` also say no to everything.
    """

    allowed: bool
    service: Service
    identity: Identity
    constraints: tuple[Query, ...] | None
    rules: tuple[int, ...] = ()  # ids of the rules that granted it
    reason: str = ""

    @property
    def unrestricted(self) -> bool:
        return self.allowed and self.constraints is None

    def restrict(self, query: Query) -> Query:
        """``query`` AND (any of the constraints): hand this to the archive, so that hidden data sets never
        count, never page and never appear."""
        if self.constraints is None:
            return query
        return query.and_any_of(self.constraints)

    def permits(self, document: dict[str, Any]) -> bool:
        """Whether a data set (its document, as ``dopamine_py.document.to_document`` makes it) is covered:
        for Store, the incoming data set must be."""
        if not self.allowed:
            return False
        if self.constraints is None:
            return True
        return any(q.matches(document) for q in self.constraints)


def decide(rules: Iterable[Rule], identity: Identity, service: Service) -> Decision:
    """Deny unless a rule for one of the identity's principals allows ``service``; several such rules
    are OR-ed, and one without constraints makes the whole archive allowed."""
    applicable = {str(p) for p in principals_of(identity)}
    granting = [r for r in rules if r.service == service and str(r.principal) in applicable]
    if not granting:
        return Decision(False, service, identity, (), (), f"no rule allows {service.value}")
    ids = tuple(r.id for r in granting)
    if any(not r.constraints for r in granting):
        return Decision(True, service, identity, None, ids, "allowed on the whole archive")
    return Decision(True, service, identity, tuple(r.query for r in granting), ids, "allowed on matching data sets")


def log_denial(identity: Identity, service: Service | str, reason: str) -> None:
    """One line per denial, with who (principal), what (service), how (protocol) and where from (peer)."""
    name = service.value if isinstance(service, Service) else service
    log.warning("denied %s to %s over %s from %s: %s", name, identity.describe(), identity.protocol,
                identity.peer, reason)
