"""OpenAI fine-tuning code, unchanged but for base_url, against `tunesmith serve`.

    tunesmith serve &                       # (pull smollm2-135m-instruct first)
    python examples/openai-sdk/finetune_and_chat.py --api-key "$(tunesmith keys create)" \
        --train build/quickstart/data.train.jsonl --validation build/quickstart/data.validation.jsonl

Measured on a 2-core CPU with the quickstart's splits (384 / 48 conversations, 1 epoch, batch 8)
and its system prompt (--system): the job went from upload to `succeeded` in 376 s, and the
fine-tuned model answered "lost_or_stolen_card" where the base model chatted.
"""
import argparse
import time

from openai import OpenAI


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--base-url", default="http://127.0.0.1:8000/v1")
    parser.add_argument("--api-key", required=True)
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--train", required=True)
    parser.add_argument("--validation")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--prompt", default="I lost my card yesterday, what do I do?")
    parser.add_argument("--system", help="A system message, e.g. the one the training data uses.")
    args = parser.parse_args()

    client = OpenAI(base_url=args.base_url, api_key=args.api_key)
    train = client.files.create(file=open(args.train, "rb"), purpose="fine-tune")
    validation = client.files.create(file=open(args.validation, "rb"), purpose="fine-tune") if args.validation else None
    job = client.fine_tuning.jobs.create(model=args.model, training_file=train.id,
                                         validation_file=validation.id if validation else None, suffix="example",
                                         hyperparameters={"n_epochs": args.epochs})
    while job.status not in ("succeeded", "failed", "cancelled"):
        time.sleep(5)
        job = client.fine_tuning.jobs.retrieve(job.id)
        events = client.fine_tuning.jobs.list_events(job.id, limit=1).data
        print(f"{job.status}: {events[0].message if events else ''}", flush=True)
    if job.status != "succeeded":
        raise SystemExit(f"job {job.status}: {job.error}")
    for model in (args.model, job.fine_tuned_model):
        reply = client.chat.completions.create(model=model, temperature=0, max_tokens=32,
                                               messages=([{"role": "system", "content": args.system}] if args.system else [])
                                               + [{"role": "user", "content": args.prompt}])
        print(f"{model}: {reply.choices[0].message.content}")


if __name__ == "__main__":
    main()
