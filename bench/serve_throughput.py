"""Serving throughput: each engine of ``tunesmith serve`` and llama.cpp's own server, in one run.

    python bench/serve_throughput.py [--levels 1,4,8,32] [--seconds 30] [--run RUN] -o docs/results/serve-throughput

What runs, one server at a time on loopback (the home is ``TUNESMITH_HOME``, read only):

1. **Batch-1 decode, in process** (no HTTP): tokens/s after the first token, 64 tokens forced
   (end of turn ignored), 2 chat prompts alternating, on the machine's threads:
   plain HF ``generate`` fp32 on the base model (the floor); today's transformers path on the
   fine-tune ``--run`` (its LoRA unmerged, ``model.generate``); the llama.cpp engine on the run's
   GGUF export (base + GGUF LoRA adapter, as served) and on the base model's own GGUF.
2. **Concurrent streaming clients over HTTP**, closed loop (each sends its next request when its
   stream ends) for ``--seconds`` per level, on the base model: ``tunesmith serve --engine
   transformers`` (continuous batching), the same with ``--max-batch 1`` (requests taking turns:
   the path before this benchmark), ``--engine llama.cpp``, and ``python -m llama_cpp.server`` on
   the same GGUF with the same threads (the anchor). Recorded: aggregate output tokens/s (each
   answer re-tokenised with the model's tokenizer, the same count for every server), time to
   first token and whole-request latency p50/p95, errors (non-200s, transport errors).
   On a machine with CUDA and vllm, ``--engine vllm`` runs too.
3. **Different LoRA fine-tunes at once** on the transformers engine: in process, 8 rows decoded
   together (64 tokens forced) all on the base, all on one fine-tune, or spread over 4 fine-tunes
   in one batch; over HTTP, 8 clients spread over 4 runs of one base, batched together and with
   ``--max-batch 1`` (taking turns, an adapter switch per request), and 8 clients on one run.

The ratios printed are against baselines measured in the same run. Results: JSON and Markdown.
llama.cpp's own server needs its extra's packages: ``pip install sse-starlette starlette-context
pydantic-settings`` (``llama-cpp-python[server]`` without rebuilding the wheel).
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

PROMPTS = ["Write a short story about a lighthouse keeper.", "Explain how a bicycle works.",
           "Describe your ideal city in detail.", "Give me advice on learning to cook.",
           "What makes a good friend? Explain.", "Describe the water cycle.",
           "Tell me about the history of maps.", "Why do people enjoy music?"]
MAX_TOKENS = 64


# ── servers ────────────────────────────────────────────────────────────────────────────────
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, label: str, command: list[str], port: int, log: Path):
        self.label, self.port, self.url = label, port, f"http://127.0.0.1:{port}"
        self.process = subprocess.Popen(command, start_new_session=True, stdout=subprocess.DEVNULL,
                                        stderr=open(log, "w"), env=dict(os.environ, TOKENIZERS_PARALLELISM="false"))
        deadline = time.time() + 180
        while True:
            try:
                if httpx.get(f"{self.url}/v1/models", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if time.time() > deadline or self.process.poll() is not None:
                raise SystemExit(f"{label} did not start; see {log}")
            time.sleep(0.5)

    def stop(self) -> None:
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)


def tunesmith_server(engine: str, out: Path, max_batch: int = 8) -> Server:
    port = _free_port()
    return Server(f"tunesmith {engine}" + (f" --max-batch {max_batch}" if max_batch != 8 else ""),
                  [sys.executable, "-m", "tunesmith", "serve", "--engine", engine, "--max-batch", str(max_batch),
                   "--port", str(port), "--insecure-no-keys", "--workers", "0", "--max-waiting", "64",
                   "--no-request-log"], port, out / f"server-{engine}-{max_batch}.log")


def llama_cpp_server(gguf: Path, threads: int, out: Path) -> Server:
    port = _free_port()
    return Server("llama_cpp.server", [sys.executable, "-m", "llama_cpp.server", "--model", str(gguf), "--port", str(port),
                                       "--n_threads", str(threads), "--n_threads_batch", str(threads), "--n_ctx", "8192",
                                       "--model_alias", "model",
                                       # its default cuts a stream short when another request arrives; here
                                       # requests take turns to the end, as on tunesmith's llama.cpp engine
                                       "--interrupt_requests", "false"], port, out / "server-llama_cpp.log")


# ── clients ────────────────────────────────────────────────────────────────────────────────
class Tally:
    def __init__(self):
        self.lock = threading.Lock()
        self.latency, self.first, self.texts, self.errors = [], [], [], {}

    def error(self, what: str) -> None:
        with self.lock:
            self.errors[what] = self.errors.get(what, 0) + 1


def stream_once(http: httpx.Client, url: str, model: str, prompt: str, tally: Tally) -> None:
    body = {"model": model, "messages": [{"role": "user", "content": prompt}], "max_tokens": MAX_TOKENS,
            "temperature": 0, "stream": True}
    started, first, text = time.perf_counter(), None, []
    try:
        with http.stream("POST", f"{url}/v1/chat/completions", json=body) as response:
            if response.status_code != 200:
                response.read()
                tally.error(str(response.status_code))
                return
            for line in response.iter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                chunk = json.loads(line[6:])
                for choice in chunk.get("choices") or []:
                    piece = (choice.get("delta") or {}).get("content")
                    if piece:
                        first = first or time.perf_counter() - started
                        text.append(piece)
    except httpx.HTTPError as e:
        tally.error(type(e).__name__)
        return
    with tally.lock:
        tally.latency.append(time.perf_counter() - started)
        tally.first.append(first if first is not None else time.perf_counter() - started)
        tally.texts.append("".join(text))


def level(url: str, models: list[str], clients: int, seconds: float, tokenizer) -> dict:
    tally, until = Tally(), time.perf_counter() + seconds

    def client(i: int) -> None:
        with httpx.Client(timeout=600) as http:
            k = i
            while time.perf_counter() < until:
                stream_once(http, url, models[i % len(models)], PROMPTS[k % len(PROMPTS)], tally)
                k += clients
    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - started  # the last requests finish after ``until``: counted, and their time too
    tokens = sum(len(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in tally.texts)
    return {"clients": clients, "answered": len(tally.texts), "requests_per_s": round(len(tally.texts) / wall, 3),
            "output_tokens": tokens,
            "tokens_per_s": round(tokens / wall, 2), "ttft_p50_s": _q(tally.first, 0.5), "ttft_p95_s": _q(tally.first, 0.95),
            "latency_p50_s": _q(tally.latency, 0.5), "latency_p95_s": _q(tally.latency, 0.95),
            "errors": tally.errors, "wall_s": round(wall, 1)}


def _q(values: list[float], q: float) -> float | None:
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 3) if ordered else None


# ── batch-1 decode, in process ─────────────────────────────────────────────────────────────
def decode_rates(run_id: str, threads: int) -> dict:
    import torch

    from tunesmith.models import engine
    from tunesmith.models.chat import prompt_ids
    from tunesmith.models.llama_cpp import LlamaCppEngine
    from tunesmith.models.loading import load_tokenizer
    from tunesmith.models.store import ModelRef
    from tunesmith.serving.engines import GGUFFiles
    from tunesmith.serving.names import ModelNames, named
    from tunesmith.workspace import Workspace

    torch.set_num_threads(threads)
    ws = Workspace.default()
    names = ModelNames(ws, _NoJobs())
    run_target, base_target = named(names.targets(), run_id), None
    base_target = named(names.targets(), run_target.base)
    files = GGUFFiles(ws, log=lambda m: print("  " + m, file=sys.stderr))
    run_gguf, base_gguf = files.prepare(run_target), files.prepare(base_target)

    def hf(loaded) -> float:
        rates = []
        for prompt in PROMPTS[:2] * 2:
            ids = torch.tensor([prompt_ids(loaded.tokenizer, [{"role": "user", "content": prompt}])])
            with torch.inference_mode():
                started = time.perf_counter()
                loaded.model.generate(input_ids=ids, max_new_tokens=1, do_sample=False)
                first = time.perf_counter() - started
                started = time.perf_counter()
                loaded.model.generate(input_ids=ids, max_new_tokens=MAX_TOKENS, min_new_tokens=MAX_TOKENS, do_sample=False)
            rates.append((MAX_TOKENS - 1) / (time.perf_counter() - started - first))
        return round(statistics.median(rates), 2)

    def llama(gguf) -> float:
        tokenizer = load_tokenizer(ModelRef("t", gguf.tokenizer))
        eng = LlamaCppEngine(gguf.file, tokenizer, threads=threads)
        eng._use(gguf.adapter)  # noqa: SLF001 - the adapter as a request for this run would set it
        rates = []
        for prompt in PROMPTS[:2] * 2:
            ids = prompt_ids(tokenizer, [{"role": "user", "content": prompt}])
            eng.llm.reset()
            tokens, first = 0, None
            for _ in eng.llm.generate(ids, temp=0.0, top_k=0, top_p=1.0, min_p=0.0, repeat_penalty=1.0):
                tokens += 1
                if first is None:
                    first = time.perf_counter()
                if tokens == MAX_TOKENS:
                    break
            rates.append((MAX_TOKENS - 1) / (time.perf_counter() - first))
        return round(statistics.median(rates), 2)

    base = engine.load(run_target.base, ws)
    result = {"hf_generate_fp32_base": hf(base)}
    del base
    result["transformers_path_finetune"] = hf(engine.load(run_id, ws))
    result["llama_cpp_engine_finetune"] = llama(run_gguf)
    result["llama_cpp_engine_base"] = llama(base_gguf)
    result["finetune_gguf"] = f"{run_gguf.file.name} + {run_gguf.adapter.name if run_gguf.adapter else '(merged)'}"
    result["base_gguf"] = base_gguf.file.name
    report = run_gguf.file.parent / "parity.json"
    if report.is_file():
        parity = json.loads(report.read_text())
        result["finetune_parity"] = {k: parity.get(k) for k in ("passed", "identical", "examples", "identical_fraction",
                                                                  "data", "runtime", "scores")}
    result["base_gguf_path"], result["finetune_files"] = str(base_gguf.file), [str(run_gguf.file), str(run_gguf.adapter)]
    return result


def lora_steps(run_ids: list[str], base: str, threads: int, rows: int = 8) -> dict:
    """Decode tokens/s of the batching engine with ``rows`` rows, 64 tokens forced, when every row
    is the base, every row one fine-tune, or the rows spread over the fine-tunes (peft's mixed
    batch): the cost of serving different adapters in one batch, without HTTP or answer lengths."""
    import torch

    from tunesmith.models import engine
    from tunesmith.models.batching import Adapter, BatchingEngine
    from tunesmith.models.chat import prompt_ids
    from tunesmith.models.generation import Sampling
    from tunesmith.runs import find_run
    from tunesmith.workspace import Workspace

    torch.set_num_threads(threads)
    ws = Workspace.default()
    loaded = engine.load(base, ws)
    batching = BatchingEngine(loaded.model, loaded.tokenizer, max_batch=rows, max_adapters=len(run_ids))
    batching._stop_ids = []  # noqa: SLF001 - 64 tokens forced on every row, whatever it answers
    adapters = [Adapter(f"r{i}", find_run(r, ws).final_dir) for i, r in enumerate(run_ids)]
    prompts = [prompt_ids(loaded.tokenizer, [{"role": "user", "content": p}]) for p in PROMPTS[:rows]]
    sampling = Sampling(max_new_tokens=MAX_TOKENS)

    def rate(chosen: list[Adapter | None]) -> float:
        done, started = [], time.perf_counter()
        threads_ = [threading.Thread(target=lambda p=p, a=a: done.append(
            batching.generate([p], sampling, adapter=a)[0][0].tokens)) for p, a in zip(prompts, chosen)]
        for t in threads_:
            t.start()
        for t in threads_:
            t.join()
        return round(sum(done) / (time.perf_counter() - started), 2)

    rate([adapters[0]] * rows)  # every adapter loaded, warm, before the clock
    rate([adapters[i % len(adapters)] for i in range(rows)])
    result = {}
    for _ in range(2):  # alternating rounds; the median of each
        for label, chosen in (("base", [None] * rows), ("one_finetune", [adapters[0]] * rows),
                              ("mixed_finetunes", [adapters[i % len(adapters)] for i in range(rows)])):
            result.setdefault(label, []).append(rate(chosen))
    batching.close()
    return {label: statistics.median(values) for label, values in result.items()} | {"rows": rows, "runs": run_ids}


class _NoJobs:
    def targets(self):
        return []

    def run_ids(self):
        return set()

    def run_of(self, name):
        return None


# ── the run ────────────────────────────────────────────────────────────────────────────────
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--levels", default="1,4,8,32")
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--run", default=None, help="a LoRA fine-tune of the base (default: the newest quickstart run)")
    parser.add_argument("--adapters", type=int, default=4, help="fine-tunes of one base requested at once")
    parser.add_argument("--lora-steps-only", action="store_true",
                        help="only the in-process decode of mixed LoRA rows (written to lora-steps.json)")
    parser.add_argument("-o", "--output", type=Path, default=Path("docs/results/serve-throughput"))
    args = parser.parse_args()
    levels = [int(x) for x in args.levels.split(",")]
    out = args.output
    out.mkdir(parents=True, exist_ok=True)
    threads = len(os.sched_getaffinity(0))

    from tunesmith.models.loading import load_tokenizer
    from tunesmith.models.store import resolve_model
    from tunesmith.runs import all_runs
    from tunesmith.workspace import Workspace

    ws = Workspace.default()
    runs = [r for r in all_runs(ws) if r.info().get("status") == "succeeded" and r.final_dir.name == "adapter"
            and r.final_dir.exists()]
    run = next((r for r in reversed(runs) if r.id == args.run or (args.run is None and "quickstart" in r.id)), None)
    if run is None:
        raise SystemExit("no LoRA run to serve: train one first (tunesmith quickstart)")
    base = run.info()["base_model"]
    siblings = [run.id] + [r.id for r in reversed(runs) if r.info().get("base_model") == base and r.id != run.id]
    siblings = siblings[:args.adapters]
    tokenizer = load_tokenizer(resolve_model(base, ws))
    result = {"machine": _machine(threads), "base": base, "run": run.id, "max_tokens": MAX_TOKENS,
              "seconds_per_level": args.seconds, "threads": threads}

    if args.lora_steps_only:
        result["lora_steps"] = lora_steps(siblings, base, threads)
        (out / "lora-steps.json").write_text(json.dumps(result, indent=2))
        print(json.dumps(result["lora_steps"]))
        return
    print("batch-1 decode, in process ...", file=sys.stderr)
    result["decode"] = decode_rates(run.id, threads)
    print(json.dumps(result["decode"], indent=1), file=sys.stderr)
    result["lora_steps"] = lora_steps(siblings, base, threads)
    print(json.dumps(result["lora_steps"]), file=sys.stderr)

    from tunesmith.serving.engines import cuda_available, vllm_installed

    servers = [("tunesmith transformers", lambda: tunesmith_server("transformers", out)),
               ("tunesmith transformers --max-batch 1", lambda: tunesmith_server("transformers", out, max_batch=1)),
               ("tunesmith llama.cpp", lambda: tunesmith_server("llama.cpp", out)),
               ("llama_cpp.server", lambda: llama_cpp_server(Path(result["decode"]["base_gguf_path"]), threads, out))]
    if cuda_available() and vllm_installed():  # a GPU machine: vLLM against transformers on CUDA
        servers.insert(1, ("tunesmith vllm", lambda: tunesmith_server("vllm", out)))
    result["http"] = {}
    for label, start in servers:
        server = start()
        model = "model" if label == "llama_cpp.server" else base
        try:
            stream_once(httpx.Client(timeout=600), server.url, model, PROMPTS[0], Tally())  # load the model first
            wanted = [1, 8] if "--max-batch 1" in label else levels
            rows = []
            for clients in wanted:
                rows.append(level(server.url, [model], clients, args.seconds, tokenizer))
                print(label, json.dumps(rows[-1]), file=sys.stderr)
            result["http"][label] = rows
            if label.startswith("tunesmith transformers"):
                for s in siblings:  # each adapter loaded before the clock starts
                    stream_once(httpx.Client(timeout=600), server.url, s, PROMPTS[0], Tally())
                key = "lora" if label == "tunesmith transformers" else "lora_max_batch_1"
                result[key] = {"runs": siblings, "mixed_runs": level(server.url, siblings, 8, args.seconds, tokenizer)}
                if key == "lora":
                    result[key]["one_run"] = level(server.url, [run.id], 8, args.seconds, tokenizer)
                print(key, json.dumps(result[key]), file=sys.stderr)
        finally:
            server.stop()
    result["ratios"] = ratios(result)
    # this machine's paths stay out of the published results: the file names are in finetune_gguf / base_gguf
    for key in ("base_gguf_path", "finetune_files"):
        result["decode"].pop(key, None)
    (out / "results.json").write_text(json.dumps(result, indent=2))
    (out / "README.md").write_text(markdown(result))
    print(markdown(result))


def ratios(result: dict) -> dict:
    http, decode = result["http"], result["decode"]

    def at(label: str, clients: int) -> float:
        return next(r["tokens_per_s"] for r in http[label] if r["clients"] == clients)

    found = {"llama_cpp_finetune_decode_vs_transformers_path": decode["llama_cpp_engine_finetune"] / decode["transformers_path_finetune"],
             "llama_cpp_base_decode_vs_hf_fp32": decode["llama_cpp_engine_base"] / decode["hf_generate_fp32_base"],
             "transformers_8_vs_1_client": at("tunesmith transformers", 8) / at("tunesmith transformers", 1),
             "transformers_8_clients_vs_max_batch_1": at("tunesmith transformers", 8) / at("tunesmith transformers --max-batch 1", 8)}
    for clients in [r["clients"] for r in http["llama_cpp.server"]]:
        found[f"llama_cpp_engine_vs_llama_cpp_server_{clients}"] = at("tunesmith llama.cpp", clients) / at("llama_cpp.server", clients)
    if "lora_steps" in result:
        found["mixed_lora_rows_vs_one_lora_rows_decode"] = result["lora_steps"]["mixed_finetunes"] / \
            result["lora_steps"]["one_finetune"]
    if "lora" in result:
        lora = result["lora"]
        found["mixed_lora_vs_one_lora_8_clients_requests"] = lora["mixed_runs"]["requests_per_s"] / lora["one_run"]["requests_per_s"]
        if "lora_max_batch_1" in result:
            found["mixed_lora_batched_vs_taking_turns_requests"] = lora["mixed_runs"]["requests_per_s"] / \
                result["lora_max_batch_1"]["mixed_runs"]["requests_per_s"]
    return {k: round(v, 2) for k, v in found.items()}


def markdown(result: dict) -> str:
    d, r = result["decode"], result["ratios"]
    lines = [f"# Serving throughput — {result['base']}", "",
             f"{result['machine']}; {result['threads']} threads; streaming chat, greedy, up to {result['max_tokens']} tokens; "
             f"{result['seconds_per_level']:g} s per level; `python bench/serve_throughput.py`.", "",
             "## Batch-1 decode (in process, 64 tokens forced)", "", "| path | tokens/s |", "|---|---|",
             f"| plain HF `generate` fp32, base (floor) | {d['hf_generate_fp32_base']} |",
             f"| today's transformers path, fine-tune `{result['run']}` (LoRA unmerged) | {d['transformers_path_finetune']} |",
             f"| llama.cpp engine, fine-tune ({d['finetune_gguf']}) | {d['llama_cpp_engine_finetune']} |",
             f"| llama.cpp engine, base ({d['base_gguf']}) | {d['llama_cpp_engine_base']} |", "",
             f"llama.cpp engine / transformers path on the fine-tune: **{r['llama_cpp_finetune_decode_vs_transformers_path']}×**; "
             f"base vs HF fp32: **{r['llama_cpp_base_decode_vs_hf_fp32']}×**."]
    if "finetune_parity" in d:
        lines += ["", f"The fine-tune's GGUF export parity (its `parity.json`): `{json.dumps(d['finetune_parity'])}`"]
    lines += ["", "## Concurrent streaming clients (HTTP)", "",
              "| server | clients | tokens/s | TTFT p50 / p95 s | latency p50 / p95 s | answered | errors |",
              "|---|---|---|---|---|---|---|"]
    for label, rows in result["http"].items():
        for row in rows:
            lines.append(f"| {label} | {row['clients']} | {row['tokens_per_s']} | {row['ttft_p50_s']} / {row['ttft_p95_s']} | "
                         f"{row['latency_p50_s']} / {row['latency_p95_s']} | {row['answered']} | {row['errors'] or 0} |")
    if "lora" in result:
        lo = result["lora"]
        rows = [(f"all on `{result['run']}`, batched", lo["one_run"]),
                (f"spread over {len(lo['runs'])} runs, batched together", lo["mixed_runs"])]
        if "lora_max_batch_1" in result:
            rows.append((f"spread over {len(lo['runs'])} runs, `--max-batch 1` (taking turns)",
                         result["lora_max_batch_1"]["mixed_runs"]))
        lines += ["", "## LoRA fine-tunes of one base at once (transformers engine, 8 clients)", "",
                  f"Runs: {', '.join(f'`{r}`' for r in lo['runs'])}.", "",
                  "| requests | requests/s | tokens/s | TTFT p50 s | latency p50 s | errors |", "|---|---|---|---|---|---|"]
        lines += [f"| {what} | {row['requests_per_s']} | {row['tokens_per_s']} | {row['ttft_p50_s']} | {row['latency_p50_s']} | "
                  f"{row['errors'] or 0} |" for what, row in rows]
    if "lora_steps" in result:
        ls = result["lora_steps"]
        lines += ["", f"## Mixed LoRA rows, in process ({ls['rows']} rows decoded together, 64 tokens forced)", "",
                  "| rows | tokens/s |", "|---|---|", f"| all the base | {ls['base']} |",
                  f"| all one fine-tune | {ls['one_finetune']} |",
                  f"| spread over {len(ls['runs'])} fine-tunes, one batch | {ls['mixed_finetunes']} |"]
    lines += ["", "## Ratios", ""] + [f"- {k}: **{v}**" for k, v in r.items()]
    return "\n".join(lines) + "\n"


def _machine(threads: int) -> str:
    flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    model = next((line.split(":", 1)[1].strip() for line in flags.splitlines() if line.startswith("model name")), "CPU")
    simd = "AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else "no AVX2"
    return f"{model} ({simd}), {os.cpu_count()} vCPUs"


if __name__ == "__main__":
    main()
