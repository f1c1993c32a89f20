"""The server's state in one SQL database (SQLAlchemy): uploaded files, fine-tuning jobs (the
queue), job events, API keys, review feedback and the request log. SQLite in the tunesmith home by default, in WAL mode so the web
process and the workers read while one writes; any SQLAlchemy URL (e.g. Postgres, through
``TUNESMITH_DATABASE_URL``) otherwise. The schema is managed by Alembic migrations.

Two things every caller can rely on:

* Transient failures (a locked SQLite file, a Postgres restart, a dropped connection) surface as
  ``DatabaseUnavailable`` (the HTTP layer answers 503), and ``retrying`` / ``Database.transaction``
  run a unit of work again with exponential back-off before giving up.
* A job's worker holds a *lease* on it (``claim`` / ``renew_lease`` / ``leased``): a generation
  number bumped by every claim and an expiry renewed by a heartbeat. Every write a worker makes
  about its job goes through ``leased``, a conditional UPDATE on the generation, so a worker whose
  job was taken over (its lease expired) writes nothing more.
"""
from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Callable, Iterator, TypeVar

from sqlalchemy import JSON, Float, ForeignKey, Integer, String, Text, create_engine, event, select, text, update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError, DisconnectionError, OperationalError, TimeoutError as PoolTimeout
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

from tunesmith.workspace import Workspace

T = TypeVar("T")
DEFAULT_LEASE_SECONDS = 30.0


class DatabaseUnavailable(Exception):
    """The database could not be reached or stayed locked, even after retries. Nothing was
    written by the failed unit of work; the caller may try again later (HTTP: 503)."""


class LeaseLost(BaseException):
    """The worker no longer holds the job's lease: it expired and another worker claimed the job,
    or the job left ``running`` (cancelled, finished). The holder must stop and write nothing.

    A BaseException, like KeyboardInterrupt, on purpose: raised from inside training (a Trainer
    callback), it must pass through the recipes' ``except Exception`` bookkeeping, which would
    otherwise mark the run failed in a run directory that now belongs to the new holder."""

    def __init__(self, job_id: str, generation: int):
        super().__init__(f"lease {generation} on {job_id} is no longer held")
        self.job_id, self.generation = job_id, generation


def transient(exc: BaseException) -> bool:
    """Whether trying the same unit of work again may succeed: a lost or refused connection, a
    locked SQLite database, a pool timeout. Integrity and programming errors are not transient.

    >>> transient(OperationalError("select 1", {}, Exception("database is locked")))
    True
    >>> transient(ValueError("bad"))
    False
    """
    if isinstance(exc, (DatabaseUnavailable, OperationalError, DisconnectionError, PoolTimeout)):
        return True
    return isinstance(exc, DBAPIError) and bool(exc.connection_invalidated)


def retrying(work: Callable[[], T], attempts: int = 5, delay: float = 0.2, max_delay: float = 5.0) -> T:
    """``work()``, tried again after a transient database error with exponential back-off
    (0.2 s, 0.4 s, 0.8 s, ... at most ``max_delay``); ``DatabaseUnavailable`` once every attempt
    failed. ``work`` must be a whole transaction, so that a failed attempt left nothing behind."""
    for attempt in range(attempts):
        try:
            return work()
        except Exception as e:
            if not transient(e):
                raise
            if attempt == attempts - 1:
                raise DatabaseUnavailable(f"the database is unavailable: {e}") from e
            time.sleep(min(delay * 2 ** attempt, max_delay))
    raise AssertionError("unreachable")  # attempts >= 1


class Base(DeclarativeBase):
    pass


class FileRow(Base):
    __tablename__ = "files"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    filename: Mapped[str] = mapped_column(String(255))   # sanitised; never used to build a path
    purpose: Mapped[str] = mapped_column(String(32))
    bytes: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16))         # uploaded | processed | error
    status_details: Mapped[str | None] = mapped_column(Text, nullable=True)
    sha256: Mapped[str] = mapped_column(String(64))
    owner: Mapped[str | None] = mapped_column(String(32), nullable=True)  # id of the key that uploaded it


class JobRow(Base):
    __tablename__ = "jobs"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    created_at: Mapped[int] = mapped_column(Integer, index=True)
    status: Mapped[str] = mapped_column(String(24), index=True)
    model: Mapped[str] = mapped_column(String(255))
    training_file: Mapped[str] = mapped_column(String(64))
    validation_file: Mapped[str | None] = mapped_column(String(64), nullable=True)
    suffix: Mapped[str | None] = mapped_column(String(64), nullable=True)
    seed: Mapped[int] = mapped_column(Integer)
    method: Mapped[dict] = mapped_column(JSON)              # {"type": "supervised", "supervised": {"hyperparameters": ...}}
    job_metadata: Mapped[dict | None] = mapped_column("metadata", JSON, nullable=True)
    fine_tuned_model: Mapped[str | None] = mapped_column(String(255), nullable=True, index=True)
    run_id: Mapped[str | None] = mapped_column(String(255), nullable=True)
    error: Mapped[dict | None] = mapped_column(JSON, nullable=True)
    finished_at: Mapped[int | None] = mapped_column(Integer, nullable=True)
    estimated_finish: Mapped[int | None] = mapped_column(Integer, nullable=True)
    trained_tokens: Mapped[int | None] = mapped_column(Integer, nullable=True)
    worker: Mapped[str | None] = mapped_column(String(128), nullable=True)
    heartbeat_at: Mapped[float | None] = mapped_column(Float, nullable=True)  # claimed, or the trainer's last step
    result_files: Mapped[list | None] = mapped_column(JSON, nullable=True)
    stop_requested: Mapped[str | None] = mapped_column(String(8), nullable=True)  # "cancel" | "pause"
    settings: Mapped[dict | None] = mapped_column(JSON, nullable=True)  # recipe settings beyond OpenAI's (tunesmith.settings)
    lease_generation: Mapped[int] = mapped_column(Integer, default=0, server_default="0")  # bumped by every claim
    lease_expires_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    attempt_errors: Mapped[list | None] = mapped_column(JSON, nullable=True)  # why each earlier attempt ended


class EventRow(Base):
    __tablename__ = "events"
    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(64), unique=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id"), index=True)
    created_at: Mapped[int] = mapped_column(Integer)
    level: Mapped[str] = mapped_column(String(8))
    message: Mapped[str] = mapped_column(Text)
    type: Mapped[str] = mapped_column(String(16))
    data: Mapped[dict | None] = mapped_column(JSON, nullable=True)


class FeedbackRow(Base):
    """A rated (and maybe corrected) model output; accepted ones become training data."""
    __tablename__ = "feedback"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    created_at: Mapped[int] = mapped_column(Integer)
    model: Mapped[str] = mapped_column(String(255))
    messages: Mapped[list] = mapped_column(JSON)          # the conversation up to the answer
    answer: Mapped[str] = mapped_column(Text)
    rating: Mapped[int] = mapped_column(Integer)          # -1 bad, 0 unrated, 1 good
    correction: Mapped[str | None] = mapped_column(Text, nullable=True)
    status: Mapped[str] = mapped_column(String(16), index=True)  # new | accepted | rejected | exported
    dataset_file: Mapped[str | None] = mapped_column(String(64), nullable=True)
    request_id: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)  # the request rated
    label: Mapped[str | None] = mapped_column(String(255), nullable=True)   # a classifier's corrected label


class RequestRow(Base):
    """One inference served (or refused): what monitoring reads. ``input``/``output`` only when
    the server logs content (opt-in), with personal data already redacted; a classification
    request is one row per input text (``request`` groups them)."""
    __tablename__ = "requests"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    request: Mapped[str] = mapped_column(String(64), index=True)   # the id the client got back
    created_at: Mapped[float] = mapped_column(Float, index=True)
    model: Mapped[str] = mapped_column(String(255), index=True)
    endpoint: Mapped[str] = mapped_column(String(32))              # chat | completion | classification
    status: Mapped[int] = mapped_column(Integer)                   # HTTP status
    latency_ms: Mapped[float] = mapped_column(Float)
    prompt_tokens: Mapped[int | None] = mapped_column(Integer, nullable=True)
    completion_tokens: Mapped[int | None] = mapped_column(Integer, nullable=True)
    input: Mapped[str | None] = mapped_column(Text, nullable=True)
    output: Mapped[str | None] = mapped_column(Text, nullable=True)
    label: Mapped[str | None] = mapped_column(String(255), nullable=True)
    confidence: Mapped[float | None] = mapped_column(Float, nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)


class KeyRow(Base):
    __tablename__ = "api_keys"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(128))
    hash: Mapped[str] = mapped_column(String(64), unique=True)   # sha256 of the secret; the secret is never stored
    prefix: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[int] = mapped_column(Integer)
    revoked_at: Mapped[int | None] = mapped_column(Integer, nullable=True)
    role: Mapped[str] = mapped_column(String(16), default="user", server_default="admin")  # admin | user


def database_url(workspace: Workspace) -> str:
    import os

    return os.environ.get("TUNESMITH_DATABASE_URL") or f"sqlite:///{workspace.database_path}"


def make_engine(url: str) -> Engine:
    sqlite = url.startswith("sqlite")
    # pool_pre_ping: a connection that died while pooled (Postgres restarted) is replaced before
    # use instead of failing the next request.
    engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30} if sqlite else {},
                           pool_pre_ping=not sqlite)
    if sqlite:
        @event.listens_for(engine, "connect")
        def _pragmas(connection, _record):
            cursor = connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()
    migrate(engine)
    return engine


def migrate(engine: Engine) -> None:
    """Bring the schema to the newest Alembic revision (tunesmith/jobs/migrations/versions).
    Every process runs it on start; on an up-to-date database it is a no-op. SQLite needs no lock
    of ours: its first write locks the whole database."""
    from pathlib import Path

    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(Path(__file__).parent / "migrations"))
    with engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            # Processes starting together (serve and its workers) would race on CREATE TABLE in an
            # empty database; the first takes this lock, the others wait and find it up to date.
            connection.execute(text("select pg_advisory_xact_lock(7310411)"))
        config.attributes["connection"] = connection
        command.upgrade(config, "head")


class Database:
    def __init__(self, url: str):
        self.url = url
        self.engine = make_engine(url)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    @classmethod
    def for_workspace(cls, workspace: Workspace) -> "Database":
        workspace.home.mkdir(parents=True, exist_ok=True)
        return cls(database_url(workspace))

    @contextmanager
    def session(self) -> Iterator[Session]:
        """One transaction; a transient failure surfaces as ``DatabaseUnavailable``. The body of a
        ``with`` block cannot be run twice, so retrying is ``transaction``'s (or ``retrying``'s)."""
        try:
            with self._sessions() as session, session.begin():
                yield session
        except Exception as e:
            if transient(e) and not isinstance(e, DatabaseUnavailable):
                raise DatabaseUnavailable(f"the database is unavailable: {e}") from e
            raise

    def transaction(self, work: Callable[[Session], T], attempts: int = 5) -> T:
        """``work(session)`` in one transaction, the whole transaction run again after a transient
        failure (see ``retrying``)."""
        def once() -> T:
            with self.session() as session:
                return work(session)
        return retrying(once, attempts)

    def claim(self, from_status: str, to_status: str, worker: str,
              lease_seconds: float = DEFAULT_LEASE_SECONDS) -> JobRow | None:
        """Atomically move the oldest job in ``from_status`` to ``to_status`` for ``worker``: a
        conditional UPDATE, so two workers can never claim the same job. The claim is a new lease:
        the generation is bumped, the expiry set ``lease_seconds`` ahead, the attempt counted."""
        now = time.time()
        with self.session() as session:
            candidates = session.scalars(select(JobRow.id).where(JobRow.status == from_status)
                                         .order_by(JobRow.created_at, JobRow.id).limit(5)).all()
            for job_id in candidates:
                claimed = session.execute(
                    update(JobRow).where(JobRow.id == job_id, JobRow.status == from_status)
                    .values(status=to_status, worker=worker, heartbeat_at=now, lease_expires_at=now + lease_seconds,
                            lease_generation=JobRow.lease_generation + 1, attempts=JobRow.attempts + 1))
                if claimed.rowcount == 1:
                    return session.get(JobRow, job_id, populate_existing=True)
        return None

    def renew_lease(self, job_id: str, generation: int, lease_seconds: float) -> bool:
        """Push the lease's expiry ``lease_seconds`` ahead; False when it is no longer held. The
        worker renews; ``heartbeat_at`` is left to the trainer, as its sign of progress."""
        now = time.time()
        with self.session() as session:
            renewed = session.execute(update(JobRow).where(*_held(job_id, generation))
                                      .values(lease_expires_at=now + lease_seconds))
            return renewed.rowcount == 1

    @contextmanager
    def leased(self, job_id: str, generation: int) -> Iterator[Session]:
        """A transaction that writes only while lease ``generation`` on the job is held, else
        raises ``LeaseLost`` having written nothing. It starts with a conditional UPDATE of the
        job's row, which also locks the row (Postgres) or the database (SQLite) until commit, so a
        competing claim cannot slip in between the check and the writes."""
        with self.session() as session:
            held = session.execute(update(JobRow).where(*_held(job_id, generation))
                                   .values(lease_generation=JobRow.lease_generation))  # changes nothing; locks the row
            if held.rowcount != 1:
                raise LeaseLost(job_id, generation)
            yield session


def _held(job_id: str, generation: int) -> tuple:
    return JobRow.id == job_id, JobRow.lease_generation == generation, JobRow.status == "running"
