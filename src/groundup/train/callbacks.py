"""What SFT and DPO add to TRL's trainers for logs: progress that suits the terminal or the log file, and tracker
folders that survive the atomic output folder.

- Progress (`progress: auto | bar | lines | none`, see `groundup.core.progress`): on a terminal the Trainer's own tqdm
  bar; otherwise `LogLines` in place of the bar (and of the PrinterCallback dicts `disable_tqdm: true` gives), one
  line per logged step (step/total, loss, steps/s, ETA). TRL's own `disable_tqdm: true` also turns the bar into lines.
- Trackers: the Trainer's tensorboard callback writes `<output_dir>/runs/<date>_<host>/`, and `output_dir` is the
  checkpoint folder (`split_output_dir`), deleted at the end when it holds no checkpoint. `track_into` points the
  callback there explicitly (otherwise an evaluation before training writes `./runs/` in the working directory), and
  `groundup.core.tracking.copy_tracker_logs` carries the events into the final folder.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from groundup.core.progress import LineThrottle, library_bars, progress_line, resolve_mode

# Figures worth a progress line (the rest stay in train_log.jsonl and the trackers), in this order.
LINE_KEYS = ("loss", "eval_loss", "mean_token_accuracy", "eval_mean_token_accuracy", "rewards/margins",
             "rewards/accuracies", "eval_rewards/margins", "eval_rewards/accuracies", "grad_norm", "learning_rate",
             "train_loss")


class LogLines(TrainerCallback):
    """One plain line per `on_log` on the main process: what the Trainer's PrinterCallback prints as a dict,
    readable, with steps/s and an ETA."""

    def __init__(self, desc: str):
        self.desc = desc
        self.start: float | None = None
        self.first_step = 0

    def on_train_begin(self, args, state, control, **kwargs):
        self.start, self.first_step = time.monotonic(), state.global_step
        self.throttle = LineThrottle(state.max_steps, state.global_step)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_local_process_zero or not logs:
            return
        figures: dict[str, Any] = {k: logs[k] for k in LINE_KEYS if isinstance(logs.get(k), (int, float))}
        if "train_runtime" in logs:  # the Trainer's closing summary
            figures["runtime"] = f"{logs['train_runtime']:.1f} s"
        training = self.start is not None and state.max_steps
        if training and "loss" in logs and not self.throttle.due(state.global_step):
            return  # a training log between printed lines: in the train log and the trackers, not on the console
        elapsed = time.monotonic() - self.start if self.start is not None else 0.0
        print(progress_line(self.desc, state.global_step, state.max_steps if training else None, figures, elapsed,
                            state.global_step - self.first_step if training else 0), flush=True)


def finetune_progress(script_args, training_args) -> str:
    """Resolve `progress` (with TRL's `disable_tqdm`) to bar / lines / none and switch the library bars accordingly.
    Idempotent: call it before loading data and again when the trainer is built. `disable_tqdm` itself is left as
    set, so `recipe.yaml` records the recipe, not the terminal it ran in (the Trainer reads it only at init, to pick
    the callback that `use_progress` swaps)."""
    mode = resolve_mode(getattr(script_args, "progress", "auto"))
    if mode == "bar" and training_args.disable_tqdm:
        mode = "lines"
    library_bars(mode == "bar")
    return mode


def use_progress(trainer, mode: str, desc: str) -> None:
    """Swap the Trainer's progress callback for the mode: its tqdm bar (`bar`), `LogLines` (`lines`), none (`none`)."""
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    if mode == "bar":
        return
    for callback in (ProgressCallback, PrinterCallback):
        trainer.remove_callback(callback)
    if mode == "lines":
        trainer.add_callback(LogLines(desc))


def track_into(trainer, checkpoints: Path) -> None:
    """Point the Trainer's tensorboard callback at `<checkpoints>/runs/<date>_<host>/` (unless
    TENSORBOARD_LOGGING_DIR says otherwise)."""
    from transformers.integrations.integration_utils import TensorBoardCallback, default_logdir

    for callback in trainer.callback_handler.callbacks:
        if isinstance(callback, TensorBoardCallback) and callback.logging_dir is None:
            callback.logging_dir = str(Path(checkpoints) / default_logdir())


def finish_trackers(trainer) -> None:
    """End the tracker runs the Trainer leaves open: wandb's run stays open after training, and trackio starts a new
    run for an evaluation after it. Closed here, the files are complete when the stage returns and the next stage of a
    speedrun (same process) starts a run of its own instead of logging into this one."""
    from transformers.integrations.integration_utils import TrackioCallback, WandbCallback

    for callback in trainer.callback_handler.callbacks:
        if isinstance(callback, WandbCallback) and getattr(callback, "_wandb", None) is not None:
            if callback._wandb.run is not None:
                callback._wandb.finish()
            callback._initialized = False
        elif isinstance(callback, TrackioCallback) and getattr(callback, "_initialized", False):
            callback._trackio.finish()
            callback._initialized = False
