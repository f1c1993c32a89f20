"""The server's state in one SQL database (SQLAlchemy): uploaded files, fine-tuning jobs (the
queue), job events, API keys, review feedback and the request log. SQLite in the tunesmith home by default, in WAL mode so the web
process and the workers read while one writes; any SQLAlchemy URL (e.g. Postgres, through
``TUNESMITH_DATABASE_URL``) otherwise. The schema is managed by Alembic migrations."""
from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Iterator

from sqlalchemy import JSON, Float, ForeignKey, Integer, String, Text, create_engine, event, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

from tunesmith.workspace import Workspace


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
    heartbeat_at: Mapped[float | None] = mapped_column(Float, nullable=True)
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

    return os.environ.get("TUNESMITH_DATABASE_URL") or f"sqlite:///{workspace.home / 'tunesmith.db'}"


def make_engine(url: str) -> Engine:
    sqlite = url.startswith("sqlite")
    engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30} if sqlite else {})
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
    """Bring the schema to the newest Alembic revision (tunesmith/server/migrations/versions).
    Every process runs it on start; on an up-to-date database it is a no-op."""
    from pathlib import Path

    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(Path(__file__).parent / "migrations"))
    with engine.begin() as connection:
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
        with self._sessions() as session, session.begin():
            yield session

    def claim(self, from_status: str, to_status: str, worker: str) -> JobRow | None:
        """Atomically move the oldest job in ``from_status`` to ``to_status`` for ``worker``: a
        conditional UPDATE, so two workers can never claim the same job."""
        with self.session() as session:
            candidates = session.scalars(select(JobRow.id).where(JobRow.status == from_status)
                                         .order_by(JobRow.created_at, JobRow.id).limit(5)).all()
            for job_id in candidates:
                claimed = session.execute(
                    update(JobRow).where(JobRow.id == job_id, JobRow.status == from_status)
                    .values(status=to_status, worker=worker, heartbeat_at=time.time()))
                if claimed.rowcount == 1:
                    return session.get(JobRow, job_id)
        return None
