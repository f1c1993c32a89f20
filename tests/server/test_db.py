"""The database: Alembic-managed schema, atomic job claims."""
import threading

from sqlalchemy import inspect, text

from tunesmith.jobs.db import Database, JobRow


def test_schema_comes_from_the_migrations_and_is_at_head(tmp_path):
    db = Database(f"sqlite:///{tmp_path / 'a.db'}")
    with db.engine.connect() as connection:
        assert connection.execute(text("select version_num from alembic_version")).scalar() == "0006"
    assert {"files", "jobs", "events", "api_keys", "feedback"} <= set(inspect(db.engine).get_table_names())
    assert "settings" in {c["name"] for c in inspect(db.engine).get_columns("jobs")}
    Database(db.url)  # a second process opening it: no-op upgrade


def test_a_job_is_claimed_by_exactly_one_of_many_workers(tmp_path):
    db = Database(f"sqlite:///{tmp_path / 'b.db'}")
    with db.session() as session:
        for i in range(5):
            session.add(JobRow(id=f"ftjob-{i}", created_at=i, status="queued", model="m", training_file="f", seed=0,
                               method={"type": "supervised"}))
    claims: list[str] = []
    lock = threading.Lock()

    def worker(name):
        while (job := db.claim("queued", "running", name)) is not None:
            with lock:
                claims.append(job.id)

    threads = [threading.Thread(target=worker, args=(f"w{i}",)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(claims) == [f"ftjob-{i}" for i in range(5)]  # every job once, none twice


def test_an_older_database_is_upgraded_in_place_keeping_its_rows(tmp_path):
    from pathlib import Path

    from alembic import command
    from alembic.config import Config
    from sqlalchemy import create_engine

    import tunesmith.jobs.db as db_module

    url = f"sqlite:///{tmp_path / 'old.db'}"
    config = Config()
    config.set_main_option("script_location", str(Path(db_module.__file__).parent / "migrations"))
    engine = create_engine(url)
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "0001")  # the schema of the first release
        connection.execute(text("insert into jobs (id, created_at, status, model, training_file, seed, method) "
                                "values ('ftjob-old', 1, 'succeeded', 'm', 'f', 0, '{}')"))
    db = Database(url)
    with db.session() as session:
        old = session.get(JobRow, "ftjob-old")
        assert old.status == "succeeded" and old.result_files is None and old.settings is None
