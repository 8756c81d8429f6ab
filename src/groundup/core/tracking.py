"""Experiment trackers (`report_to: tensorboard | trackio | wandb ...`): what every stage shares.

- `hparams`: a run's config as flat scalars. Trackers store the config as hyperparameters, and tensorboard's
  `add_hparams` accepts only int, float, str, bool and tensors: `None` and lists make it raise at start.
- `TRACKER_LOGS` (`runs/`): where tensorboard events end up inside a stage's final output folder, the Trainer's own
  layout (`<output_dir>/runs/<date>_<host>/`), so `tensorboard --logdir runs/tiny` shows every stage of a run.
  Training writes them next to the checkpoints (the output folder is written atomically at the end);
  `copy_tracker_logs` carries them into the output folder.

wandb keeps its runs in `./wandb/` (or `WANDB_DIR`; `WANDB_MODE=offline` needs no account, `wandb sync` uploads
later) and trackio in its local database (`TRACKIO_DIR`, default `~/.cache/huggingface/trackio`; `trackio show`).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

TRACKER_LOGS = "runs"


def hparams(config: dict[str, Any]) -> dict[str, bool | int | float | str]:
    """Flat scalars for a tracker: None -> "None", lists and dicts -> their text, nested keys kept as they are."""
    flat: dict[str, bool | int | float | str] = {}
    for key, value in config.items():
        if isinstance(value, (bool, int, float, str)):
            flat[str(key)] = value
        elif isinstance(value, (list, tuple)):
            flat[str(key)] = ", ".join(str(v) for v in value)
        else:
            flat[str(key)] = str(value)
    return flat


def copy_tracker_logs(source_dir: str | Path, out_dir: str | Path) -> Path | None:
    """Copy `source_dir/runs/` (tensorboard events) into `out_dir/runs/`; None when there is nothing to copy."""
    source = Path(source_dir) / TRACKER_LOGS
    if not source.is_dir() or not any(source.rglob("*")):
        return None
    target = Path(out_dir) / TRACKER_LOGS
    shutil.copytree(source, target, dirs_exist_ok=True)
    return target
