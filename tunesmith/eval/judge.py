"""LLM-as-judge: a model compares two answers to the same prompt (pairwise), or scores each
answer against a rubric, and — where people rated the same answers — how far to trust it.

Pairwise: every pair is asked twice, once as (A, B) and once swapped as (B, A), and the two
verdicts are combined: both name the same winner → that winner; they differ → a tie, counted as
a *position flip* (the verdict followed the position, not the answer: position bias, Zheng et
al. 2023, "Judging LLM-as-a-Judge with MT-Bench and Chatbot Arena", §3.3). A verdict that
cannot be parsed is counted (``unparsed``) and its pair left out of the rates, never guessed.

Rubric: the judge gives each answer an integer on the rubric's scale (1–5 unless it says
otherwise); the report has the mean per system.

Calibration: judge–human agreement beside the verdict, Cohen's κ (sklearn) on the pairwise
verdicts and Spearman's ρ (scipy) on the rubric scores, with a warning under 0.4 — the lower
bound of "moderate" agreement on Landis & Koch's (1977) scale for κ, used for ρ alike.

The judge is any ``ChatClient`` (models/remote.py): a local model or run, or an
OpenAI-compatible endpoint. Verdicts are read from the judge's text, not from the
log-probabilities of "A" and "B": one path for local models and endpoints (the shared client
has no log-probabilities, and most hosted endpoints give none for chat), measured on the
30-pair fixture in examples/judge/ (its README has the numbers).
"""
from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from tunesmith.data.io import json_lines
from tunesmith.errors import ConfigError, DataError
from tunesmith.models.remote import ChatClient, chat_client
from tunesmith.reports import markdown_table, write_bundle
from tunesmith.workspace import Workspace

Log = Callable[[str], None]
Messages = list[dict[str, str]]

LOW_AGREEMENT = 0.4  # κ or ρ below this: "fair" or worse (Landis & Koch 1977)
VERDICTS = ("A", "B", "tie")
VERDICT_TOKENS = 12  # room for "Answer A" or "[[tie]]", not for an essay
SCORE_TOKENS = 12


@dataclass(frozen=True)
class Pair:
    """Two answers to one prompt: ``a`` from the first system, ``b`` from the second."""

    id: str
    messages: Messages  # the conversation the answers reply to
    a: str
    b: str
    reference: str | None = None


@dataclass(frozen=True)
class Rubric:
    text: str  # the criteria, as the judge reads them
    low: int = 1
    high: int = 5


@dataclass(frozen=True)
class JudgeSpec:
    """Which model judges: a local model or run, or ``model`` at an OpenAI-compatible ``base_url``
    (key from the environment variable ``key_env``); pairwise unless a ``rubric`` file is given."""

    model: str
    base_url: str | None = None
    key_env: str = "OPENAI_API_KEY"
    rubric: str | Path | None = None

    def client(self, workspace: Workspace, log: Log = print) -> ChatClient:
        return chat_client(self.model, workspace, self.base_url, self.key_env, log=log)


@dataclass(frozen=True)
class Human:
    """People's judgements: a preference per pair id, a rating per (pair id, "A" | "B")."""

    preferences: dict[str, str]
    ratings: dict[tuple[str, str], float]


# ── reading answers, rubrics and human ratings ──────────────────────────────────────────────

def read_answers(path: str | Path) -> list[dict[str, Any]]:
    """The lines of an answers file: ``{"id"?, "prompt" | "messages", "answer" | "output", "reference"?}``."""
    rows = [_answer_row(row, where) for where, row in json_lines(path)]
    if not rows:
        raise DataError(f"{path}: no answers")
    return rows


def _answer_row(row: Any, where: str) -> dict[str, Any]:
    if not isinstance(row, dict):
        raise DataError(f"{where}: a line must be a JSON object")
    if isinstance(row.get("messages"), list) and row["messages"]:
        messages = row["messages"]
        if not all(isinstance(m, dict) and isinstance(m.get("content"), str) and m.get("role") for m in messages):
            raise DataError(f"{where}: messages: each needs a role and a string content")
    elif isinstance(row.get("prompt"), str) and row["prompt"].strip():
        messages = [{"role": "user", "content": row["prompt"]}]
    else:
        raise DataError(f"{where}: needs a prompt (a string) or messages (a list)")
    answer = row.get("answer", row.get("output"))
    if not isinstance(answer, str):
        raise DataError(f"{where}: needs an answer (or output): a string")
    reference = row.get("reference")
    if reference is not None and not isinstance(reference, str):
        raise DataError(f"{where}: reference must be a string")
    return {"id": None if row.get("id") is None else str(row["id"]), "messages": messages, "answer": answer,
            "reference": reference}


def pair_up(a_rows: list[dict[str, Any]], b_rows: list[dict[str, Any]], a_name: str = "A",
            b_name: str = "B") -> list[Pair]:
    """Line A and B up by ``id`` when both files have one on every line, else by order; the
    prompts must match either way (the first line that does not is named)."""
    by_id = all(r["id"] for r in a_rows) and all(r["id"] for r in b_rows)
    if by_id:
        b_by_id = {r["id"]: r for r in b_rows}
        missing = [r["id"] for r in a_rows if r["id"] not in b_by_id]
        extra = sorted(set(b_by_id) - {r["id"] for r in a_rows})
        if missing or extra:
            raise DataError(f"{a_name} and {b_name} do not hold the same ids: "
                            + "; ".join(filter(None, [missing and f"only in {a_name}: {missing[:5]}",
                                                      extra and f"only in {b_name}: {extra[:5]}"])))
        matched = [(r, b_by_id[r["id"]]) for r in a_rows]
    else:
        if len(a_rows) != len(b_rows):
            raise DataError(f"{a_name} has {len(a_rows)} answers and {b_name} {len(b_rows)}; without an id on "
                            "every line they are paired by order, so they must have as many")
        matched = list(zip(a_rows, b_rows))
    pairs = []
    for n, (a, b) in enumerate(matched, 1):
        if _prompt_text(a["messages"]) != _prompt_text(b["messages"]):
            where = f"id {a['id']!r}" if by_id else f"line {n}"
            raise DataError(f"{where}: the prompt in {a_name} differs from the one in {b_name}; "
                            "both files must answer the same prompts")
        pairs.append(Pair(a["id"] or str(n), a["messages"], a["answer"], b["answer"], a["reference"] or b["reference"]))
    return pairs


def load_rubric(path: str | Path) -> Rubric:
    """A rubric file: YAML (``criteria``: text or a list, ``scale``: {score: meaning}) or
    Markdown/plain text read as it stands (its scale from lines that start with a score)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"--rubric {path}: no such file")
    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() in (".yaml", ".yml"):
        return _yaml_rubric(text, path)
    scores = [int(m) for m in re.findall(r"^\s*[-*]?\s*\**(\d+)\**\s*[:.)=\-–]", text, re.M)]
    if not text.strip():
        raise ConfigError(f"--rubric {path}: the file is empty")
    return Rubric(text.strip(), min(scores), max(scores)) if len(set(scores)) >= 2 else Rubric(text.strip())


def _yaml_rubric(text: str, path: Path) -> Rubric:
    import yaml

    try:
        spec = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError(f"--rubric {path}: not YAML ({e})") from None
    if not isinstance(spec, dict) or not spec.get("criteria"):
        raise ConfigError(f"--rubric {path}: needs criteria (a text or a list of texts), and optionally a scale")
    criteria = spec["criteria"]
    lines = [f"- {c}" for c in criteria] if isinstance(criteria, list) else [str(criteria)]
    scale = spec.get("scale") or {1: "poor", 5: "excellent"}
    try:
        scores = sorted(int(k) for k in scale)
    except (TypeError, ValueError):
        raise ConfigError(f"--rubric {path}: scale: the keys must be integer scores, e.g. {{1: poor, 5: excellent}}") from None
    if len(scores) < 2:
        raise ConfigError(f"--rubric {path}: scale: give at least the lowest and the highest score")
    lines += ["", "Scale:"] + [f"{k}: {scale.get(k, scale.get(str(k)))}" for k in scores]
    return Rubric("Criteria:\n" + "\n".join(lines), scores[0], scores[-1])


def read_human(path: str | Path) -> list[dict[str, Any]]:
    """Human judgements, one JSON object a line: ``{"id", "preference": "A"|"B"|"tie"}`` for a
    pair, or ``{"id", "system": "A"|"B", "rating": number}`` for one answer."""
    rows = []
    for where, row in json_lines(path, "--human "):
        if not isinstance(row, dict) or row.get("id") is None:
            raise DataError(f"{where}: needs an id (the pair's)")
        if "preference" in row and row["preference"] not in VERDICTS:
            raise DataError(f"{where}: preference must be A, B or tie")
        if "rating" in row and (row.get("system") not in ("A", "B") or not isinstance(row["rating"], (int, float))):
            raise DataError(f"{where}: a rating needs system (A or B) and a number")
        if "preference" not in row and "rating" not in row:
            raise DataError(f"{where}: give a preference (A, B, tie) or a system and its rating")
        rows.append(row)
    return rows


def human_judgements(rows: Sequence[dict[str, Any]]) -> Human:
    """Preferences as given; where a pair has only ratings of both answers, the higher-rated one
    is preferred (equal ratings: a tie)."""
    preferences = {str(r["id"]): r["preference"] for r in rows if "preference" in r}
    ratings = {(str(r["id"]), r["system"]): float(r["rating"]) for r in rows if "rating" in r}
    for (pair_id, side), rating in ratings.items():
        other = ratings.get((pair_id, "B" if side == "A" else "A"))
        if side == "A" and other is not None and pair_id not in preferences:
            preferences[pair_id] = "A" if rating > other else "B" if rating < other else "tie"
    return Human(preferences, ratings)


def reviews_as_human(pairs: Sequence[Pair], reviews: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The review queue's ratings (-1 bad, 0 unrated, 1 good) of the very answers being judged,
    matched by conversation and answer text. A correction with no rating counts as -1 (the
    reviewer rewrote the answer); an unrated, uncorrected item says nothing and is skipped."""
    rated: dict[tuple[str, str], float] = {}
    for r in reviews:
        rating = r.get("rating") or (-1 if r.get("correction") else 0)
        if rating:
            rated[(_prompt_text(r.get("messages") or []), " ".join(str(r.get("answer", "")).split()))] = rating
    rows = []
    for pair in pairs:
        for side, answer in (("A", pair.a), ("B", pair.b)):
            rating = rated.get((_prompt_text(pair.messages), " ".join(answer.split())))
            if rating is not None:
                rows.append({"id": pair.id, "system": side, "rating": rating})
    return rows


# ── asking the judge ────────────────────────────────────────────────────────────────────────

PAIRWISE_SYSTEM = ("You are an impartial judge. You compare two answers to the same request and say which "
                   "one is better: more faithful to the request (no invented details), more complete on what "
                   "matters, and more concise. The order of the answers says nothing about their quality.")


def pairwise_messages(pair: Pair, swapped: bool = False) -> Messages:
    first, second = (pair.b, pair.a) if swapped else (pair.a, pair.b)
    reference = f"[Reference answer]\n{pair.reference}\n\n" if pair.reference else ""
    return [{"role": "system", "content": PAIRWISE_SYSTEM},
            {"role": "user", "content": f"[Request]\n{_prompt_text(pair.messages, flat=False)}\n\n{reference}"
                                        f"[Answer A]\n{first}\n\n[Answer B]\n{second}\n\n"
                                        "Which answer is better? Reply with only A, B or tie."}]


def rubric_messages(pair: Pair, answer: str, rubric: Rubric) -> Messages:
    reference = f"[Reference answer]\n{pair.reference}\n\n" if pair.reference else ""
    return [{"role": "system", "content": "You are an impartial judge. You score an answer against a rubric."},
            {"role": "user", "content": f"{rubric.text}\n\n[Request]\n{_prompt_text(pair.messages, flat=False)}\n\n"
                                        f"{reference}[Answer]\n{answer}\n\n"
                                        f"Score the answer from {rubric.low} to {rubric.high}. "
                                        "Reply with only the score."}]


_BRACKETED = re.compile(r"\[\[\s*(A|B|tie)\s*\]\]", re.I)
_NAMED = re.compile(r"(?i:\b(?:verdict|winner|choice|better answer|best answer|answer|option))\s*(?:is|:|-|=)?\s*"
                    r"[*\"'(\[]*(A|B|[Tt]ie)\b")
_LEADING = re.compile(r"^[\s*\"'(\[]*(A|B)(?:\s*$|\s*[).:,\]*\"']|\s+(?:is|wins|was)\b)")
_TIE = re.compile(r"(?i)^[\s*\"'(\[]*(?:tie|equal|both (?:are )?(?:equally )?(?:good|bad|fine))\b")


def parse_verdict(text: str) -> str | None:
    """``A``, ``B`` or ``tie`` from a judge's reply, or None when it names none clearly.

    >>> [parse_verdict(t) for t in ["A", " b", "[[B]]", "Answer B is better.", "Tie.", "A better summary is B", "I cannot tell"]]
    ['A', None, 'B', 'B', 'tie', None, None]
    """
    text = text.strip()
    for pattern in (_BRACKETED, _LEADING, _NAMED):
        found = pattern.search(text)
        if found:
            verdict = found.group(1)
            return "tie" if verdict.lower() == "tie" else verdict.upper()
    return "tie" if _TIE.search(text) else None


def parse_score(text: str, low: int = 1, high: int = 5) -> int | None:
    """The score on ``low``..``high`` in a judge's reply, or None.

    >>> [parse_score(t) for t in ["4", "Score: 5/5", "I'd give it a 3.", "7", "3 out of 5", "good"]]
    [4, 5, 3, None, 3, None]
    """
    for found in re.finditer(r"(?<![\d.])(\d+)(?:\s*(?:/|out of)\s*\d+)?(?![\d.]\d)", text):
        score = int(found.group(1))
        if low <= score <= high:
            return score
    return None


def combine(first: str | None, swapped: str | None) -> tuple[str | None, bool]:
    """The pair's verdict from the verdict on (A, B) and the one on (B, A) (in its own letters),
    and whether it flipped with the positions.

    >>> combine("A", "B"), combine("A", "A"), combine("tie", "tie"), combine("A", "tie"), combine(None, "A")
    (('A', False), ('tie', True), ('tie', False), ('tie', True), (None, False))
    """
    if first is None or swapped is None:
        return None, False
    unswapped = {"A": "B", "B": "A", "tie": "tie"}[swapped]
    return (first, False) if first == unswapped else ("tie", True)


def judge_pairwise(pairs: Sequence[Pair], client: ChatClient) -> list[dict[str, Any]]:
    """Each pair judged twice, positions swapped; the judge's replies kept beside the verdicts."""
    conversations = [pairwise_messages(p, swapped) for p in pairs for swapped in (False, True)]
    replies = client.chat_many(conversations, max_tokens=VERDICT_TOKENS, temperature=0.0)
    out = []
    for i, pair in enumerate(pairs):
        first, second = replies[2 * i], replies[2 * i + 1]
        verdict, flipped = combine(parse_verdict(first), parse_verdict(second))
        out.append({"id": pair.id, "verdict": verdict, "flipped": flipped, "replies": [first, second],
                    "verdicts": [parse_verdict(first), parse_verdict(second)]})
    return out


def judge_rubric(pairs: Sequence[Pair], client: ChatClient, rubric: Rubric) -> list[dict[str, Any]]:
    """Each answer of each pair scored on the rubric."""
    conversations = [rubric_messages(p, answer, rubric) for p in pairs for answer in (p.a, p.b)]
    replies = client.chat_many(conversations, max_tokens=SCORE_TOKENS, temperature=0.0)
    return [{"id": p.id, "scores": {"A": parse_score(replies[2 * i], rubric.low, rubric.high),
                                    "B": parse_score(replies[2 * i + 1], rubric.low, rubric.high)},
             "replies": replies[2 * i: 2 * i + 2]} for i, p in enumerate(pairs)]


# ── aggregation and calibration ─────────────────────────────────────────────────────────────

def pairwise_summary(verdicts: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Win / loss / tie rates of A over the pairs with a verdict, the flip rate, and the share of
    single verdicts naming the answer shown first (0.5: no lean to either position)."""
    judged = [v for v in verdicts if v["verdict"] is not None]
    n = len(judged)
    singles = [(v["verdicts"][0], v["verdicts"][1]) for v in verdicts]
    named = [x for pair in singles for x in pair if x in ("A", "B")]
    return {"pairs": len(verdicts), "judged": n, "unparsed": len(verdicts) - n,
            "unparsed_replies": sum(x is None for pair in singles for x in pair),
            "a_wins": _rate(sum(v["verdict"] == "A" for v in judged), n),
            "b_wins": _rate(sum(v["verdict"] == "B" for v in judged), n),
            "ties": _rate(sum(v["verdict"] == "tie" for v in judged), n),
            "flip_rate": _rate(sum(v["flipped"] for v in judged), n),
            "first_position_rate": _rate(sum(x == "A" for x in named), len(named))}


def rubric_summary(scores: Sequence[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {"unparsed": sum(s["scores"][k] is None for s in scores for k in ("A", "B"))}
    for side in ("A", "B"):
        given = [s["scores"][side] for s in scores if s["scores"][side] is not None]
        out[f"mean_{side.lower()}"] = sum(given) / len(given) if given else None
    return out


def pairwise_agreement(verdicts: Sequence[dict[str, Any]], human: Human) -> dict[str, Any] | None:
    """Cohen's κ and raw agreement of the judge's verdicts with people's, on the pairs both judged."""
    from sklearn.metrics import cohen_kappa_score

    both = [(v["verdict"], human.preferences[v["id"]]) for v in verdicts
            if v["verdict"] is not None and v["id"] in human.preferences]
    if not both:
        return None
    judge, people = zip(*both)
    kappa = float(cohen_kappa_score(people, judge, labels=list(VERDICTS)))
    kappa = None if math.isnan(kappa) else kappa
    return {"pairs": len(both), "kappa": kappa, "accuracy": sum(j == p for j, p in both) / len(both),
            "human_pairs": len(human.preferences), "warning": _warning("Cohen's κ", kappa)}


def rubric_agreement(scores: Sequence[dict[str, Any]], human: Human) -> dict[str, Any] | None:
    """Spearman's ρ between the judge's scores and people's ratings of the same answers."""
    from scipy.stats import spearmanr

    both = [(s["scores"][side], human.ratings[(s["id"], side)]) for s in scores for side in ("A", "B")
            if s["scores"][side] is not None and (s["id"], side) in human.ratings]
    if len(both) < 3:
        return {"answers": len(both), "spearman": None, "warning": "fewer than 3 answers rated by both: no ρ"} if both else None
    judge, people = zip(*both)
    rho = spearmanr(judge, people).statistic
    rho = None if math.isnan(rho) else float(rho)  # nan: one side gave every answer the same score
    return {"answers": len(both), "spearman": rho, "warning": _warning("Spearman's ρ", rho)}


def _warning(name: str, value: float | None) -> str | None:
    if value is None:
        return f"{name} is undefined (one side gave a single verdict throughout): the judge cannot be calibrated here"
    if value < LOW_AGREEMENT:
        return (f"low agreement with people ({name} {value:.2f} < {LOW_AGREEMENT}): "
                "do not trust this judge's verdict on these answers")
    return None


def _rate(count: int, total: int) -> float | None:
    return count / total if total else None


# ── one judging, start to end ───────────────────────────────────────────────────────────────

def judge_pairs(pairs: Sequence[Pair], client: ChatClient, rubric: Rubric | None = None,
                human: Human | None = None, names: tuple[str, str] = ("A", "B"),
                log: Log = print) -> dict[str, Any]:
    """Judge ``pairs`` (pairwise, or on ``rubric``), with agreement with ``human`` where given."""
    started = time.time()
    report: dict[str, Any] = {"judge": client.name, "systems": {"A": names[0], "B": names[1]},
                              "mode": "rubric" if rubric else "pairwise", "pairs": len(pairs)}
    if rubric:
        log(f"judge {client.name}: scoring {2 * len(pairs)} answers on the rubric ({rubric.low}–{rubric.high})")
        scores = judge_rubric(pairs, client, rubric)
        report |= {"rubric": {"low": rubric.low, "high": rubric.high}, "summary": rubric_summary(scores),
                   "examples": scores,
                   "agreement": rubric_agreement(scores, human) if human else None}
    else:
        log(f"judge {client.name}: {len(pairs)} pairs, each asked twice with the answers swapped")
        verdicts = judge_pairwise(pairs, client)
        report |= {"summary": pairwise_summary(verdicts), "examples": verdicts,
                   "agreement": pairwise_agreement(verdicts, human) if human else None}
    report["seconds"] = round(time.time() - started, 1)
    report["lines"] = summary_lines(report)
    return report


def judge_files(a: str | Path, b: str | Path, spec: JudgeSpec, workspace: Workspace,
                human_rows: Sequence[dict[str, Any]] = (), reviews: Sequence[dict[str, Any]] | None = None,
                out_dir: Path | None = None, log: Log = print) -> dict[str, Any]:
    """``tunesmith judge A.jsonl B.jsonl``: every file read and checked before the judge is
    loaded or called, then judged; judge.json / judge.md written to ``out_dir``. ``reviews``:
    the review queue's items, matched to these answers (``reviews_as_human``)."""
    pairs = pair_up(read_answers(a), read_answers(b), str(a), str(b))
    rubric = load_rubric(spec.rubric) if spec.rubric else None
    rows = list(human_rows) + (reviews_as_human(pairs, reviews) if reviews else [])
    human = human_judgements(rows) if rows else None
    report = judge_pairs(pairs, spec.client(workspace, log), rubric, human, (Path(a).stem, Path(b).stem), log)
    report["files"] = {"A": str(a), "B": str(b)}
    if human is not None and not report["agreement"]:
        log("warning: no pair has both a parsed verdict and a human judgement: no agreement to report")
    if out_dir:
        report["report_files"] = write_bundle(out_dir, "judge", data=report, markdown=to_markdown(report) + "\n")
    return report


def judge_evaluation(report: dict[str, Any], spec: JudgeSpec, workspace: Workspace,
                     log: Log = print) -> dict[str, Any]:
    """``tunesmith eval RUN --judge MODEL``: the fine-tune's outputs (A) against each other
    system's (B: base, few-shot, ``--against``) on the evaluated examples, from the report's
    ``samples`` (which hold every example's outputs when a judge is asked for). The judge sees
    the last user turn and the reference."""
    rubric = load_rubric(spec.rubric) if spec.rubric else None
    samples = report["samples"]
    others = [k for k in samples[0] if k not in ("prompt", "reference", "tuned")] if samples else []
    client = spec.client(workspace, log)
    comparisons = []
    for key in others:
        pairs = [Pair(str(i), [{"role": "user", "content": s["prompt"]}], s["tuned"], s[key], s["reference"])
                 for i, s in enumerate(samples, 1)]
        name = report["metrics"].get(key, {}).get("name") or {"base": "base", "few_shot": "base, few-shot"}.get(key, key)
        comparisons.append(judge_pairs(pairs, client, rubric, None, ("fine-tuned", name), log) | {"other_key": key})
    return {"judge": client.name, "mode": "rubric" if rubric else "pairwise", "comparisons": comparisons}


# ── report text ─────────────────────────────────────────────────────────────────────────────

def summary_lines(report: dict[str, Any]) -> list[str]:
    """The verdict and its calibration as sentences (judge.md, the eval report, the CLI)."""
    a, b, s = report["systems"]["A"], report["systems"]["B"], report["summary"]
    if report["mode"] == "rubric":
        lines = [f"Rubric scores ({report['rubric']['low']}–{report['rubric']['high']}) by `{report['judge']}`: "
                 f"{a} {_num(s['mean_a'])}, {b} {_num(s['mean_b'])} (mean; {s['unparsed']} replies unparsed)."]
    else:
        lines = [f"Judge `{report['judge']}` on {s['pairs']} pairs, each asked twice with the answers swapped: "
                 f"{a} wins {_pct(s['a_wins'])}, {b} wins {_pct(s['b_wins'])}, ties {_pct(s['ties'])} "
                 f"(of {s['judged']} judged; {s['unparsed']} pairs with an unparsed reply).",
                 f"Position flips: {_pct(s['flip_rate'])} of pairs changed verdict when the answers swapped places; "
                 f"the answer shown first was named in {_pct(s['first_position_rate'])} of single verdicts."]
    agreement = report.get("agreement")
    if agreement:
        if report["mode"] == "rubric":
            lines.append(f"Agreement with people: Spearman's ρ {_num(agreement['spearman'])} "
                         f"on {agreement['answers']} answers rated by both.")
        else:
            lines.append(f"Agreement with people: Cohen's κ {_num(agreement['kappa'])}, same verdict on "
                         f"{_pct(agreement['accuracy'])} of {agreement['pairs']} pairs.")
        if agreement.get("warning"):
            lines.append(f"Warning: {agreement['warning']}.")
    return lines


def to_markdown(report: dict[str, Any]) -> str:
    a, b = report["systems"]["A"], report["systems"]["B"]
    lines = [f"# Judge: {a} (A) vs {b} (B)", "", *summary_lines(report), ""]
    if report["mode"] == "rubric":
        rows = [[e["id"], _num(e["scores"]["A"]), _num(e["scores"]["B"])] for e in report["examples"]]
        return "\n".join(lines + markdown_table(["id", f"{a} (A)", f"{b} (B)"], rows))
    rows = [[e["id"], e["verdict"] or "unparsed", " / ".join(v or "?" for v in e["verdicts"]),
             "yes" if e["flipped"] else ""] for e in report["examples"]]
    return "\n".join(lines + markdown_table(["id", "verdict", "A-first / B-first replies", "flip"], rows))


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{value:.0%}"


def _num(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f}"


def _prompt_text(messages: Sequence[dict[str, Any]], flat: bool = True) -> str:
    """The conversation as the judge reads it (``flat``: whitespace-normalised, for matching)."""
    parts = [m["content"] if len(messages) == 1 else f"{m['role']}: {m['content']}" for m in messages]
    text = "\n".join(parts)
    return " ".join(text.split()) if flat else text
