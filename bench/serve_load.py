"""Load and soak on the OpenAI-compatible server, on loopback only, every loop bounded in time.

    python bench/serve_load.py load [--model smollm2-135m-instruct] [--levels 1,4,16,64] [--seconds 30]
    python bench/serve_load.py soak [--minutes 10] [--jobs 4] [--kill-worker-at 0.3]
    python bench/serve_load.py all  -o docs/results/serve-load   (both; JSON + Markdown written there)

The server is a real ``tunesmith serve`` process (a fresh home under /tmp, the pulled model
linked into it, one supervised worker), driven over HTTP as clients would:

- ``load``: for each concurrency level, closed-loop *streaming* clients (each sends its next
  request when the previous stream ends) for ``--seconds``; then an overload burst of
  ``--burst`` simultaneous requests, several times the server's ``--max-waiting``. Recorded per
  level: answered, p50 / p95 latency of a whole answer and of the first token, output tokens/s,
  429s (each must carry Retry-After), 5xx and transport errors. The baseline is the 1-client
  row of the same run: the ratio column is throughput against it.
- ``soak``: ``--minutes`` of mixed traffic — streaming and plain chat clients, a client that
  disconnects mid-stream every ``--disconnect-every`` seconds, and ``--jobs`` fine-tuning jobs on
  a tiny random model trained by the server's worker — with the worker SIGKILLed once, part way
  (the server restarts it; the job it held resumes from its checkpoint). Pass criteria, checked
  and printed: no 5xx, every 429 with Retry-After, no admission slot held afterwards
  (``/v1/tunesmith/status``), server RSS flat (last minute within 10 % + 50 MB of the second, once
  the models are loaded), every job
  ``succeeded`` with exactly one "New fine-tuned model created" event and one trainer at a time.

Exit status 1 when a pass criterion fails, so the figures cannot be published by mistake.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
QUESTION = [{"role": "user", "content": "Write one sentence about the sea."}]


# ── the server under test ──────────────────────────────────────────────────────────────────
class Server:
    """``tunesmith serve`` in its own process group, in a throw-away home."""

    def __init__(self, model: str, max_waiting: int, workers: int):
        from tunesmith import api
        from tunesmith.workspace import Workspace

        self.home = Path(tempfile.mkdtemp(prefix="tunesmith-load-"))
        workspace = Workspace(self.home)
        (self.home / "models").mkdir(parents=True)
        os.symlink(Workspace.default().model_dir(model), self.home / "models" / model)  # the pulled model, not a copy
        self.secret, _ = api.create_api_key("load", workspace=workspace, role="admin")
        self.port = _free_port()
        env = dict(os.environ, TUNESMITH_HOME=str(self.home), TUNESMITH_LEASE_SECONDS="10")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tunesmith", "serve", "--port", str(self.port), "--workers", str(workers),
             "--max-waiting", str(max_waiting)], env=env, start_new_session=True, stdout=subprocess.DEVNULL,
            stderr=open(self.home / "server.log", "w"))
        self.url = f"http://127.0.0.1:{self.port}"
        self.headers = {"Authorization": f"Bearer {self.secret}"}
        deadline = time.time() + 120
        while True:
            try:
                if httpx.get(f"{self.url}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.time() > deadline or self.process.poll() is not None:
                raise SystemExit(f"the server did not start; see {self.home / 'server.log'}")
            time.sleep(0.3)

    def rss_mb(self) -> float:
        import psutil

        return psutil.Process(self.process.pid).memory_info().rss / 2**20

    def workers(self) -> list[int]:
        import psutil

        return [p.pid for p in psutil.Process(self.process.pid).children(recursive=False)
                if "worker" in " ".join(p.cmdline())]

    def status(self) -> dict:
        return httpx.get(f"{self.url}/v1/tunesmith/status", headers=self.headers, timeout=30).json()["inference"]

    def stop(self) -> None:
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
        shutil.rmtree(self.home, ignore_errors=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ── clients ────────────────────────────────────────────────────────────────────────────────
class Tally:
    """Outcomes of many clients, thread-safe."""

    def __init__(self):
        self.lock = threading.Lock()
        self.latency, self.first_token = [], []
        self.counts = {"answered": 0, "tokens": 0, "429": 0, "429_without_retry_after": 0, "5xx": 0, "4xx": 0,
                       "transport_errors": 0, "disconnects": 0}
        self.statuses: dict[str, int] = {}

    def add(self, key: str, n: int = 1) -> None:
        with self.lock:
            self.counts[key] += n

    def summary(self, wall: float) -> dict:
        ordered, first = sorted(self.latency), sorted(self.first_token)
        return self.counts | {"p50_s": _quantile(ordered, 0.5), "p95_s": _quantile(ordered, 0.95),
                              "first_token_p50_s": _quantile(first, 0.5), "first_token_p95_s": _quantile(first, 0.95),
                              "output_tokens_per_s": round(self.counts["tokens"] / wall, 2), "wall_s": round(wall, 1)}


def _quantile(ordered: list[float], q: float) -> float:
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 3) if ordered else 0.0


def one_request(http: httpx.Client, server: Server, tally: Tally, model: str, max_tokens: int, stream: bool) -> float:
    """One chat request; returns the seconds to wait before the next (Retry-After after a 429)."""
    body = {"model": model, "messages": QUESTION, "max_tokens": max_tokens, "temperature": 0.7, "stream": stream}
    if stream:
        body["stream_options"] = {"include_usage": True}
    started = time.perf_counter()
    try:
        with http.stream("POST", f"{server.url}/v1/chat/completions", json=body, headers=server.headers) as response:
            if response.status_code != 200:
                response.read()
                return _refused(response, tally)
            first, tokens = None, 0
            if stream:
                for line in response.iter_lines():
                    event = json.loads(line[6:]) if line.startswith("data: {") else {}
                    if "error" in event:
                        tally.add("5xx")  # an error after the status line went out
                        return 0.0
                    if first is None and any(c.get("delta", {}).get("content") for c in event.get("choices", [])):
                        first = time.perf_counter() - started
                    tokens = (event.get("usage") or {}).get("completion_tokens", tokens)
            else:
                tokens = json.loads(response.read())["usage"]["completion_tokens"]
            elapsed = time.perf_counter() - started
    except httpx.HTTPError:
        tally.add("transport_errors")
        return 0.5
    with tally.lock:
        tally.counts["answered"] += 1
        tally.counts["tokens"] += tokens
        tally.latency.append(elapsed)
        if first is not None:
            tally.first_token.append(first)
    return 0.0


def _refused(response: httpx.Response, tally: Tally) -> float:
    status = response.status_code
    if status == 429:
        tally.add("429")
        if "retry-after" not in response.headers:
            tally.add("429_without_retry_after")
        return float(response.headers.get("retry-after", "1"))
    tally.add("5xx" if status >= 500 else "4xx")
    with tally.lock:
        tally.statuses[str(status)] = tally.statuses.get(str(status), 0) + 1
    return 0.0


def closed_loop(server: Server, tally: Tally, model: str, max_tokens: int, stream: bool, until: float) -> None:
    with httpx.Client(timeout=600) as http:
        while time.time() < until:
            pause = one_request(http, server, tally, model, max_tokens, stream)
            time.sleep(min(pause, max(0.0, until - time.time())))


def disconnecting(server: Server, tally: Tally, model: str, every: float, until: float) -> None:
    """A client that opens a stream, reads its first event and hangs up, every ``every`` seconds."""
    body = json.dumps({"model": model, "messages": QUESTION, "max_tokens": 200, "stream": True}).encode()
    while time.time() < until:
        try:
            with socket.create_connection(("127.0.0.1", server.port), timeout=120) as sock:
                sock.sendall(f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                             f"Authorization: Bearer {server.secret}\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body)
                received = b""
                while b"data:" not in received and b"HTTP/1.1 429" not in received:
                    chunk = sock.recv(4096)
                    if not chunk:
                        break
                    received += chunk
            tally.add("disconnects")
        except OSError:
            tally.add("transport_errors")
        time.sleep(every)


def run_clients(targets: list[tuple], seconds: float) -> float:
    started = time.time()
    threads = [threading.Thread(target=fn, args=args, daemon=True) for fn, *args in targets]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=seconds + 900)
    return time.time() - started


# ── load ───────────────────────────────────────────────────────────────────────────────────
def load(server: Server, args) -> dict:
    one_request(httpx.Client(timeout=600), server, Tally(), args.model, 4, False)  # load the model outside the timings
    levels = []
    print(f"model {args.model}, {args.max_tokens} new tokens per streamed answer, {args.seconds:.0f} s per level, "
          f"server admits {args.max_waiting} requests at once")
    print(f"{'clients':>7} {'answered':>8} {'p50 s':>7} {'p95 s':>7} {'ttft p50':>8} {'out tok/s':>9} {'vs 1':>6} "
          f"{'429':>5} {'5xx':>4} {'errors':>6}")
    for level in [int(x) for x in args.levels.split(",")]:
        tally = Tally()
        until = time.time() + args.seconds
        wall = run_clients([(closed_loop, server, tally, args.model, args.max_tokens, True, until)] * level, args.seconds)
        row = {"clients": level} | tally.summary(wall) | {"after": server.status()}
        base = levels[0]["output_tokens_per_s"] if levels else row["output_tokens_per_s"]
        row["throughput_vs_1_client"] = round(row["output_tokens_per_s"] / base, 2) if base else 0.0
        levels.append(row)
        print(f"{level:>7} {row['answered']:>8} {row['p50_s']:>7.2f} {row['p95_s']:>7.2f} {row['first_token_p50_s']:>8.2f} "
              f"{row['output_tokens_per_s']:>9.1f} {row['throughput_vs_1_client']:>5.2f}x {row['429']:>5} "
              f"{row['5xx']:>4} {row['transport_errors']:>6}")
    burst = overload(server, args)
    return {"levels": levels, "burst": burst}


def overload(server: Server, args) -> dict:
    """``--burst`` requests at the same instant: the server admits ``--max-waiting`` and
    refuses the rest at once with 429 + Retry-After (no request may wait into a time-out)."""
    tally, barrier = Tally(), threading.Barrier(args.burst)

    def fire():
        with httpx.Client(timeout=600) as http:
            barrier.wait()
            started = time.perf_counter()
            one_request(http, server, tally, args.model, args.max_tokens, True)
            with tally.lock:
                tally.statuses.setdefault("refusal_seconds", 0)
                if time.perf_counter() - started < 1.0:
                    tally.statuses["refusal_seconds"] += 1
    wall = run_clients([(fire,)] * args.burst, 600)
    row = {"requests": args.burst, "max_waiting": args.max_waiting} | tally.summary(wall) | {"after": server.status()}
    print(f"burst of {args.burst} at once: {row['answered']} answered, {row['429']} refused with 429 "
          f"({row['429_without_retry_after']} without Retry-After), {row['5xx']} 5xx, "
          f"{row['transport_errors']} transport errors; admitted afterwards: {row['after']['admitted']}")
    return row


# ── soak ───────────────────────────────────────────────────────────────────────────────────
def soak(server: Server, args) -> dict:
    jobs = submit_jobs(server, args.jobs)
    tally, rss = Tally(), []
    until = time.time() + args.minutes * 60
    clients = [(closed_loop, server, tally, args.model, 16, True, until)] * 3 + \
              [(closed_loop, server, tally, args.model, 16, False, until)] * 2 + \
              [(disconnecting, server, tally, args.model, args.disconnect_every, until)]
    killed: dict = {}
    watcher = threading.Thread(target=watch, args=(server, rss, until, args, killed, jobs), daemon=True)
    watcher.start()
    wall = run_clients(clients, args.minutes * 60)
    watcher.join()
    finished = wait_for_jobs(server, jobs, timeout=900)
    after = server.status()
    return {"minutes": args.minutes, "clients": tally.summary(wall), "statuses": tally.statuses, "rss_mb": rss,
            "worker_killed": killed, "jobs": finished, "after": after, "workers_after": len(server.workers())}


def watch(server: Server, rss: list, until: float, args, killed: dict, jobs: list[str]) -> None:
    """RSS every 10 s; the worker SIGKILLed once, ``--kill-worker-at`` of the way in or later, while
    it trains a job that has a checkpoint."""
    kill_at = time.time() + args.kill_worker_at * args.minutes * 60
    while time.time() < until:
        rss.append(round(server.rss_mb(), 1))
        victim = running_job(server, jobs) if not killed and time.time() >= kill_at else None
        if victim:
            pids = server.workers()
            if pids:
                os.kill(pids[0], signal.SIGKILL)
                killed |= {"pid": pids[0], "at_s": round(time.time() - (until - args.minutes * 60), 1), "job": victim}
                print(f"killed worker {pids[0]} while it trained {killed['job']}")
        time.sleep(10)


def running_job(server: Server, jobs: list[str]) -> str | None:
    """A job being trained that has a complete checkpoint (so the kill tests a resume)."""
    for job_id in jobs:
        job = httpx.get(f"{server.url}/v1/fine_tuning/jobs/{job_id}", headers=server.headers, timeout=30).json()
        checkpoints = httpx.get(f"{server.url}/v1/fine_tuning/jobs/{job_id}/checkpoints", headers=server.headers,
                                timeout=30).json()
        if job.get("status") == "running" and checkpoints.get("data"):
            return job_id
    return None


def submit_jobs(server: Server, n: int) -> list[str]:
    """``n`` jobs on a tiny random model (the soak is about the queue, not about learning)."""
    from tests.conftest import build_tiny_model, chat_records

    tiny = server.home / "models" / "tiny-chat"
    build_tiny_model(tiny)
    (tiny / "tunesmith-model.json").write_text(json.dumps({"description": "tiny", "architecture": "llama",
                                                           "task": "causal-lm"}))
    data = "".join(json.dumps(r) + "\n" for r in chat_records(24)).encode()
    uploaded = httpx.post(f"{server.url}/v1/files", headers=server.headers, files={"file": ("train.jsonl", data)},
                          data={"purpose": "fine-tune"}, timeout=60).json()
    jobs = []
    for _ in range(n):
        job = httpx.post(f"{server.url}/v1/fine_tuning/jobs", headers=server.headers, timeout=60,
                         json={"model": "tiny-chat", "training_file": uploaded["id"],
                               "hyperparameters": {"n_epochs": 20, "batch_size": 4}}).json()
        jobs.append(job["id"])
    return jobs


def wait_for_jobs(server: Server, jobs: list[str], timeout: float) -> list[dict]:
    deadline = time.time() + timeout
    out = []
    for job_id in jobs:
        while True:
            job = httpx.get(f"{server.url}/v1/fine_tuning/jobs/{job_id}", headers=server.headers, timeout=30).json()
            if job["status"] in ("succeeded", "failed", "cancelled") or time.time() > deadline:
                break
            time.sleep(2)
        events = httpx.get(f"{server.url}/v1/fine_tuning/jobs/{job_id}/events?limit=100", headers=server.headers,
                           timeout=30).json()["data"]
        messages = [e["message"] for e in events]
        out.append({"id": job_id, "status": job["status"], "error": job.get("error"),
                    "models_created": sum(m.startswith("New fine-tuned model created") for m in messages),
                    "starts": sum(m.startswith("Fine-tuning job started") for m in messages),
                    "resumes": sum(m.startswith("Fine-tuning job resumed") for m in messages)})
    return out


def verdict(result: dict) -> list[str]:
    """The pass criteria of the module docstring; returns what failed."""
    failed = []
    rows = result.get("load", {}).get("levels", []) + [result.get("load", {}).get("burst")] + \
        [result.get("soak", {}).get("clients")]
    for row in filter(None, rows):
        if row["5xx"]:
            failed.append(f"{row['5xx']} 5xx responses")
        if row["429_without_retry_after"]:
            failed.append("a 429 without Retry-After")
    for row in filter(None, result.get("load", {}).get("levels", []) + [result.get("load", {}).get("burst")]):
        if row["after"]["admitted"]:
            failed.append(f"{row['after']['admitted']} admission slot(s) still held after the clients stopped")
    burst = result.get("load", {}).get("burst")
    if burst and not burst["429"]:
        failed.append("the overload burst got no 429")
    if "soak" in result:
        soaked = result["soak"]
        if soaked["after"]["admitted"]:
            failed.append(f"{soaked['after']['admitted']} admission slot(s) held after the soak")
        rss = soaked["rss_mb"]
        if len(rss) >= 18:  # the first minute loads the models: the baseline is the second
            first, last = statistics.median(rss[6:12]), statistics.median(rss[-6:])
            if last > first * 1.10 + 50:
                failed.append(f"server RSS grew from {first:.0f} to {last:.0f} MB")
        for job in soaked["jobs"]:
            if job["status"] != "succeeded" or job["models_created"] != 1:
                failed.append(f"job {job['id']}: {job['status']}, {job['models_created']} model(s) created")
        victim = next((j for j in soaked["jobs"] if j["id"] == soaked["worker_killed"].get("job")), None)
        if victim is not None and victim["resumes"] < 1:
            failed.append(f"the killed worker's job {victim['id']} was not resumed from its checkpoint")
        if not soaked["worker_killed"]:
            failed.append("no worker was killed (no job was running at the kill time)")
        if soaked["workers_after"] < 1:
            failed.append("the killed worker was not restarted")
    return failed


def write(result: dict, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [f"# Serving under load and soak ({result['model']})", "",
             f"Command: `{result['command']}`", "", f"Machine: {result['machine']}", ""]
    if "load" in result:
        lines += ["## Streaming clients (closed loop)", "",
                  "| clients | answered | p50 s | p95 s | first token p50 s | output tok/s | vs 1 client | 429 | 5xx | "
                  "transport errors | slots held after |", "|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in result["load"]["levels"]:
            lines.append(f"| {r['clients']} | {r['answered']} | {r['p50_s']} | {r['p95_s']} | {r['first_token_p50_s']} | "
                         f"{r['output_tokens_per_s']} | {r['throughput_vs_1_client']}x | {r['429']} | {r['5xx']} | "
                         f"{r['transport_errors']} | {r['after']['admitted']} |")
        b = result["load"]["burst"]
        lines += ["", f"Overload: {b['requests']} requests at once against `--max-waiting {b['max_waiting']}`: "
                  f"{b['answered']} answered, {b['429']} refused with 429 ({b['429_without_retry_after']} without "
                  f"Retry-After), {b['5xx']} 5xx, {b['transport_errors']} transport errors, "
                  f"{b['after']['admitted']} slots held afterwards.", ""]
    if "soak" in result:
        s, c = result["soak"], result["soak"]["clients"]
        rss = s["rss_mb"]
        lines += [f"## Soak: {s['minutes']} minutes", "",
                  f"- Traffic: {c['answered']} answers (3 streaming + 2 plain clients), p50 {c['p50_s']} s, "
                  f"p95 {c['p95_s']} s; {c['disconnects']} streams hung up mid-answer; {c['429']} × 429, "
                  f"{c['5xx']} × 5xx, {c['transport_errors']} transport errors.",
                  f"- Worker SIGKILLed at {s['worker_killed'].get('at_s')} s while it trained "
                  f"{s['worker_killed'].get('job')}; workers alive afterwards: {s['workers_after']}.",
                  f"- Server RSS (every 10 s): {rss[0] if rss else 0:.0f} MB at the start of the soak, median "
                  f"{statistics.median(rss[6:12] or rss) if rss else 0:.0f} MB in the second minute, "
                  f"{statistics.median(rss[-6:]) if rss else 0:.0f} MB in the last, max {max(rss) if rss else 0:.0f} MB.",
                  f"- Admission slots held after the soak: {s['after']['admitted']}.", "",
                  "| job | status | models created | starts | resumes |", "|---|---|---|---|---|"]
        lines += [f"| {j['id']} | {j['status']} | {j['models_created']} | {j['starts']} | {j['resumes']} |" for j in s["jobs"]]
    lines += ["", "Verdict: " + ("pass" if not result["failed"] else "FAIL: " + "; ".join(result["failed"])), ""]
    out.with_suffix(".md").write_text("\n".join(lines))


def machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "?")
    return f"{os.cpu_count()} CPU cores ({cpu}), no GPU"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("mode", choices=["load", "soak", "all"], nargs="?", default="load")
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--levels", default="1,4,16,64")
    parser.add_argument("--seconds", type=float, default=30.0, help="Per concurrency level.")
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("--max-waiting", type=int, default=16, help="The server's --max-waiting.")
    parser.add_argument("--burst", type=int, default=64)
    parser.add_argument("--minutes", type=float, default=10.0, help="Soak length.")
    parser.add_argument("--jobs", type=int, default=3, help="Fine-tuning jobs trained during the soak.")
    parser.add_argument("--kill-worker-at", type=float, default=0.3, help="Fraction of the soak.")
    parser.add_argument("--disconnect-every", type=float, default=5.0)
    parser.add_argument("-o", "--out", type=Path, help="Write OUT.json and OUT.md (e.g. docs/results/serve-load).")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))  # the soak's tiny model comes from the test fixtures

    server = Server(args.model, args.max_waiting, workers=1)
    result: dict = {"model": args.model, "machine": machine(), "command": "python bench/serve_load.py " + " ".join(sys.argv[1:])}
    try:
        if args.mode in ("load", "all"):
            result["load"] = load(server, args)
        if args.mode in ("soak", "all"):
            result["soak"] = soak(server, args)
    finally:
        server.stop()
    result["failed"] = verdict(result)
    print("verdict:", "pass" if not result["failed"] else "FAIL: " + "; ".join(result["failed"]))
    if args.out:
        write(result, args.out)
    sys.exit(1 if result["failed"] else 0)


if __name__ == "__main__":
    main()
