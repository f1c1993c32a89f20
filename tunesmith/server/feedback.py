"""The review queue: ratings and corrections of model outputs, and the dataset they become.

A user rates an answer (thumbs up or down) and may correct it; a reviewer accepts or rejects
each item; ``export`` writes the accepted ones as a chat JSONL file in the file store (validated
like any upload), ready for the next fine-tuning job: the corrected answer where there is one,
else the original answer if it was rated good.
"""
from __future__ import annotations

import json
import secrets
import time
from typing import Any

from sqlalchemy import select

from tunesmith.server.db import Database, FeedbackRow
from tunesmith.server.errors import APIError, not_found
from tunesmith.server.files import FileStore

STATUSES = ("new", "accepted", "rejected", "exported")


def add(db: Database, body: dict[str, Any]) -> dict:
    messages, answer = body.get("messages"), body.get("answer")
    if not isinstance(messages, list) or not messages or not all(
            isinstance(m, dict) and m.get("role") in ("system", "user", "assistant") and isinstance(m.get("content"), str)
            for m in messages):
        raise APIError(400, "messages must be a non-empty list of {role, content} (system, user, assistant).",
                       "invalid_value", "messages")
    if not isinstance(answer, str) or not answer.strip():
        raise APIError(400, "answer must be the model's non-empty reply.", "invalid_value", "answer")
    rating = body.get("rating", 0)
    if rating not in (-1, 0, 1):
        raise APIError(400, "rating must be -1, 0 or 1.", "invalid_value", "rating")
    row = FeedbackRow(id="fb-" + secrets.token_hex(10), created_at=int(time.time()), model=str(body.get("model") or "?")[:255],
                      messages=messages, answer=answer, rating=rating, correction=_correction(body), status="new")
    with db.session() as session:
        session.add(row)
    return as_object(row)


def update(db: Database, feedback_id: str, body: dict[str, Any]) -> dict:
    status = body.get("status")
    if status is not None and status not in ("new", "accepted", "rejected"):
        raise APIError(400, "status must be new, accepted or rejected.", "invalid_value", "status")
    with db.session() as session:
        row = session.get(FeedbackRow, feedback_id)
        if row is None:
            raise not_found("feedback", feedback_id)
        if "rating" in body:
            if body["rating"] not in (-1, 0, 1):
                raise APIError(400, "rating must be -1, 0 or 1.", "invalid_value", "rating")
            row.rating = body["rating"]
        if "correction" in body:
            row.correction = _correction(body)
        if status:
            row.status = status
        return as_object(row)


def list_items(db: Database, status: str | None) -> list[dict]:
    with db.session() as session:
        query = select(FeedbackRow).order_by(FeedbackRow.created_at.desc(), FeedbackRow.id)
        if status:
            query = query.where(FeedbackRow.status == status)
        return [as_object(r) for r in session.scalars(query)]


def export(db: Database, files: FileStore) -> dict:
    """The accepted items as a chat dataset file; they are marked exported (with the file's id)."""
    with db.session() as session:
        rows = list(session.scalars(select(FeedbackRow).where(FeedbackRow.status == "accepted")
                                    .order_by(FeedbackRow.created_at)))
        usable = [r for r in rows if target_answer(r) is not None]
        if not usable:
            raise APIError(400, "no accepted item has a usable answer (a correction, or an answer rated good).",
                           "invalid_request_error", None)
        lines = [json.dumps({"messages": r.messages + [{"role": "assistant", "content": target_answer(r)}]},
                            ensure_ascii=False) for r in usable]
        stored = files.save_bytes(f"reviewed-{time.strftime('%Y%m%d-%H%M%S')}.jsonl", ("\n".join(lines) + "\n").encode())
        for r in usable:
            r.status, r.dataset_file = "exported", stored["id"]
    return {"file": stored, "examples": len(usable), "skipped": len(rows) - len(usable)}


def target_answer(row: FeedbackRow) -> str | None:
    if row.correction:
        return row.correction
    return row.answer if row.rating > 0 else None


def as_object(row: FeedbackRow) -> dict:
    return {"id": row.id, "object": "tunesmith.feedback", "created_at": row.created_at, "model": row.model,
            "messages": row.messages, "answer": row.answer, "rating": row.rating, "correction": row.correction,
            "status": row.status, "dataset_file": row.dataset_file}


def _correction(body: dict[str, Any]) -> str | None:
    value = body.get("correction")
    return value.strip() or None if isinstance(value, str) else None
