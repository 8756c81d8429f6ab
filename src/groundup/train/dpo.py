"""`groundup dpo`: direct preference optimisation with TRL's DPOTrainer — LoRA (reference = adapter off) or full.

- LoRA (`use_peft: true`): one copy of the model in memory; the reference is the same model with the adapter
  disabled (TRL does this when `ref_model` is None and a `peft_config` is given).
- Full: TRL loads a frozen reference copy from `model_name_or_path`, unless `precompute_ref_log_probs: true`, which
  scores every pair with the reference once before training and then keeps no reference in memory.
- Loss types are DPOConfig's list (`loss_type: [sigmoid]`, or `[sigmoid, sft]` with `loss_weights`).

Data: TRL's conversational preference format `{"prompt": [...], "chosen": [...], "rejected": [...]}` — the probe
stage's `dpo_pairs.jsonl`, a world folder (ground-truth honesty pairs, see `sft_data.world_dpo_rows`), local files or
the Hub (e.g. `HuggingFaceH4/ultrafeedback_binarized`, split `train_prefs`).

    accelerate launch recipes/dpo.py --config recipes/tiny/dpo.yaml [--key value ...]
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from trl import DPOConfig

from groundup.train.finetune import FinetuneScriptArguments, SmallModelDefaults, parse_stage_args, run_stage


@dataclass
class DPOArguments(FinetuneScriptArguments):
    """Data and output options of `groundup dpo`."""


@dataclass
class GroundupDPOConfig(SmallModelDefaults, DPOConfig):
    """TRL's DPOConfig with groundup's small-model defaults (`finetune.SmallModelDefaults`)."""

    output_dir: str | None = field(default=None, metadata={"help": "Folder for the DPO model (required)."})


DPO_FIGURES = ("train_loss", "rewards/margins", "rewards/accuracies", "rewards/chosen", "rewards/rejected",
               "eval_loss", "eval_rewards/margins", "eval_rewards/accuracies", "train_runtime")


def build_trainer(script_args, training_args, model_args, mixture):
    """(trainer, train dataset, eval dataset) — split out so tests can inspect the trainer before training."""
    from trl import DPOTrainer

    from groundup.train.finetune import (check_chat_template, check_max_length, drop_eval_without_data, load_model_and_tokenizer,
                           lora_config, use_modules_to_save_learning_rate)
    from groundup.data.chat_rows import load_training_data

    train_ds, eval_ds = load_training_data(script_args, mixture, "dpo")
    model, tokenizer = load_model_and_tokenizer(model_args, training_args)
    check_max_length(model, training_args.max_length)
    check_chat_template(tokenizer, assistant_only_loss=False)
    peft_config = lora_config(model, model_args)
    drop_eval_without_data(training_args, eval_ds)
    trainer = DPOTrainer(model=model, ref_model=None, args=training_args, train_dataset=train_ds,
                         eval_dataset=eval_ds, processing_class=tokenizer, peft_config=peft_config)
    use_modules_to_save_learning_rate(trainer, script_args.modules_to_save_learning_rate)
    return trainer, tokenizer, train_ds


def run_dpo(script_args: DPOArguments, training_args: GroundupDPOConfig, model_args, mixture) -> Path:
    from groundup.train.callbacks import finetune_progress
    from groundup.train.checkpoints import preflight
    from groundup.train.finetune import data_names, method_name, split_output_dir, take_push_settings, train_and_save

    preflight(script_args, training_args, model_args, mixture)  # fail before training, not after
    finetune_progress(script_args, training_args)  # before datasets and weights load: their bars too
    final_dir, checkpoints = split_output_dir(training_args)
    push = take_push_settings(training_args)
    trainer, tokenizer, train_ds = build_trainer(script_args, training_args, model_args, mixture)
    reference = ("the model with its adapter disabled" if model_args.use_peft
                 else "log-probs precomputed before training" if training_args.precompute_ref_log_probs
                 else "a frozen copy of the starting model")
    loss_type = "+".join(training_args.loss_type)

    title = f"{final_dir.name}: DPO of {Path(model_args.model_name_or_path).name}"
    summary = (f"Direct preference optimisation ({method_name(model_args)}, loss {loss_type}, beta "
               f"{training_args.beta}) with TRL's DPOTrainer on {data_names(script_args, mixture)}; "
               f"reference: {reference}.")

    final_dir, figures = train_and_save(
        trainer, tokenizer, final_dir, checkpoints, push, script_args=script_args, training_args=training_args,
        model_args=model_args, mixture=mixture, eval_before=script_args.eval_before_training, figure_keys=DPO_FIGURES,
        extra_figures={"train_pairs": len(train_ds), "method": method_name(model_args), "reference": reference,
                       "loss_type": loss_type, "beta": training_args.beta},
        title=title, summary=summary, tags=["dpo", "trl"], script="dpo")
    if not figures:
        return final_dir
    margin = figures.get("rewards/margins")
    print(f"dpo: {figures['steps']} steps, train loss {figures.get('train_loss', float('nan')):.4f}"
          + (f", reward margin {margin:.3f}" if margin is not None else "")
          + f", reference: {reference} -> {final_dir}")
    return final_dir


def parse_args(argv: list[str] | None = None) -> tuple:
    return parse_stage_args(DPOArguments, GroundupDPOConfig, argv)


def main(argv: list[str] | None = None) -> Path:
    return run_stage("dpo", DPOArguments, GroundupDPOConfig, run_dpo, argv)
