"""The after-launch loop on real data: a served BANKING77 classifier asks for labels, gets them,
is retrained through the job queue and replaced only if the new model is better.

    python bench/retrain_loop.py --home build/active-learning/home --run RUN [--budget 500]
                                 [--alias banking77] [--out build/retrain-loop]

1. ``label suggest`` picks ``--budget`` texts of the BANKING77 training texts the run has not
   seen (entropy + k-means diversity), with the model's proposed labels.
2. A "human" labels them: the true BANKING77 label replaces each proposal (how often the model's
   proposal was already right is printed: the work pre-labelling saves).
3. ``monitor --retrain --submit`` (the same function): the run's training data + the new labels,
   filed and queued as a fine-tuning job with the run's recipe.
4. A worker takes the job, trains it, evaluates both models on the BANKING77 test split and moves
   ``--alias`` only if the new one is not worse. Printed: both accuracies, the verdict and the
   seconds of each step; written to --out/results.json.
"""
from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "datasets" / "banking77"
sys.path.insert(0, str(ROOT))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--home", type=Path, required=True, help="A tunesmith home with a BANKING77 classify run.")
    parser.add_argument("--run", required=True, help="The run serving now (its training data is not suggested again).")
    parser.add_argument("--budget", type=int, default=500)
    parser.add_argument("--alias", default="banking77")
    parser.add_argument("--data", type=Path, default=SHARED, help="Folder with BANKING77's train.csv and test.csv.")
    parser.add_argument("--out", type=Path, default=ROOT / "build" / "retrain-loop")
    args = parser.parse_args()

    from tunesmith import api
    from tunesmith.config import load_config
    from tunesmith.data.io import read_rows, write_jsonl
    from tunesmith.jobs.db import Database
    from tunesmith.jobs.fine_tuning import get_job, list_events
    from tunesmith.jobs.worker import Worker
    from tunesmith.runs import find_run
    from tunesmith.workspace import Workspace

    args.out.mkdir(parents=True, exist_ok=True)
    workspace = Workspace(args.home.resolve())
    run = find_run(args.run, workspace)
    train, test = read(args.data / "train.csv"), read(args.data / "test.csv")
    seen = {row.value["text"] for row in read_rows(Path(load_config(run.config_path).data.train))}
    truth = {r["text"]: r["label"] for r in train}
    pool, test_path = args.out / "pool.jsonl", args.out / "test.jsonl"
    write_jsonl(pool, [{"text": r["text"]} for r in train if r["text"] not in seen])
    write_jsonl(test_path, test)
    seconds = {}

    started = time.time()
    api.suggest_labels(run.id, pool, args.budget, args.out / "suggested.jsonl", workspace=workspace, log=lambda m: None)
    seconds["suggest"] = round(time.time() - started, 1)
    suggested = [json.loads(line) for line in (args.out / "suggested.jsonl").read_text().splitlines()]
    proposals_right = sum(r["label"] == truth[r["text"]] for r in suggested)
    write_jsonl(args.out / "labelled.jsonl", [{"text": r["text"], "label": truth[r["text"]]} for r in suggested])
    print(f"suggested {len(suggested)} texts in {seconds['suggest']} s; the model's proposed label was right for "
          f"{proposals_right} ({proposals_right / len(suggested):.0%})", flush=True)

    started = time.time()
    plan = api.retrain(run.id, fresh=[args.out / "labelled.jsonl"], test=test_path, alias=args.alias, submit=True,
                       workspace=workspace, log=lambda m: None)
    seconds["submit"] = round(time.time() - started, 1)
    print(f"queued {plan['job']} on {plan['data']['records']} records ({plan['data']['new']} new)", flush=True)

    started = time.time()
    db = Database.for_workspace(workspace)
    Worker(workspace, db).run_one()
    seconds["train_and_judge"] = round(time.time() - started, 1)
    job = get_job(db, plan["job"])
    verdict = json.loads(Path(plan["report"]).read_text())
    events = [e["message"] for e in list_events(db, job.id, None, 100)[0]]
    result = {"job": job.id, "status": job.status, "current": verdict.get("current"), "candidate": verdict.get("candidate"),
              "current_accuracy": verdict.get("current_score"), "candidate_accuracy": verdict.get("candidate_score"),
              "promoted": verdict.get("promoted"), "alias": verdict.get("alias"), "records": plan["data"]["records"],
              "new": plan["data"]["new"], "proposals_right": proposals_right, "suggested": len(suggested),
              "seconds": seconds, "judgement_event": next((e for e in events if e.startswith("Retraining check")), None)}
    (args.out / "results.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


def read(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as f:
        return [{"text": r["text"], "label": r["label"]} for r in csv.DictReader(f)]


if __name__ == "__main__":
    main()
