"""Rebuild data.jsonl from BANKING77 (PolyAI, CC BY 4.0): support-ticket routing as chat.

    python examples/support-routing/build.py ../shared/datasets/banking77/train.csv

Eight intents, 60 customer messages each (random.Random(0)), each turned into a conversation:
a system prompt that lists the intents, the customer's message, and the intent as the answer
(also in `final_answer`, for exact-match evaluation).
"""
import csv
import json
import random
import sys
from pathlib import Path

INTENTS = ["card_arrival", "lost_or_stolen_card", "exchange_rate", "request_refund",
           "top_up_failed", "change_pin", "terminate_account", "cash_withdrawal_charge"]
PER_INTENT = 60
SYSTEM = ("You route customer messages for a bank's support team. Reply with exactly one intent "
          "from this list and nothing else: " + ", ".join(INTENTS) + ".")


def main(source: str) -> None:
    rows = list(csv.DictReader(open(source, encoding="utf-8")))
    rng = random.Random(0)
    records = []
    for intent in INTENTS:
        texts = sorted({r["text"] for r in rows if r["label"] == intent})
        for text in rng.sample(texts, PER_INTENT):
            records.append({"messages": [{"role": "system", "content": SYSTEM},
                                         {"role": "user", "content": text},
                                         {"role": "assistant", "content": intent}],
                            "final_answer": intent})
    rng.shuffle(records)
    out = Path(__file__).with_name("data.jsonl")
    out.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    print(f"wrote {len(records)} records to {out}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "../shared/datasets/banking77/train.csv")
