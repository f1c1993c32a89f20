"""The request log that monitoring reads: every inference the server answers or refuses, with
its model, latency and token counts; its input and output text only when the operator opts in
(``tunesmith serve --log-content``), and then with personal data redacted by the same scrubber
as ``tunesmith data clean``. Rows older than the retention period are deleted.

Logging never fails a request: a database error is reported once on stderr and the request is
answered as if nothing happened (monitoring is worth less than serving).
"""
from __future__ import annotations

import sys
import threading
import time
import uuid
from dataclasses import dataclass

from sqlalchemy import delete

from tunesmith.data.pii import redact
from tunesmith.jobs.db import Database, RequestRow

PURGE_EVERY = 500  # records between retention sweeps (and one at start)


@dataclass(frozen=True)
class LogSettings:
    enabled: bool = True
    content: bool = False          # store redacted input and output text (needed for input drift)
    retention_days: float = 30.0


class RequestLog:
    def __init__(self, db: Database, settings: LogSettings):
        self.db, self.settings = db, settings
        self._count, self._lock, self._warned = 0, threading.Lock(), False
        if settings.enabled:
            self.purge()

    def record(self, request: str, model: str, endpoint: str, status: int, started: float, *,
               prompt_tokens: int | None = None, completion_tokens: int | None = None,
               inputs: list[str] | None = None, output: str | None = None,
               labels: list[tuple[str, float]] | None = None, error: str | None = None) -> None:
        """One row, or one per input text for a classification (``labels``: its label and confidence)."""
        if not self.settings.enabled:
            return
        now = time.time()
        latency = (time.perf_counter() - started) * 1000
        texts = inputs or [None]
        rows = [RequestRow(id=request if len(texts) == 1 else f"{request}:{i}", request=request, created_at=now,
                           model=model[:255], endpoint=endpoint, status=status, latency_ms=latency,
                           prompt_tokens=prompt_tokens, completion_tokens=completion_tokens,
                           input=self._content(text), output=self._content(output),
                           label=labels[i][0] if labels else None, confidence=labels[i][1] if labels else None,
                           error=error[:2000] if error else None)
                for i, text in enumerate(texts)]
        try:
            with self.db.session() as session:
                session.add_all(rows)
        except Exception as e:  # noqa: BLE001 - see the module docstring
            self._warn(e)
            return
        with self._lock:
            self._count += 1
            due = self._count % PURGE_EVERY == 0
        if due:
            self.purge()

    def purge(self) -> int:
        """Delete rows older than the retention period; returns how many."""
        cutoff = time.time() - self.settings.retention_days * 86400
        try:
            with self.db.session() as session:
                return session.execute(delete(RequestRow).where(RequestRow.created_at < cutoff)).rowcount or 0
        except Exception as e:  # noqa: BLE001
            self._warn(e)
            return 0

    def _content(self, text: str | None) -> str | None:
        if not self.settings.content or text is None:
            return None
        return redact(text)[0]

    def _warn(self, error: Exception) -> None:
        if not self._warned:
            self._warned = True
            print(f"warning: the request log could not be written ({error}); serving goes on without it",
                  file=sys.stderr)


def new_request_id(prefix: str) -> str:
    return prefix + uuid.uuid4().hex[:24]
