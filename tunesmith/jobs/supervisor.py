"""Child processes that never outlive whoever started them, and `tunesmith serve`'s workers.

Two levels are supervised: the server keeps its worker processes running (``WorkerPool``: a
dead worker is started again with back-off) and stops them when it stops; a worker runs each
trainer in a process group of its own and stops the whole group when the job must stop
(server/worker.py). Neither child is left running unsupervised when its parent dies: on Linux
the kernel sends it a signal then (PR_SET_PDEATHSIG, set in the child before exec), SIGTERM to
a worker (it gives its job back in order) and SIGKILL to a trainer (its step may hang).
"""
from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from functools import cache
from typing import Callable

PR_SET_PDEATHSIG = 1  # linux/prctl.h


@cache
def _libc():
    return ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None


def dies_with_parent(sig: int) -> Callable[[], None]:
    """A ``preexec_fn`` after which the child gets ``sig`` when this process's current thread
    ends (the kernel ties PR_SET_PDEATHSIG to the thread that forked, so start children from a
    thread that lives as long as they should). If this process is already gone by then, the
    child exits at once. libc is loaded here, before the fork: the function the child runs only
    calls into it (a preexec_fn must not take locks another thread may hold)."""
    libc, parent = _libc(), os.getpid()

    def preexec() -> None:
        if libc is not None:
            libc.prctl(PR_SET_PDEATHSIG, sig)
        if os.getppid() != parent:
            os._exit(1)
    return preexec


def exit_on_signal(signum: int, frame) -> None:
    """A signal handler that exits through SystemExit, so ``finally`` blocks (stopping children)
    run; the exit status is the shell's for death by that signal."""
    raise SystemExit(128 + signum)


def stop_group(proc: subprocess.Popen, grace_seconds: float) -> None:
    """SIGTERM to the process group led by ``proc``, SIGKILL to whatever is left after
    ``grace_seconds`` (at once for 0), and ``proc`` reaped."""
    if grace_seconds > 0 and proc.poll() is None:
        _signal_group(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=grace_seconds)
        except subprocess.TimeoutExpired:
            pass
    _signal_group(proc.pid, signal.SIGKILL)  # also the group's other members once the leader is gone
    proc.wait()


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


@dataclass
class _Slot:
    proc: subprocess.Popen | None = None
    started: float = 0.0
    next_start: float = 0.0  # when a dead worker may be started again
    delay: float = 0.0       # the back-off before the next restart


class WorkerPool:
    """``count`` worker processes (``command``, by default ``python -m tunesmith worker``) with
    ``env``: each one that exits is started again after a back-off that doubles from
    ``first_delay`` to ``max_delay`` while it keeps dying young (before ``healthy_after``), so a
    worker that cannot start (a broken database URL) is not restarted in a tight loop."""

    def __init__(self, count: int, env: dict[str, str], command: list[str] | None = None,
                 log: Callable[[str], None] = print, first_delay: float = 1.0, max_delay: float = 60.0,
                 healthy_after: float = 60.0):
        self.count, self.env, self.log = count, env, log
        self.command = command or [sys.executable, "-m", "tunesmith", "worker"]
        self.first_delay, self.max_delay, self.healthy_after = first_delay, max_delay, healthy_after
        self.slots = [_Slot(delay=first_delay) for _ in range(count)]
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="worker-pool", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        # Workers are started from this thread, which lives until stop(): see dies_with_parent.
        while not self._stopping.is_set():
            for slot in self.slots:
                try:
                    self._tend(slot)
                except OSError as e:  # e.g. out of processes: try again after the back-off
                    self.log(f"could not start a worker: {e}")
                    slot.next_start = time.monotonic() + slot.delay
            self._stopping.wait(0.5)

    def _tend(self, slot: _Slot) -> None:
        now = time.monotonic()
        if slot.proc is not None:
            if slot.proc.poll() is None:
                return
            self._schedule_restart(slot, now)
        if now >= slot.next_start:
            slot.proc = subprocess.Popen(self.command, env=self.env, stdin=subprocess.DEVNULL,
                                         preexec_fn=dies_with_parent(signal.SIGTERM))
            slot.started = now

    def _schedule_restart(self, slot: _Slot, now: float) -> None:
        lived = now - slot.started
        if lived >= self.healthy_after:
            slot.delay = self.first_delay
        slot.next_start = now + slot.delay
        self.log(f"worker {slot.proc.pid} exited with {slot.proc.returncode} after {lived:.0f}s; "
                 f"starting another in {slot.delay:g}s")
        slot.delay = min(slot.delay * 2, self.max_delay)
        slot.proc = None

    def stop(self, grace_seconds: float = 15.0) -> None:
        """Stop every worker and its trainers: SIGTERM (a worker stops its trainer and gives the
        job back to the queue), then SIGKILL to whatever of them is still there after
        ``grace_seconds``."""
        import psutil

        self._stopping.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)  # no worker is started after this
        procs = [slot.proc for slot in self.slots if slot.proc is not None]
        family = []
        for proc in procs:
            try:
                family += psutil.Process(proc.pid).children(recursive=True)
            except psutil.NoSuchProcess:
                pass
            if proc.poll() is None:
                proc.terminate()
        deadline = time.monotonic() + grace_seconds
        for proc in procs:
            try:
                proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for process in family:  # trainers of a worker that had to be killed
            try:
                process.kill()
            except psutil.NoSuchProcess:
                pass
