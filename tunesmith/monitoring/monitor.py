"""``tunesmith monitor MODEL``: one report on a served model over a time window: traffic,
latency and errors from the request log, ratings from the review queue, and drift of its live
inputs against its training data (lengths, vocabulary, meaning; for classifiers the predicted
labels and their confidence). Alerts are the thresholds of MonitorSettings that were crossed;
the report says when a retrain is due. Written as JSON, a self-contained HTML page and PNGs in
``<home>/monitor/<model>/<time>/``.
"""
from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from tunesmith.errors import ConfigError
from tunesmith.files import write_atomic
from tunesmith.jobs.db import Database
from tunesmith.models.embeddings import embed, load_encoder
from tunesmith.models.engine import load_classifier
from tunesmith.monitoring import drift, plots
from tunesmith.monitoring.html import to_html
from tunesmith.monitoring.reference import Reference, load_reference
from tunesmith.monitoring.settings import MonitorSettings
from tunesmith.monitoring.traffic import feedback, logged_requests, models_with_traffic, traffic
from tunesmith.reports import write_bundle
from tunesmith.training.recipes import recipe_of
from tunesmith.workspace import Workspace

# Alerts that mean the model no longer fits its traffic: retraining (monitor --retrain) may help.
RETRAIN_ALERTS = {"input_length_drift", "vocabulary_drift", "embedding_drift", "label_drift", "low_confidence",
                  "negative_feedback"}


_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*([dhm])")


def parse_since(text: str | None, now: float | None = None) -> float:
    """'7d', '12h', '30m', an ISO date/time (UTC), or None (the last 7 days) → epoch seconds.

    >>> parse_since("2d", now=1_000_000.0)
    827200.0
    >>> parse_since("2026-11-01")
    1793491200.0
    """
    now = time.time() if now is None else now
    if not text:
        return now - 7 * 86400
    match = _DURATION.fullmatch(text.strip())
    if match:
        return now - _seconds(match)
    from datetime import datetime, timezone

    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ConfigError(f"--since {text!r}: give a duration (7d, 12h, 30m) or an ISO date (2026-11-01)") from None
    return (moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)).timestamp()


def parse_duration(text: str) -> float:
    """'1d', '6h', '30m' → seconds.

    >>> parse_duration("6h")
    21600.0
    """
    match = _DURATION.fullmatch(text.strip())
    if not match or float(match.group(1)) <= 0:
        raise ConfigError(f"{text!r}: give a duration such as 1d, 6h or 30m")
    return _seconds(match)


def _seconds(match: re.Match) -> float:
    return float(match.group(1)) * {"d": 86400, "h": 3600, "m": 60}[match.group(2)]


def monitor(model: str, workspace: Workspace, settings: MonitorSettings, since: float,
            reference_path: str | Path | None = None, out: Path | None = None,
            log: Callable[[str], None] = print) -> dict[str, Any]:
    db = Database.for_workspace(workspace)
    rows = logged_requests(db, model, since)
    report: dict[str, Any] = {"model": model, "generated_at": time.time(), "since": since,
                              "settings": settings.model_dump(), "traffic": traffic(rows, since),
                              "feedback": feedback(db, model, since), "drift": {}, "notes": []}
    figures: dict[str, bytes] = {}
    if not rows:
        report["notes"].append(_no_traffic_note(db, model, since))
    served = [r for r in rows if r.status == 200]
    if served:
        figures["latency"] = plots.latency([r.latency_ms for r in served])
    live = [r.input for r in served if r.input is not None]
    reference = _reference(model, workspace, db, reference_path, report["notes"])
    if reference is not None:
        report["reference"] = {"source": reference.source, "inputs": len(reference.inputs),
                               "run": reference.run.id if reference.run else None}
        _input_drift(reference, live, settings, workspace, report, figures, log)
        _label_drift(reference, served, settings, workspace, report, figures)
    report["alerts"] = alerts(report, settings)
    report["retrain_recommended"] = any(a["kind"] in RETRAIN_ALERTS for a in report["alerts"])
    report["files"] = write(report, figures, out or _default_out(workspace, model))
    return report


def _no_traffic_note(db: Database, model: str, since: float) -> str:
    others = models_with_traffic(db, since)
    if not others:
        return "no requests logged in this window for any model (is `tunesmith serve` running with the request log on?)"
    listed = ", ".join(f"{name} ({count})" for name, count in list(others.items())[:8])
    return f"no requests logged for {model!r} in this window; models with traffic: {listed}"


def _reference(model, workspace, db, path, notes) -> Reference | None:
    try:
        return load_reference(model, workspace, db, path)
    except ConfigError as e:
        if path is not None:
            raise
        notes.append(f"drift not tested: {e}")
        return None


def _input_drift(reference: Reference, live: list[str], settings: MonitorSettings, workspace: Workspace,
                 report: dict, figures: dict, log) -> None:
    if len(live) < settings.min_requests:
        report["notes"].append(
            f"input drift not tested: {len(live)} live input(s) with their text, {settings.min_requests} needed "
            "(the server logs text only with `tunesmith serve --log-content`)")
        return
    report["drift"]["length"] = drift.length_drift(reference.inputs, live)
    report["drift"]["vocabulary"] = drift.vocabulary_drift(reference.inputs, live)
    figures["lengths"] = plots.lengths(reference.inputs, live)

    rng = np.random.default_rng(settings.seed)

    def sample(texts: list[str]) -> list[str]:  # the permutation test is quadratic in its inputs
        return [texts[i] for i in sorted(rng.choice(len(texts), min(len(texts), settings.max_samples), replace=False))]

    tokenizer, encoder = load_encoder(settings.embedding_model, workspace, log)
    ref_vectors, live_vectors = embed(sample(reference.inputs), tokenizer, encoder), embed(sample(live), tokenizer, encoder)
    report["drift"]["embedding"] = drift.embedding_drift(ref_vectors, live_vectors, settings.permutations, settings.seed) \
        | {"model": settings.embedding_model}


def _label_drift(reference: Reference, served: list, settings: MonitorSettings, workspace: Workspace, report: dict,
                 figures: dict) -> None:
    predicted = [(r.label, r.confidence) for r in served if r.label is not None]
    if not predicted or not reference.labels:
        return
    report["drift"]["confidence"] = drift.confidence_summary([c for _, c in predicted], settings.low_confidence,
                                                             _reference_confidence(reference, settings, workspace))
    if len(predicted) < settings.min_requests:
        report["notes"].append(f"label drift not tested: {len(predicted)} prediction(s), {settings.min_requests} needed")
        return
    report["drift"]["labels"] = drift.label_drift(reference.labels, [label for label, _ in predicted], seed=settings.seed)
    figures["labels"] = plots.labels(report["drift"]["labels"]["largest_changes"])


def _reference_confidence(reference: Reference, settings: MonitorSettings, workspace: Workspace) -> list[float] | None:
    """The classifier's confidence on (a sample of) its training inputs: what 'sure' means for it."""
    if reference.run is None or recipe_of(reference.run).generates:
        return None

    rng = np.random.default_rng(settings.seed)
    picked = rng.choice(len(reference.inputs), min(len(reference.inputs), settings.max_samples), replace=False)
    classifier = load_classifier(reference.run, workspace)
    return classifier.predict_proba([reference.inputs[i] for i in sorted(picked)]).max(axis=1).tolist()


def alerts(report: dict[str, Any], s: MonitorSettings) -> list[dict[str, Any]]:
    found = []

    def alert(kind: str, message: str, value: float, threshold: float) -> None:
        found.append({"kind": kind, "message": message, "value": value, "threshold": threshold})

    t = report["traffic"]
    if t["requests"] and t["error_rate"] > s.max_error_rate:
        alert("error_rate", f"{t['error_rate']:.1%} of requests failed", t["error_rate"], s.max_error_rate)
    if s.max_latency_p95_ms and t["latency_ms"] and t["latency_ms"]["p95"] > s.max_latency_p95_ms:
        alert("latency", f"p95 latency {t['latency_ms']['p95']:.0f} ms", t["latency_ms"]["p95"], s.max_latency_p95_ms)
    for key, kind, what in (("length", "input_length_drift", "input lengths"), ("vocabulary", "vocabulary_drift", "vocabulary"),
                            ("labels", "label_drift", "predicted labels")):
        test = report["drift"].get(key)
        if test and test["p_value"] < s.p_value and test["effect"] >= s.min_effect:
            alert(kind, f"{what} moved (p={test['p_value']:.2g}, effect {test['effect']:.2f})", test["p_value"], s.p_value)
    embedding = report["drift"].get("embedding")
    if embedding and embedding["p_value"] < s.p_value:
        alert("embedding_drift", f"the meaning of inputs moved (MMD p={embedding['p_value']:.2g})", embedding["p_value"], s.p_value)
    confidence = report["drift"].get("confidence")
    if confidence and "drop" in confidence and confidence["drop"] >= s.max_confidence_drop \
            and confidence["p_value_lower"] < s.p_value:
        alert("low_confidence", f"mean confidence {confidence['mean']:.2f}, {confidence['drop']:.2f} below its "
              f"{confidence['reference_mean']:.2f} on the training inputs", confidence["drop"], s.max_confidence_drop)
    elif confidence and s.min_mean_confidence is not None and confidence["mean"] < s.min_mean_confidence:
        alert("low_confidence", f"mean confidence {confidence['mean']:.2f}, {confidence['low_share']:.0%} below "
              f"{s.low_confidence}", confidence["mean"], s.min_mean_confidence)
    f = report["feedback"]
    if f["rated"] >= s.min_feedback and f["bad_share"] > s.max_negative_feedback:
        alert("negative_feedback", f"{f['bad_share']:.0%} of {f['rated']} rated answers were rated bad",
              f["bad_share"], s.max_negative_feedback)
    return found


def write(report: dict[str, Any], figures: dict[str, bytes], out: Path) -> dict[str, str]:
    out.mkdir(parents=True, exist_ok=True)
    files = {name: str(write_atomic(out / f"{name}.png", png)) for name, png in figures.items()}
    files |= {"html": str(out / "report.html"), "json": str(out / "report.json")}  # the JSON lists itself
    write_bundle(out, "report", data=report | {"files": files}, html=to_html(report, figures))
    return files


def _default_out(workspace: Workspace, model: str) -> Path:
    return workspace.monitor_dir(model) / time.strftime("%Y%m%d-%H%M%S")
