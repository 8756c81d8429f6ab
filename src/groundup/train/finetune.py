"""What SFT and DPO share: loading a model folder, LoRA / QLoRA, input checks, end-of-turn, and the output folder.

Output layout (`output_dir`, e.g. `runs/tiny/sft/`), written atomically (the folder exists only once complete):
- full fine-tuning: a normal Hugging Face model folder (config.json, model.safetensors, tokenizer files with the chat
  template, generation_config.json whose eos list starts with `<|im_end|>`).
- LoRA / QLoRA with `merge: true` (the tiny preset): the same full model, merged, plus the peft adapter in
  `adapter/` (`PeftModel.from_pretrained(base, "runs/tiny/sft/adapter")`). The adapter sits in a subfolder because
  transformers treats a folder holding `adapter_config.json` as an adapter, not as a model.
- LoRA / QLoRA with `merge: false`: the folder *is* the peft adapter (plus tokenizer); `AutoModelForCausalLM`
  still loads it through transformers' peft integration, from the base model named in `adapter_config.json`.
- always: `README.md` (model card), `recipe.yaml` (resolved config), `train_log.jsonl` (the trainer's log history,
  one JSON object per logged step: `step`, `epoch`, `loss` or `eval_loss`, `learning_rate`, ...; the last line holds
  `train_runtime` and `train_loss`).

Trainer checkpoints go to a sibling `<output_dir>.checkpoints/` so that the model folder stays atomic; it is removed
at the end when it holds nothing (`save_strategy: "no"`), kept otherwise. `--resume latest` continues from the newest
one made with the same settings, data and starting model; SIGTERM/SIGINT write one and stop (`train/checkpoints.py`,
docs/reliability.md).
"""

from __future__ import annotations

import dataclasses
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from groundup.core.chat import TURN_END
from groundup.core.errors import GroundupError

TRAIN_LOG = "train_log.jsonl"
ADAPTER_DIR = "adapter"
GPT2_LORA_TARGETS = ["c_attn", "c_proj", "c_fc"]
_GENERATION_MARKER = re.compile(r"\{%-?\s*generation\s*-?%\}")


@dataclass
class FinetuneScriptArguments:
    """Data and output options shared by `groundup sft` and `groundup dpo` (the trainer's own keys live in
    SFTConfig / DPOConfig, the model's in TRL's ModelConfig: `model_name_or_path`, `use_peft`, `lora_*`, `load_in_4bit`)."""

    dataset_name: str | None = field(
        default=None,
        metadata={"help": "A world folder, a local .jsonl/.json/.parquet/.csv file (globs allowed) or a Hub dataset id. "
                  "Ignored when `datasets:` (a mixture) is given."})
    dataset_config: str | None = field(default=None, metadata={"help": "Hub dataset configuration name."})
    dataset_train_split: str = field(default="train", metadata={"help": "Hub split to train on."})
    dataset_test_split: str = field(default="test", metadata={"help": "Split of `eval_dataset_name` to evaluate on."})
    world_split: str = field(default="sft", metadata={"help": "Question split of a world folder to train on."})
    eval_dataset_name: str | None = field(
        default=None, metadata={"help": "Held-out data (same kinds as dataset_name); a world gives `eval_world_split`."})
    eval_world_split: str = field(
        default="probe", metadata={"help": "World question split for evaluation: `probe` people are never trained on."})
    eval_before_training: bool = field(
        default=True, metadata={"help": "Also measure the eval loss before the first step (the log's step 0)."})
    overwrite: bool = field(default=False, metadata={"help": "Replace a non-empty output folder."})
    packed_rows: bool = field(
        default=True, metadata={"help": "With packing: keep packed rows as separate batch rows (fast with SDPA/eager "
                                "attention); false: TRL's padding-free single row (for FlashAttention varlen)."})
    merge: bool = field(
        default=True, metadata={"help": "LoRA/QLoRA: save the merged full model in output_dir and the adapter in "
                                "output_dir/adapter; false: output_dir is the adapter alone."})
    modules_to_save_learning_rate: float | None = field(
        default=None, metadata={"help": "LoRA/QLoRA: learning rate of the fully trained `lora_modules_to_save` "
                                "(new input layers, lm_head); the LoRA matrices keep `learning_rate`. Default: one "
                                "rate for all."})
    resume: str | None = field(default=None, metadata={
        "help": "`latest`: continue from the newest checkpoint in OUTPUT_DIR.checkpoints made with these settings, "
                "data and starting model (a fresh start when there is none); or a checkpoint folder. Checkpoints come "
                "every `save_steps` and on SIGTERM/SIGINT."})
    progress: str = field(
        default="auto", metadata={"help": "auto (a bar on a terminal, one line per logged step otherwise), bar, "
                                  "lines or none. `disable_tqdm: true` or TQDM_DISABLE=1 turn the bar into lines."})


def bf16_default() -> bool:
    """bf16 only where it is fast and supported (a CUDA GPU with bf16); CPU stays fp32 (TRL's bf16 refuses CPU)."""
    import torch

    return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())


@dataclass
class SmallModelDefaults:
    """Mixed into TRL's SFTConfig / DPOConfig: two defaults changed for small models. No gradient checkpointing (it
    only slows a model that fits in memory; turn it on with `activation_checkpointing: true`) and bf16 only on a GPU
    that has it (TRL's default bf16=True refuses to start on a CPU)."""

    gradient_checkpointing: bool | None = field(
        default=None, metadata={"help": "Deprecated alias of activation_checkpointing (off by default here)."})
    bf16: bool | None = field(default=None, metadata={"help": "bf16 mixed precision; default: only on a bf16 GPU."})

    def __post_init__(self):
        if self.bf16 is None:
            self.bf16 = False if self.fp16 else bf16_default()
        self.output_dir_set = self.output_dir is not None  # before TrainingArguments falls back to "trainer_output"
        check_training_numbers(self)
        super().__post_init__()


def check_training_numbers(args) -> None:
    """Values the Trainer would take and fail on deep inside (a negative rate: torch's optimizer) or, worse, run with
    silently (`max_steps: 0` trains one step and writes a complete-looking model). parse_config turns the ValueError
    into one line."""
    if not args.learning_rate >= 0:  # 0 is refused in `checkpoints.preflight` unless other modules have a rate
        raise ValueError(f"learning_rate must be positive, got {args.learning_rate}")
    if args.max_steps == 0 or args.max_steps < -1:
        raise ValueError(f"max_steps must be at least 1 (or -1: num_train_epochs decides), got {args.max_steps}")
    if args.max_steps == -1 and not args.num_train_epochs > 0:
        raise ValueError(f"num_train_epochs must be positive (or set max_steps), got {args.num_train_epochs}")
    for key in ("per_device_train_batch_size", "gradient_accumulation_steps"):
        if getattr(args, key) < 1:
            raise ValueError(f"{key} must be at least 1, got {getattr(args, key)}")
    for key in ("weight_decay", "warmup_steps", "max_grad_norm"):
        value = getattr(args, key, 0) or 0
        if value < 0:
            raise ValueError(f"{key} must be 0 or more, got {value}")
    if str(getattr(args.save_strategy, "value", args.save_strategy)) == "steps" and not (args.save_steps or 0) > 0:
        raise ValueError(f"save_steps must be positive with save_strategy: steps, got {args.save_steps}")


def load_tokenizer(path: str, revision: str = "main", trust_remote_code: bool = False):
    from groundup.models import loader

    return loader.load_tokenizer(path, revision=revision, trust_remote_code=trust_remote_code)


def quantization_config(model_args):
    """bitsandbytes 4/8-bit config for QLoRA, or None. Stops with one line when bitsandbytes is missing."""
    if not (model_args.load_in_4bit or model_args.load_in_8bit):
        return None
    if not model_args.use_peft:
        raise GroundupError("load_in_4bit / load_in_8bit train adapters only: also set use_peft: true (QLoRA)")
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        raise GroundupError("QLoRA needs bitsandbytes: pip install 'groundup[qlora]' (the CUDA path is the real one; "
                            "on CPU it runs but is slow)") from None
    from trl import get_quantization_config

    return get_quantization_config(model_args)


def load_model(path: str, model_args, trust_remote_code: bool = False, quantized: bool = True):
    """A causal LM from a folder or Hub id: safetensors only, remote code only when asked, fp32 unless `dtype` says."""
    from groundup.models import loader

    return loader.load_model(path, revision=model_args.model_revision, trust_remote_code=trust_remote_code,
                             use_safetensors=True, dtype=model_args.dtype or "float32",
                             attn_implementation=model_args.attn_implementation or None,
                             quantization_config=quantization_config(model_args) if quantized else None,
                             eval_mode=False)


def load_model_and_tokenizer(model_args, training_args):
    path = model_args.model_name_or_path
    if not path:
        raise GroundupError("model_name_or_path is not set (the folder or Hub id of the model to fine-tune)")
    tokenizer = load_tokenizer(path, model_args.model_revision, training_args.trust_remote_code)
    model = load_model(path, model_args, training_args.trust_remote_code)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    set_chat_eos(model, tokenizer)
    return model, tokenizer


def set_chat_eos(model, tokenizer) -> list[int]:
    """Make generation stop at end of turn: `<|im_end|>` (or the tokenizer's eos) first in the eos list."""
    ids = []
    turn_end = tokenizer.convert_tokens_to_ids(TURN_END) if TURN_END in tokenizer.get_vocab() else None
    for token_id in (turn_end, tokenizer.eos_token_id):
        if token_id is not None and token_id not in ids:
            ids.append(token_id)
    old = model.generation_config.eos_token_id
    for token_id in [old] if isinstance(old, int) else (old or []):
        if token_id not in ids:
            ids.append(token_id)
    model.generation_config.eos_token_id = ids
    model.config.eos_token_id = ids[0]
    if tokenizer.pad_token_id is not None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
        model.config.pad_token_id = tokenizer.pad_token_id
    return ids


def check_max_length(model, max_length: int | None) -> None:
    from groundup.models.loader import context_length

    limit = context_length(model)
    if limit is None:
        return
    if max_length is None:
        raise GroundupError(f"max_length is unset but the model reads at most n_positions={limit} tokens; "
                            f"set max_length (<= {limit})")
    if max_length > limit:
        raise GroundupError(f"max_length={max_length} exceeds the model's n_positions={limit}; set max_length <= {limit}")


def has_generation_markers(template: str | None) -> bool:
    return bool(template) and bool(_GENERATION_MARKER.search(template))


def check_chat_template(tokenizer, assistant_only_loss: bool) -> None:
    template = tokenizer.chat_template
    if not template:
        raise GroundupError("the tokenizer has no chat template; set chat_template_path (a .jinja file or tokenizer)")
    if assistant_only_loss and not has_generation_markers(template):
        raise GroundupError("assistant_only_loss is on but the chat template has no {% generation %} markers "
                            "around assistant turns (the loss mask would be empty); add them or turn it off")


def _matches(module_name: str, target: str) -> bool:
    return module_name == target or module_name.endswith("." + target)


def lora_config(model, model_args):
    """A peft `LoraConfig` from TRL's ModelConfig keys, or None when `use_peft` is off.

    GPT-2 keeps its projections in `Conv1D` (weights stored transposed): the default targets are `c_attn`, `c_proj`,
    `c_fc` with `fan_in_fan_out=True`. `lora_modules_to_save: [wte]` also trains the token embeddings (tokens the base
    rarely saw); peft's `trainable_token_indices` crashes TRL's fused LM head on tied GPT-2.
    """
    if not model_args.use_peft:
        return None
    from peft import LoraConfig
    from transformers.pytorch_utils import Conv1D

    modules = dict(model.named_modules())
    has_conv1d = any(isinstance(m, Conv1D) for m in modules.values())
    targets = model_args.lora_target_modules
    if isinstance(targets, str) and targets != "all-linear" and re.fullmatch(r"[\w.]+", targets):
        targets = [targets]  # TRL's ModelConfig turns a one-item list into a string, which peft reads as a regex
    if targets is None:
        targets = GPT2_LORA_TARGETS if has_conv1d else "all-linear"
    if isinstance(targets, list):
        for target in targets:
            if not any(_matches(name, target) for name in modules):
                examples = sorted({n.split(".")[-1] for n, m in modules.items() if not list(m.children())})[:12]
                raise GroundupError(f"LoRA target {target!r} matches no module of the model "
                                    f"(leaf modules include: {', '.join(examples)})")
        fan_in_fan_out = any(isinstance(m, Conv1D) for n, m in modules.items() if any(_matches(n, t) for t in targets))
    else:
        fan_in_fan_out = has_conv1d
    to_save = model_args.lora_modules_to_save
    if isinstance(to_save, str):
        to_save = [to_save]
    for name in to_save or []:
        if not any(_matches(n, name) for n in modules):
            raise GroundupError(f"lora_modules_to_save {name!r} matches no module of the model")
    kwargs = {}
    if model_args.lora_target_parameters is not None:
        kwargs["target_parameters"] = model_args.lora_target_parameters
    return LoraConfig(task_type=model_args.lora_task_type, r=model_args.lora_r, lora_alpha=model_args.lora_alpha,
                      lora_dropout=model_args.lora_dropout, target_modules=targets, fan_in_fan_out=fan_in_fan_out,
                      bias="none", use_rslora=model_args.use_rslora, use_dora=model_args.use_dora,
                      modules_to_save=to_save, **kwargs)


class PackedRowsCollator:
    """Batches of packed rows that stay separate rows: `[B, L]` input_ids with position_ids restarting at every
    packed conversation and no attention mask, so transformers builds a block-diagonal causal mask *per row*.

    TRL's padding-free collator flattens the whole batch into one `[1, B*L]` row, which FlashAttention's varlen
    kernels handle in O(sum of lengths^2) but SDPA / eager attention (CPU, or a GPU without flash-attn) pays as
    O((B*L)^2) plus a dense mask: measured 16x slower than padding here (bench/bench_finetune.py). Same losses: the
    first token of each packed conversation is never predicted from the previous one, pads form their own block.
    `tokens` counts real (non-pad) tokens seen, for throughput figures.
    """

    def __init__(self, pad_token_id: int):
        self.pad_token_id = pad_token_id
        self.tokens = 0

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        import torch

        width = max(len(e["input_ids"]) for e in examples)
        input_ids = torch.full((len(examples), width), self.pad_token_id, dtype=torch.long)
        labels = torch.full((len(examples), width), -100, dtype=torch.long)
        position_ids = torch.zeros((len(examples), width), dtype=torch.long)
        for row, example in enumerate(examples):
            n = len(example["input_ids"])
            input_ids[row, :n] = torch.tensor(example["input_ids"])
            labels[row, :n] = torch.tensor(example.get("labels", example["input_ids"]))
            lengths = list(example.get("seq_lengths") or [n]) + ([width - n] if width > n else [])
            start = 0
            for length in lengths:
                position_ids[row, start:start + length] = torch.arange(length)
                labels[row, start] = -100  # a conversation's first token is not predicted across the boundary
                start += length
            self.tokens += n
        return {"input_ids": input_ids, "labels": labels, "position_ids": position_ids}


def use_packed_rows(trainer) -> PackedRowsCollator:
    """Swap TRL's padding-free collator for `PackedRowsCollator` (the trainer only refuses a custom one at init)."""
    collator = PackedRowsCollator(trainer.processing_class.pad_token_id)
    trainer.data_collator = collator
    return collator


def use_modules_to_save_learning_rate(trainer, learning_rate: float | None) -> None:
    """Give the `lora_modules_to_save` copies their own learning rate.

    Hand-written because neither transformers nor TRL has per-module learning rates (peft's LoRA+ only scales the
    B matrices). Why it matters here: the surprisal arm must learn its new copy / surprisal layers fast, while LoRA
    moving the stack as fast turns answers vanilla SFT got right wrong (docs/experiments.md, unlearning). The
    trainer's own optimizer is built first (its class, betas, weight-decay groups), then each group is split in two;
    the scheduler scales every group from its own rate. Wraps `create_optimizer` rather than passing an optimizer
    in, so accelerate / FSDP still build it on the prepared model.
    """
    if learning_rate is None:
        return
    if learning_rate <= 0:
        raise GroundupError(f"modules_to_save_learning_rate must be positive, got {learning_rate}")
    peft_config = getattr(trainer.model, "peft_config", None)
    if not peft_config or not any(getattr(c, "modules_to_save", None) for c in peft_config.values()):
        raise GroundupError("modules_to_save_learning_rate needs `use_peft: true` and `lora_modules_to_save`")
    build = trainer.create_optimizer

    def create_optimizer(model=None):
        if trainer.optimizer is not None:
            return build(model)
        names = {id(p): n for n, p in (trainer.model if model is None else model).named_parameters()}
        optimizer = build(model)
        groups = []
        for group in optimizer.param_groups:
            saved = [p for p in group["params"] if ".modules_to_save." in names.get(id(p), "")]
            rest = [p for p in group["params"] if ".modules_to_save." not in names.get(id(p), "")]
            groups += [{**group, "params": params, "lr": lr}
                       for params, lr in ((rest, group["lr"]), (saved, learning_rate)) if params]
        optimizer.param_groups.clear()  # no step taken yet: no state to move
        for group in groups:
            optimizer.add_param_group(group)
        return optimizer

    trainer.create_optimizer = create_optimizer


def parameter_counts(model) -> tuple[int, int]:
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable, sum(p.numel() for p in model.parameters())


def merge_adapter(base_path: str, adapter_dir: str | Path, model_args, trust_remote_code: bool = False):
    """The base model (full precision, even after QLoRA) with the adapter merged in: a plain transformers model."""
    from peft import PeftModel

    base = load_model(base_path, model_args, trust_remote_code, quantized=False)
    return PeftModel.from_pretrained(base, str(adapter_dir)).merge_and_unload()


def drop_eval_without_data(training_args, eval_ds) -> None:
    """`eval_strategy` set but no eval data (e.g. `--eval_dataset_name ""`): evaluate never, instead of failing deep
    in Trainer with a message about `eval_dataset`."""
    from transformers.trainer_utils import IntervalStrategy

    if eval_ds is None and training_args.eval_strategy != IntervalStrategy.NO:
        print(f"note: eval_strategy={training_args.eval_strategy.value} but no eval data; not evaluating")
        training_args.eval_strategy = IntervalStrategy.NO
        training_args.do_eval = False


def evaluate_before(trainer, enabled: bool) -> list[dict[str, Any]]:
    """Eval metrics before the first step, as log entries at step 0 (`train()` starts a fresh log history)."""
    if not enabled:
        return []
    metrics = trainer.evaluate()
    return [{**{k: v for k, v in metrics.items() if isinstance(v, (int, float))}, "step": 0, "epoch": 0.0}]


def write_train_log(out_dir: Path, log_history: list[dict[str, Any]]) -> Path:
    from groundup.core.jsonl import write_jsonl

    path = Path(out_dir) / TRAIN_LOG
    write_jsonl(path, log_history)
    return path


def save_model_folder(trainer, tokenizer, out: Path, *, base_path: str, merge: bool, model_args,
                      trust_remote_code: bool = False) -> dict[str, str]:
    """Write the trained model (and adapter) into `out`; return where each part lives."""
    from peft import PeftModel

    from groundup.core.portable import make_portable
    from groundup.models.loader import context_length

    model = trainer.accelerator.unwrap_model(trainer.model)
    if isinstance(model, PeftModel):
        adapter = out / ADAPTER_DIR if merge else out
        model.save_pretrained(adapter)
        tokenizer.save_pretrained(adapter)
        make_portable(adapter, context_length(model))
        if not merge:
            return {"adapter": str(adapter)}
        merged = merge_adapter(base_path, adapter, model_args, trust_remote_code)
        set_chat_eos(merged, tokenizer)
        merged.save_pretrained(out)
        tokenizer.save_pretrained(out)
        make_portable(out)
        return {"model": str(out), "adapter": str(adapter)}
    set_chat_eos(model, tokenizer)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    make_portable(out)
    return {"model": str(out)}


def split_output_dir(training_args) -> tuple[Path, Path]:
    """(final model folder, checkpoint folder); points the trainer at the checkpoint folder."""
    final = Path(training_args.output_dir)
    checkpoints = final.parent / f"{final.name}.checkpoints"
    training_args.output_dir = str(checkpoints)
    return final, checkpoints


def take_push_settings(training_args) -> tuple[bool, str | None, bool]:
    """(push_to_hub, hub_model_id, private), with the Trainer's own push turned off: it would create the repository
    when the Trainer is built and upload the checkpoint folder. groundup pushes the final folder after the atomic save
    instead (`hub.push_after_stage`), so a failed push never costs the trained model."""
    push = (bool(training_args.push_to_hub), training_args.hub_model_id, bool(training_args.hub_private_repo))
    training_args.push_to_hub = False
    return push


def cleanup_checkpoints(checkpoints: Path) -> None:
    if checkpoints.is_dir() and not any(p.name.startswith("checkpoint-") for p in checkpoints.iterdir()):
        shutil.rmtree(checkpoints, ignore_errors=True)


class TrainingRecord:
    """SFTConfig / DPOConfig for `recipe.yaml`: `to_dict()` masks every `*_token` field (meant for `hub_token`),
    which would turn `pad_token` / `eos_token` into "<PAD_TOKEN>" and break a re-run; those two are restored."""

    def __init__(self, args):
        self.args = args

    def to_dict(self) -> dict[str, Any]:
        values = self.args.to_dict()
        for key in ("pad_token", "eos_token"):
            if key in values:
                values[key] = getattr(self.args, key)
        return values


@dataclass
class MixtureRecord:
    """`DatasetMixtureConfig` as plain data, so `recipe.yaml` records the list of datasets readably."""

    datasets: list = field(default_factory=list)
    streaming: bool = False
    test_split_size: float | None = None


def mixture_record(mixture) -> MixtureRecord:
    return MixtureRecord([dataclasses.asdict(d) for d in mixture.datasets], mixture.streaming, mixture.test_split_size)


def final_figures(log_history: list[dict[str, Any]], keys: tuple[str, ...]) -> dict[str, Any]:
    """The last logged value of each key (e.g. `train_loss`, `eval_loss`, `rewards/margins`)."""
    figures = {}
    for key in keys:
        values = [entry[key] for entry in log_history if key in entry]
        if values:
            figures[key] = values[-1]
    return figures


def train_and_save(trainer, tokenizer, final_dir: Path, checkpoints: Path, push: tuple, *, script_args,
                   training_args, model_args, mixture, eval_before: bool,
                   figure_keys: tuple[str, ...], extra_figures: dict[str, Any], title: str, summary: str,
                   tags: list[str], script: str):
    """Train, then write the output folder atomically: model (merged + adapter/), train log, recipe.yaml, card.

    The part SFT and DPO share; `final_dir, checkpoints` come from `split_output_dir` and `push` from
    `take_push_settings`, both called before the trainer is built. `extra_figures` join the logged figures in the card. Returns (final folder,
    figures); on ranks other than the main one the figures are empty and nothing is written.
    """
    from groundup.core.configs import config_dict, save_config
    from groundup.core.model_card import write_model_card
    from groundup.core.outputs import atomic_output_dir
    from groundup.core.provenance import base_hub_id, is_hub_id, set_adapter_base
    from groundup.core.tracking import copy_tracker_logs
    from groundup.train.callbacks import finetune_progress, finish_trackers, track_into, use_progress

    use_progress(trainer, finetune_progress(script_args, training_args), final_dir.name)
    track_into(trainer, checkpoints)  # tensorboard events next to the checkpoints, then into final_dir/runs/
    from groundup.train import checkpoints as resumable

    keep = training_args.save_total_limit
    resume_from, guard = resumable.attach(trainer, script_args, training_args, model_args, checkpoints)
    before = evaluate_before(trainer, trainer.eval_dataset is not None and eval_before)
    resumable.train(trainer, resume_from, checkpoints)
    training_args.save_total_limit = keep  # the guard pruned instead of the Trainer; recipe.yaml records the setting
    resumable.stop_if_signalled(trainer, guard, script_args, training_args, script)
    if trainer.eval_dataset is not None:
        trainer.evaluate()
    finish_trackers(trainer)
    trainable, total = parameter_counts(trainer.model)
    training_args.output_dir = str(final_dir)
    if not trainer.is_world_process_zero():
        return final_dir, {}

    history = before + trainer.state.log_history
    figures = final_figures(history, figure_keys)
    figures.update(steps=trainer.state.global_step, trainable_parameters=trainable, total_parameters=total,
                   **extra_figures)
    with atomic_output_dir(final_dir, script_args.overwrite) as out:
        where = save_model_folder(trainer, tokenizer, out, base_path=model_args.model_name_or_path,
                                  merge=script_args.merge, model_args=model_args,
                                  trust_remote_code=training_args.trust_remote_code)
        write_train_log(out, history)
        copy_tracker_logs(checkpoints, out)  # kept when the empty checkpoint folder is removed below
        configs = (script_args, TrainingRecord(training_args), model_args, mixture_record(mixture))
        save_config(out, *configs)
        if "adapter" in where and "model" in where:
            summary += " The peft adapter is in `adapter/`."
        # what travels names the base by its Hub id when known, never by this machine's path (core/provenance.py)
        base = base_hub_id(model_args.model_name_or_path) or model_args.model_name_or_path
        if "adapter" in where and is_hub_id(base):
            set_adapter_base(where["adapter"], base)
        name = push[1] or str(final_dir)  # the usage snippet loads the Hub id when the folder is to be pushed
        write_model_card(out, title=title, summary=summary, base_model=base,
                         datasets=card_datasets(script_args, mixture), tags=tags + (["lora"] if model_args.use_peft
                                                                                      else []),
                         figures=figures, config=config_dict(*configs),
                         command=f"python recipes/{script}.py --config {final_dir}/recipe.yaml", name=name,
                         adapter="model" not in where)
        if "adapter" in where and "model" in where:  # replaces peft's template card, which names the local base
            write_model_card(where["adapter"], title=f"{title}: peft adapter",
                             summary="The LoRA adapter that, merged into its base, gives the model one folder up.",
                             base_model=base, datasets=card_datasets(script_args, mixture), tags=tags, adapter=True,
                             name=name if push[1] else f"{final_dir}/{ADAPTER_DIR}",
                             subfolder=ADAPTER_DIR if push[1] else None)
    cleanup_checkpoints(checkpoints)
    from groundup.core.hub import push_after_stage

    push_after_stage(final_dir, *push)
    return final_dir, figures


def card_datasets(script_args, mixture) -> list[str]:
    return data_names(script_args, mixture, as_list=True)


def method_name(model_args) -> str:
    if not model_args.use_peft:
        return "full"
    return "QLoRA" if (model_args.load_in_4bit or model_args.load_in_8bit) else "LoRA"


def data_names(script_args, mixture, as_list: bool = False):
    names = [d.path for d in mixture.datasets] if mixture.datasets else [script_args.dataset_name]
    return names if as_list else ", ".join(str(n) for n in names)


def parse_stage_args(script_type: type, config_type: type, argv: list[str] | None = None) -> tuple:
    """(script args, training config, ModelConfig, DatasetMixtureConfig) of an SFT or DPO run, from YAML and flags."""
    from trl import DatasetMixtureConfig, ModelConfig

    from groundup.core.configs import parse_config

    return parse_config([script_type, config_type, ModelConfig, DatasetMixtureConfig], argv)


def run_stage(stage: str, script_type: type, config_type: type, run, argv: list[str] | None = None) -> Path:
    """`groundup sft|dpo`: parse, check the run's paths are given (one line naming what is missing), train."""
    from groundup.core.configs import require

    script_args, training_args, model_args, mixture = parse_stage_args(script_type, config_type, argv)
    require(stage, {"model_name_or_path": model_args.model_name_or_path,
                    "datasets (or dataset_name)": mixture.datasets or script_args.dataset_name,
                    "output_dir": training_args.output_dir if training_args.output_dir_set else None})
    return run(script_args, training_args, model_args, mixture)
