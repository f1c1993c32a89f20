"""``tunesmith label prelabel``: a model proposes each label, a human confirms or corrects it
(weak supervision). A classify run predicts with its confidence; any other model — the base LLM
before any tuning — is prompted with the label set (and a few labelled examples) and its answer
is constrained to the labels, as the evaluation's prompted baseline is (eval/prompted.py).
Every proposal is marked with its provenance (``_prelabel``) so it is never mistaken for a
human label."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from tunesmith.data.io import read_rows, write_jsonl
from tunesmith.errors import ConfigError
from tunesmith.eval.prompted import PromptedClassifier, pick_shots
from tunesmith.labeling.suggest import read_pool
from tunesmith.models import engine
from tunesmith.models.engine import load_classifier
from tunesmith.runs import find_run, is_run_ref
from tunesmith.training.recipes import recipe_of
from tunesmith.workspace import Workspace


def prelabel(model: str, path: str | Path, out: str | Path, workspace: Workspace, labels: list[str] | None = None,
             examples: str | Path | None = None, shots_per_label: int = 1, overwrite: bool = False,
             log: Callable[[str], None] = print) -> dict[str, Any]:
    """Write ``path``'s records to ``out`` with ``label`` proposed by ``model``. For a prompted LLM
    the label set is ``labels`` or the labels of ``examples`` (a labelled file, which also gives
    ``shots_per_label`` demonstrations). Records that already have a label keep it unless ``overwrite``."""
    pool = read_pool(path)
    todo = [i for i, r in enumerate(pool.records) if overwrite or "label" not in r]
    texts = [pool.texts[i] for i in todo]
    run = find_run(model, workspace) if is_run_ref(model, workspace) else None
    if run is not None and not recipe_of(run).generates:
        classifier = load_classifier(run, workspace)
        probabilities = classifier.predict_proba(texts) if texts else None
        proposals = [(classifier.labels[int(p.argmax())], round(float(p.max()), 6)) for p in probabilities] \
            if texts else []
        method = "classifier"
    else:
        proposals, method = _prompted(model, texts, labels, examples, shots_per_label, workspace, log), "prompted-llm"
    records = [dict(r) for r in pool.records]
    for i, (label, confidence) in zip(todo, proposals):
        records[i]["label"] = label
        records[i]["_prelabel"] = {"model": model, "method": method, "status": "proposed",
                                   **({"confidence": confidence} if confidence is not None else {})}
    write_jsonl(Path(out), records)
    counts: dict[str, int] = {}
    for label, _ in proposals:
        counts[label] = counts.get(label, 0) + 1
    return {"records": len(records), "proposed": len(proposals), "kept": len(records) - len(proposals),
            "method": method, "output": str(out), "labels": dict(sorted(counts.items(), key=lambda kv: -kv[1]))}


def _prompted(model: str, texts: list[str], labels: list[str] | None, examples: str | Path | None,
              shots_per_label: int, workspace: Workspace, log) -> list[tuple[str, None]]:
    labelled = [(str(r.value["text"]), str(r.value["label"]).strip()) for r in read_rows(Path(examples))
                if not r.error and isinstance(r.value, dict) and "text" in r.value and "label" in r.value] if examples else []
    label_set = labels or sorted({label for _, label in labelled})
    if len(label_set) < 2:
        raise ConfigError("a prompted model needs the label set: --labels a,b,c or --examples LABELLED.csv")
    shots = pick_shots(labelled, label_set, shots_per_label) if labelled and shots_per_label else []
    loaded = engine.load(model, workspace)
    log(f"{loaded.name} proposes one of {len(label_set)} labels for {len(texts):,} texts "
        f"({len(shots)} demonstration(s) in the prompt)")
    classifier = PromptedClassifier(loaded.model, loaded.tokenizer, label_set, shots)
    return [(label_set[i], None) for i in classifier.predict(texts)] if texts else []
