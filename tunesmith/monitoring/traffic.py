"""Traffic of one model from the request log: volume, latency, tokens, errors, and the ratings
its answers got in the review queue."""
from __future__ import annotations

import time
from typing import Any

import numpy as np
from sqlalchemy import select

from tunesmith.jobs.db import Database, FeedbackRow, RequestRow


def logged_requests(db: Database, model: str, since: float) -> list[RequestRow]:
    with db.session() as session:
        return list(session.scalars(select(RequestRow).where(RequestRow.model == model, RequestRow.created_at >= since)
                                    .order_by(RequestRow.created_at)))


def models_with_traffic(db: Database, since: float) -> dict[str, int]:
    """Model name -> logged rows since ``since``: what to suggest when a name has no traffic."""
    from sqlalchemy import func

    with db.session() as session:
        found = session.execute(select(RequestRow.model, func.count()).where(RequestRow.created_at >= since)
                                .group_by(RequestRow.model).order_by(func.count().desc()))
        return {name: count for name, count in found}


def traffic(rows: list[RequestRow], since: float) -> dict[str, Any]:
    requests = {}
    for row in rows:  # a classification is one row per text: count requests once
        requests.setdefault(row.request, row)
    calls = list(requests.values())
    ok = [r for r in calls if r.status == 200]
    latencies = np.array([r.latency_ms for r in ok], dtype=float)
    days: dict[str, int] = {}
    for r in calls:
        day = time.strftime("%Y-%m-%d", time.gmtime(r.created_at))
        days[day] = days.get(day, 0) + 1
    errors: dict[str, int] = {}
    for r in calls:
        if r.status != 200:
            errors[str(r.status)] = errors.get(str(r.status), 0) + 1
    return {
        "since": since, "requests": len(calls), "texts": len(rows), "per_day": days,
        "error_rate": (len(calls) - len(ok)) / len(calls) if calls else 0.0, "errors_by_status": errors,
        "latency_ms": {"p50": float(np.percentile(latencies, 50)), "p95": float(np.percentile(latencies, 95)),
                       "mean": float(latencies.mean())} if len(latencies) else None,
        "tokens": {"prompt": int(sum(r.prompt_tokens or 0 for r in ok)),
                   "completion": int(sum(r.completion_tokens or 0 for r in ok))},
        "with_content": sum(r.input is not None for r in rows),
    }


def feedback(db: Database, model: str, since: float) -> dict[str, Any]:
    with db.session() as session:
        rows = list(session.scalars(select(FeedbackRow).where(FeedbackRow.model == model, FeedbackRow.created_at >= since)))
    rated = [r for r in rows if r.rating != 0]
    return {"items": len(rows), "rated": len(rated), "bad": sum(r.rating < 0 for r in rated),
            "bad_share": sum(r.rating < 0 for r in rated) / len(rated) if rated else None,
            "corrections": sum(bool(r.correction or r.label) for r in rows),
            "accepted": sum(r.status in ("accepted", "exported") for r in rows)}
