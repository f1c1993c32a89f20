"""Workers run fine-tuning jobs, in their own processes (never in the web process).

A worker claims the oldest ``queued`` job (db.claim: a conditional UPDATE, so two workers
cannot claim one job, and a new lease on it) and runs one attempt at it in a trainer process of
its own (server/trainer.py, in a new process group), which it supervises:

* a heartbeat thread renews the lease (server/leases.py) whatever the trainer is doing, so a
  long checkpoint save or evaluation is never taken for a dead worker;
* a cancel or pause the trainer does not honour within ``grace_seconds`` (a hung step) makes the
  worker stop the trainer's whole process group and record the outcome itself;
* an attempt that ended without an outcome is recorded here: a trainer killed by SIGKILL is
  ``out_of_memory`` (what the kernel's OOM killer sends; nothing else explains it), any other
  crash is tried again from the last checkpoint, at most ``max_attempts`` times;
* if the lease is lost (this worker was cut off from the database for longer than the lease and
  another one took the job), the trainer is killed at once and nothing more is written.

Jobs whose worker is gone (lease expired, or its process on this host has exited) are put back
in the queue and resumed from their last complete checkpoint by the next worker.

``Worker(isolate=False)`` trains in the worker's own process instead: for embedding and tests;
a hung step then cannot be stopped.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping

from tunesmith.errors import ConfigError
from tunesmith.jobs.db import DEFAULT_LEASE_SECONDS, Database, DatabaseUnavailable, JobRow, LeaseLost, retrying
from tunesmith.jobs.fine_tuning import get_job
from tunesmith.jobs.leases import OUTCOME_ATTEMPTS, Heartbeat, Lease, reclaim_expired
from tunesmith.jobs.supervisor import dies_with_parent, stop_group
from tunesmith.jobs.trainer import train_attempt
from tunesmith.workspace import Workspace

TRAINER = [sys.executable, "-m", "tunesmith.jobs.trainer"]


@dataclass(frozen=True)
class WorkerSettings:
    lease_seconds: float = DEFAULT_LEASE_SECONDS  # renewed every third of it
    max_attempts: int = 3      # attempts that may end badly (worker lost, trainer crashed) before the job fails
    grace_seconds: float = 30.0  # how long a trainer may take to honour a cancel or pause

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> "WorkerSettings":
        """TUNESMITH_LEASE_SECONDS, TUNESMITH_MAX_ATTEMPTS, TUNESMITH_STOP_GRACE_SECONDS."""
        def number(name: str, default: float, kind=float):
            try:
                value = kind(environ.get(name) or default)
            except ValueError:
                value = 0
            if not value > 0 or value == float("inf"):
                raise ConfigError(f"{name} must be a number > 0, not {environ.get(name)!r}")
            return value
        return cls(number("TUNESMITH_LEASE_SECONDS", cls.lease_seconds),
                   number("TUNESMITH_MAX_ATTEMPTS", cls.max_attempts, int),
                   number("TUNESMITH_STOP_GRACE_SECONDS", cls.grace_seconds))


@dataclass(frozen=True)
class _Ended:
    how: str                   # exited | lost | shutdown | stopped
    stop: str | None = None    # the stop request that was not honoured (how == "stopped")
    peak_rss: int = 0


class Worker:
    def __init__(self, workspace: Workspace, db: Database, name: str | None = None,
                 settings: WorkerSettings | None = None, isolate: bool = True,
                 trainer_command: list[str] | None = None, log: Callable[[str], None] | None = None):
        self.workspace, self.db = workspace, db
        self.name = name or f"{socket.gethostname()}:{os.getpid()}"
        self.settings = settings or WorkerSettings.from_env()
        self.isolate, self.trainer_command = isolate, trainer_command or TRAINER
        self.log = log or (lambda message: print(f"worker {self.name}: {message}", file=sys.stderr, flush=True))
        self.stopping = threading.Event()

    def stop(self) -> None:
        """Finish soon: a running trainer is stopped and its job given back to the queue."""
        self.stopping.set()

    def run_forever(self, poll_seconds: float = 1.0, stop_after: int | None = None) -> None:
        """Take jobs until ``stop()`` (or ``stop_after`` jobs). A failing database, or any other
        error between jobs, is waited out with back-off (poll, doubling to a minute): the loop
        itself never dies of it."""
        done, failures = 0, 0
        while (stop_after is None or done < stop_after) and not self.stopping.is_set():
            try:
                self.reclaim()
                worked = self.run_one()
                failures = 0
            except Exception as e:
                failures += 1
                delay = min(poll_seconds * 2 ** failures, 60.0)
                self.log(f"{type(e).__name__}: {e}; trying again in {delay:g}s")
                self.stopping.wait(delay)
                continue
            if worked:
                done += 1
            else:
                self.stopping.wait(poll_seconds)

    def reclaim(self) -> list[str]:
        """Jobs whose worker is gone, queued again (see leases.reclaim_expired)."""
        return reclaim_expired(self.db, self.settings.max_attempts)

    def run_one(self) -> bool:
        """Claim the next job and run one attempt at it; False when the queue is empty."""
        job = self.db.claim("queued", "running", self.name, self.settings.lease_seconds)
        if job is None:
            return False
        lease = Lease(self.db, job.id, job.lease_generation)
        try:
            lease.event("Fine-tuning job started" if not job.run_id else f"Fine-tuning job resumed by {self.name}")
            if self.isolate:
                self._supervise(lease, job)
            else:
                self._in_process(lease)
        except LeaseLost:
            self.log(f"{job.id} was taken over by another worker; this attempt stopped without recording anything")
        return True

    def _in_process(self, lease: Lease) -> None:
        with Heartbeat(lease, self.settings.lease_seconds):
            train_attempt(self.workspace, self.db, lease)

    def _supervise(self, lease: Lease, job: JobRow) -> None:
        proc = self._start_trainer(job)  # before the heartbeat thread: see supervisor.dies_with_parent
        try:
            with Heartbeat(lease, self.settings.lease_seconds) as heartbeat:
                ended = self._watch(proc, lease, heartbeat, job.heartbeat_at)
        finally:
            stop_group(proc, 0)  # nothing of the trainer's group outlives it
        self._record(lease, proc, ended, job)

    def _start_trainer(self, job: JobRow) -> subprocess.Popen:
        log_path = self.trainer_log(job)
        log_path.parent.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ, TUNESMITH_HOME=str(self.workspace.home), TUNESMITH_DATABASE_URL=self.db.url)
        with open(log_path, "ab") as out:
            return subprocess.Popen([*self.trainer_command, job.id, str(job.lease_generation)], env=env,
                                    stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                    start_new_session=True, preexec_fn=dies_with_parent(signal.SIGKILL))

    def trainer_log(self, job: JobRow) -> Path:
        """Where attempt ``job.attempts`` of the job writes its output (its tail goes into the
        error of an attempt that crashed)."""
        return self.workspace.job_logs_dir / f"{job.id}.{job.attempts}.log"

    def _watch(self, proc: subprocess.Popen, lease: Lease, heartbeat: Heartbeat, claimed_at: float) -> _Ended:
        """Until the trainer exits, or must be stopped. ``claimed_at``: the claim's ``heartbeat_at``
        (later ones are the trainer's steps)."""
        stop_since, stop, peak, ended_here = None, None, 0, False
        while True:
            try:
                proc.wait(timeout=0.5)
                return _Ended("exited", stop, peak)
            except subprocess.TimeoutExpired:
                pass
            peak = max(peak, _rss(proc.pid))
            if heartbeat.lost.is_set() and not ended_here:
                if _taken_over(lease):
                    stop_group(proc, 0)  # another worker has the job: stop writing into its run at once
                    return _Ended("lost", peak_rss=peak)
                ended_here = True  # the trainer recorded the outcome and is finishing (judging a retraining)
            if self.stopping.is_set():
                stop_group(proc, 5)
                return _Ended("shutdown", peak_rss=peak)
            row = _row(lease)
            stop = stop or (row.stop_requested if row else None)
            stop_since = stop_since or (time.time() if stop else None)
            if stop and row and self._hung(stop, stop_since, row.heartbeat_at, claimed_at):
                stop_group(proc, 5)
                return _Ended("stopped", stop, peak)

    def _hung(self, stop: str, since: float, last_step: float | None, claimed_at: float) -> bool:
        """Whether a trainer asked to stop at ``since`` has not honoured it within the grace
        period: no step has ended for ``grace_seconds`` since the request (or since its last
        step). A pause waits for the first step of a trainer still starting up, so that it can
        write its checkpoint; a cancel does not wait for anything."""
        last_step = last_step or claimed_at
        if stop == "pause" and last_step <= claimed_at:
            return False
        return time.time() - max(since, last_step) > self.settings.grace_seconds

    def _record(self, lease: Lease, proc: subprocess.Popen, ended: _Ended, job: JobRow) -> None:
        """How the attempt ended, when the trainer could not record it."""
        try:
            if ended.how == "lost" or not _still_held(lease):
                return  # the trainer recorded its outcome, or the job is someone else's now
            if ended.how == "shutdown":
                lease.release("The worker was stopped; the job is queued again and will resume from its last "
                              "complete checkpoint")
            elif ended.how == "stopped":
                self._stopped(lease, ended.stop)
            elif proc.returncode == -signal.SIGKILL and ended.stop is None:
                lease.fail({"code": "out_of_memory", "param": None, "message": _killed_message(ended.peak_rss)})
            else:
                output = _tail(self.trainer_log(job)).replace(str(self.workspace.home), "<home>")  # clients read it
                lease.end_attempt("trainer_crashed", f"The trainer process {_how_it_ended(proc.returncode)}: "
                                  f"{output}", self.settings.max_attempts)
        except LeaseLost:
            pass

    def _stopped(self, lease: Lease, stop: str) -> None:
        why = (f"the trainer did not stop within {self.settings.grace_seconds:g}s of the request (a step that hung), "
               "so its processes were stopped")
        if stop == "cancel":
            lease.settle("cancelled", [(f"Job cancelled: {why}", "warn")])
        else:
            lease.settle("paused", [(f"Job paused: {why}; it continues from its last complete checkpoint", "warn")],
                         stop_requested=None)


def _still_held(lease: Lease) -> bool:
    def check() -> bool:
        try:
            with lease.session():
                return True
        except LeaseLost:
            return False
    return retrying(check, OUTCOME_ATTEMPTS)


def _taken_over(lease: Lease) -> bool:
    """A lease found gone: the job is (or is about to be) another worker's, rather than ended by
    this attempt (succeeded, failed, cancelled, paused), which leaves the trainer to finish."""
    return retrying(lambda: get_job(lease.db, lease.job_id)).status in ("queued", "running")


def _row(lease: Lease) -> JobRow | None:
    try:
        return get_job(lease.db, lease.job_id)
    except DatabaseUnavailable:
        return None


def _rss(pid: int) -> int:
    import psutil

    try:
        return psutil.Process(pid).memory_info().rss
    except psutil.Error:
        return 0


def _killed_message(peak_rss: int) -> str:
    peak = f" (its memory peaked at {peak_rss / 2**20:.0f} MiB)" if peak_rss else ""
    return (f"The trainer process was killed by SIGKILL with no other reason{peak}: the operating system may have "
            "killed it for lack of memory. Try a smaller batch_size or a shorter data.max_length, or give the "
            "server more memory.")


def _how_it_ended(returncode: int) -> str:
    """
    >>> _how_it_ended(-11), _how_it_ended(1)
    ('was killed by SIGSEGV', 'exited with code 1')
    """
    if returncode < 0:
        return f"was killed by {signal.Signals(-returncode).name}"
    return f"exited with code {returncode}"


def _tail(path: Path, chars: int = 1500) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no output)"
    return text[-chars:].strip() or "(no output)"


def run_worker(workspace: Workspace, poll_seconds: float = 1.0, stop_after: int | None = None) -> None:
    """A worker on ``workspace``'s queue until SIGTERM or Ctrl-C (``tunesmith worker``), which
    stop the running trainer and give its job back to the queue."""
    worker = Worker(workspace, Database.for_workspace(workspace))
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: worker.stop())
    worker.run_forever(poll_seconds, stop_after)
