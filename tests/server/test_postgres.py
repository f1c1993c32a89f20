"""The job queue on PostgreSQL (``TUNESMITH_DATABASE_URL=postgresql+psycopg://...``), against a
real server the suite starts (tests/pg.py; skipped, saying why, where it cannot): the Alembic
migrations, claims by many threads and processes, jobs and their events, leases (the tests of
tests/server/test_leases.py, collected again here with a PostgreSQL database), and a job trained
by a worker while the database restarts under it. tests/server/test_db.py holds the migration
and claim checks on SQLite.

    python -m pytest tests/server/test_postgres.py            # about a minute; -m "not slow": 25 s
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from sqlalchemy import JSON, create_engine, inspect, select, text

from tunesmith.jobs.db import Database, EventRow, FileRow, JobRow, KeyRow

pytestmark = pytest.mark.postgres

TABLES = {"files", "jobs", "events", "api_keys", "feedback", "requests"}


def alembic_config():
    from alembic.config import Config

    import tunesmith.jobs.db as db_module

    config = Config()
    config.set_main_option("script_location", str(Path(db_module.__file__).parent / "migrations"))
    return config


def head_revision() -> str:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def migrate_to(url: str, revision: str, direction: str = "upgrade", rows: tuple[str, ...] = ()) -> None:
    """Run the migrations up (or down) to ``revision`` on ``url``, then execute ``rows``."""
    from alembic import command

    config = alembic_config()
    engine = create_engine(url)
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        getattr(command, direction)(config, revision)
        for statement in rows:
            connection.execute(text(statement))
    engine.dispose()


def queued_jobs(db: Database, n: int) -> list[str]:
    ids = [f"ftjob-{i:03d}" for i in range(n)]
    with db.session() as session:
        for i, job_id in enumerate(ids):
            session.add(JobRow(id=job_id, created_at=i // 3, status="queued", model="m", training_file="f", seed=0,
                               method={"type": "supervised"}))
    return ids


def claim_all(db: Database, name: str, threads: int) -> list[str]:
    """``threads`` workers claiming until the queue is empty; every claimed id, in no order."""
    claims: list[str] = []
    lock = threading.Lock()

    def worker(n):
        while (job := db.claim("queued", "running", f"{name}-{n}")) is not None:
            with lock:
                claims.append(job.id)

    pool = [threading.Thread(target=worker, args=(n,)) for n in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    return claims


# ── migrations ──────────────────────────────────────────────────────────────────────────────

def test_migrations_build_the_schema_at_head(pg_url):
    db = Database(pg_url)
    with db.engine.connect() as connection:
        assert connection.execute(text("select version_num from alembic_version")).scalar() == head_revision()
    inspector = inspect(db.engine)
    assert TABLES <= set(inspector.get_table_names())
    columns = {c["name"]: c for c in inspector.get_columns("jobs")}
    assert all(isinstance(columns[name]["type"], JSON) for name in ("method", "metadata", "settings", "attempt_errors"))
    assert columns["lease_generation"]["default"] == "0" and columns["attempts"]["default"] == "0"
    keys = {c["name"]: c for c in inspector.get_columns("api_keys")}
    assert keys["role"]["default"].startswith("'admin'")
    Database(pg_url)  # a second process opening it: a no-op upgrade


def test_json_columns_and_server_defaults_hold_values(pg_url):
    db = Database(pg_url)
    method = {"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 3, "learning_rate_multiplier": 0.5}}}
    with db.session() as session:
        session.execute(text("insert into jobs (id, created_at, status, model, training_file, seed, method) "
                             "values ('ftjob-raw', 1, 'queued', 'm', 'f', 0, '{}')"))  # the defaults from the server
        session.add(JobRow(id="ftjob-orm", created_at=2, status="queued", model="m", training_file="f", seed=0,
                           method=method, job_metadata={"team": "café ☕"}, attempt_errors=[{"attempt": 1, "error": None}]))
    with db.session() as session:
        raw, orm = session.get(JobRow, "ftjob-raw"), session.get(JobRow, "ftjob-orm")
        assert (raw.lease_generation, raw.attempts, raw.method, raw.attempt_errors) == (0, 0, {}, None)
        assert orm.method == method and orm.job_metadata == {"team": "café ☕"}
        assert orm.attempt_errors == [{"attempt": 1, "error": None}]


def test_migrations_go_down_to_nothing_and_up_again(pg_url):
    """Every downgrade (batch_alter_table's drop_column, index drops) runs on PostgreSQL too."""
    Database(pg_url).engine.dispose()
    migrate_to(pg_url, "base", "downgrade")
    engine = create_engine(pg_url)
    assert set(inspect(engine).get_table_names()) == {"alembic_version"}
    engine.dispose()
    Database(pg_url)
    assert TABLES <= set(inspect(create_engine(pg_url)).get_table_names())


def test_an_older_database_is_upgraded_in_place_keeping_its_rows(pg_url):
    migrate_to(pg_url, "0001", rows=(  # the schema of the first release, with a row in each table
        "insert into jobs (id, created_at, status, model, training_file, seed, method) "
        "values ('ftjob-old', 1, 'succeeded', 'm', 'f', 0, '{\"type\": \"supervised\"}')",
        "insert into api_keys (id, name, hash, prefix, created_at) values ('key-old', 'k', 'h', 'ts-', 1)",
        "insert into files (id, filename, purpose, bytes, created_at, status, sha256) "
        "values ('file-old', 'a.jsonl', 'fine-tune', 1, 1, 'processed', 's')"))
    db = Database(pg_url)
    with db.session() as session:
        old = session.get(JobRow, "ftjob-old")
        assert old.status == "succeeded" and old.method == {"type": "supervised"}
        assert old.result_files is None and old.settings is None and (old.lease_generation, old.attempts) == (0, 0)
        assert session.get(KeyRow, "key-old").role == "admin"  # keys from before roles could do everything
        assert session.get(FileRow, "file-old").owner is None


_MIGRATE_AND_CLAIM = """
import json, sys, threading
from tunesmith.jobs.db import Database
from tests.server.test_postgres import claim_all
url, name, threads = sys.argv[1], sys.argv[2], int(sys.argv[3])
print("ready", flush=True)
sys.stdin.readline()  # all processes start together
db = Database(url)    # each one migrates, as every tunesmith process does on start
print(json.dumps(claim_all(db, name, threads)) if threads else "[]", flush=True)
"""


def run_together(url: str, processes: int, threads: int) -> list[list[str]]:
    """``processes`` Python processes, released at the same moment: each opens the database
    (running the migrations) and claims with ``threads`` threads; what each claimed."""
    repo = Path(__file__).resolve().parents[2]
    procs = [subprocess.Popen([sys.executable, "-c", _MIGRATE_AND_CLAIM, url, f"p{i}", str(threads)], cwd=repo,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i in range(processes)]
    for proc in procs:
        assert proc.stdout.readline().strip() == "ready", proc.stderr.read()
    for proc in procs:
        proc.stdin.write("go\n")
        proc.stdin.flush()
    results = []
    for proc in procs:
        stdout, stderr = proc.communicate(timeout=60)
        assert proc.returncode == 0, stderr[-3000:]
        results.append(json.loads(stdout))
    return results


def test_processes_starting_at_once_on_a_new_database_migrate_it_once(pg_url):
    """`tunesmith serve` starts its web process and workers together, each running the
    migrations: on an empty database they must not trip over each other's CREATE TABLE."""
    run_together(pg_url, processes=3, threads=0)
    with Database(pg_url).engine.connect() as connection:
        assert connection.execute(text("select version_num from alembic_version")).scalars().all() == [head_revision()]


# ── claims ──────────────────────────────────────────────────────────────────────────────────

def test_each_job_is_claimed_exactly_once_by_eight_threads(pg_url):
    db = Database(pg_url)
    ids = queued_jobs(db, 40)
    claims = claim_all(db, "w", threads=8)
    assert sorted(claims) == ids  # every job once, none twice
    with db.session() as session:
        rows = session.scalars(select(JobRow)).all()
        assert {r.status for r in rows} == {"running"} and all(r.worker and r.heartbeat_at for r in rows)


def test_each_job_is_claimed_exactly_once_by_two_processes(pg_url):
    db = Database(pg_url)
    ids = queued_jobs(db, 60)
    first, second = run_together(pg_url, processes=2, threads=4)
    assert sorted(first + second) == ids
    with db.session() as session:  # the row names the process that claimed it
        workers = {r.id: r.worker for r in session.scalars(select(JobRow))}
    assert all(workers[i].startswith("p0-") for i in first) and all(workers[i].startswith("p1-") for i in second)


def test_claims_take_the_oldest_job_first(pg_url):
    db = Database(pg_url)
    ids = queued_jobs(db, 7)
    assert [db.claim("queued", "running", "w").id for _ in ids] == ids
    assert db.claim("queued", "running", "w") is None


# ── jobs and events through tunesmith.jobs.fine_tuning ───────────────────────────────────────────

def _training_file(db: Database, file_id: str = "file-train", status: str = "processed") -> str:
    with db.session() as session:
        session.add(FileRow(id=file_id, filename="train.jsonl", purpose="fine-tune", bytes=10, created_at=1,
                            status=status, status_details="line 1: bad" if status == "error" else None, sha256="s"))
    return file_id


def test_jobs_are_created_listed_and_their_events_kept_in_order(pg_url):
    from tunesmith.jobs import fine_tuning as jobs
    db = Database(pg_url)
    good, bad = _training_file(db), _training_file(db, "file-bad", status="error")
    created = [jobs.create_job(db, {"model": "m", "training_file": good, "metadata": {"team": t}, "suffix": "s1",
                                    "hyperparameters": {"n_epochs": 2},
                                    "tunesmith": {"settings": {"lora": {"r": 4}}}}) for t in ("a", "b", "a")]
    failed = jobs.create_job(db, {"model": "m", "training_file": bad})
    assert [j["status"] for j in created] == ["queued"] * 3 and failed["status"] == "failed"
    assert "line 1: bad" in failed["error"]["message"]
    assert created[0]["hyperparameters"]["n_epochs"] == 2 and created[0]["tunesmith"]["settings"] == {"lora": {"r": 4}}

    listed, more = jobs.list_jobs(db, after=None, limit=10, metadata={"team": "a"})
    assert {j["id"] for j in listed} == {created[0]["id"], created[2]["id"]} and not more
    page, more = jobs.list_jobs(db, after=None, limit=2, metadata={})
    assert len(page) == 2 and more

    job_id = created[0]["id"]
    jobs.pause_job(db, job_id)
    jobs.resume_job(db, job_id)
    assert jobs.cancel_job(db, job_id)["status"] == "cancelled"
    events, _ = jobs.list_events(db, job_id, after=None, limit=100)
    assert [e["message"] for e in reversed(events)] == [
        f"Created fine-tuning job: {job_id}", f"Validating training file: {good}",
        "Files validated, moving job to queued state", "Job paused", "Job resumed: queued again", "Job cancelled"]
    newest, more = jobs.list_events(db, job_id, after=events[0]["id"], limit=2)
    assert [e["id"] for e in newest] == [e["id"] for e in events[1:3]] and more


def test_events_added_by_many_threads_get_increasing_sequence_numbers(pg_url):
    from tunesmith.jobs.fine_tuning import add_event

    db = Database(pg_url)
    queued_jobs(db, 1)

    def write(n):
        for i in range(10):
            add_event(db, "ftjob-000", f"{n}:{i}")

    pool = [threading.Thread(target=write, args=(n,)) for n in range(4)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    with db.session() as session:
        messages = session.scalars(select(EventRow.message).order_by(EventRow.seq)).all()
    assert len(messages) == 40
    for n in range(4):  # each writer's events in the order it wrote them
        assert [m for m in messages if m.startswith(f"{n}:")] == [f"{n}:{i}" for i in range(10)]


def test_non_finite_numbers_in_event_data_are_stored(pg_url):
    from tunesmith.jobs.fine_tuning import add_event

    db = Database(pg_url)
    queued_jobs(db, 1)
    add_event(db, "ftjob-000", "Step 3/9: training loss=nan", type_="metrics",
              data={"step": 3, "train_loss": float("nan"), "valid_loss": float("inf")})
    with db.session() as session:
        assert session.scalars(select(EventRow.data)).one() == {"step": 3, "train_loss": None, "valid_loss": None}


# ── leases: tests/server/test_leases.py's tests, collected here again with a PostgreSQL `db` ──

def _lease_tests() -> dict:
    """Every test of tests/server/test_leases.py that takes the ``db`` fixture, to be collected
    here too, where ``db`` is PostgreSQL: a lease test added there runs on both back-ends."""
    import inspect as signatures

    from tests.server import test_leases

    # PostgreSQL's json type refuses Infinity: the bad row this one stores cannot exist there
    # (events store non-finite numbers as null: test_non_finite_numbers_in_event_data_are_stored).
    sqlite_only = {"test_one_bad_stored_row_never_breaks_the_listing"}
    return {name: test for name, test in vars(test_leases).items()
            if name.startswith("test_") and name not in sqlite_only and "db" in signatures.signature(test).parameters}


globals().update(_lease_tests())


@pytest.fixture
def db(pg_url):
    database = Database(pg_url)
    yield database
    database.engine.dispose()


def test_requests_while_postgresql_is_down_are_503_and_served_again_once_it_is_back(postgres_server, pg_url, tmp_path,
                                                                                    monkeypatch):
    from fastapi.testclient import TestClient

    from tunesmith import api
    from tunesmith.web.app import create_app
    from tunesmith.workspace import Workspace

    monkeypatch.setenv("TUNESMITH_DATABASE_URL", pg_url)
    workspace = Workspace(tmp_path / "home")
    secret, _ = api.create_api_key("pg", workspace=workspace)
    client = TestClient(create_app(workspace), raise_server_exceptions=False)
    client.headers["Authorization"] = f"Bearer {secret}"
    assert client.get("/v1/fine_tuning/jobs").status_code == 200
    postgres_server.stop()
    try:
        down = client.get("/v1/fine_tuning/jobs")
    finally:
        postgres_server.resume()
    assert down.status_code == 503, down.text
    assert down.json()["error"]["code"] == "database_unavailable" and down.headers["retry-after"]
    assert client.get("/v1/fine_tuning/jobs").status_code == 200  # the dead pooled connections were replaced


# ── the database restarted under a running job ──────────────────────────────────────────────

# Two restarts under one job (one worker start and model load, the slow part, for both):
OUTAGES = (1.0,  # within a write's retries (0.2 + 0.4 + 0.8 + 1.6 s): each write waits it out
           8.0)  # beyond them: a step's writes give up, training goes on, the lease (30 s) holds


@pytest.mark.slow
def test_a_job_succeeds_while_postgresql_restarts_under_its_worker(postgres_server, pg_url, tmp_path, tiny_model_dir):
    """A real worker process trains a job on the tiny model; PostgreSQL restarts twice mid-job
    (every connection cut, connections refused while it is down: 1 s, then 8 s). The job ends
    `succeeded`, its row consistent, every status transition recorded once and in order."""
    from tests.conftest import chat_records, write_jsonl
    from tests.server.test_openai_sdk import install_model
    from tunesmith.jobs import fine_tuning as jobs
    from tunesmith.jobs.files import FileStore
    from tunesmith.workspace import Workspace

    home = tmp_path / "home"
    install_model(home, tiny_model_dir)
    (home / "files").mkdir(parents=True)
    db = Database(pg_url)
    upload = FileStore(db, home / "files", 1 << 20).save_bytes(
        "train.jsonl", write_jsonl(tmp_path / "train.jsonl", chat_records(24)).read_bytes())
    job = jobs.create_job(db, {"model": "tiny-chat", "training_file": upload["id"],
                               "hyperparameters": {"n_epochs": 12, "batch_size": 4}})
    env = dict(os.environ, TUNESMITH_HOME=str(home), TUNESMITH_DATABASE_URL=pg_url)
    log = open(tmp_path / "worker.log", "w")
    worker = subprocess.Popen([sys.executable, "-m", "tunesmith", "worker", "--poll", "0.2"], env=env,
                              stdout=log, stderr=subprocess.STDOUT)
    try:
        seen = 0
        for down_seconds in OUTAGES:  # each one once the job has logged a step since the last
            _wait(lambda after=seen: _steps(db, job["id"])[-1:] > [after], worker, tmp_path, "the job to log a step")
            postgres_server.restart(down_seconds=down_seconds)
            seen = _steps(db, job["id"])[-1]
        _wait(lambda: jobs.get_job(db, job["id"]).status in jobs.TERMINAL, worker, tmp_path, "the job to finish", 180)
        assert worker.poll() is None, "the worker died: " + _tail(tmp_path)
    finally:
        worker.kill()
        worker.wait()
        log.close()
    row = jobs.get_job(db, job["id"])
    assert row.status == "succeeded", (row.error, _tail(tmp_path))
    assert row.fine_tuned_model and row.finished_at and row.result_files and row.run_id and row.trained_tokens
    assert (row.worker, row.lease_expires_at, row.stop_requested, row.error) == (None, None, None, None)
    events, _ = jobs.list_events(db, job["id"], after=None, limit=1000)
    lifecycle = [e["message"] for e in reversed(events) if e["type"] != "metrics"]
    resumed = [m for m in lifecycle if m.startswith("Fine-tuning job resumed")]
    # An attempt cut short (the outage outlasted its last write) is recorded and resumed, never lost.
    assert row.attempts == 1 + len(resumed) and len(row.attempt_errors or []) == len(resumed), (row.attempt_errors, lifecycle)
    assert lifecycle[:4] == [f"Created fine-tuning job: {job['id']}", f"Validating training file: {upload['id']}",
                             "Files validated, moving job to queued state", "Fine-tuning job started"]
    assert lifecycle[-2:] == [f"New fine-tuned model created: {row.fine_tuned_model}", "The job has successfully completed"]
    assert lifecycle.count("The job has successfully completed") == 1 and not any("failed" in m.lower() for m in lifecycle)
    # Each metrics event once, in order; those of steps logged while the database was away for
    # longer than a write's retries are dropped by design: the run's metrics.jsonl has them all.
    steps = _steps(db, job["id"])
    assert steps == sorted(set(steps))
    logged = [json.loads(line) for line in (Workspace(home).run_dir(row.run_id) / "metrics.jsonl").read_text().splitlines()]
    assert set(steps) <= {m["step"] for m in logged if "loss" in m} and max(m["step"] for m in logged) == _total_steps(events)
    with db.session() as session:
        assert session.get(FileRow, row.result_files[0]).purpose == "fine-tune-results"


def _total_steps(events: list[dict]) -> int:
    """The number of steps the job trained for, as its metrics events report it."""
    return next(e["data"]["total_steps"] for e in events if e["type"] == "metrics")


def _steps(db: Database, job_id: str) -> list[int]:
    """The steps the job's metrics events have reported so far."""
    with db.session() as session:
        return [data["step"] for data in session.scalars(select(EventRow.data).where(
            EventRow.job_id == job_id, EventRow.type == "metrics").order_by(EventRow.seq))]


def _wait(condition, worker, tmp_path, what: str, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while not condition():
        assert worker.poll() is None, f"the worker exited ({worker.returncode}) waiting for {what}: {_tail(tmp_path)}"
        assert time.time() < deadline, f"timed out waiting for {what}: {_tail(tmp_path)}"
        time.sleep(0.1)


def _tail(tmp_path) -> str:
    return (tmp_path / "worker.log").read_text(errors="replace")[-3000:]
