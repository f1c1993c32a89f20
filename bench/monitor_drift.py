"""Drift monitoring on real traffic: a BANKING77 classifier served, windows of live requests with
a growing share of out-of-domain messages (first user turns of Anthropic HH-RLHF), and what
``tunesmith monitor`` says about each window.

    python bench/monitor_drift.py --home build/active-learning/home [--run RUN] [--texts 300]
                                  [--shares 0,0.1,0.3,1.0]

Every window sends ``--texts`` texts through ``/v1/classifications`` of an in-process server
(request log with text on), then runs the monitor on that window only. The 0 % window is
BANKING77 test texts the model never trained on: it should raise no drift alert (a false alarm
if it does); the others mix in HH-RLHF questions. Printed: each test's p-value and effect, the
mean confidence, the alerts, and the seconds the monitor took. Results in --out.
"""
from __future__ import annotations

import argparse
import csv
import json
import random
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "datasets"
sys.path.insert(0, str(ROOT))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--home", type=Path, required=True, help="A tunesmith home with a BANKING77 classify run.")
    parser.add_argument("--run", default=None, help="The classify run (default: the newest classify run there).")
    parser.add_argument("--reference", type=Path, default=None, help="The run's training data, if its config cannot find it.")
    parser.add_argument("--texts", type=int, default=300)
    parser.add_argument("--shares", default="0,0.1,0.3,1.0")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=ROOT / "build" / "monitor-drift")
    args = parser.parse_args()

    from fastapi.testclient import TestClient

    from tunesmith import api
    from tunesmith.jobs.request_log import LogSettings
    from tunesmith.runs import all_runs
    from tunesmith.web.app import ServerSettings, create_app
    from tunesmith.workspace import Workspace

    workspace = Workspace(args.home.resolve())
    run = args.run or [r.id for r in all_runs(workspace) if r.info().get("recipe") == "classify"
                       and r.info().get("status") == "succeeded"][-1]
    client = TestClient(create_app(workspace, ServerSettings(require_keys=False, request_log=LogSettings(content=True))))
    rng = random.Random(args.seed)
    banking = [r["text"] for r in csv.DictReader(open(SHARED / "banking77" / "test.csv", newline="", encoding="utf-8"))]
    general = [json.loads(line)["prompt"][0]["content"] for name in ("test", "train")
               for line in open(SHARED / "hh-rlhf" / f"{name}.jsonl", encoding="utf-8")]
    general = sorted({g for g in general if len(g) < 300})  # a prompt recurs across its preference pairs
    rows = []
    for share in [float(s) for s in args.shares.split(",")]:
        n_out = round(args.texts * share)
        texts = rng.sample(banking, args.texts - n_out) + rng.sample(general, n_out)
        rng.shuffle(texts)
        started = time.time()
        for i in range(0, len(texts), 20):
            response = client.post("/v1/classifications", json={"model": run, "input": texts[i:i + 20]})
            response.raise_for_status()
        since = datetime.fromtimestamp(started, timezone.utc).isoformat()
        timer = time.time()
        report = api.monitor(run, since=since, reference=args.reference, workspace=workspace, out=args.out / f"share-{share:g}", log=lambda m: None)
        seconds = time.time() - timer
        d = report["drift"]
        row = {"out_of_domain": share, "texts": report["traffic"]["texts"],
               **{f"{k}_p": d[k]["p_value"] for k in ("length", "vocabulary", "embedding", "labels") if k in d},
               "length_ks": d["length"]["effect"], "vocabulary_js": d["vocabulary"]["effect"],
               "labels_tv": d["labels"]["effect"], "mean_confidence": d["confidence"]["mean"],
               "alerts": [a["kind"] for a in report["alerts"]], "monitor_seconds": round(seconds, 1)}
        rows.append(row)
        print(json.dumps(row), flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps({"run": run, "windows": rows}, indent=2) + "\n")
    lines = ["| out-of-domain share | length p (KS) | vocabulary p (JS) | embedding MMD p | label p (TV beyond sampling) | mean confidence | alerts | monitor s |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['out_of_domain']:.0%} | {r['length_p']:.2g} ({r['length_ks']:.2f}) | "
                     f"{r['vocabulary_p']:.2g} ({r['vocabulary_js']:.2f}) | {r['embedding_p']:.3g} | "
                     f"{r['labels_p']:.2g} ({r['labels_tv']:.2f}) | {r['mean_confidence']:.2f} | "
                     f"{', '.join(r['alerts']) or 'none'} | {r['monitor_seconds']} |")
    (args.out / "results.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
