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

from tunesmith.errors import APIError, not_found
from tunesmith.jobs.db import Database, FeedbackRow, RequestRow
from tunesmith.jobs.files import FileStore

STATUSES = ("new", "accepted", "rejected", "exported")


def add(db: Database, body: dict[str, Any]) -> dict:
    """A rating or correction of one answer: given in full (``messages``, ``answer``), or by the
    ``request_id`` the completion or classification returned (its logged input and output are
    used where the server logs content). ``label``: a classifier's corrected label."""
    logged = _logged(db, body.get("request_id"))
    messages, answer = body.get("messages"), body.get("answer")
    if logged is not None:
        if messages is None and logged.input is not None:
            messages = [{"role": "user", "content": logged.input}]
        if answer is None:
            answer = logged.output if logged.output is not None else logged.label
        if messages is None or answer is None:
            raise APIError(400, f"request {logged.id} was logged without its text (the server runs without "
                           "--log-content): send messages and answer too.", "invalid_value", "messages")
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
    label = body.get("label")
    if label is not None and (not isinstance(label, str) or not label.strip()):
        raise APIError(400, "label must be the corrected label (a non-empty string).", "invalid_value", "label")
    if label is None and rating > 0 and logged is not None and logged.endpoint == "classification":
        label = logged.label  # a classifier's answer rated good: its label is the training label
    model = body.get("model") or (logged.model if logged is not None else "?")
    row = FeedbackRow(id="fb-" + secrets.token_hex(10), created_at=int(time.time()), model=str(model)[:255],
                      messages=messages, answer=answer, rating=rating, correction=_correction(body), status="new",
                      request_id=logged.id if logged is not None else None, label=label.strip() if label else None)
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
    """The accepted items as datasets: chat records for generated answers, text/label records for
    a classifier's (``files``: one per kind; ``file``: the first). They are marked exported."""
    with db.session() as session:
        rows = list(session.scalars(select(FeedbackRow).where(FeedbackRow.status == "accepted")
                                    .order_by(FeedbackRow.created_at)))
        usable = [r for r in rows if target_answer(r) is not None]
        if not usable:
            raise APIError(400, "no accepted item has a usable answer (a correction, or an answer rated good).",
                           "invalid_request_error", None)
        stamp = time.strftime('%Y%m%d-%H%M%S')
        stored = {}
        for kind, name in (("chat", f"reviewed-{stamp}.jsonl"), ("classification", f"reviewed-labels-{stamp}.jsonl")):
            own = [r for r in usable if (r.label is not None) == (kind == "classification")]
            if own:
                lines = [json.dumps(record(r), ensure_ascii=False) for r in own]
                stored[kind] = files.save_bytes(name, ("\n".join(lines) + "\n").encode())
                for r in own:
                    r.status, r.dataset_file = "exported", stored[kind]["id"]
    return {"file": next(iter(stored.values())), "files": stored, "examples": len(usable), "skipped": len(rows) - len(usable)}


def record(row: FeedbackRow) -> dict:
    """The training record an accepted item becomes."""
    if row.label is not None:
        return {"text": row.messages[-1]["content"], "label": target_answer(row)}
    return {"messages": row.messages + [{"role": "assistant", "content": target_answer(row)}]}


def target_answer(row: FeedbackRow) -> str | None:
    if row.label is not None:
        return row.label
    if row.correction:
        return row.correction
    return row.answer if row.rating > 0 else None


def _logged(db: Database, request_id: Any):
    if request_id is None:
        return None

    with db.session() as session:
        rows = list(session.scalars(select(RequestRow).where(
            (RequestRow.id == str(request_id)) | (RequestRow.request == str(request_id)))))
    exact = [r for r in rows if r.id == str(request_id)]
    if exact or len(rows) == 1:
        return (exact or rows)[0]
    if not rows:
        raise not_found("logged request", str(request_id))
    raise APIError(400, f"request {request_id} classified {len(rows)} texts: give one of "
                   f"{rows[0].id} ... {rows[-1].id}", "invalid_value", "request_id")


def as_object(row: FeedbackRow) -> dict:
    return {"id": row.id, "object": "tunesmith.feedback", "created_at": row.created_at, "model": row.model,
            "messages": row.messages, "answer": row.answer, "rating": row.rating, "correction": row.correction,
            "status": row.status, "dataset_file": row.dataset_file, "request_id": row.request_id, "label": row.label}


def _correction(body: dict[str, Any]) -> str | None:
    value = body.get("correction")
    return value.strip() or None if isinstance(value, str) else None
