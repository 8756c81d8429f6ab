"""Resuming is safe and exact: another run's checkpoints never hijack `--resume latest` or push out this run's own,
and fine-tuning (SFT) checkpoints on SIGTERM and resumes to the same final weights as an uninterrupted run.

Tiny models (2 layers, 32 wide): each run takes seconds, most of it process start-up.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys

import pytest
import torch

from groundup.core.errors import GroundupError
from groundup.train import checkpoints as ck
from groundup.train.pretrain import STATE_FILE, list_checkpoints
from groundup.train.pretrain import main as pretrain

from .pretrain_helpers import REPO, load_weights, start_pretrain, subprocess_env, tiny_args, wait_for
from .pretrain_helpers import one_thread_per_module, fresh_accelerate_state  # noqa: F401  (autouse fixtures)




def _same_weights(a, b) -> None:
    wa, wb = load_weights(a), load_weights(b)
    assert wa.keys() == wb.keys()
    for name in wa:
        assert torch.equal(wa[name], wb[name]), name


# ------------------------------------------------------------------------------------------------ pretraining

def test_another_runs_checkpoints_never_hijack_resume_nor_push_out_this_runs(world_dir, tokenizer_dir, tmp_path,
                                                                             capsys):
    """The issue's measurement: a finished run's checkpoints copied into a new run's checkpoint folder; the new run,
    at another learning rate, is killed; `--resume latest` must continue the new run, not the copied one."""
    tokens = dict(tokens_dir=tmp_path / "tokens")
    pretrain(tiny_args(world_dir, tokenizer_dir, tmp_path / "R", max_steps=300, save_steps=50, **tokens))
    foreign = {p.name for p in list_checkpoints(tmp_path / "R.checkpoints")}
    assert foreign == {"checkpoint-0000200", "checkpoint-0000250"}
    shutil.copytree(tmp_path / "R.checkpoints", tmp_path / "X.checkpoints")

    steps = dict(max_steps=300, save_steps=10, learning_rate=5e-3, **tokens)
    with open(tmp_path / "X.log", "w") as log:
        proc = start_pretrain(tiny_args(world_dir, tokenizer_dir, tmp_path / "X", **steps), log)
        own = lambda: [p for p in list_checkpoints(tmp_path / "X.checkpoints")  # noqa: E731
                       if json.loads((p / STATE_FILE).read_text())["signature"]["learning_rate"] == 5e-3]
        wait_for(lambda: own(), proc, what="a first checkpoint of the new run")
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    assert own(), "pruning deleted the new run's own newest checkpoint"
    newest_own = own()[-1]
    untouched = [p for p in list_checkpoints(tmp_path / "X.checkpoints") if p not in own()]  # not written over
    assert {p.name for p in untouched} == {n for n in foreign if n > newest_own.name}, "another run's was pruned"

    pretrain(tiny_args(world_dir, tokenizer_dir, tmp_path / "X", resume="latest", **steps))
    out = capsys.readouterr().out
    assert "passing over" in out and "learning_rate=0.01 (now 0.005)" in out
    assert f"resumed from {newest_own.parent.name}/{newest_own.name}" in out or f"resumed from {newest_own}" in out
    pretrain(tiny_args(world_dir, tokenizer_dir, tmp_path / "Y", **steps))  # the same run, never interrupted
    _same_weights(tmp_path / "X", tmp_path / "Y")
    results = json.loads((tmp_path / "X" / "pretrain_results.json").read_text())
    assert results["steps"] == 300


def test_resume_latest_past_max_steps_is_refused(world_dir, tokenizer_dir, tmp_path, capsys):
    from groundup.cli import run_stage

    args = dict(max_steps=30, save_steps=10, tokens_dir=tmp_path / "tokens")
    pretrain(tiny_args(world_dir, tokenizer_dir, tmp_path / "A", **args))  # checkpoints at 10 and 20
    assert run_stage(pretrain, tiny_args(world_dir, tokenizer_dir, tmp_path / "B", resume="latest",
                                         checkpoint_dir=tmp_path / "A.checkpoints",
                                         **{**args, "max_steps": 15})) == 2
    err = capsys.readouterr().err
    assert "at step 20, past max_steps=15" in err and not (tmp_path / "B").exists()


# ------------------------------------------------------------------------------------------------ fine-tuning

SFT = ["--max_length", "64", "--per_device_train_batch_size", "8", "--logging_steps", "5", "--report_to", "none",
       "--dataloader_pin_memory", "false", "--seed", "0", "--progress", "lines", "--use_peft", "true",
       "--lora_r", "4", "--lora_alpha", "8", "--lora_target_modules", "c_attn", "--eval_strategy", "no",
       "--eval_before_training", "false", "--max_steps", "60", "--save_strategy", "steps", "--save_steps", "5",
       "--save_total_limit", "1", "--assistant_only_loss", "true"]


def _sft_argv(model_dir, world_dir, out, *extra):
    return ["--model_name_or_path", str(model_dir), "--dataset_name", str(world_dir), "--output_dir", str(out),
            *SFT, *extra]


def test_sft_checkpoints_on_sigterm_and_resumes_to_the_same_weights(tiny_model_dir, world_dir, tmp_path, capsys):
    from groundup.train.sft import main as sft

    sft(_sft_argv(tiny_model_dir, world_dir, tmp_path / "reference"))
    out = tmp_path / "stopped"
    with open(tmp_path / "stopped.log", "w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "groundup.cli", "sft", *_sft_argv(tiny_model_dir, world_dir,
                                                                                          out)],
                                cwd=REPO, env=subprocess_env(), stdout=log, stderr=subprocess.STDOUT)
        wait_for(lambda: ck.complete_checkpoints(tmp_path / "stopped.checkpoints"), proc, timeout=300,
                 what="a first checkpoint")
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=120)
    output = (tmp_path / "stopped.log").read_text()
    assert proc.returncode == 128 + signal.SIGTERM, output[-3000:]
    lines = [line for line in output.splitlines() if "SIGTERM at step" in line]
    assert len(lines) == 1 and "continue with --resume latest" in lines[0] and "Traceback" not in output, output
    assert not out.exists()
    (saved,) = ck.complete_checkpoints(tmp_path / "stopped.checkpoints")
    step = ck.read_marker(saved)["step"]
    assert 0 < step < 60 and f"step {step}:" in lines[0]

    capsys.readouterr()
    sft(_sft_argv(tiny_model_dir, world_dir, out, "--resume", "latest"))
    assert f"continuing from {saved}" in capsys.readouterr().out
    _same_weights(tmp_path / "reference", out)


def test_sft_resume_takes_only_a_checkpoint_made_with_the_same_settings(tiny_model_dir, world_dir, tmp_path,
                                                                        capsys):
    from groundup.cli import run_stage
    from groundup.train.sft import main as sft

    first = _sft_argv(tiny_model_dir, world_dir, tmp_path / "a", "--max_steps", "10")
    sft(first)
    checkpoints = tmp_path / "a.checkpoints"
    (made,) = ck.complete_checkpoints(checkpoints)
    shutil.copytree(checkpoints, tmp_path / "b.checkpoints")
    capsys.readouterr()

    # `latest` (here spelled as the Trainer's `resume_from_checkpoint: true`) passes over another learning rate's
    sft(_sft_argv(tiny_model_dir, world_dir, tmp_path / "b", "--max_steps", "10", "--learning_rate", "1e-3",
                  "--resume_from_checkpoint", "true"))
    out = capsys.readouterr().out
    assert "passing over 1 checkpoint(s)" in out and "learning_rate=" in out and "starting from step 0" in out

    # an explicit checkpoint made with other settings is refused, naming them; nothing is written
    assert run_stage(sft, _sft_argv(tiny_model_dir, world_dir, tmp_path / "c", "--max_steps", "10", "--seed", "1",
                                    "--resume", str(made))) == 2
    err = capsys.readouterr().err
    assert "other settings" in err and "seed=0 (now 1)" in err and not (tmp_path / "c").exists()


def test_fingerprint_ignores_logging_and_paths_but_not_what_shapes_training():
    from dataclasses import dataclass

    @dataclass
    class Args:
        learning_rate: float = 1e-3
        output_dir: str = "a"
        logging_steps: int = 5
        save_steps: int = 10
        resume: str | None = None

    base = ck.settings_of(Args())
    assert ck.settings_of(Args(output_dir="b", logging_steps=1, save_steps=3, resume="latest")) == base
    assert ck.differences({"settings": base}, {"settings": ck.settings_of(Args(learning_rate=3e-3))}) == \
        ["learning_rate=0.001 (now 0.003)"]
    with pytest.raises(GroundupError, match="not a checkpoint folder"):
        ck.requested_resume(Args(resume="no/such/folder"), None)
