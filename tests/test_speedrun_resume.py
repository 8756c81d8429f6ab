"""Kill anywhere, lose at most one checkpoint interval: `groundup speedrun --preset smoke` is killed inside pretraining
(SIGKILL), SFT (SIGTERM: a last checkpoint and one line), DPO, evaluation and the report (SIGKILL), and re-run after
each kill. Every model's weights, the probe's training data and every predictions.jsonl equal an uninterrupted run's,
byte for byte, and no half-written staging folder is left behind.

One uninterrupted reference run; the kills all happen in one second run folder, one after another (each re-run goes
on to the next kill), so the whole test costs about two speedruns plus five process starts.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from groundup.train import checkpoints as ck
from groundup.train.pretrain import list_checkpoints

from .conftest import PYTHON, REPO

pytestmark = pytest.mark.slow


def _env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
            "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


def _start(run_dir: Path, log: Path) -> subprocess.Popen:
    return subprocess.Popen([PYTHON, "-m", "groundup.cli", "speedrun", "--preset", "smoke", "--run-dir",
                             str(run_dir)], cwd=REPO, env=_env(), stdout=open(log, "w"), stderr=subprocess.STDOUT)


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("uninterrupted") / "smoke"
    proc = _start(run_dir, run_dir.parent / "log")
    assert proc.wait(timeout=900) == 0, (run_dir.parent / "log").read_text()[-3000:]
    return run_dir


def _running(log: Path, step: str) -> bool:
    return log.is_file() and f"] {step} " in log.read_text() and "running:" in log.read_text()


def _checkpointed(folder: Path) -> bool:
    return bool(list_checkpoints(folder) or ck.complete_checkpoints(folder))


# (what is killed, the signal, when: a condition on the run folder and this attempt's log)
KILLS = [
    ("pretraining", signal.SIGKILL, lambda run, log: _checkpointed(run / "base.checkpoints")),
    ("sft", signal.SIGTERM, lambda run, log: _checkpointed(run / "sft.checkpoints")),
    ("dpo", signal.SIGKILL, lambda run, log: _checkpointed(run / "dpo.checkpoints")),
    ("eval", signal.SIGKILL, lambda run, log: _running(log, "eval-sft-idk-surprisal-identity")),
    ("report", signal.SIGKILL, lambda run, log: _running(log, "report")),
]


def _files(run_dir: Path) -> dict[str, bytes]:
    """What must come out identical: every weights file, the probe's training data, every predictions.jsonl."""
    paths = [*run_dir.glob("*/model.safetensors"), *run_dir.glob("*/adapter/adapter_model.safetensors"),
             *run_dir.glob("probe/*.jsonl"), *run_dir.glob("eval/*/predictions.jsonl")]
    return {str(p.relative_to(run_dir)): p.read_bytes() for p in paths}


def test_a_speedrun_killed_anywhere_ends_with_the_same_weights_and_predictions(reference, tmp_path):
    run_dir = tmp_path / "smoke"
    for attempt, (where, sig, ready) in enumerate(KILLS):
        log = tmp_path / f"attempt{attempt}.log"
        proc = _start(run_dir, log)
        deadline = time.monotonic() + 600
        while not ready(run_dir, log):
            assert proc.poll() is None, f"finished before the kill in {where}: " + log.read_text()[-3000:]
            assert time.monotonic() < deadline, f"never reached {where}"
            time.sleep(0.02)
        if where in ("eval", "report"):
            time.sleep(0.2)  # inside the step, not at its first line
        proc.send_signal(sig)
        code = proc.wait(timeout=300)
        text = log.read_text()
        assert code in (-sig, 128 + sig), f"{where}: exit {code}\n{text[-3000:]}"
        assert "Traceback" not in text, text[-3000:]
        if sig == signal.SIGTERM:  # one line, and the way to continue is the same command
            lines = [line for line in text.splitlines() if "SIGTERM at step" in line]
            assert len(lines) == 1 and "run the same command again to continue" in lines[0], text[-3000:]
        if attempt:  # the re-run continued the stage that was killed before this one, from its checkpoint
            assert "resumed from" in text or "continuing from" in text or where in ("report",), text[-3000:]
        assert not (run_dir / "report.md").exists()

    log = tmp_path / "final.log"
    proc = _start(run_dir, log)
    assert proc.wait(timeout=900) == 0, log.read_text()[-3000:]
    text = log.read_text()
    assert "skipped" in text and (run_dir / "report.md").is_file()

    expected, got = _files(reference), _files(run_dir)
    assert expected.keys() == got.keys() and len(expected) > 30
    different = [name for name in expected if expected[name] != got[name]]
    assert not different, f"differ from the uninterrupted run: {different}"
    leftovers = [str(p) for p in run_dir.rglob(".*") if ".tmp-" in p.name or ".old-" in p.name]
    assert not leftovers, leftovers
