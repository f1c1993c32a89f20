"""Load on the OpenAI-compatible server: 1, 4 and 16 concurrent chat clients on loopback.

    python bench/serve_load.py [--model smollm2-135m-instruct] [--seconds 20] [--max-tokens 32]

Starts the server in this process (a fresh home under /tmp, the model taken from the
tunesmith home), then for each concurrency level runs closed-loop clients for ``--seconds``: each
client sends a chat request as soon as its previous one is answered. Prints p50 / p95 latency of
answered requests, output tokens/s, 429s (over capacity: the server refuses with Retry-After
instead of letting requests time out) and other errors. The baseline is the 1-client row of the
same run: the ratio column is throughput against it.
"""
from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import tempfile
import threading
import time
from pathlib import Path

import httpx


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--levels", default="1,4,16")
    parser.add_argument("--max-waiting", type=int, default=8, help="Requests admitted at once before 429.")
    args = parser.parse_args()

    port, secret = start_server(args.model, args.max_waiting)
    url = f"http://127.0.0.1:{port}/v1/chat/completions"
    headers = {"Authorization": f"Bearer {secret}"}
    request = {"model": args.model, "max_tokens": args.max_tokens, "temperature": 0,
               "messages": [{"role": "user", "content": "Write one sentence about the sea."}]}
    httpx.post(url, json=request, headers=headers, timeout=300)  # load the model outside the timings

    print(f"model {args.model}, {args.max_tokens} new tokens per request, {args.seconds:.0f} s per level, "
          f"server admits {args.max_waiting} requests at once")
    print(f"{'clients':>7} {'answered':>8} {'p50 s':>7} {'p95 s':>7} {'out tok/s':>9} {'vs 1':>6} {'429':>5} "
          f"{'errors':>6}")
    baseline = None
    for level in [int(x) for x in args.levels.split(",")]:
        result = run_level(url, headers, request, level, args.seconds)
        baseline = baseline or result["tokens_per_second"]
        ratio = result["tokens_per_second"] / baseline if baseline else 0.0
        print(f"{level:>7} {result['answered']:>8} {result['p50']:>7.2f} {result['p95']:>7.2f} "
              f"{result['tokens_per_second']:>9.1f} {ratio:>5.2f}x {result['rejected']:>5} {result['errors']:>6}")


def start_server(model: str, max_waiting: int) -> tuple[int, str]:
    import uvicorn

    from tunesmith import api
    from tunesmith.server.app import ServerSettings, create_app
    from tunesmith.workspace import Workspace

    source = Workspace.default()
    home = Path(tempfile.mkdtemp(prefix="tunesmith-load-"))
    workspace = Workspace(home)
    (home / "models").mkdir(parents=True)
    os.symlink(source.model_dir(model), home / "models" / model)  # the pulled model, not a copy
    secret, _ = api.create_api_key("load", workspace=workspace)
    app = create_app(workspace, ServerSettings(max_waiting=max_waiting))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.05)
    import atexit
    atexit.register(shutil.rmtree, home, True)
    return port, secret


def run_level(url: str, headers: dict, request: dict, clients: int, seconds: float) -> dict:
    latencies: list[float] = []
    counts = {"tokens": 0, "rejected": 0, "errors": 0}
    lock = threading.Lock()
    deadline = time.time() + seconds

    def client():
        with httpx.Client(timeout=120) as http:
            while time.time() < deadline:
                started = time.perf_counter()
                try:
                    response = http.post(url, json=request, headers=headers)
                except httpx.HTTPError:
                    with lock:
                        counts["errors"] += 1
                    continue
                elapsed = time.perf_counter() - started
                with lock:
                    if response.status_code == 200:
                        latencies.append(elapsed)
                        counts["tokens"] += response.json()["usage"]["completion_tokens"]
                    elif response.status_code == 429:
                        counts["rejected"] += 1
                        retry = float(response.headers.get("retry-after", "1"))
                    else:
                        counts["errors"] += 1
                if response.status_code == 429:
                    time.sleep(retry)

    started = time.time()
    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.time() - started
    ordered = sorted(latencies)
    return {"answered": len(latencies), "p50": statistics.median(ordered) if ordered else 0.0,
            "p95": ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))] if ordered else 0.0,
            "tokens_per_second": counts["tokens"] / wall, "rejected": counts["rejected"], "errors": counts["errors"]}


if __name__ == "__main__":
    main()
