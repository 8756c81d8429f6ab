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

from .finetune import FinetuneScriptArguments, bf16_default


@dataclass
class SFTArguments(FinetuneScriptArguments):
    """Data and output options of `groundup sft`."""

    world_unanswerable: str = field(
        default="skip",
        metadata={"help": "World questions about people pretraining never showed: skip (vanilla SFT), refuse "
                  "(oracle IDK) or answer (teach their facts anyway)."})


@dataclass
class GroundupSFTConfig(SFTConfig):
    """TRL's SFTConfig with two defaults changed for small models: no gradient checkpointing (it only slows a model
    that fits in memory; turn it on with `activation_checkpointing: true`) and bf16 only on a GPU that has it
    (TRL's default bf16=True refuses to start on a CPU)."""

    output_dir: str | None = field(default="runs/tiny/sft", metadata={"help": "Folder for the fine-tuned model."})
    gradient_checkpointing: bool | None = field(
        default=None, metadata={"help": "Deprecated alias of activation_checkpointing (off by default here)."})
    bf16: bool | None = field(default=None, metadata={"help": "bf16 mixed precision; default: only on a bf16 GPU."})

    def __post_init__(self):
        if self.bf16 is None:
            self.bf16 = False if self.fp16 else bf16_default()
        super().__post_init__()


def run_sft(script_args: SFTArguments, training_args: GroundupSFTConfig, model_args, mixture) -> Path:
    from trl import SFTTrainer

    from .configs import config_dict, save_config
    from .finetune import (TrainingRecord, check_chat_template, check_max_length, cleanup_checkpoints,
                           drop_eval_without_data, evaluate_before, final_figures, load_model_and_tokenizer,
                           lora_config, mixture_record, parameter_counts, save_model_folder, split_output_dir,
                           use_packed_rows, write_train_log)
    from .model_card import write_model_card
    from .outputs import atomic_output_dir, check_output_dir
    from .sft_data import load_training_data

    check_output_dir(training_args.output_dir, script_args.overwrite)  # fail before training, not after
    train_ds, eval_ds = load_training_data(script_args, mixture, "sft")
    model, tokenizer = load_model_and_tokenizer(model_args, training_args)
    check_max_length(model, training_args.max_length)
    if training_args.chat_template_path is None:
        check_chat_template(tokenizer, training_args.assistant_only_loss)
    peft_config = lora_config(model, model_args)
    drop_eval_without_data(training_args, eval_ds)

    final_dir, checkpoints = split_output_dir(training_args)
    trainer = SFTTrainer(model=model, args=training_args, train_dataset=train_ds, eval_dataset=eval_ds,
                         processing_class=tokenizer, peft_config=peft_config)
    if training_args.packing and script_args.packed_rows and training_args.packing_strategy != "wrapped":
        use_packed_rows(trainer)
    before = evaluate_before(trainer, eval_ds is not None and script_args.eval_before_training)
    trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
    if eval_ds is not None:
        trainer.evaluate()
    trainable, total = parameter_counts(trainer.model)
    training_args.output_dir = str(final_dir)
    if not trainer.is_world_process_zero():
        return final_dir

    history = before + trainer.state.log_history
    figures = final_figures(history, ("train_loss", "eval_loss", "mean_token_accuracy", "eval_mean_token_accuracy",
                                      "num_tokens", "train_runtime"))
    figures.update(steps=trainer.state.global_step, trainable_parameters=trainable, total_parameters=total,
                   train_rows=len(train_ds), method=method_name(model_args))
    with atomic_output_dir(final_dir, script_args.overwrite) as out:
        where = save_model_folder(trainer, tokenizer, out, base_path=model_args.model_name_or_path,
                                  merge=script_args.merge, model_args=model_args,
                                  trust_remote_code=training_args.trust_remote_code)
        write_train_log(out, history)
        configs = (script_args, TrainingRecord(training_args), model_args, mixture_record(mixture))
        save_config(out, *configs)
        write_model_card(
            out, title=f"{final_dir.name}: SFT of {Path(model_args.model_name_or_path).name}",
            summary=(f"Supervised fine-tuning ({method_name(model_args)}) with TRL's SFTTrainer on "
                     f"{data_names(script_args, mixture)}; assistant-only loss: {training_args.assistant_only_loss}, "
                     f"packing: {training_args.packing}. "
                     + ("The peft adapter is in `adapter/`." if "adapter" in where and "model" in where else "")),
            base_model=model_args.model_name_or_path, datasets=data_names(script_args, mixture, as_list=True),
            tags=["sft", "trl"] + (["lora"] if model_args.use_peft else []), figures=figures,
            config=config_dict(*configs), command=f"python recipes/sft.py --config {final_dir}/recipe.yaml",
            name=str(final_dir))
    cleanup_checkpoints(checkpoints)
    loss = figures.get("eval_loss")
    print(f"sft: {figures['steps']} steps, train loss {figures.get('train_loss', float('nan')):.4f}"
          + (f", eval loss {loss:.4f}" if loss is not None else "") + f", {trainable:,}/{total:,} trainable "
          f"parameters -> {final_dir}")
    return final_dir


def method_name(model_args) -> str:
    if not model_args.use_peft:
        return "full"
    return "QLoRA" if (model_args.load_in_4bit or model_args.load_in_8bit) else "LoRA"


def data_names(script_args, mixture, as_list: bool = False):
    names = [d.path for d in mixture.datasets] if mixture.datasets else [script_args.dataset_name]
    return names if as_list else ", ".join(str(n) for n in names)


def parse_args(argv: list[str] | None = None) -> tuple:
    from trl import DatasetMixtureConfig, ModelConfig

    from .configs import parse_config

    return parse_config([SFTArguments, GroundupSFTConfig, ModelConfig, DatasetMixtureConfig], argv)


def main(argv: list[str] | None = None) -> Path:
    return run_sft(*parse_args(argv))
