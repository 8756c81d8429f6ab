"""`groundup sft`: supervised fine-tuning with TRL's SFTTrainer — full, LoRA or QLoRA.

Config flows one way, the alignment-handbook way: YAML -> TrlParser -> (script args, SFTConfig, ModelConfig,
DatasetMixtureConfig) -> `run_sft`. Keys are TRL's own (`learning_rate`, `packing`, `assistant_only_loss`,
`use_peft`, `lora_r`, `load_in_4bit`, `datasets:` ...); groundup adds the data/output options in
`FinetuneArguments` and two defaults for small models (below).

    accelerate launch recipes/sft.py --config recipes/tiny/sft.yaml [--key value ...]
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from trl import SFTConfig

from groundup.train.finetune import (FinetuneScriptArguments, SmallModelDefaults, data_names, method_name,
                                     parse_stage_args, run_stage)


@dataclass
class SFTArguments(FinetuneScriptArguments):
    """Data and output options of `groundup sft`."""

    world_unanswerable: str = field(
        default="skip",
        metadata={"help": "World questions about people pretraining never showed: skip (vanilla SFT), refuse "
                  "(oracle IDK) or answer (teach their facts anyway)."})


@dataclass
class GroundupSFTConfig(SmallModelDefaults, SFTConfig):
    """TRL's SFTConfig with groundup's small-model defaults (`finetune.SmallModelDefaults`)."""

    output_dir: str | None = field(default=None, metadata={"help": "Folder for the fine-tuned model (required)."})


def run_sft(script_args: SFTArguments, training_args: GroundupSFTConfig, model_args, mixture) -> Path:
    from trl import SFTTrainer

    from groundup.train.finetune import (check_chat_template, check_max_length, drop_eval_without_data, load_model_and_tokenizer,
                           lora_config, split_output_dir, take_push_settings, train_and_save,
                           use_modules_to_save_learning_rate, use_packed_rows)
    from groundup.train.callbacks import finetune_progress
    from groundup.data.chat_rows import load_training_data

    from groundup.train.checkpoints import preflight

    preflight(script_args, training_args, model_args, mixture)  # fail before training, not after
    finetune_progress(script_args, training_args)  # before datasets and weights load: their bars too
    train_ds, eval_ds = load_training_data(script_args, mixture, "sft")
    model, tokenizer = load_model_and_tokenizer(model_args, training_args)
    check_max_length(model, training_args.max_length)
    if training_args.chat_template_path is None:
        check_chat_template(tokenizer, training_args.assistant_only_loss)
    peft_config = lora_config(model, model_args)
    drop_eval_without_data(training_args, eval_ds)

    final_dir, checkpoints = split_output_dir(training_args)
    push = take_push_settings(training_args)
    trainer = SFTTrainer(model=model, args=training_args, train_dataset=train_ds, eval_dataset=eval_ds,
                         processing_class=tokenizer, peft_config=peft_config)
    if training_args.packing and script_args.packed_rows and training_args.packing_strategy != "wrapped":
        use_packed_rows(trainer)
    use_modules_to_save_learning_rate(trainer, script_args.modules_to_save_learning_rate)

    title = f"{final_dir.name}: SFT of {Path(model_args.model_name_or_path).name}"
    summary = (f"Supervised fine-tuning ({method_name(model_args)}) with TRL's SFTTrainer on "
               f"{data_names(script_args, mixture)}; assistant-only loss: {training_args.assistant_only_loss}, "
               f"packing: {training_args.packing}.")

    final_dir, figures = train_and_save(
        trainer, tokenizer, final_dir, checkpoints, push, script_args=script_args, training_args=training_args,
        model_args=model_args, mixture=mixture, eval_before=script_args.eval_before_training,
        figure_keys=("train_loss", "eval_loss", "mean_token_accuracy", "eval_mean_token_accuracy", "num_tokens",
                     "train_runtime"),
        extra_figures={"train_rows": len(train_ds), "method": method_name(model_args)}, title=title,
        summary=summary, tags=["sft", "trl"], script="sft")
    if not figures:
        return final_dir
    loss = figures.get("eval_loss")
    print(f"sft: {figures['steps']} steps, train loss {figures.get('train_loss', float('nan')):.4f}"
          + (f", eval loss {loss:.4f}" if loss is not None else "")
          + f", {figures['trainable_parameters']:,}/{figures['total_parameters']:,} trainable "
          f"parameters -> {final_dir}")
    return final_dir


def parse_args(argv: list[str] | None = None) -> tuple:
    return parse_stage_args(SFTArguments, GroundupSFTConfig, argv)


def main(argv: list[str] | None = None) -> Path:
    return run_stage("sft", SFTArguments, GroundupSFTConfig, run_sft, argv)
