"""Logs that work in the tools people already use: a bar on a terminal, one plain line per logging step in a log
file, TQDM_DISABLE honoured, and tensorboard / trackio / wandb (offline) files written and kept by pretrain, SFT, DPO.

The tracker tests train for a handful of steps with every tracker that is installed (`pip install 'groundup[track]'`);
each tracker is checked by its own files, read back with its own format (tensorboard events, trackio's SQLite
database, wandb's offline run file).
"""

from __future__ import annotations

import fcntl
import importlib.util
import os
import pty
import sqlite3
import struct
import subprocess
import termios
from pathlib import Path

import pytest
import yaml

from groundup.core.errors import GroundupError

from .pretrain_helpers import PYTHON, REPO, subprocess_env, tiny_args
from .pretrain_helpers import fresh_accelerate_state  # noqa: F401  (autouse fixtures)

pytestmark = pytest.mark.usefixtures("one_torch_thread")
TRACKERS = [t for t in ("tensorboard", "trackio", "wandb") if importlib.util.find_spec(t) is not None]



@pytest.fixture(scope="module")
def tracker_homes(tmp_path_factory):
    """trackio reads TRACKIO_DIR when imported and wandb its folder at its first run: one folder each for the module,
    set before either starts. Returns wandb's folder."""
    homes = tmp_path_factory.mktemp("trackers")
    with pytest.MonkeyPatch.context() as patch:
        for key, value in dict(WANDB_MODE="offline", WANDB_DIR=str(homes), WANDB_SILENT="true",
                               TRACKIO_DIR=str(homes / "trackio")).items():
            patch.setenv(key, value)
        patch.delenv("TENSORBOARD_LOGGING_DIR", raising=False)
        yield homes


@pytest.fixture
def offline_trackers(tmp_path, monkeypatch, tracker_homes):
    """wandb offline, trackio local, the working directory an empty tmp_path; returns wandb's folder."""
    if not TRACKERS:
        pytest.skip("no tracker installed (pip install 'groundup[track]')")
    monkeypatch.chdir(tmp_path)  # anything a tracker writes into the working directory would show up here
    return tracker_homes


def tensorboard_scalars(folder: Path) -> set[str]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tags: set[str] = set()
    for events in folder.rglob("events.out.tfevents.*"):
        accumulator = EventAccumulator(str(events.parent))
        accumulator.Reload()
        tags |= set(accumulator.Tags()["scalars"])
    return tags


def trackio_metrics(db: Path) -> set[str]:
    import json

    with sqlite3.connect(db) as connection:
        rows = connection.execute("select metrics from metrics").fetchall()
    return {key for (metrics,) in rows for key in json.loads(metrics)}


def wandb_run_files(wandb_dir: Path) -> list[Path]:
    return sorted(wandb_dir.glob("wandb/offline-run-*/run-*.wandb"))


def check_trackers(wandb_dir, *, tensorboard_dir: Path, trackio_project: str, wandb_runs_before: int,
                   tensorboard_tags: set[str], metric: str) -> None:
    if "tensorboard" in TRACKERS:
        assert tensorboard_tags <= tensorboard_scalars(tensorboard_dir), tensorboard_scalars(tensorboard_dir)
    if "trackio" in TRACKERS:
        from trackio.utils import TRACKIO_DIR

        assert metric in trackio_metrics(Path(TRACKIO_DIR) / f"{trackio_project}.db")
    if "wandb" in TRACKERS:
        runs = wandb_run_files(wandb_dir)
        assert len(runs) > wandb_runs_before and metric.encode() in runs[-1].read_bytes()


# ---------------------------------------------------------------------------------------------------- progress

def test_progress_is_plain_lines_when_output_is_not_a_terminal(capsys):
    from groundup.core.progress import Progress, resolve_mode

    assert resolve_mode() == "lines"  # captured: neither stdout nor stderr is a terminal
    progress = Progress("pretrain", 4)
    for _ in range(4):
        progress.update()
        progress.log(loss=1.23456, **{"tokens/s": 12345.4})
    progress.write("step 4: val loss 1.0", progress=True)
    progress.close()
    out, err = capsys.readouterr()
    lines = out.splitlines()
    assert len(lines) == 5 and "\r" not in out + err and err == ""
    assert lines[0].startswith("pretrain step 1/4 (25%) | loss 1.235 | tokens/s 12,345 | steps/s ")
    assert "ETA" in lines[0] and "ETA" not in lines[3] and lines[3].startswith("pretrain step 4/4 (100%)")
    assert lines[4] == "step 4: val loss 1.0"
    with pytest.raises(GroundupError, match="progress must be one of"):
        resolve_mode("fancy")


def test_none_prints_no_progress_and_tqdm_disable_turns_bars_into_lines(monkeypatch, capsys):
    import groundup.core.progress as progress

    progress.library_bars(True)  # an earlier stage in this process may have turned them off (and set TQDM_DISABLE)
    quiet = progress.Progress("x", 2, mode="none")
    quiet.update()
    quiet.log(loss=1.0)
    quiet.write("val", progress=True)
    quiet.write("SIGTERM: checkpoint written")
    assert capsys.readouterr().out == "SIGTERM: checkpoint written\n"

    monkeypatch.setattr(progress, "_is_terminal", lambda stream: True)
    monkeypatch.delenv("TQDM_DISABLE", raising=False)
    assert progress.resolve_mode() == "bar" and progress.resolve_mode("lines") == "lines"
    monkeypatch.setenv("TQDM_DISABLE", "1")
    assert progress.resolve_mode() == progress.resolve_mode("bar") == "lines"
    assert progress.resolve_mode("none") == "none"
    assert progress.Progress("x", 2).bar is None


def test_on_a_real_terminal_a_bar_and_with_tqdm_disable_lines(tmp_path):
    """A pseudo-terminal, as a person's shell: `auto` draws a tqdm bar; TQDM_DISABLE=1 gives plain lines instead."""
    script = ("from groundup.core.progress import Progress\n"
              "p = Progress('pretrain', 3)\n"
              "for _ in range(3):\n    p.update(); p.log(loss=1.5)\n"
              "p.close()\n")

    def run(**env) -> str:
        leader, follower = pty.openpty()
        fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # a 100-column terminal
        proc = subprocess.Popen([PYTHON, "-c", script], stdin=follower, stdout=follower, stderr=follower,
                                env={**subprocess_env(), **env}, cwd=REPO)
        os.close(follower)
        chunks = []
        while True:
            try:
                chunk = os.read(leader, 4096)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            chunks.append(chunk)
        os.close(leader)
        assert proc.wait(timeout=60) == 0, b"".join(chunks)[-2000:]
        return b"".join(chunks).decode(errors="replace")

    bar = run(TQDM_DISABLE="")
    assert "\r" in bar and "3/3" in bar and "pretrain step" not in bar
    lines = run(TQDM_DISABLE="1")
    assert "pretrain step 3/3 (100%) | loss 1.5" in lines and "|###" not in lines and "█" not in lines


def test_library_bars_switch_transformers_and_datasets_off_and_back(monkeypatch):
    import datasets
    from transformers.utils import logging as hf_logging

    from groundup.core.progress import library_bars

    library_bars(True)
    monkeypatch.delenv("TQDM_DISABLE", raising=False)
    library_bars(False)
    try:
        assert not hf_logging.is_progress_bar_enabled() and datasets.are_progress_bars_disabled()
        assert os.environ["TQDM_DISABLE"] == "1"  # TRL reads it for DPO's reference log-prob pass
    finally:
        library_bars(True)
    assert hf_logging.is_progress_bar_enabled() and "TQDM_DISABLE" not in os.environ


# ---------------------------------------------------------------------------------------------------- trackers

def test_pretrain_logs_lines_and_every_tracker_keeps_its_files(world_dir, tokenizer_dir, tmp_path, offline_trackers,
                                                               capsys):
    """The run's config holds None and lists (tensorboard's hparams refused them at start); events land in
    OUTPUT_DIR/runs/, next to the model."""
    from groundup.train.pretrain import main

    wandb_dir = offline_trackers
    out = tmp_path / "base"
    before = len(wandb_run_files(wandb_dir))
    main(tiny_args(world_dir, tokenizer_dir, out, max_steps=10, eval_steps=5) + ["--report_to", *TRACKERS])
    printed, errors = capsys.readouterr()
    steps = [line for line in printed.splitlines() if line.startswith("pretrain step ")]
    assert [s.split(" | ")[0] for s in steps] == ["pretrain step 5/10 (50%)", "pretrain step 10/10 (100%)"]
    assert all("loss " in s and "tokens/s " in s for s in steps) and "ETA" in steps[0]
    assert "step 5: val loss" in printed and "\r" not in printed + errors
    check_trackers(wandb_dir, tensorboard_dir=out / "runs", trackio_project="groundup-pretrain",
                   wandb_runs_before=before, tensorboard_tags={"loss", "val_loss", "tokens_per_s"}, metric="val_loss")
    if "tensorboard" in TRACKERS:
        (hparams,) = (out / "runs").rglob("hparams.yml")
        recorded = yaml.safe_load(hparams.read_text())
        assert recorded["checkpoint_dir"] and recorded["mix_dataset"] == "None"
        assert recorded["report_to"] == ", ".join(TRACKERS)
    assert not (tmp_path / "runs").exists()


def finetune_config(tmp_path, stage: str) -> Path:
    """`report_to` as a list needs YAML (TrainingArguments reads a flag as one string)."""
    path = tmp_path / f"{stage}-trackers.yaml"
    path.write_text(yaml.safe_dump({"report_to": TRACKERS, "run_name": f"{stage}-test"}))
    return path


@pytest.mark.parametrize("stage", ["sft", "dpo"])
def test_finetune_logs_lines_and_keeps_tracker_files_in_the_output_folder(stage, tiny_model_dir, world_dir, tmp_path,
                                                                          offline_trackers, capsys):
    """`save_strategy: "no"` (the presets') leaves the checkpoint folder empty and it is removed: the tensorboard
    events must live on in OUTPUT_DIR/runs/. Without a terminal the Trainer's bar becomes one line per log."""
    wandb_dir = offline_trackers
    out = tmp_path / stage
    common = ["--config", str(finetune_config(tmp_path, stage)), "--model_name_or_path", str(tiny_model_dir),
              "--dataset_name", str(world_dir), "--eval_dataset_name", str(world_dir), "--output_dir", str(out),
              "--max_length", "128", "--per_device_train_batch_size", "8", "--logging_steps", "2",
              "--save_strategy", "no", "--dataloader_pin_memory", "false", "--seed", "0", "--max_steps", "4",
              "--use_peft", "true"]
    before = len(wandb_run_files(wandb_dir))
    if stage == "sft":
        from groundup.train.sft import main

        main(common + ["--assistant_only_loss", "true", "--learning_rate", "1e-3"])
        metric, tags = "train/loss", {"train/loss", "eval/loss"}
    else:
        from groundup.train.dpo import main

        main(common + ["--learning_rate", "5e-3"])
        metric, tags = "train/rewards/margins", {"train/loss", "train/rewards/margins", "eval/rewards/margins"}
    printed, errors = capsys.readouterr()
    steps = [line for line in printed.splitlines() if line.startswith(f"{stage} step ")]
    assert steps[0].startswith(f"{stage} step 0 | eval_loss")  # the evaluation before training
    assert f"{stage} step 2/4 (50%) | loss " in printed and "ETA" in printed and "steps/s" in printed
    assert "\r" not in printed + errors and "{'loss'" not in printed  # no bar frames, no PrinterCallback dicts
    assert not (tmp_path / f"{stage}.checkpoints").exists()
    recorded = yaml.safe_load((out / "recipe.yaml").read_text())
    assert recorded["progress"] == "auto" and recorded["disable_tqdm"] is False  # the recipe, not this terminal
    check_trackers(wandb_dir, tensorboard_dir=out / "runs", trackio_project="huggingface",
                   wandb_runs_before=before, tensorboard_tags=tags, metric=metric)
    assert not (tmp_path / "runs").exists()  # the evaluation before training used to write ./runs/


def test_plain_lines_stay_few_on_a_long_loop_and_end_on_the_last_step(capsys):
    """A log file of the demo stays readable: a 4,260-step loop logged every 5 steps prints about 20 lines, evenly
    spaced, ending on the last step (every logging step still reaches the trackers and the train log)."""
    import groundup.core.progress as progress

    bar = progress.Progress("sft", 4260, mode="lines")
    for step in range(1, 4261):
        bar.update()
        if step % 5 == 0:
            bar.log(loss=1.0)
    lines = capsys.readouterr().out.splitlines()
    steps = [int(line.split()[2].split("/")[0]) for line in lines]
    assert progress.LINES_PER_LOOP <= len(lines) <= progress.LINES_PER_LOOP + 1
    assert steps[-1] == 4260 and steps == sorted(steps)
    assert max(b - a for a, b in zip(steps, steps[1:])) <= 4260 // progress.LINES_PER_LOOP + 5
