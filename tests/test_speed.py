"""Speed levers of the pretraining loop on CPU: the loss inside the forward leaves results bit for bit unchanged;
the chunked loss trains the same model within float rounding; the saved and printed tokens/s are steady-state, with
the counted steps and the wall time beside them. (No timed assertions: the machine is shared.)"""

from __future__ import annotations

import json

import pytest
import torch

from groundup.train.pretrain import main

from .pretrain_helpers import load_weights, relative_difference, tiny_args
from .pretrain_helpers import one_thread_per_module, fresh_accelerate_state  # noqa: F401  (autouse fixtures)




def _run(world_dir, tokenizer_dir, out, **overrides):
    main(tiny_args(world_dir, tokenizer_dir, out, eval_steps=0, **overrides))
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(True)
    GradientState._reset_state()
    return out


@pytest.fixture(scope="module")
def default_run(world_dir, tokenizer_dir, tmp_path_factory):
    return _run(world_dir, tokenizer_dir, tmp_path_factory.mktemp("speed") / "default")


def test_loss_inside_the_forward_is_bit_identical_to_the_loss_outside(default_run, world_dir, tokenizer_dir,
                                                                       tmp_path):
    outside = _run(world_dir, tokenizer_dir, tmp_path / "outside", loss_in_forward="false")
    a, b = load_weights(default_run), load_weights(outside)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert json.loads((default_run / "pretrain_results.json").read_text())["loss_implementation"] == "logits"


def test_chunked_loss_trains_the_same_model_within_rounding(default_run, world_dir, tokenizer_dir, tmp_path):
    chunked = _run(world_dir, tokenizer_dir, tmp_path / "chunked", loss_implementation="chunked",
                   loss_chunk_tokens=40)
    assert relative_difference(load_weights(chunked), load_weights(default_run)) < 1e-4
    assert json.loads((chunked / "pretrain_results.json").read_text())["loss_implementation"] == "chunked"


def test_results_card_and_summary_give_steady_state_speed_and_wall_time(default_run, world_dir, tokenizer_dir,
                                                                       tmp_path, capsys):
    results = json.loads((default_run / "pretrain_results.json").read_text())
    assert results["steady_step_ranges"] == [[11, 20]] and results["steady_steps"] == 10
    assert results["tokens_per_s_scope"].startswith("steady-state (steps 11-20")
    assert results["tokens_per_s"] == pytest.approx(10 * 4 * 32 / results["steady_seconds"])
    assert results["wall_seconds"] >= results["train_seconds"] > results["steady_seconds"] > 0
    assert results["tokens_per_s_all_steps"] > 0
    card = (default_run / "README.md").read_text()
    assert "steady-state (steps 11-20" in card and "wall time" in card
    # too few steps to leave any out: the figure says it covers all steps
    capsys.readouterr()
    short = _run(world_dir, tokenizer_dir, tmp_path / "short", max_steps=4, warmup_steps=1)
    results = json.loads((short / "pretrain_results.json").read_text())
    assert results["steady_steps"] == 0 and results["tokens_per_s_scope"].startswith("all 4 steps")
    summary = [line for line in capsys.readouterr().out.splitlines() if line.startswith("pretrain: 4 steps")]
    assert summary and "tokens/s all 4 steps" in summary[0] and "wall time in all" in summary[0]


def test_bad_speed_keys_fail_before_any_work(world_dir, tokenizer_dir, tmp_path):
    from groundup.core.configs import parse_config
    from groundup.train.pretrain import PretrainArguments

    base = tiny_args(world_dir, tokenizer_dir, tmp_path / "x")
    for extra in (["--loss_implementation", "fused"], ["--loss_chunk_tokens", "0"],
                  ["--activation_function", "nope"], ["--speed_warmup_steps", "-1"],
                  ["--loss_implementation", "chunked", "--loss_in_forward", "false"]):
        with pytest.raises(ValueError):
            parse_config([PretrainArguments], base + extra)


def test_steady_state_survives_a_checkpoint_round_trip():
    from groundup.train.pretrain import TrainState

    state = TrainState()
    for step in range(1, 6):
        state.step = step
        if step > 2:
            state.count_steady(0.5, 100, new_range=step == 3)
    restored = TrainState()
    restored.load_state_dict(state.state_dict())
    assert restored.steady_ranges == [[3, 5]] and restored.steady_tokens == 300 and restored.steady_seconds == 1.5
    old = TrainState()
    old.load_state_dict({"step": 7, "tokens": 70, "train_seconds": 1.0})  # a checkpoint from before these fields
    assert old.steady_steps == 0 and old.steady_ranges == []
