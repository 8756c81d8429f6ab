"""End-to-end pretraining on CPU: the output folder, exact resume after SIGKILL, SIGTERM, and 2-process DDP.

Runs are tiny (2 layers, 32 wide, 32-token windows): each takes a few seconds, most of it process start-up.
"""

from __future__ import annotations

import json
import signal
import subprocess
import textwrap

import pytest
import torch

from groundup.train.pretrain import list_checkpoints, main

from .pretrain_helpers import (PYTHON, REPO, free_port, load_weights, per_tensor_differences, read_log,
                               relative_difference, start_pretrain, subprocess_env, tiny_args, train_losses,
                               wait_for)
from .pretrain_helpers import one_thread_per_module, fresh_accelerate_state  # noqa: F401  (autouse fixtures)




@pytest.fixture(scope="module")
def base_dir(world_dir, tokenizer_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("pretrain") / "base"
    main(tiny_args(world_dir, tokenizer_dir, out, recall_check="true"))
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(True)
    GradientState._reset_state()
    return out


def test_output_folder_is_a_complete_hugging_face_model(base_dir, tokenizer_dir):
    for name in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "chat_template.jinja",
                 "generation_config.json", "README.md", "recipe.yaml", "pretrain_log.jsonl", "pretrain_results.json"):
        assert (base_dir / name).is_file(), name
    config = json.loads((base_dir / "config.json").read_text())
    assert config["vocab_size"] % 64 == 0 and config["n_positions"] == 64
    generation = json.loads((base_dir / "generation_config.json").read_text())
    assert sorted(generation["eos_token_id"]) == [0, 3] and generation["pad_token_id"] == 1  # <|endoftext|>, <|im_end|>
    log = read_log(base_dir / "pretrain_log.jsonl")
    assert log[0]["step"] == 0 and "val_bpb" in log[0]  # the untrained model is the curve's first point
    train = [r for r in log if "loss" in r]
    assert [r["step"] for r in train] == [5, 10, 15, 20]
    assert all(r["tokens_per_s"] > 0 and r["lr"] > 0 for r in train)
    evals = [r for r in log if "val_loss" in r]
    assert [r["step"] for r in evals] == [0, 10, 20] and evals[-1]["val_bpb"] < evals[0]["val_bpb"]
    results = json.loads((base_dir / "pretrain_results.json").read_text())
    assert results["steps"] == 20 and results["tokens"] == 20 * 4 * 32
    assert set(results["recall"]) == {"frequent", "rare", "unseen"}
    assert set(results["copy_check"]) == {"repeated", "first"}  # 20 steps: no copying yet
    card = (base_dir / "README.md").read_text()
    assert "pretraining" in card and "validation bits per byte" in card and "copy check" in card
    assert f'pipeline("text-generation", "{base_dir}")' in card  # the real folder, not the staging one
    assert not (base_dir.parent / "base.checkpoints" / "checkpoint-0000020").exists()  # save_steps 0: none
    assert not [p for p in base_dir.parent.iterdir() if p.name.startswith(".")]  # no staging folder left


def test_output_loads_and_generates_in_a_fresh_process_without_groundup(base_dir):
    script = textwrap.dedent(f"""
        import sys
        from transformers import AutoModelForCausalLM, pipeline
        model = AutoModelForCausalLM.from_pretrained({str(base_dir)!r})
        generate = pipeline("text-generation", {str(base_dir)!r})
        out = generate("Velen Northridge was born in", max_new_tokens=5, do_sample=False)
        assert isinstance(out[0]["generated_text"], str) and out[0]["generated_text"].startswith("Velen")
        chat = generate([{{"role": "user", "content": "Hello"}}], max_new_tokens=3, do_sample=False)
        assert chat[0]["generated_text"][-1]["role"] == "assistant"
        assert not [m for m in sys.modules if m.startswith("groundup")]
        print("ok", type(model).__name__)
    """)
    env = subprocess_env()
    env.pop("PYTHONPATH")
    done = subprocess.run([PYTHON, "-c", script], cwd=base_dir.parent, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "ok GPT2LMHeadModel" in done.stdout


def test_sigkill_then_resume_is_bit_identical_to_an_uninterrupted_run(world_dir, tokenizer_dir, tmp_path):
    steps = dict(max_steps=300, save_steps=50, save_total_limit=2, eval_steps=100, logging_steps=25,
                 tokens_dir=tmp_path / "tokens")
    main(tiny_args(world_dir, tokenizer_dir, tmp_path / "reference", **steps))

    out = tmp_path / "killed"
    with open(tmp_path / "killed.log", "w") as log:
        proc = start_pretrain(tiny_args(world_dir, tokenizer_dir, out, **steps), log)
        checkpoints = tmp_path / "killed.checkpoints"
        wait_for(lambda: list_checkpoints(checkpoints), proc, what="a first checkpoint")
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL and not out.exists()
    saved = list_checkpoints(checkpoints)
    assert saved and int(saved[-1].name.split("-")[1]) < 300

    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(True)
    GradientState._reset_state()
    main(tiny_args(world_dir, tokenizer_dir, out, resume="latest", **steps))
    reference, resumed = load_weights(tmp_path / "reference"), load_weights(out)
    assert reference.keys() == resumed.keys()
    for name in reference:
        assert torch.equal(reference[name], resumed[name]), name
    # the resumed log continues the interrupted one: no step twice, same losses as the reference
    log = read_log(out / "pretrain_log.jsonl")
    steps_logged = [(r["step"], "loss" in r) for r in log]
    assert len(steps_logged) == len(set(steps_logged))
    assert train_losses(out / "pretrain_log.jsonl") == train_losses(tmp_path / "reference" / "pretrain_log.jsonl")


def test_sigterm_writes_a_loadable_checkpoint_and_exits_cleanly(world_dir, tokenizer_dir, tmp_path):
    out = tmp_path / "base"
    argv = tiny_args(world_dir, tokenizer_dir, out, max_steps=100000, save_steps=0, logging_steps=5, eval_steps=0)
    with open(tmp_path / "run.log", "w") as log:
        proc = start_pretrain(argv, log)
        live_log = tmp_path / "base.checkpoints" / "pretrain_log.jsonl"
        wait_for(lambda: live_log.is_file() and "loss" in live_log.read_text(), proc, what="training to start")
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=120)
    output = (tmp_path / "run.log").read_text()
    assert proc.returncode == 128 + signal.SIGTERM, output[-3000:]
    assert "Traceback" not in output and "SIGTERM at step" in output and "--resume latest" in output
    (checkpoint,) = list_checkpoints(tmp_path / "base.checkpoints")
    step = json.loads((checkpoint / "groundup_state.json").read_text())["step"]
    assert step > 0 and not out.exists()
    # loadable: a run resumes from it and finishes a few steps later
    main(argv + ["--resume", "latest", "--max_steps", str(step + 3)])
    results = json.loads((out / "pretrain_results.json").read_text())
    assert results["steps"] == step + 3


@pytest.mark.parametrize("config", ["cpu_ddp", "fsdp"])
def test_two_process_ddp_matches_one_process_with_the_same_global_batch(config, world_dir, tokenizer_dir, tmp_path):
    """`cpu_ddp.yaml`: real DDP over gloo. `fsdp.yaml` on CPU: accelerate 1.15 ignores the FSDP settings when
    `cpu=True` and runs DDP (without `cpu=True`, two unrelated processes); groundup says so in one line."""
    common = dict(max_steps=6, logging_steps=1, eval_steps=3, warmup_steps=2, learning_rate=3e-3)
    single = tmp_path / "single"
    main(tiny_args(world_dir, tokenizer_dir, single, per_device_batch_size=4, **common))

    ddp = tmp_path / "ddp"
    overrides = ["--num_processes", "2", "--mixed_precision", "no"] if config == "fsdp" else []
    cmd = [PYTHON, "-m", "accelerate.commands.launch",
           "--config_file", str(REPO / "accelerate_configs" / f"{config}.yaml"), *overrides,
           "--main_process_port", str(free_port()), "--num_cpu_threads_per_process", "1",
           str(REPO / "recipes" / "pretrain.py"),
           *tiny_args(world_dir, tokenizer_dir, ddp, per_device_batch_size=2, **common)]
    done = subprocess.run(cmd, cwd=REPO, env=subprocess_env(), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    # not a terminal: one progress line per logging step, from rank 0 only, and no bar frames
    assert done.stdout.count("pretrain step 6/6 (100%)") == 1 and "\r" not in done.stdout + done.stderr
    assert ("FSDP needs GPUs" in done.stderr) == (config == "fsdp")
    results = json.loads((ddp / "pretrain_results.json").read_text())
    assert results["num_processes"] == 2  # really two ranks (`--cpu` alone starts one process)
    assert results["distributed_type"] == "MULTI_CPU"

    one, two = train_losses(single / "pretrain_log.jsonl"), train_losses(ddp / "pretrain_log.jsonl")
    assert sorted(one) == sorted(two) == list(range(1, 7))
    for step in one:
        assert two[step] == pytest.approx(one[step], rel=1e-4), step
    evals = [(r["step"], r["val_loss"]) for r in read_log(ddp / "pretrain_log.jsonl") if "val_loss" in r]
    ref = [(r["step"], r["val_loss"]) for r in read_log(single / "pretrain_log.jsonl") if "val_loss" in r]
    assert [s for s, _ in evals] == [s for s, _ in ref]
    assert all(a == pytest.approx(b, rel=1e-4) for (_, a), (_, b) in zip(evals, ref))
    a, b = load_weights(ddp), load_weights(single)
    assert relative_difference(a, b) < 1e-5, per_tensor_differences(a, b)
