"""API keys: ``ts-`` + 40 random characters, shown once; only their sha256 is stored."""
from __future__ import annotations

import hashlib
import secrets
import time

from sqlalchemy import select

from tunesmith.server.db import Database, KeyRow


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def create_key(db: Database, name: str) -> tuple[str, dict]:
    secret = "ts-" + secrets.token_urlsafe(30)
    row = KeyRow(id="key_" + secrets.token_hex(8), name=name, hash=_hash(secret), prefix=secret[:7],
                 created_at=int(time.time()))
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


def verify(db: Database, secret: str) -> bool:
    with db.session() as session:
        row = session.scalar(select(KeyRow).where(KeyRow.hash == _hash(secret)))
        return row is not None and row.revoked_at is None


def describe(row: KeyRow) -> dict:
    return {"id": row.id, "name": row.name, "prefix": row.prefix + "…", "created_at": row.created_at,
            "revoked_at": row.revoked_at}
