"""A private PostgreSQL server for the tests: initdb into a fresh directory, ``pg_ctl start`` on a
free loopback port (and a unix socket in that directory), one database per test, stopped and
deleted at the end of the session.

Debian's ``postgresql`` package puts the binaries in /usr/lib/postgresql/<version>/bin (not on
PATH); scripts/postgres-setup.sh installs it when the suite runs as root on a fresh machine.
``initdb`` refuses to run as root, so as root the server runs as the ``postgres`` user the
package creates (``runuser``), in a directory under /tmp that user owns: pytest's own temporary
directories are private to root (mode 0700) and ``postgres`` could not reach into them.

The server listens on 127.0.0.1 only, with password (SCRAM) authentication and a random password,
so other users of the machine cannot use it. It is tuned for tests (fsync off): a crash of the
machine may lose it, which is what a throw-away database is for.

    server = PostgresServer.start()      # raises PostgresUnavailable saying what is missing
    url = server.create_database("t1")   # postgresql+psycopg://tunesmith:...@127.0.0.1:PORT/t1
    server.restart()                     # as pg_ctl restart -m fast: every connection is cut
    server.stop()
"""
from __future__ import annotations

import glob
import os
import secrets
import shlex
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

USER = "tunesmith"
# Durability off: the data lives for one test session.
TEST_SETTINGS = ("fsync=off", "synchronous_commit=off", "full_page_writes=off", "max_connections=200")


class PostgresUnavailable(Exception):
    """Why a PostgreSQL server cannot be started here (the tests that need one skip with it)."""


def find_bin_dir() -> Path:
    """The newest installed server's bin directory: Debian's layout first, then PATH."""
    debian = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    if debian:
        return Path(debian[-1]).parent
    on_path = shutil.which("initdb")
    if on_path and shutil.which("pg_ctl"):
        return Path(on_path).parent
    raise PostgresUnavailable("the PostgreSQL server binaries (initdb, pg_ctl) are not installed: not in "
                              "/usr/lib/postgresql/*/bin nor on PATH (Debian: apt-get install postgresql; "
                              "scripts/postgres-setup.sh does it when run as root)")


def _run_as() -> list[str]:
    """The command prefix that runs the server's programs as an unprivileged user."""
    if os.geteuid() != 0:
        return []
    if shutil.which("runuser") is None:
        raise PostgresUnavailable("running as root, and `runuser` (util-linux) is missing to run initdb as `postgres`")
    try:
        import pwd

        pwd.getpwnam("postgres")
    except KeyError:
        raise PostgresUnavailable("running as root, and there is no `postgres` user to run initdb as "
                                  "(initdb refuses root; Debian's postgresql package creates that user)") from None
    return ["runuser", "-u", "postgres", "--"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class PostgresServer:
    bin_dir: Path
    root: Path          # data/, the socket and the log, all owned by the server's user
    port: int
    password: str
    run_as: list[str]

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def log(self) -> Path:
        return self.root / "server.log"

    @classmethod
    def start(cls) -> "PostgresServer":
        bin_dir, run_as = find_bin_dir(), _run_as()
        root = Path(tempfile.mkdtemp(prefix="tunesmith-pg-"))
        server = cls(bin_dir, root, 0, secrets.token_hex(16), run_as)
        try:
            server._initdb()
            for _ in range(3):  # a free port can be taken by someone else before the server binds it
                server.port = free_port()
                if server._pg_ctl("start", "-l", str(server.log), "-o", server._options(), check=False) == 0:
                    server._watch(os.getpid())
                    return server
            raise PostgresUnavailable(f"pg_ctl start failed; the end of its log:\n{server.log_tail()}")
        except BaseException:
            server.remove()
            raise

    def _initdb(self) -> None:
        if self.run_as:
            shutil.chown(self.root, "postgres", "postgres")
        password_file = self.root / "password"
        password_file.write_text(self.password)
        if self.run_as:
            shutil.chown(password_file, "postgres", "postgres")
        done = subprocess.run(self.run_as + [str(self.bin_dir / "initdb"), "-D", str(self.data), "-U", USER,
                                             "--pwfile", str(password_file), "--auth", "scram-sha-256",
                                             "--encoding", "UTF8", "--locale", "C", "--no-sync"],
                              capture_output=True, text=True)
        password_file.unlink()
        if done.returncode != 0:
            raise PostgresUnavailable(f"initdb failed: {(done.stderr or done.stdout).strip()[-2000:]}")

    def _options(self) -> str:
        settings = " ".join(f"-c {s}" for s in TEST_SETTINGS)
        return f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 {settings}"

    def _pg_ctl(self, *args: str, check: bool = True) -> int:
        # Its output to a file, not a pipe: the server it starts inherits the descriptors, and a
        # pipe would stay open (subprocess.run waiting for its end) as long as the server runs.
        with tempfile.TemporaryFile() as output:
            code = subprocess.run(self.run_as + [str(self.bin_dir / "pg_ctl"), "-D", str(self.data), "-w", "-t", "60",
                                                 *args], stdout=output, stderr=subprocess.STDOUT).returncode
            output.seek(0)
            said = output.read().decode(errors="replace")
        if check and code != 0:
            raise RuntimeError(f"pg_ctl {args[0]} failed: {said}\n{self.log_tail()}")
        return code

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://{USER}:{self.password}@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        """A new empty database; its SQLAlchemy URL."""
        self._admin(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def drop_database(self, name: str) -> None:
        """Drop it, ending the connections still open to it (PostgreSQL 13+)."""
        self._admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def _admin(self, statement: str) -> None:
        import psycopg

        with psycopg.connect(self.url().replace("+psycopg", ""), autocommit=True) as connection:
            connection.execute(statement)

    def restart(self, down_seconds: float = 0.0) -> None:
        """What ``pg_ctl restart -m fast`` does: the server drops every connection and rolls back
        what was in flight, stays down ``down_seconds`` (connections are refused meanwhile) and
        is back, on the same port, before this returns. Stop then start rather than ``pg_ctl
        restart``, which has no ``-l`` and would leave the server writing to our stdout."""
        self.stop()
        time.sleep(down_seconds)
        self.resume()

    def stop(self) -> None:
        self._pg_ctl("stop", "-m", "fast")

    def resume(self) -> None:
        """Start again after :meth:`stop`, on the same port."""
        self._pg_ctl("start", "-l", str(self.log), "-o", self._options())

    def _watch(self, owner: int) -> None:
        """The server is a daemon (pg_ctl detaches it), so it would outlive a test run that was
        killed: a watcher in a session of its own stops it and deletes its directory once the
        ``owner`` process is gone."""
        stop = shlex.join(self.run_as + [str(self.bin_dir / "pg_ctl"), "-D", str(self.data), "stop", "-m", "immediate"])
        self._watcher = subprocess.Popen(
            ["sh", "-c", f"while kill -0 {owner} 2>/dev/null; do sleep 2; done; {stop}; rm -rf {shlex.quote(str(self.root))}"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)

    def remove(self) -> None:
        """Stop the server if it runs, then delete its directory."""
        watcher = getattr(self, "_watcher", None)
        if watcher is not None:
            watcher.kill()
            watcher.wait()
        if (self.data / "postmaster.pid").exists():
            self._pg_ctl("stop", "-m", "immediate", check=False)
        shutil.rmtree(self.root, ignore_errors=True)

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"
