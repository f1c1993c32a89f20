"""API keys: ``ts-`` + 40 random characters, shown once; only their sha256 is stored.

A key is ``admin`` or ``user``. Users train, chat, upload and delete their own files and the
fine-tuned models; deleting base models, other users' files and keys, and managing keys, is for
admins. Keys made before roles existed stay admin (migration 0006)."""
from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass

from sqlalchemy import select

from tunesmith.errors import ConfigError
from tunesmith.jobs.db import Database, KeyRow


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


ROLES = ("admin", "user")


@dataclass(frozen=True)
class Principal:
    """Who a request is from: a key's id and role (``None`` id: a server run without keys)."""
    key_id: str | None
    role: str

    @property
    def admin(self) -> bool:
        return self.role == "admin"


NO_KEYS = Principal(None, "admin")  # --insecure-no-keys on loopback: the operator alone


def create_key(db: Database, name: str, role: str = "user") -> tuple[str, dict]:
    if role not in ROLES:
        raise ConfigError(f"--role must be one of {', '.join(ROLES)}, not {role!r}")
    secret = "ts-" + secrets.token_urlsafe(30)
    row = KeyRow(id="key_" + secrets.token_hex(8), name=name, hash=_hash(secret), prefix=secret[:7],
                 created_at=int(time.time()), role=role)
    with db.session() as session:
        session.add(row)
    return secret, describe(row)


def list_keys(db: Database) -> list[dict]:
    with db.session() as session:
        return [describe(r) for r in session.scalars(select(KeyRow).order_by(KeyRow.created_at))]


def revoke_key(db: Database, key_id: str) -> bool:
    with db.session() as session:
        row = session.get(KeyRow, key_id)
        if row is None or row.revoked_at:
            return False
        row.revoked_at = int(time.time())
        return True


def verify(db: Database, secret: str) -> Principal | None:
    """The key's principal, or None for an unknown or revoked key. The lookup is by hash (an
    index, not a comparison of secrets); the final compare is constant-time all the same."""
    digest = _hash(secret)
    with db.session() as session:
        row = session.scalar(select(KeyRow).where(KeyRow.hash == digest))
        if row is None or row.revoked_at is not None or not hmac.compare_digest(row.hash, digest):
            return None
        return Principal(row.id, row.role or "admin")


def describe(row: KeyRow) -> dict:
    return {"id": row.id, "object": "tunesmith.api_key", "name": row.name, "role": row.role, "prefix": row.prefix + "…",
            "created_at": row.created_at, "revoked_at": row.revoked_at}
