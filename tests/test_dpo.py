"""DPO with TRL on the tiny random GPT-2: honesty pairs, LoRA (adapter-off reference), full with precomputed reference."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from groundup.core.chat import REFUSAL
from groundup.core.errors import GroundupError
from groundup.core.jsonl import read_jsonl

FAST = ["--max_length", "128", "--per_device_train_batch_size", "8", "--logging_steps", "5", "--save_strategy", "no",
        "--report_to", "none", "--dataloader_pin_memory", "false", "--seed", "0"]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def dpo_args(model_dir, world_dir, out, *extra):
    return ["--model_name_or_path", str(model_dir), "--dataset_name", str(world_dir), "--eval_dataset_name",
            str(world_dir), "--output_dir", str(out), *FAST, *extra]


def margins(folder) -> list[float]:
    return [e["eval_rewards/margins"] for e in read_jsonl(Path(folder) / "train_log.jsonl")
            if "eval_rewards/margins" in e]


def test_world_pairs_reward_answering_the_known_and_refusing_the_unknown(world_dir):
    from groundup.data.chat_rows import world_dpo_rows

    rows = world_dpo_rows(world_dir, "sft")
    tiers = {q["question"]: q["tier"] for q in read_jsonl(world_dir / "questions" / "sft.jsonl")}
    assert rows and all(set(r) == {"prompt", "chosen", "rejected"} for r in rows)
    for r in rows:
        assert r["prompt"][0]["role"] == "user" and r["chosen"][0]["role"] == r["rejected"][0]["role"] == "assistant"
        tier = tiers[r["prompt"][0]["content"]]
        assert tier in ("frequent", "unseen")  # rare: the world alone cannot say whether the model knows
        if tier == "frequent":
            assert r["rejected"][0]["content"] == REFUSAL and r["chosen"][0]["content"] != REFUSAL
        else:
            assert r["chosen"][0]["content"] == REFUSAL and r["rejected"][0]["content"] != REFUSAL
    assert {tiers[r["prompt"][0]["content"]] for r in rows} == {"frequent", "unseen"}


def test_lora_dpo_keeps_one_model_in_memory_and_uses_it_with_the_adapter_off(tiny_model_dir, world_dir, tmp_path):
    from peft import PeftModel
    from transformers import GPT2LMHeadModel

    from groundup.train.dpo import build_trainer, parse_args as parse

    script, training, model_args, mixture = parse(dpo_args(tiny_model_dir, world_dir, tmp_path / "x", "--use_peft",
                                                           "true"))
    trainer, tokenizer, _ = build_trainer(script, training, model_args, mixture)
    assert trainer.ref_model is None and isinstance(trainer.model, PeftModel)
    assert sum(isinstance(m, GPT2LMHeadModel) for m in trainer.model.modules()) == 1
    # the reference log-probs are the policy's own with the adapter disabled (equal at step 0: LoRA B starts at 0)
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(4)])
    ref_chosen, ref_rejected = trainer.compute_ref_log_probs(trainer.model, batch)
    with trainer.model.disable_adapter():
        again = trainer.compute_ref_log_probs(trainer.model, batch)
    assert torch.allclose(ref_chosen, again[0]) and torch.allclose(ref_rejected, again[1])


@pytest.mark.parametrize("mode", ["lora", "full-precomputed"])
def test_dpo_raises_the_chosen_minus_rejected_margin(mode, tiny_model_dir, world_dir, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from groundup.train.dpo import main

    out = tmp_path / "dpo"
    extra = (["--use_peft", "true", "--learning_rate", "5e-3"] if mode == "lora"
             else ["--precompute_ref_log_probs", "true", "--learning_rate", "1e-3"])
    main(dpo_args(tiny_model_dir, world_dir, out, "--max_steps", "20", *extra))
    before, *_, after = margins(out)
    assert before == pytest.approx(0.0, abs=1e-6) and after > 0.05, margins(out)  # held-out (probe-pool) pairs
    model = AutoModelForCausalLM.from_pretrained(out)
    tokenizer = AutoTokenizer.from_pretrained(out)
    assert model.generation_config.eos_token_id[0] == tokenizer.eos_token_id
    assert (out / "recipe.yaml").is_file() and "DPO" in (out / "README.md").read_text()
    assert (out / "adapter").is_dir() == (mode == "lora")


def test_dpo_reads_probe_style_pair_files_and_rejects_missing_columns(tiny_model_dir, world_dir, tmp_path):
    from groundup.train.dpo import build_trainer, parse_args as parse
    from groundup.data.chat_rows import world_dpo_rows

    pairs = tmp_path / "dpo_pairs.jsonl"
    pairs.write_text("".join(json.dumps(r) + "\n" for r in world_dpo_rows(world_dir, "probe")))
    args = dpo_args(tiny_model_dir, world_dir, tmp_path / "x", "--dataset_name", str(pairs), "--eval_dataset_name", "")
    trainer, _, train = build_trainer(*parse(args))
    assert len(train) == len(pairs.read_text().splitlines())
    assert {"prompt_ids", "chosen_ids", "rejected_ids"} <= set(trainer.train_dataset.column_names)
    sft_rows = tmp_path / "sft.jsonl"
    sft_rows.write_text(json.dumps({"messages": [{"role": "user", "content": "q"}]}) + "\n")
    with pytest.raises(GroundupError, match="expected columns 'chosen' and 'rejected'"):
        build_trainer(*parse(args[:-4] + ["--dataset_name", str(sft_rows), "--eval_dataset_name", ""]))


def test_mixing_explicit_and_implicit_prompt_pairs_folds_the_prompt(world_dir, tmp_path):
    from trl import DatasetMixtureConfig

    from groundup.train.dpo import DPOArguments
    from groundup.data.chat_rows import load_training_data

    implicit = tmp_path / "ultrafeedback_like.jsonl"
    implicit.write_text(json.dumps({"chosen": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}],
                                    "rejected": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "go"}],
                                    "score": 1}) + "\n")
    mixture = DatasetMixtureConfig(datasets=[{"path": str(implicit), "columns": ["chosen", "rejected"]},
                                             {"path": str(world_dir)}])
    train, _ = load_training_data(DPOArguments(), mixture, "dpo")
    assert train.column_names == ["chosen", "rejected"]
    last = train[len(train) - 1]
    assert last["chosen"][0]["role"] == "user" and last["chosen"][0] == last["rejected"][0]
    assert last["chosen"][1]["role"] == "assistant"
