"""API tokens: ``dpt_<id>_<secret>``, shown once at creation; the database keeps the id and a hash of the secret.

The id finds the record without scanning; the secret is 256 random bits, so a plain SHA-256 is as good as a
slow hash against someone who reads the database (nobody can guess the preimage of a random value).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from datetime import datetime, timedelta, timezone

from .model import TokenRecord

PREFIX = "dpt"
_TOKEN = re.compile(r"^dpt_([A-Za-z0-9]{12})_([A-Za-z0-9_-]{43})$")


def _now() -> datetime:
    return datetime.now(timezone.utc)


def secret_hash(secret: str) -> str:
    return hashlib.sha256(secret.encode("ascii")).hexdigest()


def new_token(user: str, label: str = "", valid_days: int | None = None,
              now: datetime | None = None) -> tuple[str, TokenRecord]:
    """A fresh token: the text to hand to the user (once) and the record to store."""
    now = now or _now()
    token_id = "".join(secrets.choice("ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789") for _ in range(12))
    secret = secrets.token_urlsafe(32)  # 43 characters
    expires = (now + timedelta(days=valid_days)).isoformat() if valid_days else None
    record = TokenRecord(token_id, user, secret_hash(secret), label, now.isoformat(), expires)
    return f"{PREFIX}_{token_id}_{secret}", record


def split_token(text: str) -> tuple[str, str] | None:
    """(id, secret) of a well-formed token, else None."""
    match = _TOKEN.match(text.strip())
    return (match.group(1), match.group(2)) if match else None


def token_valid(record: TokenRecord, secret: str, now: datetime | None = None) -> bool:
    if not hmac.compare_digest(secret_hash(secret), record.secret_hash):
        return False
    if record.expires_at is not None and (now or _now()) >= datetime.fromisoformat(record.expires_at):
        return False
    return True
