"""Access control and authentication of the archive: one model and one decision for DIMSE, DICOMweb and
the command line. See docs/access-control.md; ``access.py`` says what each protocol layer calls."""

from .access import AccessControl, AuthFailure, challenge
from .authenticators import Authenticator, LocalUsers, Refusal, Verified
from .decision import Decision, decide, log_denial
from .first_run import first_run_advice, has_admin
from .model import (
    AclError,
    Identity,
    Principal,
    PrincipalKind,
    Rule,
    Service,
    principals_of,
)
from .store import AclConflict, AclStore
from .throttle import LoginThrottle

__all__ = [
    "AccessControl", "AuthFailure", "challenge", "Authenticator", "LocalUsers", "Refusal", "Verified",
    "Decision", "decide", "log_denial", "first_run_advice", "has_admin", "AclError", "Identity", "Principal",
    "PrincipalKind", "Rule", "Service", "principals_of", "AclConflict", "AclStore", "LoginThrottle",
]
