"""LoRA, IA3 and prompt-tuning fine-tunes of one base served side by side: peft cannot hold
different adapter types in one model, so the server gives each type a base of its own."""
import pytest

import tunesmith
from tests.training.test_sft import tiny_config
from tunesmith.models import engine

pytestmark = pytest.mark.slow

PARAMS = {"max_tokens": 6, "temperature": 0, "top_p": 1, "n": 1, "stop": None, "seed": None}
ASK = [{"role": "user", "content": "Which colour is item 2?"}]


def test_adapters_of_different_types_interleave(tiny_model_dir, chat_file, workspace, monkeypatch):
    from tunesmith.jobs.db import Database
    from tunesmith.jobs.served_models import JobModels
    from tunesmith.serving.model_server import ModelServer, Target, _adapter_key

    runs = {m: tunesmith.train(tiny_config(tiny_model_dir, chat_file, f"method={m}", "training.max_steps=4"),
                               workspace=workspace).run for m in ("lora", "ia3", "prompt_tuning")}
    server = ModelServer(workspace, JobModels(workspace, Database.for_workspace(workspace)))
    targets = [Target(m, str(tiny_model_dir), adapter_dir=run.final_dir) for m, run in runs.items()]
    monkeypatch.setattr(server, "targets", lambda: targets)
    served = {m: [server.complete(m, ASK, None, PARAMS)["texts"][0] for _ in range(2)] for m in ["lora", "ia3",
                                                                                                  "prompt_tuning", "lora"]}
    for method, run in runs.items():
        alone = engine.generate(engine.load(run.id, workspace), [ASK], max_new_tokens=6)[0]
        assert [text.strip() for text in served[method]] == [alone, alone]
    base = str(tiny_model_dir)
    assert sorted(server.slots) == sorted([base, f"{base}|IA3", f"{base}|PROMPT_TUNING"])  # a base per type
    for key, slot in server.slots.items():
        assert slot.adapter_names() == [_adapter_key({base: "lora"}.get(key) or key.split("|")[1].lower())]

