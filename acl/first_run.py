"""What ``dopamine serve`` says at start when nobody can administer the archive yet.

It only advises: it never creates a user or a rule, and above all never a rule for ``anonymous``.
"""

from __future__ import annotations

from .model import PrincipalKind, Service
from .store import AclStore


def has_admin(store: AclStore) -> bool:
    """Whether some authenticated principal holds the Admin service."""
    return any(r.service == Service.ADMIN and r.principal.kind != PrincipalKind.ANONYMOUS for r in store.list_rules())


def first_run_advice(store: AclStore, command: str = "dopamine") -> str | None:
    """Instructions for creating the first administrator and a first rule; None once an admin exists."""
    if has_admin(store):
        return None
    lines = [
        "Access control: no administrator yet, and anything no rule allows is denied.",
        "Create the first administrator and let it manage the archive:",
        f"  {command} user add admin --password-stdin      (then type the password and press Ctrl-D)",
        f"  {command} acl add user:admin Admin",
        "Then grant services, for example:",
        f"  {command} acl add user:admin Query",
        f"  {command} acl add aet:SCANNER1@10.0.0.5 Store      (a scanner that sends no user identity)",
        f"  {command} acl add group:radiology Retrieve --match StudyDescription=Brain*",
        "See docs/access-control.md.",
    ]
    if not store.list_rules():
        lines.insert(1, "There are no rules at all: every request will be refused until you add some.")
    return "\n".join(lines)
