"""The shipped rule sets, their XML Schema and the PS3.15 profile table, installed as package data so that
the rule engine finds them in any installation (see docs/rules.md)."""

from pathlib import Path

RULES_DIR = Path(__file__).resolve().parent
