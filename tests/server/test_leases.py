"""Leases on running jobs, attempts, races on cancel, trainers supervised by their worker, and
transient database errors. Fast: no model is trained here; a trainer is a small stand-in
script where one is needed (tests/server/test_faults.py trains real ones)."""
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time

import psutil
import pytest
from sqlalchemy.exc import OperationalError

from tunesmith.errors import APIError
from tunesmith.jobs import fine_tuning as jobs
from tunesmith.jobs.db import Database, DatabaseUnavailable, EventRow, JobRow, LeaseLost, retrying
from tunesmith.jobs.leases import Heartbeat, Lease, reclaim_expired
from tunesmith.jobs.worker import Worker, WorkerSettings
from tunesmith.workspace import Workspace


@pytest.fixture
def db(tmp_path):
    return Database(f"sqlite:///{tmp_path / 'jobs.db'}")


def add_job(db, job_id="ftjob-1", status="queued"):
    with db.session() as session:
        session.add(JobRow(id=job_id, created_at=int(time.time()), status=status, model="m", training_file="f",
                           seed=0, method={"type": "supervised", "supervised": {"hyperparameters": {}}}))
    return job_id


def job(db, job_id="ftjob-1") -> JobRow:
    return jobs.get_job(db, job_id)


def messages(db, job_id="ftjob-1") -> list[str]:
    with db.session() as session:
        return [e.message for e in session.query(EventRow).filter_by(job_id=job_id).order_by(EventRow.seq)]


def expire(db, job_id="ftjob-1"):
    with db.session() as session:
        session.get(JobRow, job_id).lease_expires_at = time.time() - 1


def test_a_claim_is_a_new_lease_and_an_attempt(db):
    add_job(db)
    before = time.time()
    claimed = db.claim("queued", "running", "w1", lease_seconds=30)
    assert (claimed.lease_generation, claimed.attempts, claimed.worker) == (1, 1, "w1")
    assert before + 29 < claimed.lease_expires_at < time.time() + 31
    assert db.renew_lease(claimed.id, 1, 60) and job(db).lease_expires_at > before + 59


def test_a_worker_whose_lease_was_taken_over_writes_nothing(db):
    add_job(db)
    first = Lease(db, "ftjob-1", db.claim("queued", "running", "w1").lease_generation)
    expire(db)
    assert reclaim_expired(db, max_attempts=3) == ["ftjob-1"]
    second = db.claim("queued", "running", "w2")
    assert second.lease_generation == first.generation + 1
    written = len(messages(db))
    with pytest.raises(LeaseLost):
        first.event("Step 9/10: training loss=1.0")
    with pytest.raises(LeaseLost):
        first.settle("succeeded", [("The job has successfully completed", "info")], fine_tuned_model="ft:x")
    assert not db.renew_lease("ftjob-1", first.generation, 30)
    row = job(db)
    assert (row.status, row.worker, row.fine_tuned_model, len(messages(db))) == ("running", "w2", None, written)


def test_a_renewed_lease_is_never_reclaimed_however_long_the_step(db):
    """Two workers and a 'save' three times longer than the lease: the heartbeat keeps the job
    with its worker; only when the heartbeat stops does the lease run out."""
    add_job(db)
    lease = Lease(db, "ftjob-1", db.claim("queued", "running", "w1", lease_seconds=1.0).lease_generation)
    other = Worker(Workspace(db.url), db, name="w2", settings=WorkerSettings(lease_seconds=1.0))
    with Heartbeat(lease, lease_seconds=1.0) as heartbeat:
        deadline = time.time() + 3.0  # the step that takes three leases
        while time.time() < deadline:
            assert other.reclaim() == [] and not other.run_one()
            time.sleep(0.05)
        assert not heartbeat.lost.is_set()
    time.sleep(1.3)
    assert other.reclaim() == ["ftjob-1"] and job(db).status == "queued"


def test_past_max_attempts_the_job_fails_listing_each_attempt(db):
    add_job(db)
    for attempt in (1, 2):
        db.claim("queued", "running", f"w{attempt}")
        expire(db)
        reclaim_expired(db, max_attempts=2)
    row = job(db)
    assert row.status == "failed" and row.error["code"] == "max_attempts_exceeded"
    assert "attempt 1: worker_lost" in row.error["message"] and "attempt 2: worker_lost" in row.error["message"]
    assert [e["attempt"] for e in row.attempt_errors] == [1, 2]


def test_a_trainer_stops_at_its_next_step_once_its_lease_is_gone(db):
    from types import SimpleNamespace

    from transformers import TrainerControl

    from tunesmith.jobs.trainer import JobProgress

    add_job(db)
    progress = JobProgress(Lease(db, "ftjob-1", db.claim("queued", "running", "w1").lease_generation))
    state, control = SimpleNamespace(global_step=3, max_steps=10), TrainerControl()
    progress.on_step_end(None, state, control)
    assert not control.should_training_stop
    expire(db)
    reclaim_expired(db, max_attempts=3)
    db.claim("queued", "running", "w2")
    with pytest.raises(LeaseLost):  # out of the Trainer at once, past the recipes' `except Exception`
        progress.on_step_end(None, state, control)


def test_a_dead_worker_on_this_host_is_reclaimed_without_waiting_for_its_lease(db):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    add_job(db)
    db.claim("queued", "running", f"{socket.gethostname()}:{dead.pid}", lease_seconds=3600)
    assert reclaim_expired(db, max_attempts=3) == ["ftjob-1"]
    assert job(db).status == "queued" and any("stopped responding" in m for m in messages(db))


def test_a_job_cancelled_while_its_worker_was_lost_ends_cancelled(db):
    add_job(db)
    db.claim("queued", "running", "w1")
    jobs.cancel_job(db, "ftjob-1")
    expire(db)
    reclaim_expired(db, max_attempts=3)
    assert job(db).status == "cancelled"


def test_cancel_is_not_lost_to_a_claim_in_between(db, monkeypatch):
    """The worker claims the job after cancel read it as queued: the conditional update fails,
    cancel decides again on the running job and asks its trainer to stop."""
    add_job(db)
    read = jobs._job_in

    def read_then_claimed(session, job_id):
        row = read(session, job_id)
        if row.status == "queued":
            db.claim("queued", "running", "w1")
        return row

    monkeypatch.setattr(jobs, "_job_in", read_then_claimed)
    assert jobs.cancel_job(db, "ftjob-1")["status"] == "running"
    assert job(db).stop_requested == "cancel"


def test_cancel_twice_pause_and_resume_are_guarded(db):
    add_job(db)
    assert jobs.pause_job(db, "ftjob-1")["status"] == "paused"
    assert jobs.resume_job(db, "ftjob-1")["status"] == "queued"
    db.claim("queued", "running", "w1")
    jobs.cancel_job(db, "ftjob-1")
    with pytest.raises(APIError):  # a job being cancelled is not paused instead
        jobs.pause_job(db, "ftjob-1")
    jobs.cancel_job(db, "ftjob-1")  # asking again while it stops is harmless
    with db.session() as session:
        session.get(JobRow, "ftjob-1").status = "cancelled"
    with pytest.raises(APIError) as e:
        jobs.cancel_job(db, "ftjob-1")
    assert e.value.status == 400


def test_one_bad_stored_row_never_breaks_the_listing(db):
    add_job(db)
    with db.session() as session:
        row = session.get(JobRow, "ftjob-1")
        row.method = {"type": "supervised", "supervised": {"hyperparameters": {"learning_rate_multiplier": float("inf")}}}
        session.add(JobRow(id="ftjob-2", created_at=1, status="failed", model="m", training_file="f", seed=0,
                           method={"type": "mystery"}))
    listed, _ = jobs.list_jobs(db, None, 10, {})
    assert listed[0]["hyperparameters"] == {"learning_rate_multiplier": None} and listed[1]["hyperparameters"] == {}


# ── trainers supervised by their worker (stand-in trainer scripts) ────────────────────────────

def stand_in(tmp_path, body: str) -> list[str]:
    """A trainer command whose process runs ``body`` (argv: job id, generation)."""
    script = tmp_path / "trainer.py"
    script.write_text(textwrap.dedent(body))
    return [sys.executable, str(script)]


HANGS = """
    import os, subprocess, sys, time
    child = subprocess.Popen(["sleep", "600"])  # a helper in the trainer's process group
    open(sys.argv[0] + ".pids", "w").write(f"{os.getpid()} {child.pid}")
    time.sleep(600)                              # a step that never ends
"""


def pids(tmp_path, timeout=20) -> list[int]:
    path = tmp_path / "trainer.py.pids"
    deadline = time.time() + timeout
    while not path.exists() or not path.read_text():
        assert time.time() < deadline
        time.sleep(0.05)
    return [int(p) for p in path.read_text().split()]


def gone(pid: int, timeout: float = 5) -> bool:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.05)
    return False


def worker(tmp_path, db, command, **settings) -> Worker:
    return Worker(Workspace(tmp_path / "home"), db, name="w1", trainer_command=command,
                  settings=WorkerSettings(**{"grace_seconds": 1.0, **settings}), log=lambda message: None)


def test_cancel_reaches_a_hung_step_and_its_whole_process_group(tmp_path, db):
    add_job(db)
    w = worker(tmp_path, db, stand_in(tmp_path, HANGS))
    thread = threading.Thread(target=w.run_one)
    thread.start()
    trainer, helper = pids(tmp_path)
    jobs.cancel_job(db, "ftjob-1")
    thread.join(timeout=15)
    assert not thread.is_alive() and gone(trainer) and gone(helper)
    assert job(db).status == "cancelled"
    assert any("did not stop within 1s" in m for m in messages(db))


STEPS_THEN_HANGS = """
    import os, sys, time
    from tunesmith.jobs.db import Database, JobRow
    from tunesmith.jobs.leases import Lease
    with Lease(Database(os.environ["TUNESMITH_DATABASE_URL"]), sys.argv[1], int(sys.argv[2])).session() as session:
        session.get(JobRow, sys.argv[1]).heartbeat_at = time.time()  # a first step ended
""" + HANGS


def test_pause_of_a_hung_step_pauses_the_job(tmp_path, db):
    """Once training has begun (a step ended), a pause that is not honoured within the grace
    period stops the trainer; before that, a pause waits for the first step, to write its
    checkpoint (tests/server/test_faults.py)."""
    add_job(db)
    w = worker(tmp_path, db, stand_in(tmp_path, STEPS_THEN_HANGS))
    thread = threading.Thread(target=w.run_one)
    thread.start()
    pids(tmp_path)
    jobs.pause_job(db, "ftjob-1")
    thread.join(timeout=15)
    assert job(db).status == "paused" and job(db).stop_requested is None
    assert jobs.resume_job(db, "ftjob-1")["status"] == "queued"


def test_a_trainer_killed_by_sigkill_fails_the_job_as_out_of_memory(tmp_path, db):
    add_job(db)
    w = worker(tmp_path, db, stand_in(tmp_path, "import os, signal; os.kill(os.getpid(), signal.SIGKILL)"))
    assert w.run_one()
    row = job(db)
    assert row.status == "failed" and row.error["code"] == "out_of_memory"
    assert "may have killed it for lack of memory" in row.error["message"] and len(row.attempt_errors) == 1


def test_a_crashing_trainer_is_tried_again_then_fails_with_its_output(tmp_path, db):
    add_job(db)
    w = worker(tmp_path, db, stand_in(tmp_path, "import sys; sys.exit('boom: the trainer could not start')"),
               max_attempts=2)
    assert w.run_one() and job(db).status == "queued"
    assert w.run_one()
    row = job(db)
    assert row.status == "failed" and row.error["code"] == "max_attempts_exceeded"
    assert row.error["message"].count("boom: the trainer could not start") == 2 and row.attempts == 2


def test_a_trainer_that_recorded_its_outcome_may_finish_after_its_lease_ends(tmp_path, db):
    """E.g. judging a retraining after the job succeeded: the lease is over, but nobody else
    has the job, so the worker lets its trainer finish."""
    add_job(db)
    command = stand_in(tmp_path, """
        import os, sys, time
        from tunesmith.jobs.db import Database
        from tunesmith.jobs.leases import Lease
        job_id, generation = sys.argv[1], int(sys.argv[2])
        Lease(Database(os.environ["TUNESMITH_DATABASE_URL"]), job_id, generation).settle("succeeded")
        time.sleep(1.5)  # several lease renewals, all refused now
        open(sys.argv[0] + ".finished", "w").write("yes")
    """)
    assert worker(tmp_path, db, command, lease_seconds=0.6).run_one()
    assert job(db).status == "succeeded" and (tmp_path / "trainer.py.finished").exists()


def test_a_trainer_dies_with_its_worker(tmp_path, db):
    """SIGKILL to the worker: the kernel kills its trainer (PR_SET_PDEATHSIG), so nothing goes on
    training unsupervised, and the next worker reclaims the job at once."""
    add_job(db)
    command = stand_in(tmp_path, HANGS)
    code = (f"from tunesmith.jobs.db import Database; from tunesmith.jobs.worker import Worker; "
            f"from tunesmith.workspace import Workspace; import pathlib; "
            f"Worker(Workspace(pathlib.Path({str(tmp_path / 'home')!r})), Database({db.url!r}), "
            f"trainer_command={command!r}).run_forever(0.1)")
    proc = subprocess.Popen([sys.executable, "-c", code])
    try:
        trainer, helper = pids(tmp_path)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        assert gone(trainer)
    finally:
        proc.kill()
        os.kill(helper, signal.SIGKILL)
    assert reclaim_expired(db, max_attempts=3) == ["ftjob-1"] and job(db).status == "queued"


def test_shutdown_stops_the_trainer_and_gives_the_job_back_uncounted(tmp_path, db):
    add_job(db)
    w = worker(tmp_path, db, stand_in(tmp_path, HANGS))
    thread = threading.Thread(target=w.run_one)
    thread.start()
    trainer, helper = pids(tmp_path)
    w.stop()
    thread.join(timeout=15)
    row = job(db)
    assert gone(trainer) and gone(helper) and row.status == "queued" and not row.attempt_errors


# ── transient database errors ─────────────────────────────────────────────────────────────────

def locked() -> OperationalError:
    return OperationalError("UPDATE jobs", {}, Exception("database is locked"))


def test_transient_errors_are_retried_with_backoff_then_reported_as_unavailable():
    calls = []

    def flaky():
        calls.append(time.monotonic())
        if len(calls) < 3:
            raise locked()
        return "done"

    assert retrying(flaky, delay=0.01) == "done" and len(calls) == 3
    with pytest.raises(DatabaseUnavailable):
        retrying(lambda: (_ for _ in ()).throw(locked()), attempts=3, delay=0.01)
    with pytest.raises(ValueError):  # not transient: raised at once
        retrying(lambda: (_ for _ in ()).throw(ValueError("bad")))


def test_a_session_reports_a_transient_failure_as_database_unavailable(db):
    with pytest.raises(DatabaseUnavailable):
        with db.session():
            raise locked()


def test_the_worker_loop_survives_database_errors_and_records_results_after_them(tmp_path, db, monkeypatch):
    add_job(db)
    claim, claim_failures = db.claim, []

    def flaky_claim(*args, **kwargs):
        if len(claim_failures) < 2:
            claim_failures.append(1)
            raise locked()
        return claim(*args, **kwargs)

    monkeypatch.setattr(db, "claim", flaky_claim)
    leased, failed_writes = db.leased, []

    def flaky_leased(*args):
        if len(failed_writes) < 2:  # recording the outcome fails twice before it succeeds
            failed_writes.append(1)
            raise DatabaseUnavailable("the database is unavailable: restarting")
        return leased(*args)

    w = worker(tmp_path, db, stand_in(tmp_path, "import os, signal; os.kill(os.getpid(), signal.SIGKILL)"))
    watch = w._watch

    def watch_then_writes_fail(*args):  # once the trainer is gone, recording its outcome fails twice first
        ended = watch(*args)
        monkeypatch.setattr(db, "leased", flaky_leased)
        return ended

    monkeypatch.setattr(w, "_watch", watch_then_writes_fail)
    w.run_forever(poll_seconds=0.01, stop_after=1)
    assert len(claim_failures) == 2 and len(failed_writes) == 2
    assert job(db).status == "failed" and job(db).error["code"] == "out_of_memory"


def test_a_worker_that_keeps_dying_is_restarted_with_a_doubling_back_off():
    from tunesmith.jobs.supervisor import WorkerPool

    said = []
    pool = WorkerPool(1, dict(os.environ), command=[sys.executable, "-c", "raise SystemExit(3)"], log=said.append,
                      first_delay=0.2, max_delay=0.8)
    pool.start()
    deadline = time.time() + 20
    while len(said) < 4 and time.time() < deadline:
        time.sleep(0.05)
    pool.stop(grace_seconds=1)
    assert [line.split("starting another in ")[1] for line in said[:4]] == ["0.2s", "0.4s", "0.8s", "0.8s"]
    assert all("exited with 3" in line for line in said)
