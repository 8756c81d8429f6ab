"""Pretrain a GPT-2 from scratch with Accelerate: one loop for a laptop CPU, one GPU, eight GPUs or many nodes.

    accelerate launch recipes/pretrain.py --config recipes/tiny/pretrain.yaml

Read top to bottom like nanoGPT's train.py; every knob has a one-line reason in `PretrainArguments`.
- Data: tokenized once into memmaps (`pretrain_data.py`); batch rows are a pure function of (seed, step), so the
  same global batch reaches the model whatever the number of processes, and a resumed run continues in order.
- Loop: `accelerator.prepare(model, optimizer)`, `accelerator.accumulate`, AdamW (fused where supported, no weight
  decay on biases, norms and embeddings), linear warmup then cosine decay computed from the step (it cannot run past
  its schedule), gradient clipping, bf16 autocast on GPUs, SDPA attention, optional `torch.compile`; the loss is
  computed inside the model's forward (compiled with it; optionally chunked, never the full logits) and batches go
  through pinned memory on CUDA: the speed levers of docs/speed.md.
- Figures: train loss, validation loss and bits per byte, tokens/s, MFU; `pretrain_log.jsonl` plus the trackers in
  `report_to` through `accelerator.log`. The final tokens/s and MFU are steady-state (the first
  `speed_warmup_steps` steps of each start left out, the steps counted named), beside the total wall time.
- Safety: `accelerator.save_state` every `save_steps` into `checkpoint-NNNNNNN/` (written under a hidden name and
  renamed, so a crash never leaves a checkpoint that looks complete; the last `save_total_limit` kept),
  `--resume latest|PATH`, SIGTERM/SIGINT checkpoint and exit, the final Hugging Face folder written atomically.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import signal
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from groundup.core.errors import GroundupError
from groundup.core.tracking import TRACKER_LOGS, copy_tracker_logs, hparams

CHECKPOINT_PREFIX = "checkpoint-"
LOG_FILE = "pretrain_log.jsonl"
RESULTS_FILE = "pretrain_results.json"
STATE_FILE = "groundup_state.json"
PRECISIONS = ("auto", "no", "bf16", "fp16")
TRACKERS = ("none", "all", "tensorboard", "trackio", "wandb", "comet_ml", "mlflow", "aim", "clearml", "dvclive",
            "swanlab")
# Settings a resumed run must share with its checkpoint (the rest, e.g. max_steps or eval_steps, may change).
# Everything that shapes the weights is here, rates included, so `--resume latest` never continues another run's
# checkpoint (it passes over those, saying so). max_steps may grow: a resumed run then follows the new schedule.
RESUME_KEYS = ("n_layer", "n_embd", "n_head", "n_positions", "vocab_size", "seq_length", "global_batch_size", "seed",
               "data_fingerprint", "learning_rate", "min_lr_ratio", "warmup_steps", "weight_decay", "adam_beta1",
               "adam_beta2", "adam_epsilon", "max_grad_norm", "dropout", "activation_function")
# What a checkpoint written before a key joined the signature was trained with.
SIGNATURE_DEFAULTS = {"activation_function": "gelu_new"}


@dataclass
class PretrainArguments:
    """`groundup pretrain`: pretrain a GPT-2 from scratch on a world, local files or a Hub dataset."""

    # --- where
    output_dir: str | None = field(default=None, metadata={"help": "Final Hugging Face model folder (required)."})
    overwrite: bool = field(default=False, metadata={"help": "Replace a non-empty output folder."})
    tokenizer: str | None = field(default=None, metadata={"help": "Tokenizer folder or Hub id (required)."})
    checkpoint_dir: str | None = field(
        default=None, metadata={"help": "Checkpoints and the live log; default OUTPUT_DIR.checkpoints (outside the "
                                "atomically written output folder)."})
    tokens_dir: str | None = field(
        default=None, metadata={"help": "Tokenized memmaps; default OUTPUT_DIR.tokens. Reused when the tokenizer "
                                "and the source are unchanged."})
    # --- data
    dataset: str | None = field(default=None, metadata={
        "help": "A world folder, local text/jsonl/parquet/csv files (globs allowed), or a Hub dataset id (required)."})
    dataset_config: str | None = field(default=None, metadata={"help": "Hub dataset configuration name."})
    dataset_split: str = field(default="train", metadata={"help": "Hub dataset split."})
    text_column: str = field(default="text", metadata={"help": "Column holding the text."})
    streaming: bool = field(default=False, metadata={"help": "Stream a Hub dataset instead of downloading it whole."})
    max_documents: int | None = field(default=None, metadata={"help": "Use at most this many documents."})
    max_tokens: int | None = field(default=None, metadata={"help": "Store at most this many training tokens."})
    val_documents: int = field(default=200, metadata={"help": "Documents held out for validation loss and bpb."})
    mix_dataset: str | None = field(default=None, metadata={
        "help": "A second, small source mixed into the training tokens (e.g. a world folder, so a web-scale run "
                "still learns the world's facts); loaded whole. Validation comes from `dataset` only."})
    mix_repeats: int = field(default=1, metadata={"help": "Copies of mix_dataset in the training tokens."})
    mix_text_column: str = field(default="text", metadata={"help": "Text column of mix_dataset."})
    tokenize_num_proc: int | None = field(
        default=None, metadata={"help": "Processes for datasets.map; default: the CPU count (at most 32)."})
    tokenize_only: bool = field(default=False, metadata={
        "help": "Tokenize and stop: do it once on one process before a long multi-GPU launch."})
    # --- model (GPT2Config)
    n_layer: int = field(default=4, metadata={"help": "Transformer blocks."})
    n_embd: int = field(default=128, metadata={"help": "Width of the residual stream."})
    n_head: int = field(default=4, metadata={"help": "Attention heads (n_embd must be divisible by it)."})
    n_positions: int = field(default=256, metadata={"help": "Context length of the model."})
    dropout: float = field(default=0.0, metadata={"help": "Dropout; 0 for pretraining (one pass, no overfitting)."})
    vocab_size: int | None = field(
        default=None, metadata={"help": "Embedding rows; default: the tokenizer's size rounded up to 64."})
    attn_implementation: str = field(default="sdpa", metadata={"help": "sdpa (fused kernels) or eager."})
    # --- batch and schedule
    seq_length: int | None = field(default=None, metadata={"help": "Training window; default n_positions."})
    per_device_batch_size: int = field(default=8, metadata={"help": "Rows per process per micro-step."})
    gradient_accumulation_steps: int = field(default=1, metadata={"help": "Micro-steps per optimizer step."})
    max_steps: int = field(default=1800, metadata={"help": "Optimizer steps. Cap runs by steps, not by time."})
    learning_rate: float = field(default=3e-3, metadata={"help": "Peak learning rate (small models take large ones)."})
    min_lr_ratio: float = field(default=0.1, metadata={"help": "Cosine decays to learning_rate * this."})
    warmup_steps: int = field(default=50, metadata={"help": "Linear warmup steps."})
    weight_decay: float = field(default=0.1, metadata={"help": "AdamW decay on matrices only."})
    adam_beta1: float = field(default=0.9, metadata={"help": "AdamW beta1."})
    adam_beta2: float = field(default=0.95, metadata={"help": "AdamW beta2 (0.95: steadier for LMs than 0.999)."})
    adam_epsilon: float = field(default=1e-8, metadata={"help": "AdamW epsilon."})
    max_grad_norm: float = field(default=1.0, metadata={"help": "Clip the global gradient norm; 0 disables."})
    seed: int = field(default=0, metadata={"help": "Initialisation and data order."})
    # --- speed
    mixed_precision: str = field(default="auto", metadata={
        "help": "auto (bf16 on GPUs that have it, else fp32; an accelerate config's value wins), no, bf16, fp16."})
    torch_compile: bool = field(default=False, metadata={"help": "torch.compile the model (GPUs; no gain on CPU)."})
    # GPU levers (docs/speed.md; bench/gpu_check.sh measures each). Defaults leave CPU runs bit for bit unchanged.
    loss_in_forward: bool = field(default=True, metadata={
        "help": "Compute the loss inside the model's forward (groundup.models.loss), so torch_compile compiles it "
                "with the model and no fp32 copy of the logits is made outside; false: logits out, loss outside."})
    loss_implementation: str = field(default="auto", metadata={
        "help": "logits (full logits, then cross-entropy), chunked (chunked linear cross-entropy: never the full "
                "logits) or auto (chunked on CUDA without torch_compile, which otherwise fuses the fp32 cast; "
                "logits on CPU, under FSDP/DeepSpeed and with torch_compile)."})
    loss_chunk_tokens: int = field(default=8192, metadata={"help": "Rows of logits per chunk of the chunked loss."})
    fused_optimizer: bool = field(default=True, metadata={"help": "AdamW's fused kernel where torch has one."})
    pin_memory: bool = field(default=True, metadata={
        "help": "On CUDA, batches go through pinned host memory with non-blocking copies (no effect on CPU)."})
    activation_function: str = field(default="gelu_new", metadata={
        "help": "GPT-2's MLP activation: gelu_new (GPT-2's own, several elementwise kernels) or gelu_pytorch_tanh "
                "(the same curve in one kernel, so faster; slightly different rounding)"
                ". Any transformers ACT2FN name."})
    speed_warmup_steps: int = field(default=10, metadata={
        "help": "Steps left out of the reported tokens/s and MFU at each start of the loop (compilation, warm-up); "
                "the results say which steps were counted."})
    use_cpu: bool = field(default=False, metadata={"help": "Train on CPU even when a GPU is present."})
    cpu_threads: int | None = field(default=None, metadata={
        "help": "torch.set_num_threads for CPU runs; default torch's (all cores). Use 1 on a machine shared with "
                "other jobs: spinning threads that compete for cores are many times slower."})
    peak_tflops: float | None = field(default=None, metadata={
        "help": "Peak TFLOP/s of one device for MFU, when the device is not in the built-in table."})
    ddp_timeout: int = field(default=1800, metadata={
        "help": "Seconds a collective (e.g. the barrier while rank 0 tokenizes) may wait."})
    # --- eval, logging, checkpoints
    eval_steps: int = field(default=100, metadata={"help": "Validation loss and bpb every N steps; 0 disables."})
    eval_batches: int = field(default=8, metadata={"help": "Validation batches (of per_device_batch_size rows per "
                                                           "process) per evaluation."})
    logging_steps: int = field(default=10, metadata={"help": "Log train loss, tokens/s and MFU every N steps."})
    progress: str = field(default="auto", metadata={
        "help": "auto (a bar on a terminal, one line per logging step otherwise), bar, lines or none. "
                "TQDM_DISABLE=1 turns bars off too."})
    report_to: list[str] = field(default_factory=lambda: ["none"], metadata={
        "help": "Trackers for accelerator.log: none, tensorboard, trackio, wandb, ... (several allowed)."})
    run_name: str | None = field(default=None, metadata={"help": "Tracker project/run name."})
    save_steps: int = field(default=200, metadata={"help": "Checkpoint every N steps; 0 disables (signals still "
                                                         "checkpoint)."})
    save_total_limit: int = field(default=2, metadata={"help": "Keep the last K checkpoints."})
    resume: str | None = field(default=None, metadata={
        "help": "`latest` (the newest checkpoint in checkpoint_dir, or a fresh start when none) or a checkpoint "
                "folder."})
    push_to_hub: bool = field(default=False, metadata={"help": "Upload the finished model folder to the Hub."})
    hub_model_id: str | None = field(default=None, metadata={"help": "USER/NAME for push_to_hub."})
    hub_private_repo: bool = field(default=False, metadata={"help": "Create the Hub repository as private."})
    recall_check: bool = field(default=True, metadata={
        "help": "On a world dataset, measure greedy birth-city recall per tier at the end (a few seconds)."})

    def __post_init__(self):
        if self.mix_repeats < 1:
            raise ValueError(f"mix_repeats must be at least 1, got {self.mix_repeats}")
        if self.seq_length is None:
            self.seq_length = self.n_positions
        if self.seq_length > self.n_positions:
            raise ValueError(f"seq_length={self.seq_length} is longer than the model's context "
                             f"n_positions={self.n_positions}")
        for key in ("n_layer", "n_embd", "n_head", "n_positions", "seq_length", "per_device_batch_size",
                    "gradient_accumulation_steps", "max_steps"):
            if getattr(self, key) < 1:
                raise ValueError(f"{key} must be at least 1, got {getattr(self, key)}")
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd={self.n_embd} must be divisible by n_head={self.n_head}")
        from groundup.core.progress import resolve_mode

        resolve_mode(self.progress)  # an unknown value fails here, not after tokenizing
        if self.mixed_precision not in PRECISIONS:
            raise ValueError(f"mixed_precision must be one of {', '.join(PRECISIONS)}, got {self.mixed_precision!r}")
        if isinstance(self.report_to, str):
            self.report_to = [self.report_to]
        unknown = [t for t in self.report_to if t not in TRACKERS]
        if unknown:
            raise ValueError(f"report_to: unknown tracker(s) {', '.join(unknown)}; choose from {', '.join(TRACKERS)}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.warmup_steps < 0:
            raise ValueError(f"warmup_steps must be >= 0, got {self.warmup_steps}")
        if not self.learning_rate > 0:  # torch's AdamW would refuse it only after tokenizing, with a traceback
            raise ValueError(f"learning_rate must be positive, got {self.learning_rate}")
        if not 0 <= self.min_lr_ratio <= 1:
            raise ValueError(f"min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}")
        for key in ("adam_beta1", "adam_beta2"):
            if not 0 <= getattr(self, key) < 1:
                raise ValueError(f"{key} must be in [0, 1), got {getattr(self, key)}")
        for key in ("weight_decay", "max_grad_norm", "save_steps", "eval_steps", "val_documents"):
            if getattr(self, key) < 0:
                raise ValueError(f"{key} must be 0 or more, got {getattr(self, key)}")
        if not self.adam_epsilon > 0:
            raise ValueError(f"adam_epsilon must be positive, got {self.adam_epsilon}")
        if self.logging_steps < 1:
            raise ValueError(f"logging_steps must be at least 1, got {self.logging_steps}")
        if self.save_total_limit < 1:
            raise ValueError(f"save_total_limit must be at least 1, got {self.save_total_limit}")
        from groundup.train.speed import check_speed_keys

        check_speed_keys(self)  # loss_implementation, loss_chunk_tokens, activation_function, speed_warmup_steps
        if self.checkpoint_dir is None and self.output_dir:  # no output_dir: `main` stops, naming it
            self.checkpoint_dir = f"{self.output_dir.rstrip('/')}.checkpoints"
        if self.tokens_dir is None and self.output_dir:
            self.tokens_dir = f"{self.output_dir.rstrip('/')}.tokens"


# ------------------------------------------------------------------------------------------------ schedule, optimizer

def lr_at(step: int, args: PretrainArguments) -> float:
    """Linear warmup to `learning_rate`, cosine down to `min_lr_ratio` of it at `max_steps`, flat after that."""
    if step < args.warmup_steps:
        return args.learning_rate * (step + 1) / args.warmup_steps
    progress = min(1.0, (step - args.warmup_steps) / max(1, args.max_steps - args.warmup_steps))
    floor = args.learning_rate * args.min_lr_ratio
    return floor + 0.5 * (args.learning_rate - floor) * (1 + math.cos(math.pi * progress))


def make_optimizer(model, args: PretrainArguments, device_type: str):
    """AdamW; weight decay only on weight matrices (not biases, layer norms or the embeddings)."""
    import torch

    decay, no_decay = [], []
    for name, p in model.named_parameters():  # tied lm_head/wte appears once, as transformer.wte.weight
        if not p.requires_grad:
            continue
        (decay if p.dim() >= 2 and ".wte." not in f".{name}" and ".wpe." not in f".{name}" else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": args.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    kwargs = dict(lr=args.learning_rate, betas=(args.adam_beta1, args.adam_beta2), eps=args.adam_epsilon)
    if getattr(args, "fused_optimizer", True) and device_type in ("cuda", "cpu", "xpu", "mps"):
        kwargs["fused"] = True  # fused kernels: one launch for all parameters
    return torch.optim.AdamW(groups, **kwargs)


# ------------------------------------------------------------------------------------------------ run state

class TrainState:
    """What the loop needs besides model and optimizer; saved in every checkpoint (`register_for_checkpointing`)."""

    def __init__(self):
        self.step = 0
        self.tokens = 0
        self.train_seconds = 0.0
        # steady-state speed (groundup.train.speed): steps counted after each start's speed_warmup_steps
        self.steady_tokens, self.steady_seconds, self.steady_steps = 0, 0.0, 0
        self.steady_ranges: list[list[int]] = []  # [first, last] step counted, one pair per start of the loop

    def count_steady(self, dt: float, tokens: int, new_range: bool) -> None:
        self.steady_tokens += tokens
        self.steady_seconds += dt
        self.steady_steps += 1
        if new_range or not self.steady_ranges:
            self.steady_ranges.append([self.step, self.step])
        self.steady_ranges[-1][1] = self.step

    def state_dict(self) -> dict[str, Any]:
        return {"step": self.step, "tokens": self.tokens, "train_seconds": self.train_seconds,
                "steady_tokens": self.steady_tokens, "steady_seconds": self.steady_seconds,
                "steady_steps": self.steady_steps, "steady_ranges": self.steady_ranges}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.step, self.tokens, self.train_seconds = state["step"], state["tokens"], state["train_seconds"]
        self.steady_tokens = state.get("steady_tokens", 0)  # checkpoints written before steady-state figures
        self.steady_seconds = state.get("steady_seconds", 0.0)
        self.steady_steps = state.get("steady_steps", 0)
        self.steady_ranges = [list(r) for r in state.get("steady_ranges", [])]


def list_checkpoints(checkpoint_dir: str | Path) -> list[Path]:
    """Complete checkpoints, oldest first. Incomplete ones keep their hidden staging name and are never listed."""
    root = Path(checkpoint_dir)
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and re.fullmatch(rf"{CHECKPOINT_PREFIX}\d+", p.name)
             and (p / STATE_FILE).is_file()]
    return sorted(found, key=lambda p: int(p.name[len(CHECKPOINT_PREFIX):]))


def resolve_resume(args: PretrainArguments) -> Path | None:
    if not args.resume:
        return None
    if args.resume == "latest":
        return None  # chosen once the run's signature is known: `Trainer.latest_checkpoint`
    path = Path(args.resume)
    if not (path / STATE_FILE).is_file():
        raise GroundupError(f"resume: {path} is not a complete checkpoint (no {STATE_FILE}); "
                            f"use `latest` or a {CHECKPOINT_PREFIX}N folder")
    check_resume_step(path, args.max_steps)
    return path


def check_resume_step(path: Path, max_steps: int) -> None:
    """Refuse a checkpoint past `max_steps`: the run would write a model trained longer than its recipe says."""
    step = json.loads((path / STATE_FILE).read_text()).get("step", 0)
    if step > max_steps:
        raise GroundupError(f"resume: checkpoint {path} is at step {step}, past max_steps={max_steps}; raise "
                            f"max_steps to at least {step}, or start afresh (no --resume, or another checkpoint_dir)")


class StopSignal:
    """SIGTERM/SIGINT set a flag; the loop checkpoints at the end of the step and exits. A second SIGINT aborts."""

    def __init__(self):
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    def install(self):
        import threading

        if threading.current_thread() is not threading.main_thread():
            return self  # signal handlers can only be set from the main thread (e.g. not from a worker thread)
        for sig in (signal.SIGTERM, signal.SIGINT):
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.signum is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signum = signum

    def restore(self):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


# ------------------------------------------------------------------------------------------------ the run

def _mixed_precision(args: PretrainArguments, cpu: bool) -> str | None:
    import torch

    if args.mixed_precision != "auto":
        return args.mixed_precision
    if "ACCELERATE_MIXED_PRECISION" in os.environ:
        return None  # `accelerate launch` said: let the Accelerator read it
    if not cpu and torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        return "bf16"
    return "no"


def _device_name(accelerator) -> str | None:
    import torch

    if accelerator.device.type == "cuda":
        return torch.cuda.get_device_name(accelerator.device)
    return None


def make_accelerator(args: PretrainArguments):
    import datetime

    import torch
    from accelerate import Accelerator
    from accelerate.utils import InitProcessGroupKwargs, ProjectConfiguration

    # Without cpu=True, `accelerate launch --multi_gpu` on a machine with no GPU gives independent processes, not
    # DDP; with it, Accelerate builds a gloo process group.
    cpu = args.use_cpu or not torch.accelerator.is_available()
    sharded = [name for name in ("FSDP", "DEEPSPEED") if os.environ.get(f"ACCELERATE_USE_{name}", "").lower() == "true"]
    if cpu and sharded and os.environ.get("LOCAL_RANK", "0") == "0":  # accelerate 1.15 falls back without a word
        print(f"pretrain: note: {sharded[0]} needs GPUs; on CPU accelerate runs this launch as plain DDP (gloo), "
              "every process holding the whole model (docs/distributed.md)", file=sys.stderr, flush=True)
    trackers = [t for t in args.report_to if t != "none"]
    return Accelerator(
        cpu=cpu,
        mixed_precision=_mixed_precision(args, cpu),
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        log_with=trackers or None,
        project_config=ProjectConfiguration(project_dir=args.checkpoint_dir,
                                            logging_dir=str(Path(args.checkpoint_dir) / TRACKER_LOGS)),
        kwargs_handlers=[InitProcessGroupKwargs(timeout=datetime.timedelta(seconds=args.ddp_timeout))],
    )


def load_tokenizer(path: str):
    """A tokenizer folder (or a Hub id: `org/name`)."""
    from groundup.models.loader import load_tokenizer as load

    return load(path, kind="tokenizer")


class Trainer:
    """The loop's pieces, built once; `train()` runs to `max_steps` or to a signal."""

    def __init__(self, args: PretrainArguments, accelerator, tokenizer, data, model_config):
        import numpy as np
        import torch

        from groundup.models import gpt2 as M
        from groundup.data.pretrain import Windows, eval_windows, token_byte_lengths

        self.args, self.acc, self.tokenizer, self.data = args, accelerator, tokenizer, data
        self.world = accelerator.num_processes
        self.rank = accelerator.process_index
        self.global_batch = args.per_device_batch_size * args.gradient_accumulation_steps * self.world
        self.windows = Windows(data.train, args.seq_length, args.seed)
        self.n_eval = eval_windows(data.val, args.seq_length, args.eval_batches * args.per_device_batch_size
                                   * self.world, self.world) if args.eval_steps > 0 else 0
        self.token_bytes = torch.as_tensor(token_byte_lengths(tokenizer, model_config.vocab_size),
                                           device=accelerator.device)

        torch.manual_seed(args.seed)  # same initial weights on every rank and in every run
        model = M.build_model(model_config, args.attn_implementation)
        self.n_params = M.count_params(model)
        self.model_config = model_config
        self.fpt = M.flops_per_token(model_config, args.seq_length)
        self.peak = M.peak_flops(_device_name(accelerator), args.peak_tflops)
        optimizer = make_optimizer(model, args, accelerator.device.type)
        from groundup.train.speed import resolve_loss_implementation

        self.loss_implementation = resolve_loss_implementation(args, accelerator)
        if args.loss_in_forward:  # the loss inside the forward: compiled with the model (groundup.models.loss)
            from groundup.models.loss import attach_training_loss

            attach_training_loss(model, self.loss_implementation, args.loss_chunk_tokens)
        self.pin = args.pin_memory and accelerator.device.type == "cuda"
        self.process_steps = 0  # steps this process ran: the first speed_warmup_steps are not timed as steady
        if args.torch_compile:
            model = torch.compile(model)
        self.model, self.optimizer = accelerator.prepare(model, optimizer)
        self.state = TrainState()
        accelerator.register_for_checkpointing(self.state)
        self.log_path = Path(args.checkpoint_dir) / LOG_FILE
        self.stop = StopSignal()
        self.last: dict[str, Any] = {}
        self._np = np
        self.run_id = uuid.uuid4().hex[:12]  # this run's checkpoints (a resumed run takes its checkpoint's id)
        if accelerator.is_main_process:  # saves a killed run left half-written: never listed, only taking space
            for stale in Path(args.checkpoint_dir).glob(f".tmp-{CHECKPOINT_PREFIX}*"):
                shutil.rmtree(stale, ignore_errors=True)

    # ---------------------------------------------------------------------------------------------- batches
    def batch(self, micro: int):
        """This process's rows for one micro-step: a slice of the step's global batch."""
        import torch

        b = self.args.per_device_batch_size
        first = self.state.step * self.global_batch + (micro * self.world + self.rank) * b
        rows = torch.from_numpy(self.windows.rows(first, b))
        if self.pin:  # a pageable copy would make the host wait for the GPU; a pinned one is queued like a kernel
            rows = rows.pin_memory()
        rows = rows.to(self.acc.device, non_blocking=True)
        return rows[:, :-1], rows[:, 1:]

    def loss(self, x, y):
        import torch.nn.functional as F

        if self.args.loss_in_forward:
            return self.model(input_ids=x, loss_targets=y)
        logits = self.model(input_ids=x).logits
        return F.cross_entropy(logits.float().view(-1, logits.size(-1)), y.reshape(-1))

    # ---------------------------------------------------------------------------------------------- eval
    def evaluate(self) -> dict[str, float]:
        """Mean validation loss (nats per token) and bits per byte over the same windows every time."""
        import torch
        import torch.nn.functional as F

        if not self.n_eval:
            return {}
        seq, b = self.args.seq_length, self.args.per_device_batch_size
        mine = list(range(self.rank, self.n_eval, self.world))
        totals = torch.zeros(4, dtype=torch.float64, device=self.acc.device)  # loss sum, tokens, bpb-loss, bytes
        self.model.eval()
        with torch.no_grad():
            for i in range(0, len(mine), b):
                rows = self._np.stack([self.data.val[w * seq: w * seq + seq + 1] for w in mine[i:i + b]])
                rows = torch.from_numpy(rows.astype(self._np.int64)).to(self.acc.device)
                x, y = rows[:, :-1], rows[:, 1:]
                logits = self.model(input_ids=x).logits.float()
                losses = F.cross_entropy(logits.view(-1, logits.size(-1)), y.reshape(-1), reduction="none")
                nbytes = self.token_bytes[y.reshape(-1)]
                totals += torch.stack([losses.sum(), torch.tensor(float(losses.numel()), device=losses.device),
                                       (losses * (nbytes > 0)).sum(), nbytes.sum()]).double()
        self.model.train()
        totals = self.acc.reduce(totals, "sum")
        out = {"val_loss": (totals[0] / totals[1]).item()}
        if totals[3] > 0:
            out["val_bpb"] = (totals[2] / (math.log(2) * totals[3])).item()
        return out

    # ---------------------------------------------------------------------------------------------- logging
    def log(self, values: dict[str, Any]) -> None:
        row = {"step": self.state.step, "tokens": self.state.tokens, **values}
        self.acc.log({k: v for k, v in values.items() if isinstance(v, (int, float))}, step=self.state.step)
        if self.acc.is_main_process:
            with open(self.log_path, "a") as f:
                f.write(json.dumps(row) + "\n")
        self.last.update(values)

    def _trim_log(self) -> None:
        """On resume, drop log rows the interrupted run wrote after the checkpoint it resumes from."""
        if not self.acc.is_main_process or not self.log_path.is_file():
            return
        rows = [json.loads(line) for line in self.log_path.read_text().splitlines() if line.strip()]
        kept = [r for r in rows if r["step"] <= self.state.step]
        self.log_path.write_text("".join(json.dumps(r) + "\n" for r in kept))

    # ---------------------------------------------------------------------------------------------- checkpoints
    def run_signature(self) -> dict[str, Any]:
        a = self.args
        return {"n_layer": a.n_layer, "n_embd": a.n_embd, "n_head": a.n_head, "n_positions": a.n_positions,
                "vocab_size": self.model_config.vocab_size, "seq_length": a.seq_length,
                "global_batch_size": self.global_batch, "seed": a.seed,
                "data_fingerprint": self.data.meta.get("fingerprint"), "learning_rate": a.learning_rate,
                "min_lr_ratio": a.min_lr_ratio, "warmup_steps": a.warmup_steps, "weight_decay": a.weight_decay,
                "adam_beta1": a.adam_beta1, "adam_beta2": a.adam_beta2, "adam_epsilon": a.adam_epsilon,
                "max_grad_norm": a.max_grad_norm, "dropout": a.dropout,
                "activation_function": a.activation_function}

    def signature_differences(self, path: Path) -> list[str]:
        saved = json.loads((path / STATE_FILE).read_text()).get("signature", {})
        mine = self.run_signature()
        saved = {**SIGNATURE_DEFAULTS, **saved}
        return [f"{k}={saved.get(k)} (now {mine[k]})" for k in RESUME_KEYS if saved.get(k) != mine[k]]

    def latest_checkpoint(self, say=print) -> Path | None:
        """`--resume latest`: the newest checkpoint made with this run's settings and data. Others (a copied folder,
        an earlier run with another learning rate) are passed over with a note, never continued and never pruned."""
        found = list_checkpoints(self.args.checkpoint_dir)
        matching = [p for p in found if not self.signature_differences(p)]
        others = [p for p in found if p not in matching]
        if others:
            say(f"pretrain: resume: passing over {len(others)} checkpoint(s) in {self.args.checkpoint_dir} made with "
                f"other settings ({', '.join(self.signature_differences(others[-1])[:3])})")
        if not matching:
            if found:
                say("pretrain: resume: no checkpoint of this run; starting from step 0")
            return None
        check_resume_step(matching[-1], self.args.max_steps)
        return matching[-1]

    def save_checkpoint(self) -> Path:
        """All ranks write into a hidden folder; rank 0 renames it when complete, then prunes old checkpoints."""
        root = Path(self.args.checkpoint_dir)
        name = f"{CHECKPOINT_PREFIX}{self.state.step:07d}"
        staging, final = root / f".tmp-{name}", root / name
        if self.acc.is_main_process:
            shutil.rmtree(staging, ignore_errors=True)
        self.acc.wait_for_everyone()
        try:
            self.acc.save_state(str(staging))
            self.acc.wait_for_everyone()
            if self.acc.is_main_process:
                state = {**self.state.state_dict(), "signature": self.run_signature(), "num_processes": self.world,
                         "run_id": self.run_id, "max_steps": self.args.max_steps}
                (staging / STATE_FILE).write_text(json.dumps(state, indent=1) + "\n")  # written last: complete
        except BaseException as err:  # e.g. a full disk: no half-written checkpoint stays behind
            from groundup.core.outputs import disk_full_error

            full = disk_full_error(staging, err) if isinstance(err, Exception) else None
            if self.acc.is_main_process:
                shutil.rmtree(staging, ignore_errors=True)
            if full is not None:
                raise full from None
            raise
        if self.acc.is_main_process:
            if final.exists():
                shutil.rmtree(final)
            staging.rename(final)
            # only this run's older checkpoints: another run's (a copied folder) never push out this run's newest
            mine = [p for p in list_checkpoints(root)
                    if json.loads((p / STATE_FILE).read_text()).get("run_id") == self.run_id]
            for old in mine[: -self.args.save_total_limit]:
                shutil.rmtree(old, ignore_errors=True)
        self.acc.wait_for_everyone()
        return final

    def resume_from(self, path: Path) -> None:
        saved = json.loads((path / STATE_FILE).read_text())
        diff = self.signature_differences(path)
        if diff:
            raise GroundupError(f"resume: checkpoint {path} was made with different settings: {', '.join(diff)}")
        check_resume_step(path, self.args.max_steps)
        self.run_id = saved.get("run_id") or self.run_id
        self.acc.load_state(str(path))
        self._trim_log()

    # ---------------------------------------------------------------------------------------------- loop
    def train(self) -> int | None:
        """Run to `max_steps`. Returns the signal number when stopped by SIGTERM/SIGINT (after checkpointing)."""
        import torch

        from groundup.core.progress import Progress

        args, acc = self.args, self.acc
        self.stop.install()
        bar = Progress("pretrain", args.max_steps, initial=self.state.step, mode=args.progress,
                       enabled=acc.is_local_main_process)
        if self.state.step == 0 and self.n_eval:
            self.log(self.evaluate())  # the untrained model's loss: the first point of the curve
        window_tokens, window_time = 0, 0.0
        loss_sum = torch.zeros((), device=acc.device)
        n_loss = 0
        stopped = None
        try:
            while self.state.step < args.max_steps:
                t0 = time.perf_counter()
                lr = lr_at(self.state.step, args)
                for group in self.optimizer.param_groups:
                    group["lr"] = lr
                for micro in range(args.gradient_accumulation_steps):
                    x, y = self.batch(micro)
                    with acc.accumulate(self.model):
                        loss = self.loss(x, y)
                        acc.backward(loss)
                    loss_sum += loss.detach()
                    n_loss += 1
                grad_norm = None
                if args.max_grad_norm > 0:
                    grad_norm = acc.clip_grad_norm_(self.model.parameters(), args.max_grad_norm)
                self.optimizer.step()
                self.optimizer.zero_grad(set_to_none=True)
                self.state.step += 1
                self.state.tokens += self.global_batch * args.seq_length
                self.process_steps += 1
                warm = self.process_steps > args.speed_warmup_steps  # counted in the steady-state figures
                if acc.device.type == "cuda" and (self.state.step % args.logging_steps == 0 or self.state.step
                                                  == args.max_steps or self.process_steps == args.speed_warmup_steps):
                    torch.cuda.synchronize()  # also where the steady-state window starts and ends
                dt = time.perf_counter() - t0
                self.state.train_seconds += dt
                if warm:
                    self.state.count_steady(dt, self.global_batch * args.seq_length,
                                            new_range=self.process_steps == args.speed_warmup_steps + 1)
                window_tokens += self.global_batch * args.seq_length
                window_time += dt
                bar.update(1)

                step = self.state.step
                if step % args.logging_steps == 0 or step == args.max_steps:
                    train_loss = acc.reduce(loss_sum / max(n_loss, 1), "mean").item()
                    tps = window_tokens / max(window_time, 1e-9)
                    row = {"loss": train_loss, "lr": lr, "tokens_per_s": tps,
                           "epoch": self.windows.epoch_of(step * self.global_batch)}
                    if grad_norm is not None:
                        row["grad_norm"] = float(grad_norm)
                    utilisation = _mfu(tps, self.fpt, self.peak, self.world)
                    if utilisation is not None:
                        row["mfu"] = utilisation
                    self.log(row)
                    bar.log(loss=round(train_loss, 4), **{"tokens/s": tps})
                    loss_sum.zero_()
                    n_loss, window_tokens, window_time = 0, 0, 0.0
                if self.n_eval and (step % args.eval_steps == 0 or step == args.max_steps):
                    values = self.evaluate()
                    self.log(values)
                    bar.write(f"step {step}: val loss {values['val_loss']:.4f}"
                              + (f", {values['val_bpb']:.4f} bits/byte" if "val_bpb" in values else ""),
                              progress=True)
                stop_now = self._signal_received()
                if stop_now or (args.save_steps and step % args.save_steps == 0 and step < args.max_steps):
                    path = self.save_checkpoint()
                    if stop_now:
                        stopped = self.stop.signum or signal.SIGTERM
                        how = ("run the same command again to continue" if args.resume == "latest"
                               else "continue with --resume latest")  # the speedrun passes `resume: latest`
                        bar.write(f"pretrain: {signal.Signals(stopped).name} at step {step}: checkpoint {path}; "
                                  f"{how}")
                        break
        finally:
            bar.close()
            self.stop.restore()
        return stopped

    def _signal_received(self) -> bool:
        """Every rank must agree to stop at the same step, or the next collective would hang."""
        import torch

        flag = float(self.stop.signum is not None)
        if self.world > 1:
            flag = self.acc.reduce(torch.tensor(flag, device=self.acc.device), "sum").item()
        return flag > 0


def _mfu(tps: float, fpt: float, peak: float | None, world: int) -> float | None:
    from groundup.models.gpt2 import mfu

    return mfu(tps, fpt, peak, world)


# ------------------------------------------------------------------------------------------------ recall check

def world_recall(model, tokenizer, world_dir: str | Path, attribute: str = "birth_city", batch_size: int = 64,
                 device=None) -> dict[str, dict[str, float]]:
    """Greedy completion of "NAME was born in the city of" (the answer sentence of the world's `schema.json`, cut
    before the value) for every person; correct when the completion starts with the person's value. Accuracy per
    tier; `unseen` is the chance level."""
    import torch

    from groundup.core.jsonl import read_jsonl
    from groundup.data.schema import find_schema

    people = read_jsonl(Path(world_dir) / "world.jsonl")
    schema = find_schema(world_dir)
    if schema is None:
        raise GroundupError(f"world {world_dir}: no schema.json, so no answer sentence to complete")
    device = device or next(model.parameters()).device
    tokenizer = _left_padded(tokenizer)
    was_training = model.training
    model.eval()
    results: dict[str, list[int]] = {}
    for i in range(0, len(people), batch_size):
        chunk = people[i:i + batch_size]
        prompts = [schema.cloze_prefix({"name": p["name"], "attribute": attribute}) for p in chunk]
        enc = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False).to(device)
        with torch.no_grad():
            out = model.generate(**enc, max_new_tokens=8, do_sample=False, pad_token_id=tokenizer.pad_token_id,
                                 eos_token_id=tokenizer.convert_tokens_to_ids("<|endoftext|>"))
        texts = tokenizer.batch_decode(out[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
        for person, text in zip(chunk, texts):
            ok = text.strip().startswith(person["attributes"][attribute])
            results.setdefault(person["tier"], []).append(int(ok))
    model.train(was_training)
    return {tier: {"n": len(v), "accuracy": sum(v) / len(v)} for tier, v in sorted(results.items())}


def _left_padded(tokenizer):
    import copy

    tok = copy.copy(tokenizer)
    tok.padding_side = "left"
    return tok


# ------------------------------------------------------------------------------------------------ output folder

def save_output(trainer: Trainer, args: PretrainArguments, out: Path, results: dict[str, Any], command: str) -> None:
    from groundup.models import gpt2 as M
    from groundup.core.configs import config_dict, save_config
    from groundup.core.model_card import write_model_card

    acc = trainer.acc
    unwrapped = acc.unwrap_model(trainer.model, keep_torch_compile=False)
    state_dict = acc.get_state_dict(trainer.model)
    unwrapped.generation_config = M.generation_config(trainer.tokenizer)
    unwrapped.save_pretrained(out, state_dict=state_dict, safe_serialization=True)
    trainer.tokenizer.save_pretrained(out)
    from groundup.core.portable import make_portable

    make_portable(out)  # tokenizer_config.json that transformers 4.x loads, model_max_length = n_positions
    if trainer.log_path.is_file():
        shutil.copy(trainer.log_path, out / LOG_FILE)
    copy_tracker_logs(Path(args.checkpoint_dir), out)  # tensorboard events: `tensorboard --logdir OUTPUT_DIR`
    (out / RESULTS_FILE).write_text(json.dumps(results, indent=1) + "\n")
    save_config(out, args)
    figures = {"parameters": f"{results['parameters'] / 1e6:.2f}M", "steps": results["steps"],
               "tokens seen": f"{results['tokens']:,}", "epochs": round(results["epochs"], 2),
               "final train loss": results.get("train_loss"), "validation loss": results.get("val_loss"),
               "validation bits per byte": results.get("val_bpb"),
               "tokens/s": f"{results['tokens_per_s']:,.0f} ({results['device']}; "
                           f"{results.get('tokens_per_s_scope', 'all steps')})"}
    if results.get("wall_seconds") is not None:
        from groundup.train.speed import duration

        figures["wall time (the whole pretrain command)"] = duration(results["wall_seconds"])
    if results.get("mfu") is not None:
        figures["MFU"] = f"{100 * results['mfu']:.1f}% (same steps as tokens/s)"
    for tier, r in (results.get("recall") or {}).items():
        figures[f"greedy {results['recall_attribute']} recall, {tier}"] = f"{r['accuracy']:.2f} (n={r['n']})"
    if results.get("copy_check"):
        figures["copy check: repeated random tokens predicted (first sayings)"] = (
            f"{results['copy_check']['repeated']:.2f} ({results['copy_check']['first']:.2f})")
    write_model_card(
        out, title=f"groundup base model ({Path(args.output_dir).name})",
        summary=(f"A {results['parameters'] / 1e6:.2f}M-parameter GPT-2 pretrained from scratch by groundup on "
                 f"`{args.dataset}` ({results['tokens']:,} tokens). A base model: it continues text; it has not "
                 "been taught to chat or to refuse yet."),
        datasets=[args.dataset], tags=["pretraining", "gpt2"], figures={k: v for k, v in figures.items()
                                                                        if v is not None},
        config=config_dict(args), command=command, name=args.hub_model_id or args.output_dir)


def parse_args(argv: list[str] | None = None) -> tuple:
    from groundup.core.configs import parse_config

    return parse_config([PretrainArguments], argv)


def main(argv: list[str] | None = None) -> Path | None:
    """Parse, tokenize (once), train, write the model folder. Returns its path (None when stopped by a signal)."""
    from groundup.models.gpt2 import build_config, check_vocab, describe
    from groundup.core.outputs import atomic_output_dir, check_output_dir
    from groundup.data.pretrain import DataSpec, prepare_tokens
    from groundup.data.text import is_world_dir

    from groundup.core.configs import require

    started = time.perf_counter()  # the total wall time, printed and saved beside the steady-state speed
    argv = list(sys.argv[1:] if argv is None else argv)
    (args,) = parse_args(argv)
    from groundup.core.progress import library_bars, resolve_mode

    library_bars(resolve_mode(args.progress) == "bar")  # datasets' tokenizing bars, transformers' weight writing
    require("pretrain", {"output_dir": args.output_dir, "tokenizer": args.tokenizer, "dataset": args.dataset})
    check_output_dir(args.output_dir, args.overwrite, inputs={  # fail before minutes of training, not after
        "tokenizer": args.tokenizer, "dataset": args.dataset, "mix_dataset": args.mix_dataset,
        "checkpoint_dir": args.checkpoint_dir, "tokens_dir": args.tokens_dir})
    resume_path = resolve_resume(args)
    tokenizer = load_tokenizer(args.tokenizer)
    model_config = build_config(tokenizer, n_layer=args.n_layer, n_embd=args.n_embd, n_head=args.n_head,
                                n_positions=args.n_positions, dropout=args.dropout, vocab_size=args.vocab_size,
                                activation_function=args.activation_function)
    check_vocab(model_config, tokenizer)

    if args.cpu_threads:
        import torch

        torch.set_num_threads(args.cpu_threads)
    accelerator = make_accelerator(args)
    say = accelerator.print
    spec = DataSpec(dataset=args.dataset, text_column=args.text_column, dataset_config=args.dataset_config,
                    dataset_split=args.dataset_split, streaming=args.streaming, max_documents=args.max_documents,
                    max_tokens=args.max_tokens, val_documents=args.val_documents, seed=args.seed,
                    mix_dataset=args.mix_dataset, mix_repeats=args.mix_repeats, mix_text_column=args.mix_text_column)
    num_proc = args.tokenize_num_proc or min(os.cpu_count() or 1, 32)
    with accelerator.local_main_process_first():  # rank 0 tokenizes; the others wait on the barrier, then reuse
        data = prepare_tokens(spec, tokenizer, args.tokens_dir, num_proc, log=say)
    if data.meta["vocab_size"] > model_config.vocab_size:
        raise GroundupError(f"tokenizer/model vocab mismatch: tokenized data has ids up to "
                            f"{data.meta['vocab_size']} but the model has {model_config.vocab_size} rows")
    if args.tokenize_only:
        accelerator.end_training()
        return None

    Path(args.checkpoint_dir).mkdir(parents=True, exist_ok=True)
    trainer = Trainer(args, accelerator, tokenizer, data, model_config)
    if resume_path is None and args.resume == "latest":
        resume_path = trainer.latest_checkpoint(say)
    if resume_path is not None:
        trainer.resume_from(resume_path)
        say(f"pretrain: resumed from {resume_path} at step {trainer.state.step}")
    elif accelerator.is_main_process and trainer.log_path.exists():
        trainer.log_path.unlink()  # a fresh run starts a fresh log
    trackers = [t for t in args.report_to if t != "none"]
    if trackers:
        from groundup.core.configs import config_dict

        # trackers take flat scalars: tensorboard's hparams refuse None and lists
        accelerator.init_trackers(args.run_name or "groundup-pretrain", config=hparams(config_dict(args)))
    say(f"pretrain: {describe(model_config, trainer.n_params)}; {accelerator.num_processes} process(es) on "
        f"{accelerator.device.type}, precision {accelerator.mixed_precision}; global batch "
        f"{trainer.global_batch} x {args.seq_length} = {trainer.global_batch * args.seq_length:,} tokens/step; "
        f"{args.max_steps} steps = {trainer.windows.epoch_of(args.max_steps * trainer.global_batch):.2f} epochs of "
        f"{data.meta['train_tokens']:,} tokens")

    start = time.perf_counter()
    stopped = trainer.train()
    if stopped is not None:
        accelerator.end_training()
        raise SystemExit(128 + int(stopped))

    last = trainer.last
    from groundup.train.speed import speed_phrase, speed_results

    speed = speed_results(trainer.state, args.speed_warmup_steps, trainer.fpt, trainer.peak, trainer.world,
                          time.perf_counter() - started)  # steady-state: warm-up and compilation left out
    results: dict[str, Any] = {
        "parameters": trainer.n_params, "steps": trainer.state.step, "tokens": trainer.state.tokens,
        "epochs": trainer.windows.epoch_of(trainer.state.step * trainer.global_batch),
        "train_loss": last.get("loss"), "val_loss": last.get("val_loss"), "val_bpb": last.get("val_bpb"),
        **speed, "loss_implementation": trainer.loss_implementation if args.loss_in_forward else "logits (outside)",
        "flops_per_token": trainer.fpt, "train_seconds": trainer.state.train_seconds,
        "wall_seconds_this_process": time.perf_counter() - start, "num_processes": accelerator.num_processes,
        "device": _device_name(accelerator) or accelerator.device.type,
        "mixed_precision": accelerator.mixed_precision,
        "distributed_type": str(getattr(accelerator.distributed_type, "value", accelerator.distributed_type)),
    }
    distributed = accelerator.distributed_type.value if hasattr(accelerator.distributed_type, "value") else ""
    world = next((d for d in (args.dataset, args.mix_dataset) if d and is_world_dir(d)), None)
    if accelerator.is_main_process and distributed not in ("FSDP", "DEEPSPEED"):  # sharded: no whole model here
        from groundup.models.diagnostics import copy_check

        model = accelerator.unwrap_model(trainer.model, keep_torch_compile=False)
        results["copy_check"] = copy_check(model, tokenizer)
        if args.recall_check and world and (Path(world) / "schema.json").is_file():
            results["recall_attribute"] = "birth_city"
            results["recall"] = world_recall(model, tokenizer, world)
    command = "accelerate launch recipes/pretrain.py " + " ".join(argv)
    out = Path(args.output_dir)
    accelerator.wait_for_everyone()
    results["wall_seconds"] = time.perf_counter() - started  # up to writing the folder
    if accelerator.is_main_process:
        with atomic_output_dir(out, args.overwrite) as staging:
            save_output(trainer, args, staging, results, command)
    else:  # the state dict gather is a collective under FSDP / DeepSpeed: every rank takes part
        accelerator.get_state_dict(trainer.model)
    accelerator.wait_for_everyone()
    accelerator.end_training()
    recall = results.get("recall", {})
    results["wall_seconds"] = time.perf_counter() - started
    say(f"pretrain: {results['steps']} steps, {results['tokens']:,} tokens at {speed_phrase(results)}"
        + (f"; val loss {results['val_loss']:.4f}, {results['val_bpb']:.4f} bits/byte" if results["val_bpb"] else "")
        + ("; birth-city recall " + ", ".join(f"{t} {r['accuracy']:.2f}" for t, r in recall.items()) if recall
           else "")
        + (f"; copies from context {results['copy_check']['repeated']:.2f} of repeated tokens"
           if results.get("copy_check") else "")
        + f" -> {out}")
    if accelerator.is_main_process:
        from groundup.core.hub import push_after_stage

        push_after_stage(out, args.push_to_hub, args.hub_model_id, args.hub_private_repo)
    return out
