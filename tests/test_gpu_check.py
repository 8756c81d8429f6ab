"""bench/gpu_check.sh cannot rot: its dry mode (CPU, tiny shapes, a few steps, speedruns with --dry-run) runs every
step a GPU session runs and prints the one table with every row filled. (A minute at most; no timing asserted.)"""

from __future__ import annotations

import os
import subprocess

from .conftest import REPO


def test_gpu_check_dry_mode_fills_every_row(tmp_path):
    env = {**os.environ, "GPU_CHECK_DRY": "1", "OUT": str(tmp_path), "GPU_CHECK_BUDGET": "170"}
    done = subprocess.run(["bash", str(REPO / "bench" / "gpu_check.sh")], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=300)
    out = done.stdout
    assert done.returncode == 0, out[-3000:] + done.stderr[-2000:]
    table = [line for line in out.splitlines() if line.startswith("| ")]
    rows = {line.split("|")[1].strip(): line.split("|")[2].strip() for line in table[1:]}
    assert any(k.startswith("pretrain") and "groundup" in k and v.endswith("tokens/s") for k, v in rows.items())
    assert any("nanoGPT-style" in k and v.endswith("tokens/s") for k, v in rows.items())
    assert rows["ratio groundup / nanoGPT-style"].endswith("x")
    for arm in ("SFT full", "SFT LoRA r32 + wte", "DPO full", "DPO LoRA r32 + wte"):
        assert any(k.startswith(arm) and v.endswith("steps/s") for k, v in rows.items()), arm
    assert rows["speedrun smoke"].endswith("s wall") and rows["speedrun tiny"].endswith("s wall")
    assert "steady-state (steps 4-8)" in out
    assert (tmp_path / "gpu_check" / "status.tsv").read_text().count("\t0\t") == 6
