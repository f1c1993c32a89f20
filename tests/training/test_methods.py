"""Each PEFT method: train → save → reload → the reloaded model generates what the trained one did."""
import pytest

import tunesmith
from tests.training.test_sft import tiny_config
from tunesmith.errors import ConfigError
from tunesmith.models import engine

PROMPT = [[{"role": "user", "content": "Which colour is item 3?"}]]


@pytest.mark.slow
@pytest.mark.parametrize("method", ["dora", "ia3", "prompt_tuning", "prefix_tuning"])
def test_method_trains_saves_and_reloads_identically(method, tiny_model_dir, chat_file, workspace):
    result = tunesmith.train(tiny_config(tiny_model_dir, chat_file, f"method={method}", "training.max_steps=6"),
                             workspace=workspace)
    adapter_config = (result.run.dir / "adapter" / "adapter_config.json").read_text()
    assert ('"use_dora": true' in adapter_config) == (method == "dora")
    assert ('"peft_type": "IA3"' in adapter_config) == (method == "ia3")
    trained = engine.Loaded("trained", result.model.eval(), result.tokenizer)
    expected = engine.generate(trained, PROMPT, max_new_tokens=12)
    reloaded = engine.load(result.run.id, workspace)
    assert engine.generate(reloaded, PROMPT, max_new_tokens=12) == expected
    if method in ("prompt_tuning", "prefix_tuning"):  # virtual tokens start random: the loss says they learned
        # (on the same examples: the first and last training batches hold different ones, and six
        # steps of a tiny random model leave their losses within noise of each other)
        report = tunesmith.evaluate(result.run.id, chat_file, max_examples=6, baselines=False, few_shot=0,
                                    workspace=workspace, log=lambda m: None)
        base, tuned = report["metrics"]["base"], report["metrics"]["tuned"]  # loss through the lengthened sequences
        assert tuned["loss_tokens"] == base["loss_tokens"] and tuned["loss"] < base["loss"]
        return
    trained_weights = [p for n, p in reloaded.model.named_parameters() if "ia3_" in n or "lora_B" in n]
    start = 1.0 if method == "ia3" else 0.0  # IA3 vectors start at 1, LoRA B at 0: training moved them
    assert trained_weights and any((p - start).abs().max() > 0 for p in trained_weights)


def test_qlora_on_a_machine_without_cuda_fails_before_training(tiny_model_dir, chat_file, workspace):
    with pytest.raises(ConfigError, match="qlora needs a CUDA GPU.*method: lora"):
        tunesmith.train(tiny_config(tiny_model_dir, chat_file, "method=qlora"), workspace=workspace)
    assert not workspace.runs_dir.exists() or not any(workspace.runs_dir.iterdir())
