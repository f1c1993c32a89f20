"""Build the general-purpose set that guards against forgetting (run from the repository root):

    python examples/general/build.py

- ``replay.jsonl``: 250 short helpful conversations (the prompt and the *chosen* answer of
  Anthropic HH-RLHF helpful-base pairs from ../shared/datasets/hh-rlhf/train.jsonl, MIT). Mixed
  into training by a recipe's ``replay:`` setting.
- ``heldout.jsonl``: 80 other such conversations, from the hh-rlhf *test* file: the general
  perplexity of ``tunesmith eval RUN --forgetting``. Disjoint from ``replay.jsonl``.
- ``questions.jsonl``: general questions with one known short answer (written for tunesmith,
  CC0), scored by whether the reply contains the answer.
Deterministic: the same inputs give byte-identical files.
"""
from __future__ import annotations

import json
import random
from pathlib import Path

HERE = Path(__file__).parent
SOURCE = HERE.parents[1].parent / "shared" / "datasets" / "hh-rlhf"
MAX_CHARS = 1200  # short conversations: replay should cost little training time

CAPITALS = {
    "France": "Paris", "Germany": "Berlin", "Italy": "Rome", "Spain": "Madrid", "Japan": "Tokyo",
    "the United Kingdom": "London", "Russia": "Moscow", "China": "Beijing", "Egypt": "Cairo",
    "Greece": "Athens", "Portugal": "Lisbon", "Ireland": "Dublin", "Austria": "Vienna", "Norway": "Oslo",
    "Sweden": "Stockholm", "Poland": "Warsaw", "Canada": "Ottawa", "Kenya": "Nairobi", "Peru": "Lima",
    "Thailand": "Bangkok",
}
FACTS = [
    ("How many days are there in a week?", "seven|7"),
    ("How many legs does a spider have?", "eight|8"),
    ("What is the largest planet in our solar system?", "Jupiter"),
    ("What planet do we live on?", "Earth"),
    ("What gas do plants absorb from the air for photosynthesis?", "carbon dioxide|CO2"),
    ("What is the chemical symbol for water?", "H2O"),
    ("At what temperature in degrees Celsius does water freeze?", "0|zero"),
    ("What colour is the sky on a clear day?", "blue"),
    ("Which animal is known as the king of the jungle?", "lion"),
    ("How many months are there in a year?", "twelve|12"),
    ("What is the opposite of hot?", "cold"),
    ("What is the opposite of up?", "down"),
    ("Which is the largest ocean on Earth?", "Pacific"),
    ("What do bees make?", "honey"),
    ("Who wrote the play Romeo and Juliet?", "Shakespeare"),
    ("How many hours are there in a day?", "24|twenty-four"),
    ("What is the first letter of the English alphabet?", "A"),
    ("What is frozen water called?", "ice"),
    ("Which star is at the centre of our solar system?", "Sun"),
    ("How many sides does a triangle have?", "three|3"),
]


def arithmetic(rng: random.Random, count: int) -> list[tuple[str, str]]:
    out = []
    for _ in range(count):
        a, b = rng.randint(2, 20), rng.randint(2, 20)
        if rng.random() < 0.5:
            out.append((f"What is {a} plus {b}?", str(a + b)))
        else:
            out.append((f"What is {a} times {b}?", str(a * b)))
    return out


def conversations(path: Path, count: int, rng: random.Random) -> list[dict]:
    records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    short = [r for r in records if sum(len(m["content"]) for m in r["prompt"] + r["chosen"]) <= MAX_CHARS]
    picked = rng.sample(short, count)
    return [{"id": r["id"], "messages": r["prompt"] + r["chosen"]} for r in picked]


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")


def main() -> None:
    rng = random.Random(0)
    write_jsonl(HERE / "replay.jsonl", conversations(SOURCE / "train.jsonl", 250, rng))
    write_jsonl(HERE / "heldout.jsonl", conversations(SOURCE / "test.jsonl", 80, rng))
    questions = [(f"What is the capital of {country}?", city) for country, city in CAPITALS.items()]
    questions += FACTS + arithmetic(rng, 20)
    write_jsonl(HERE / "questions.jsonl", [{"question": q, "answer": a} for q, a in questions])


if __name__ == "__main__":
    main()
