"""Shared bits of the pretraining tests: a very small run's arguments, log reading, weight comparison."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PYTHON = sys.executable


def tiny_args(world_dir, tokenizer_dir, out, **overrides) -> list[str]:
    """A 2-layer, 32-wide GPT-2 on 32-token windows: a step takes milliseconds on one core."""
    values = dict(output_dir=out, tokenizer=tokenizer_dir, dataset=world_dir, n_layer=2, n_embd=32, n_head=2,
                  n_positions=64, seq_length=32, per_device_batch_size=4, max_steps=20, warmup_steps=5,
                  learning_rate=1e-2, eval_steps=10, eval_batches=2, logging_steps=5, save_steps=0,
                  val_documents=20, tokenize_num_proc=1, recall_check="false")
    values.update(overrides)
    argv = []
    for key, value in values.items():
        argv += [f"--{key}", str(value)]
    return argv


def read_log(path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def train_losses(path) -> dict[int, float]:
    return {row["step"]: row["loss"] for row in read_log(path) if "loss" in row}


def load_weights(folder) -> dict:
    from safetensors.torch import load_file

    return load_file(str(Path(folder) / "model.safetensors"))


def relative_difference(a: dict, b: dict) -> float:
    """||a - b|| / ||b|| over all weights together (one tensor with a tiny norm, e.g. a bias that started at 0,
    would otherwise turn float rounding into a large relative error)."""
    assert a.keys() == b.keys()
    diff = sum(float((a[k].double() - b[k].double()).pow(2).sum()) for k in a) ** 0.5
    norm = sum(float(b[k].double().pow(2).sum()) for k in b) ** 0.5
    return diff / norm


def per_tensor_differences(a: dict, b: dict) -> dict[str, float]:
    return {k: float((a[k].double() - b[k].double()).norm() / b[k].double().norm().clamp_min(1e-12)) for k in a}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def subprocess_env() -> dict:
    # One thread: these models are tiny, and on a shared 2-core machine two spinning threads per process are ~10x
    # slower than one. The in-process runs use one thread too (fixture), so both sides compute identically.
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TOKENIZERS_PARALLELISM="false",
               OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    env["PYTHONPATH"] = str(REPO / "src") + os.pathsep + env.get("PYTHONPATH", "")
    return env


def start_pretrain(argv: list[str], log_file) -> subprocess.Popen:
    return subprocess.Popen([PYTHON, str(REPO / "recipes" / "pretrain.py"), *argv], cwd=REPO, env=subprocess_env(),
                            stdout=log_file, stderr=subprocess.STDOUT)


def wait_for(condition, proc: subprocess.Popen, timeout: float = 120.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if proc.poll() is not None:
            raise AssertionError(f"process exited ({proc.returncode}) before {what}")
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


# Autouse fixtures for training test modules; a module takes them with `from .pretrain_helpers import ...`.
@pytest.fixture(autouse=True, scope="module")
def one_thread_per_module():
    """One torch thread, as the subprocesses (subprocess_env) run: identical arithmetic in and out of process."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def fresh_accelerate_state():
    """Accelerate keeps its state in singletons: a test that built an Accelerator must not hand it to the next."""
    yield
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(True)
    GradientState._reset_state()
