"""``tunesmith serve``: the web app under uvicorn, its worker processes, and the monitoring
schedule, started together and stopped together.

The workers get this server's home in ``TUNESMITH_HOME`` (a caller that passes its own
workspace gets workers that train in it), and a SIGTERM stops uvicorn, then the workers and
the trainers they run.
"""
from __future__ import annotations

import os
import signal
import threading
from typing import Any, Callable

import uvicorn

from tunesmith.errors import ConfigError
from tunesmith.jobs.supervisor import WorkerPool, exit_on_signal as _exit_on_signal
from tunesmith.monitoring.schedule import Scheduler
from tunesmith.web.app import ServerSettings, create_app
from tunesmith.workspace import Workspace

LOOPBACK = {"127.0.0.1", "localhost", "::1"}


def serve(host: str = "127.0.0.1", port: int = 8000, workers: int = 1, require_keys: bool = True,
          workspace: Workspace | None = None, log: Callable[[str], None] = print, schedule: Any = None, **settings: Any) -> None:
    """Run the OpenAI-compatible server (and ``workers`` worker processes) until interrupted;
    ``schedule`` (monitoring.schedule.Schedule): check models' traffic and drift on a timer."""
    if not require_keys and host not in LOOPBACK:
        raise ConfigError(f"--insecure-no-keys is only allowed on a loopback host, not {host}")
    ws = workspace or Workspace.default()
    app = create_app(ws, ServerSettings(require_keys=require_keys, **settings))
    pool = WorkerPool(workers, dict(os.environ, TUNESMITH_HOME=str(ws.home)), log=log)  # this server's home
    pool.start()
    log(f"tunesmith serving on http://{host}:{port}/v1 with {workers} worker(s); "
        f"API keys {'required' if require_keys else 'NOT required'}")
    scheduler = None
    if schedule is not None and schedule.models:
        scheduler = Scheduler(schedule, ws, log)
        scheduler.start()
        log(f"monitoring {', '.join(schedule.models)} every {schedule.every_seconds / 3600:g} h"
            + (" (retraining when an alert calls for it)" if schedule.retrain else ""))
    if threading.current_thread() is threading.main_thread():
        # uvicorn shuts down on SIGTERM, then raises it again with the handler it found: with the
        # default one the process would die there, before the workers below are stopped.
        signal.signal(signal.SIGTERM, _exit_on_signal)
    try:
        uvicorn.run(app, host=host, port=port, log_level="warning")
    finally:
        if scheduler is not None:
            scheduler.stop()
        pool.stop()  # the workers, and the trainers they run
