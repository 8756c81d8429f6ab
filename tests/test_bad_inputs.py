"""Every bad input stops before any work with one line (`error: ...`, exit 2) that says what is wrong and where, and
changes nothing on disk. One table, one case per row; each case fails before any training or generation.

Run in-process through `groundup.cli.main` (what the `groundup` command runs), so the table costs one import of the
stack, not one per case.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pytest

from groundup.cli import main as cli

from .pretrain_helpers import tiny_args

FAST_SFT = ["--max_length", "64", "--per_device_train_batch_size", "8", "--report_to", "none",
            "--dataloader_pin_memory", "false", "--progress", "none"]


@dataclass
class Ctx:
    """A case's own folder (everything a case may touch lives here) and the session's world and tokenizer."""

    tmp: Path
    world: Path
    tokenizer: Path
    model: Path  # a copy of the tiny random model, inside tmp

    def file(self, name: str, data: bytes) -> Path:
        path = self.tmp / name
        path.write_bytes(data)
        return path


def _sft(ctx: Ctx, *extra: str, model: Path | None = None, data: Path | None = None, out: str = "sft") -> list[str]:
    return ["sft", "--model_name_or_path", str(model or ctx.model), "--dataset_name", str(data or ctx.world),
            "--output_dir", str(ctx.tmp / out), *FAST_SFT, *extra]


def _pretrain(ctx: Ctx, dataset: Path | None = None, **overrides) -> list[str]:
    return ["pretrain", *tiny_args(dataset or ctx.world, ctx.tokenizer, ctx.tmp / "base", progress="none",
                                   **overrides)]


def _eval(ctx: Ctx, *extra: str, model: Path | None = None, questions: Path | None = None,
          out: Path | str | None = None) -> list[str]:
    return ["eval", "--model", str(model or ctx.model),
            "--questions", str(questions or ctx.world / "questions" / "eval.jsonl"),
            "--output_dir", str(out if out is not None else ctx.tmp / "eval"), "--progress", "false", *extra]


def _damage(ctx: Ctx, how: str) -> Path:
    weights = ctx.model / "model.safetensors"
    size = weights.stat().st_size
    if how == "truncated":
        with open(weights, "r+b") as f:
            f.truncate(size // 2)
    else:
        weights.write_bytes(b"\0" * size)
    return ctx.model


def _checkpoint_at(ctx: Ctx, step: int) -> Path:
    folder = ctx.tmp / "base.checkpoints" / f"checkpoint-{step:07d}"
    folder.mkdir(parents=True)
    (folder / "groundup_state.json").write_text(json.dumps({"step": step, "signature": {}}))
    return folder


LATIN1 = "Where was caf\xe9 owner born?".encode("latin-1")


@dataclass
class Case:
    name: str
    argv: Callable[[Ctx], list[str]]
    message: str  # a fragment the one error line must hold
    where: Callable[[Ctx], str] | None = None  # and the file/key it must name, when there is one
    patch: Callable[[pytest.MonkeyPatch], None] | None = None
    tags: list[str] = field(default_factory=list)


CASES = [
    Case("pretrain learning rate -1", lambda c: _pretrain(c, learning_rate=-1), "learning_rate must be positive"),
    Case("sft learning rate -1", lambda c: _sft(c, "--learning_rate", "-1"), "learning_rate must be positive"),
    Case("dpo learning rate 0", lambda c: ["dpo", "--model_name_or_path", str(c.model), "--dataset_name",
                                           str(c.world), "--output_dir", str(c.tmp / "dpo"), "--learning_rate", "0"],
         "learning_rate must be positive"),
    Case("sft max_steps 0", lambda c: _sft(c, "--max_steps", "0"), "max_steps must be at least 1"),
    Case("pretrain resume past max_steps",
         lambda c: _pretrain(c, max_steps=50, resume=_checkpoint_at(c, 180)), "past max_steps=50",
         where=lambda c: "checkpoint-0000180"),
    Case("pretrain empty .txt dataset", lambda c: _pretrain(c, dataset=c.file("empty.txt", b"")), "is empty",
         where=lambda c: "empty.txt"),
    Case("tokenizer empty .txt dataset", lambda c: ["tokenizer", "--dataset", str(c.file("empty.txt", b"")),
                                                    "--output_dir", str(c.tmp / "tok")], "is empty",
         where=lambda c: "empty.txt"),
    Case("pretrain non-UTF-8 .txt dataset",
         lambda c: _pretrain(c, dataset=c.file("latin1.txt", b"a fine line\n" + LATIN1 + b"\n")),
         "not UTF-8", where=lambda c: "latin1.txt:2"),
    Case("sft non-UTF-8 .jsonl dataset",
         lambda c: _sft(c, data=c.file("latin1.jsonl", b'{"messages": []}\n{"text": "' + LATIN1 + b'"}\n')),
         "not UTF-8", where=lambda c: "latin1.jsonl:2"),
    Case("eval non-UTF-8 question file",
         lambda c: _eval(c, questions=c.file("q.jsonl", b'{"id": "1", "question": "' + LATIN1 + b'", "answer": null}'
                                                        b"\n")),
         "not UTF-8", where=lambda c: "q.jsonl:1"),
    Case("config file not UTF-8", lambda c: ["world", "--config", str(c.file("w.yaml", b"seed: 0\nname: " + LATIN1)),
                                             "--output_dir", str(c.tmp / "w")], "not UTF-8",
         where=lambda c: "w.yaml:2"),
    Case("eval truncated model.safetensors", lambda c: _eval(c, model=_damage(c, "truncated")), "is damaged",
         where=lambda c: "model.safetensors"),
    Case("eval zeroed model.safetensors", lambda c: _eval(c, model=_damage(c, "zeroed")), "is damaged",
         where=lambda c: "model.safetensors"),
    Case("sft missing model folder", lambda c: _sft(c, model=c.tmp / "no-such-model"), "not found",
         where=lambda c: "no-such-model"),
    Case("surprisal-init missing model folder",
         lambda c: ["surprisal-init", "--base", str(c.tmp / "no-such-base"), "--model", str(c.model),
                    "--output_dir", str(c.tmp / "si")], "not found", where=lambda c: "no-such-base"),
    Case("sft --resume_from_checkpoint not a checkpoint", lambda c: _sft(c, "--resume_from_checkpoint", "true-ish"),
         "not a checkpoint folder", where=lambda c: "true-ish"),
    Case("eval output folder is the model (--overwrite)",
         lambda c: _eval(c, "--overwrite", "true", out=c.model), "is the input model"),
    Case("eval output folder inside the model", lambda c: _eval(c, out=c.model / "eval"), "is inside the input model"),
    Case("eval output folder contains the model", lambda c: _eval(c, "--overwrite", "true", out=c.tmp),
         "contains the input model"),
    Case("sft output folder is the model (--overwrite)", lambda c: _sft(c, "--overwrite", "true", out=c.model.name),
         "is the input model_name_or_path"),
    Case("eval limit 0", lambda c: _eval(c, "--limit", "0"), "limit must be at least 1"),
    Case("eval num_threads 0", lambda c: _eval(c, "--num_threads", "0"), "num_threads must be at least 1"),
    Case("eval sampling at temperature 0", lambda c: _eval(c, "--do_sample", "true", "--temperature", "0"),
         "temperature must be positive"),
    Case("eval full disk (ENOSPC on the write check)", lambda c: _eval(c), "disk full",
         patch=lambda mp: mp.setattr(os, "fsync", _raise(errno.ENOSPC, "No space left on device"))),
    Case("eval read-only output folder", lambda c: _eval(c, out=_read_only(c) / "eval"), "read-only",
         tags=["read-only"]),
]


def _raise(code: int, text: str):
    def fail(*args, **kwargs):
        raise OSError(code, text)

    return fail


def _read_only(ctx: Ctx) -> Path:
    folder = ctx.tmp / "locked"
    folder.mkdir()
    if os.geteuid() != 0:
        folder.chmod(0o555)
    elif shutil.which("chattr") is None or subprocess.run(["chattr", "+i", str(folder)],
                                                          capture_output=True).returncode != 0:
        pytest.skip("running as root without chattr: no way to make a folder read-only")
    return folder


def _unlock(ctx: Ctx) -> None:
    folder = ctx.tmp / "locked"
    if folder.exists():
        if os.geteuid() == 0:
            subprocess.run(["chattr", "-i", str(folder)], capture_output=True)
        folder.chmod(0o755)


def snapshot(root: Path) -> dict[str, tuple]:
    """Every path under `root` with its size and modification time: equal snapshots mean nothing was touched."""
    return {str(p.relative_to(root)): (p.is_dir(), p.stat().st_size if p.is_file() else 0, p.stat().st_mtime_ns)
            for p in sorted(root.rglob("*"))}


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input_gives_one_line_exit_2_and_touches_nothing(case, world_dir, tokenizer_dir, tiny_model_dir,
                                                              tmp_path, capsys, monkeypatch):
    ctx = Ctx(tmp_path, world_dir, tokenizer_dir, tmp_path / "model")
    shutil.copytree(tiny_model_dir, ctx.model)
    try:
        argv = case.argv(ctx)
        before = snapshot(tmp_path)
        if case.patch:
            case.patch(monkeypatch)
        code = cli(argv)
        monkeypatch.undo()
        captured = capsys.readouterr()
        errors = [line for line in captured.err.splitlines() if line.startswith("error: ")]
        assert code == 2, captured.err[-2000:]
        assert len(errors) == 1 and "Traceback" not in captured.err + captured.out, captured.err[-2000:]
        assert case.message in errors[0], errors[0]
        if case.where:
            assert case.where(ctx) in errors[0], errors[0]
        assert snapshot(tmp_path) == before, "a refused run changed files"
    finally:
        _unlock(ctx)


# ------------------------------------------------------------------------------------------------ the helpers behind it

def test_stale_staging_of_dead_processes_is_removed_and_a_live_ones_kept(tmp_path):
    from groundup.core.outputs import check_output_dir

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)
    stale = tmp_path / f".out.tmp-{dead_pid}"
    (stale / "sub").mkdir(parents=True)
    (tmp_path / f".out.old-{dead_pid}").mkdir()
    live = tmp_path / f".out.tmp-{os.getppid()}"  # the process that started pytest: alive
    live.mkdir()
    other = tmp_path / f".other.tmp-{dead_pid}"  # another output's staging: not this stage's to judge
    other.mkdir()
    check_output_dir(tmp_path / "out", overwrite=False)
    assert not stale.exists() and not (tmp_path / f".out.old-{dead_pid}").exists()
    assert live.exists() and other.exists()


def test_a_full_disk_met_midway_is_named_as_such(tmp_path, monkeypatch):
    """torch's writer says "basic_ios::clear: iostream error", safetensors and numpy raise ENOSPC: all say disk full."""
    from collections import namedtuple

    from groundup.cli import storage_error
    from groundup.core import outputs

    assert storage_error(OSError(errno.ENOSPC, "No space left on device", "x.bin")).startswith("disk full")
    wrapped = RuntimeError("wrapped")
    wrapped.__cause__ = OSError(errno.EROFS, "Read-only file system", "/ro")
    assert "read-only" in storage_error(wrapped)
    assert storage_error(ValueError("something else")) is None
    Usage = namedtuple("Usage", "total used free")
    monkeypatch.setattr(outputs.shutil, "disk_usage", lambda p: Usage(10, 10, 0))
    error = outputs.disk_full_error(tmp_path, RuntimeError("basic_ios::clear: iostream error"))
    assert error is not None and "disk full" in str(error) and str(tmp_path) in str(error)
    monkeypatch.setattr(outputs.shutil, "disk_usage", lambda p: Usage(10, 0, 10 * 2**30))
    assert outputs.disk_full_error(tmp_path, RuntimeError("basic_ios::clear: iostream error")) is None


def test_an_atomic_output_is_removed_and_named_when_the_disk_fills(tmp_path, monkeypatch):
    from groundup.core import outputs
    from groundup.core.errors import GroundupError

    with pytest.raises(GroundupError, match="disk full"):
        with outputs.atomic_output_dir(tmp_path / "out", overwrite=False) as staging:
            (staging / "part").write_text("x")
            raise OSError(errno.ENOSPC, "No space left on device", str(staging / "model.safetensors"))
    assert list(tmp_path.iterdir()) == []
