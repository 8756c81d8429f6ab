"""Fine-tuning checkpoints that are safe to resume from: SFT and DPO resume with `--resume latest`, as pretraining does.

The Trainer writes `checkpoint-N/` into `<output_dir>.checkpoints/` every `save_steps` (each preset sizes N) and,
through `CheckpointGuard`, when SIGTERM or SIGINT arrives: it finishes the step, saves, prints one line and the stage
exits with 128 + the signal. After a checkpoint is complete the guard writes `groundup_checkpoint.json` into it: the
run's fingerprint and id. That file marks the checkpoint complete (a kill while saving leaves a folder without it,
which is never used) and says what made it:

- the fingerprint: every setting that shapes training (rates, schedule, batch, seed, LoRA, loss, ...; not logging,
  evaluation or output paths), a digest of the training rows as the trainer will read them (after the chat template,
  tokenization and packing) and a digest of the starting model's files. `--resume latest` takes the newest checkpoint
  whose fingerprint equals this run's and says which others it passed over; an explicit checkpoint that differs is
  refused, naming the settings that differ. A run's own checkpoints never lose to another run's.
- the run id: pruning (`save_total_limit`) deletes only this run's older checkpoints, never its newest ones and never
  another run's.

Resuming restores model, optimizer, scheduler, RNG state and the data position (the Trainer's own resume), so an
interrupted run ends with the same weights as an uninterrupted one (tests/test_resume.py checks it).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import shutil
import signal
import uuid
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from groundup.core.errors import GroundupError

MARKER = "groundup_checkpoint.json"
PREFIX = "checkpoint-"
LATEST = "latest"
# Keys that do not change the weights training produces: where things go, what is logged or evaluated and when, how
# progress shows, how often checkpoints are written. Everything else in the configs is part of the fingerprint.
IGNORED_PREFIXES = ("output_dir", "overwrite", "logging", "log_level", "log_on_each_node", "report_to", "run_name",
                    "project", "trackio", "save_", "push_to_hub", "hub_", "resume", "eval_", "per_device_eval",
                    "batch_eval", "prediction_loss_only", "disable_tqdm", "dataloader_num_workers",
                    "dataloader_pin_memory", "dataloader_persistent", "dataloader_prefetch", "include_", "skip_memory",
                    "do_train", "do_eval", "do_predict", "ddp_timeout", "local_rank", "progress", "merge",
                    "dataset_", "eval_dataset", "model_name_or_path", "num_completions_to_print", "log_completions",
                    "push", "trust_remote_code", "use_liger")
MODEL_FILES = re.compile(r".*\.(safetensors|json|jinja|py|model|txt|tiktoken)$")
SKIPPED_MODEL_FILES = {"pretrain_results.json", "metrics.json", "trainer_state.json"}
HASH_LIMIT = 2**30  # model files up to this size are identified by content, larger ones by size and mtime


# ---------------------------------------------------------------------------------------------------- fingerprint

def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [_plain(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(getattr(value, "value", value))


def _fields(config: Any) -> dict[str, Any]:
    if hasattr(config, "to_dict"):
        values = config.to_dict()
        for key in ("pad_token", "eos_token"):  # to_dict masks every *_token field
            if key in values:
                values[key] = getattr(config, key)
        return values
    return {f.name: getattr(config, f.name) for f in dataclasses.fields(config)}


def settings_of(*configs: Any) -> dict[str, Any]:
    """The settings of the configs that shape training, as one flat, JSON-safe dict."""
    merged: dict[str, Any] = {}
    for config in configs:
        for key, value in _fields(config).items():
            if not key.startswith("_") and not key.startswith(IGNORED_PREFIXES):
                merged[key] = _plain(value)
    return merged


def data_digest(dataset) -> str | None:
    """sha256 of the rows a trainer reads, in order (None for a streamed dataset: it cannot be read twice cheaply)."""
    import io

    import pyarrow as pa

    if dataset is None or not hasattr(dataset, "with_format") or not hasattr(dataset, "__len__"):
        return None
    h = hashlib.sha256()
    for batch in dataset.with_format("arrow").iter(batch_size=4096):
        sink = io.BytesIO()
        table = pa.Table.from_batches(batch.to_batches(), schema=batch.schema.remove_metadata())
        with pa.ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table)
        h.update(sink.getvalue())
    return f"{len(dataset)} rows, sha256 {h.hexdigest()[:16]}"


def model_digest(path: str | None, revision: str | None = None) -> str | None:
    """A local model folder's weights, config and tokenizer files by content; a Hub id by name and revision."""
    if not path:
        return None
    folder = Path(path)
    if not folder.is_dir():
        return f"hub {path}@{revision or 'main'}"
    h = hashlib.sha256()
    for f in sorted(p for p in folder.rglob("*") if p.is_file() and MODEL_FILES.match(p.name)
                    and p.name not in SKIPPED_MODEL_FILES and not p.name.startswith(".")):
        h.update(str(f.relative_to(folder)).encode() + b"\0")
        if f.stat().st_size > HASH_LIMIT:
            h.update(f"{f.stat().st_size}:{f.stat().st_mtime_ns}".encode())
            continue
        with open(f, "rb") as handle:
            for chunk in iter(lambda: handle.read(2**20), b""):
                h.update(chunk)
    return f"sha256 {h.hexdigest()[:16]}"


def fingerprint(trainer, script_args, training_args, model_args) -> dict[str, Any]:
    """What must match for a checkpoint to continue this run: settings, training rows, starting model."""
    return {"settings": settings_of(script_args, training_args, model_args),
            "data": data_digest(trainer.train_dataset),
            "model": model_digest(model_args.model_name_or_path, getattr(model_args, "model_revision", None))}


def differences(saved: dict[str, Any], mine: dict[str, Any], limit: int = 6) -> list[str]:
    """`key=saved (now mine)` for what differs (settings first, then data and model), at most `limit` of them."""
    out = []
    old, new = saved.get("settings") or {}, mine.get("settings") or {}
    for key in sorted(set(old) | set(new)):
        if old.get(key) != new.get(key):
            out.append(f"{key}={old.get(key)!r} (now {new.get(key)!r})")
    for key, what in (("data", "training data"), ("model", "starting model")):
        if saved.get(key) != mine.get(key):
            out.append(f"{what} {saved.get(key)} (now {mine.get(key)})")
    return out[:limit] + ([f"and {len(out) - limit} more"] if len(out) > limit else [])


# ---------------------------------------------------------------------------------------------------- checkpoints

def _step(path: Path) -> int:
    return int(path.name[len(PREFIX):])


def read_marker(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads((path / MARKER).read_text())
    except (OSError, ValueError):
        return None


def complete_checkpoints(folder: str | Path) -> list[Path]:
    """Checkpoints whose marker was written (complete), oldest step first."""
    root = Path(folder)
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and re.fullmatch(rf"{PREFIX}\d+", p.name)
             and read_marker(p) is not None]
    return sorted(found, key=_step)


def requested_resume(script_args, training_args) -> str | None:
    """`resume` (groundup's key) or the Trainer's `resume_from_checkpoint`: `latest` (also `true`), a folder, or None.
    Checked before any work; an explicit folder must be a complete checkpoint."""
    value = getattr(script_args, "resume", None) or training_args.resume_from_checkpoint
    if value is None or str(value).strip().lower() in ("", "false", "no", "none", "0"):
        return None
    if str(value).strip().lower() in (LATEST, "true", "yes", "1"):
        return LATEST
    path = Path(str(value))
    if not path.is_dir() or not (path / "trainer_state.json").is_file():
        raise GroundupError(f"resume: {value} is not a checkpoint folder (no trainer_state.json); use `latest` or a "
                            f"{PREFIX}N folder of OUTPUT_DIR.checkpoints")
    if read_marker(path) is None:
        raise GroundupError(f"resume: {value} has no {MARKER}: its save did not finish, or groundup did not write it")
    return str(path)


def choose_checkpoint(requested: str | None, folder: Path, mine: dict[str, Any], say=print) -> Path | None:
    """The checkpoint to resume from: the newest one in `folder` with this run's fingerprint (`latest`), or the one
    named, refused when its fingerprint differs."""
    if requested is None:
        return None
    if requested != LATEST:
        path = Path(requested)
        diff = differences((read_marker(path) or {}).get("fingerprint") or {}, mine)
        if diff:
            raise GroundupError(f"resume: checkpoint {path} was made with other settings: {'; '.join(diff)}")
        return path
    found = complete_checkpoints(folder)
    matching = [p for p in found if (read_marker(p) or {}).get("fingerprint") == mine]
    others = [p for p in found if p not in matching]
    if others:
        diff = differences((read_marker(others[-1]) or {}).get("fingerprint") or {}, mine, limit=3)
        say(f"resume: passing over {len(others)} checkpoint(s) in {folder} made with other settings "
            f"({'; '.join(diff)})")
    if not matching:
        if found:
            say(f"resume: no checkpoint of this run in {folder}; starting from step 0")
        return None
    return matching[-1]


class CheckpointGuard(TrainerCallback):
    """Marks complete checkpoints, prunes this run's old ones, and turns SIGTERM/SIGINT into a last checkpoint."""

    def __init__(self, fingerprint: dict[str, Any], keep: int | None, run_id: str | None = None):
        self.fingerprint, self.keep = fingerprint, keep
        self.run_id = run_id or uuid.uuid4().hex[:12]
        self.signum: int | None = None
        self.saved: Path | None = None
        self._previous: dict[int, Any] = {}

    # signals
    def _handle(self, signum, frame):
        if self.signum is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signum = signum

    def on_train_begin(self, args, state, control, **kwargs):
        import threading

        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._previous[sig] = signal.signal(sig, self._handle)

    def on_train_end(self, args, state, control, **kwargs):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def _stop_requested(self, args) -> bool:
        flag = float(self.signum is not None)
        if getattr(args, "world_size", 1) > 1:  # every rank must stop at the same step, or a collective would hang
            import torch
            import torch.distributed as dist

            if dist.is_available() and dist.is_initialized():
                tensor = torch.tensor(flag, device=args.device)
                dist.all_reduce(tensor)
                flag = float(tensor.item())
        return flag > 0

    def on_step_end(self, args, state, control, **kwargs):
        if self._stop_requested(args):
            if self.signum is None:
                self.signum = signal.SIGTERM
            control.should_save = True
            control.should_training_stop = True
        return control

    # checkpoints
    def on_save(self, args, state, control, **kwargs):
        folder = Path(args.output_dir) / f"{PREFIX}{state.global_step}"
        if state.is_world_process_zero and folder.is_dir():
            marker = {"step": state.global_step, "max_steps": state.max_steps, "run_id": self.run_id,
                      "fingerprint": self.fingerprint}
            (folder / MARKER).write_text(json.dumps(marker, indent=1) + "\n")  # written last: marks it complete
            self.saved = folder
            mine = [p for p in complete_checkpoints(args.output_dir) if (read_marker(p) or {}).get("run_id")
                    == self.run_id]
            if self.keep:
                for old in mine[:-self.keep]:
                    shutil.rmtree(old, ignore_errors=True)
        return control


def attach(trainer, script_args, training_args, model_args, checkpoints: Path, say=print) -> tuple[str | None,
                                                                                                   CheckpointGuard]:
    """Fingerprint the run, choose the checkpoint to resume from and add the guard to the trainer. Returns (the
    checkpoint path for `trainer.train(resume_from_checkpoint=...)` or None, the guard). The Trainer's own pruning is
    turned off (it keeps the highest step numbers, whoever wrote them); the guard prunes instead."""
    mine = fingerprint(trainer, script_args, training_args, model_args)
    requested = requested_resume(script_args, training_args)
    chosen = choose_checkpoint(requested, checkpoints, mine, say) if trainer.is_world_process_zero() else None
    chosen = _broadcast(chosen)
    run_id = (read_marker(chosen) or {}).get("run_id") if chosen is not None else None
    guard = CheckpointGuard(mine, training_args.save_total_limit, run_id)
    trainer.args.save_total_limit = None
    trainer.add_callback(guard)
    if chosen is not None:
        say(f"resume: continuing from {chosen} (step {_step(chosen)})")
    return (str(chosen) if chosen is not None else None), guard


def _broadcast(value: Path | None) -> Path | None:
    """Rank 0's choice on every rank (they must all resume from the same checkpoint)."""
    try:
        import torch.distributed as dist
    except ImportError:
        return value
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return value
    box = [None if value is None else str(value)]
    dist.broadcast_object_list(box, src=0)
    return None if box[0] is None else Path(box[0])


def stop_if_signalled(trainer, guard: CheckpointGuard, script_args, training_args, stage: str) -> None:
    """After `trainer.train()`: when a signal stopped it, say where the checkpoint is and exit 128 + signal."""
    if guard.signum is None:
        return
    how = ("run the same command again to continue" if requested_resume(script_args, training_args) == LATEST
           else "continue with --resume latest")
    if trainer.is_world_process_zero():
        print(f"{stage}: {signal.Signals(guard.signum).name} at step {trainer.state.global_step}: checkpoint "
              f"{guard.saved}; {how}", flush=True)
    raise SystemExit(128 + int(guard.signum))


def preflight(script_args, training_args, model_args, mixture) -> None:
    """Before any data or weights load: the output folder (writable, not empty without --overwrite, not an input) and
    the resume request (`latest`, or a complete checkpoint folder)."""
    from groundup.core.outputs import check_output_dir

    inputs = {"model_name_or_path": model_args.model_name_or_path, "dataset_name": script_args.dataset_name,
              "eval_dataset_name": script_args.eval_dataset_name,
              "datasets": [d.path for d in (mixture.datasets or [])],
              "chat_template_path": getattr(training_args, "chat_template_path", None)}
    if training_args.learning_rate == 0 and getattr(script_args, "modules_to_save_learning_rate", None) is None:
        raise GroundupError("learning_rate must be positive, got 0.0 (0 trains nothing; it is allowed only beside "
                            "modules_to_save_learning_rate)")
    check_output_dir(training_args.output_dir, script_args.overwrite, inputs=inputs)
    requested_resume(script_args, training_args)


def train(trainer, resume_from: str | None, checkpoints: Path) -> None:
    """`trainer.train`, with a full disk named as such and the checkpoint it could not finish removed."""
    try:
        trainer.train(resume_from_checkpoint=resume_from)
    except Exception as err:
        from groundup.core.outputs import disk_full_error

        full = disk_full_error(checkpoints, err)
        if full is None:
            raise
        if trainer.is_world_process_zero():
            half = Path(checkpoints) / f"{PREFIX}{trainer.state.global_step}"
            if half.is_dir() and read_marker(half) is None:
                shutil.rmtree(half, ignore_errors=True)
        raise full from None
