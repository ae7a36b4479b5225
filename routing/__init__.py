"""The router's rule engine: XML rule sets that modify and route incoming data sets (docs/rules.md)."""

from .changes import Change
from .engine import RoutingResult, RuleSet, load_ruleset
from .errors import RuleApplicationError, RuleSetError

__all__ = ["load_ruleset", "RuleSet", "RoutingResult", "Change", "RuleSetError", "RuleApplicationError"]
