"""A worker's hold on a running job, and what happens to jobs whose holder is gone.

Invariant: a job in ``running`` has exactly one holder, the one whose lease generation the row
carries, and only that holder writes about the job (events, progress, its outcome). A lease
lasts ``lease_seconds`` and is renewed by a heartbeat thread every third of that, independently
of training, so a slow checkpoint save or evaluation never looks like a dead worker. A job whose
lease expired, or whose worker process on this host is gone, is put back in the queue (or ends
``failed`` with ``max_attempts_exceeded`` once it has ended badly ``max_attempts`` times); the
old holder finds its generation gone at its next write and stops (db.LeaseLost).

Why each attempt ended badly is kept in ``attempt_errors``, so the final error can say.
"""
from __future__ import annotations

import socket
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from tunesmith.jobs.db import Database, DatabaseUnavailable, JobRow, retrying
from tunesmith.jobs.fine_tuning import TERMINAL, event_row

# How an attempt ended is worth waiting for (about half a minute of back-off) through a database
# restart: lost, the attempt would have to be run again. An event is not (five tries, ~3 s).
OUTCOME_ATTEMPTS = 10
STOPPED_RESPONDING = ("The worker running this job stopped responding; the job is queued again "
                      "and will resume from its last complete checkpoint")


@dataclass(frozen=True)
class Lease:
    """Lease ``generation`` on job ``job_id``: every write about the job goes through it."""
    db: Database
    job_id: str
    generation: int

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A transaction that raises db.LeaseLost, having written nothing, once the lease is gone."""
        with self.db.leased(self.job_id, self.generation) as session:
            yield session

    def event(self, message: str, level: str = "info", type_: str = "message", data: dict | None = None) -> None:
        def write() -> None:
            with self.session() as session:
                session.add(event_row(self.job_id, message, level, type_, data))
        retrying(write)

    def update(self, **fields: Any) -> None:
        def write() -> None:
            with self.session() as session:
                session.execute(update(JobRow).where(JobRow.id == self.job_id).values(**fields))
        retrying(write)

    def settle(self, status: str, events: list[tuple[str, str]] = (), extra_rows: list = (), **fields: Any) -> None:
        """End the attempt with the job in ``status`` (a terminal one, or ``paused``), its closing
        events and any rows that belong to the outcome (a results file), in one transaction; the
        lease ends with it."""
        def write() -> None:
            with self.session() as session:
                ended = {"finished_at": int(time.time())} if status in TERMINAL else {}
                session.execute(update(JobRow).where(JobRow.id == self.job_id).values(
                    status=status, worker=None, estimated_finish=None, lease_expires_at=None, **ended, **fields))
                session.add_all([*extra_rows, *(event_row(self.job_id, m, level) for m, level in events)])
        retrying(write, OUTCOME_ATTEMPTS)

    def fail(self, error: dict[str, Any]) -> None:
        """The job failed for a reason trying again would not fix (the error says which); the
        attempt is counted in ``attempt_errors`` like any other that ended badly."""
        def write() -> None:
            with self.session() as session:
                row = session.get(JobRow, self.job_id, populate_existing=True)
                row.attempt_errors = list(row.attempt_errors or []) + [
                    {"attempt": row.attempts, "code": error["code"], "message": error["message"][:1000],
                     "at": int(time.time())}]
                row.status, row.error, row.finished_at = "failed", error, int(time.time())
                row.worker, row.estimated_finish, row.lease_expires_at = None, None, None
                session.add(event_row(self.job_id, f"Job failed: {error['message']}", "error"))
        retrying(write, OUTCOME_ATTEMPTS)

    def end_attempt(self, code: str, message: str, max_attempts: int, level: str = "warn") -> str:
        """This attempt ended badly, for a reason that may pass (the worker stopped, the trainer
        crashed): queue the job again to resume from its checkpoint, or fail it once it has ended
        badly ``max_attempts`` times. Returns the new status."""
        def write() -> str:
            with self.session() as session:
                row = session.get(JobRow, self.job_id, populate_existing=True)
                return _ended_badly(session, row, code, message, max_attempts, level)
        return retrying(write, OUTCOME_ATTEMPTS)

    def release(self, message: str) -> None:
        """Give the job back to the queue without counting the attempt against it (the worker is
        shutting down in order; the job did nothing wrong), unless a stop was asked for."""
        def write() -> None:
            with self.session() as session:
                row = session.get(JobRow, self.job_id, populate_existing=True)
                _honour_stop(session, row, message) or _settle(session, row, "queued", message, level="warn")
        retrying(write, OUTCOME_ATTEMPTS)


class Heartbeat:
    """Renews a lease every ``lease_seconds / 3`` in a daemon thread until stopped; ``lost`` is
    set once the lease is found gone. A database outage only delays renewals: the lease is lost
    only if someone else took the job meanwhile."""

    def __init__(self, lease: Lease, lease_seconds: float):
        self.lease, self.lease_seconds = lease, lease_seconds
        self.lost, self._stop = threading.Event(), threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"lease-{lease.job_id}", daemon=True)

    def __enter__(self) -> "Heartbeat":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.wait(self.lease_seconds / 3):
            try:
                held = self.lease.db.renew_lease(self.lease.job_id, self.lease.generation, self.lease_seconds)
            except DatabaseUnavailable:
                continue
            if not held:
                self.lost.set()
                return


def reclaim_expired(db: Database, max_attempts: int, now: float | None = None) -> list[str]:
    """Jobs ``running`` whose lease has expired, or whose worker process on this host has exited
    (found at once, without waiting for the expiry), are queued again — or end as their pending
    stop request asked (cancelled, paused), or ``failed`` past ``max_attempts``. Each change is a
    conditional UPDATE on the generation seen, so two workers reclaiming at once act once."""
    now = time.time() if now is None else now
    with db.session() as session:
        rows = list(session.scalars(select(JobRow).where(JobRow.status == "running")))
    gone = [row for row in rows if _expired(row, now) or _dead_here(row.worker)]
    return [row.id for row in gone if _reclaim(db, row, max_attempts)]


def _expired(row: JobRow, now: float) -> bool:
    # A row from before leases (no expiry) falls back on its last heartbeat.
    expires = row.lease_expires_at if row.lease_expires_at is not None else (row.heartbeat_at or 0) + 60.0
    return expires < now


def _reclaim(db: Database, seen: JobRow, max_attempts: int) -> bool:
    def write() -> bool:
        with db.session() as session:
            taken = session.execute(update(JobRow).where(
                JobRow.id == seen.id, JobRow.status == "running", JobRow.lease_generation == seen.lease_generation)
                .values(worker=None, lease_expires_at=None))
            if taken.rowcount != 1:
                return False
            row = session.get(JobRow, seen.id, populate_existing=True)
            _ended_badly(session, row, "worker_lost", STOPPED_RESPONDING, max_attempts, "warn")
            return True
    return retrying(write)


def _ended_badly(session: Session, row: JobRow, code: str, message: str, max_attempts: int, level: str) -> str:
    """An attempt that ended without an outcome: the pending stop request decides (the user
    wanted the job stopped anyway), else the job is tried again or fails past ``max_attempts``."""
    return _honour_stop(session, row, message) or _requeue_or_fail(session, row, code, message, max_attempts, level)


def _honour_stop(session: Session, row: JobRow, why: str) -> str | None:
    """End the job as its pending stop request asked (the new status), or None when there is none."""
    if row.stop_requested == "cancel":
        return _settle(session, row, "cancelled", f"Job cancelled ({why[:200]})")
    if row.stop_requested == "pause":
        return _settle(session, row, "paused", f"Job paused; it continues from its last complete checkpoint "
                                               f"({why[:200]})")
    return None


def _settle(session: Session, row: JobRow, status: str, message: str, level: str = "info") -> str:
    row.status, row.stop_requested, row.estimated_finish, row.worker, row.lease_expires_at = status, None, None, None, None
    if status == "cancelled":
        row.finished_at = int(time.time())
    session.add(event_row(row.id, message, level))
    return status


def _requeue_or_fail(session: Session, row: JobRow, code: str, message: str, max_attempts: int, level: str) -> str:
    errors = list(row.attempt_errors or []) + [{"attempt": row.attempts, "code": code, "message": message[:1000],
                                                "at": int(time.time())}]
    row.attempt_errors, row.worker, row.lease_expires_at, row.estimated_finish = errors, None, None, None
    if len(errors) < max_attempts:
        row.status = "queued"
        session.add(event_row(row.id, message, level))
        return "queued"
    row.status, row.finished_at = "failed", int(time.time())
    row.error = {"code": "max_attempts_exceeded", "param": None, "message": attempts_message(errors)}
    session.add(event_row(row.id, f"Job failed: {row.error['message']}", "error"))
    return "failed"


def attempts_message(errors: list[dict]) -> str:
    """
    >>> attempts_message([{"attempt": 1, "code": "worker_lost", "message": "gone"}])
    'The job ended abnormally 1 time(s) and is not tried again: attempt 1: worker_lost: gone'
    """
    reasons = "; ".join(f"attempt {e.get('attempt')}: {e.get('code')}: {e.get('message')}" for e in errors)
    return f"The job ended abnormally {len(errors)} time(s) and is not tried again: {reasons}"[:2000]


def _dead_here(worker: str | None) -> bool:
    """Whether ``worker`` ("host:pid") names a process of this host that has exited."""
    host, _, pid = (worker or "").rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return False
    import psutil

    try:
        return psutil.Process(int(pid)).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True
