"""The steps of bench/gpu_check.sh (each run by the shell script under its own `timeout`), and its one table.

    python bench/gpu_check.py prepare WORK [--dry]        world + tokenizer (CPU work, before anything is timed)
    python bench/gpu_check.py finetune WORK LOG [--dry]   SFT and DPO steps/s, full and LoRA, on WORK/base124
    python bench/gpu_check.py table LOG                   the table, from LOG/*.json and LOG/status.tsv

Every figure is steady-state: pretraining leaves out its first `speed_warmup_steps` steps (compilation, warm-up;
pretrain_results.json says which steps were counted), the nanoGPT-style baseline its `--warmup` steps, fine-tuning
its first `FT_WARMUP` optimizer steps (timed with a TrainerCallback).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

DRY_WORLD = ["--num_people", "60", "--frequent_exposures", "8", "--name_pool_size", "16"]


def prepare(work: Path, dry: bool) -> None:
    from groundup.train.tokenizer import main as tokenizer_main
    from groundup.world.generate import main as world_main

    world_main(["--output_dir", str(work / "data"), *(DRY_WORLD if dry else [])])
    tokenizer_main(["--output_dir", str(work / "tokenizer"), "--dataset", str(work / "data"),
                    "--vocab_size", "512" if dry else "2048", *(["--heldout_documents", "20"] if dry else [])])


class StepClock:
    """A TrainerCallback: the time at the end of each optimizer step."""

    def __new__(cls):
        from transformers import TrainerCallback

        class _Clock(TrainerCallback):
            def __init__(self):
                self.marks: dict[int, float] = {}

            def on_step_end(self, args, state, control, **kwargs):
                import torch

                if torch.cuda.is_available():
                    torch.cuda.synchronize()
                self.marks[state.global_step] = time.perf_counter()

        return _Clock()


def _steady(clock, steps: int, warm: int) -> float:
    return (steps - warm) / (clock.marks[steps] - clock.marks[warm])


def sft_steps_per_s(model: Path, data: Path, steps: int, warm: int, lora: bool, max_length: int) -> dict:
    from trl import SFTTrainer

    from groundup.data.chat_rows import load_training_data
    from groundup.train.finetune import load_model_and_tokenizer, lora_config, use_packed_rows
    from groundup.train.sft import parse_args

    extra = ["--use_peft", "true", "--lora_r", "32", "--lora_alpha", "64", "--lora_modules_to_save", "wte"] if lora \
        else []
    script, training, model_args, mixture = parse_args([
        "--model_name_or_path", str(model), "--dataset_name", str(data), "--output_dir", tempfile.mkdtemp(),
        "--assistant_only_loss", "true", "--max_length", str(max_length), "--max_steps", str(steps),
        "--learning_rate", "1e-4", "--per_device_train_batch_size", "16", "--logging_steps", "1",
        "--save_strategy", "no", "--report_to", "none", "--seed", "0", "--disable_tqdm", "true",
        "--packing", "true", *extra])
    train, _ = load_training_data(script, mixture, "sft")
    m, tokenizer = load_model_and_tokenizer(model_args, training)
    clock = StepClock()
    trainer = SFTTrainer(model=m, args=training, train_dataset=train, processing_class=tokenizer,
                         peft_config=lora_config(m, model_args), callbacks=[clock])
    if training.packing:
        use_packed_rows(trainer)
    trainer.train()
    return {"steps_per_s": _steady(clock, steps, warm), "steps": steps, "warmup": warm,
            "bf16": bool(getattr(training, "bf16", False))}


def dpo_steps_per_s(model: Path, data: Path, steps: int, warm: int, lora: bool, max_length: int) -> dict:
    from groundup.train.dpo import build_trainer, parse_args

    extra = ["--use_peft", "true", "--lora_r", "32", "--lora_alpha", "64", "--lora_modules_to_save", "wte"] if lora \
        else []
    script, training, model_args, mixture = parse_args([
        "--model_name_or_path", str(model), "--dataset_name", str(data), "--output_dir", tempfile.mkdtemp(),
        "--max_length", str(max_length), "--max_steps", str(steps), "--learning_rate", "1e-5",
        "--per_device_train_batch_size", "16", "--logging_steps", "1", "--save_strategy", "no",
        "--report_to", "none", "--seed", "0", "--disable_tqdm", "true", *extra])
    trainer, _, _ = build_trainer(script, training, model_args, mixture)
    clock = StepClock()
    trainer.add_callback(clock)
    trainer.train()
    return {"steps_per_s": _steady(clock, steps, warm), "steps": steps, "warmup": warm,
            "bf16": bool(getattr(training, "bf16", False))}


def finetune(work: Path, log: Path, dry: bool, only: list[str]) -> int:
    import datasets
    import transformers

    transformers.logging.set_verbosity_error()
    datasets.disable_progress_bars()
    steps, warm = (3, 1) if dry else (int(os.environ.get("FT_STEPS", 25)), int(os.environ.get("FT_WARMUP", 5)))
    max_length = 64 if dry else 256
    failed = 0
    for name, fn, lora in (("sft_full", sft_steps_per_s, False), ("sft_lora", sft_steps_per_s, True),
                           ("dpo_full", dpo_steps_per_s, False), ("dpo_lora", dpo_steps_per_s, True)):
        if only and name not in only:
            continue
        start = time.perf_counter()
        try:
            result = fn(work / "base124", work / "data", steps, warm, lora, max_length)
        except Exception as err:  # one arm failing must not hide the others' figures
            result = {"error": f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"[:200]}
            failed += 1
        result["wall_seconds"] = time.perf_counter() - start
        (log / f"{name}.json").write_text(json.dumps(result))
        print(name, result, flush=True)
    return 1 if failed else 0


# ------------------------------------------------------------------------------------------------ the table

def _read(log: Path, name: str) -> dict | None:
    path = log / f"{name}.json"
    return json.loads(path.read_text()) if path.is_file() else None


def _status(log: Path) -> dict[str, tuple[int, float]]:
    out = {}
    path = log / "status.tsv"
    if path.is_file():
        for line in path.read_text().splitlines():
            name, rc, seconds = line.split("\t")
            out[name] = (int(rc), float(seconds))
    return out


def _why(status, step: str) -> str:
    if step not in status:
        return "not run (budget spent, or not selected)"
    rc, seconds = status[step]
    if rc in (124, 137):
        return f"timed out after {seconds:.0f} s"
    return f"failed (rc {rc}, {seconds:.0f} s; see its log)" if rc else ""


def table(log: Path) -> int:
    status = _status(log)
    meta = _read(log, "meta") or {}
    rows: list[tuple[str, str, str]] = []

    def pretrain_row(label: str, name: str, step: str):
        r = _read(log, name)
        if not r or "tokens_per_s" not in r:
            rows.append((label, "-", _why(status, step) or "no results"))
            return None
        mfu = f", MFU {100 * r['mfu']:.1f}%" if r.get("mfu") is not None else ""
        rows.append((label, f"{r['tokens_per_s']:,.0f} tokens/s{mfu}",
                     f"{r.get('tokens_per_s_scope', '')}; wall {r.get('wall_seconds', 0):.0f} s"))
        return r

    shape = meta.get("shape", "")
    how = f"compile {meta.get('compile', '?')}, {meta.get('precision', '')}"
    ours = pretrain_row(f"pretrain {shape}: groundup ({how})", "pretrain", "pretrain")
    base = _read(log, "nanogpt")
    if base and "tokens_per_s" in base:
        mfu = f", MFU {100 * base['mfu']:.1f}%" if base.get("mfu") is not None else ""
        rows.append((f"pretrain {shape}: nanoGPT-style (bench/)", f"{base['tokens_per_s']:,.0f} tokens/s{mfu}",
                     f"steady-state ({base['steps']} steps after {base['warmup']}); "
                     f"compile {base.get('compile')}"))
        if ours:
            rows.append(("  ratio groundup / nanoGPT-style", f"{ours['tokens_per_s'] / base['tokens_per_s']:.2f}x",
                         "target >= 1.0 on a GPU"))
    else:
        rows.append((f"pretrain {shape}: nanoGPT-style (bench/)", "-", _why(status, "nanogpt") or "no results"))
    for name, label in (("levers_outside", "groundup, loss outside the forward (compile)"),
                        ("levers_nocompile", "groundup, no compile (loss auto: chunked)"),
                        ("levers_nocompile_logits", "groundup, no compile, loss logits")):
        if (log / f"{name}.json").is_file() or name in status:
            pretrain_row(f"  lever: {label}", name, name)
    for name, label in (("sft_full", "SFT full"), ("sft_lora", "SFT LoRA r32 + wte"), ("dpo_full", "DPO full"),
                        ("dpo_lora", "DPO LoRA r32 + wte")):
        r = _read(log, name)
        if r and "steps_per_s" in r:
            rows.append((f"{label} ({shape}, batch 16)", f"{r['steps_per_s']:.2f} steps/s",
                         f"steady-state (steps {r['warmup'] + 1}-{r['steps']}); bf16 {r['bf16']}"))
        else:
            rows.append((f"{label} ({shape}, batch 16)", "-", (r or {}).get("error") or _why(status, "finetune")))
    for step, label in (("smoke", "speedrun smoke"), ("tiny", "speedrun tiny")):
        if step in status and status[step][0] == 0:
            rows.append((label, f"{status[step][1]:.1f} s wall", meta.get("speedrun_note", "")))
        else:
            done = _read(log, f"{step}_speedrun") or {}
            stages = ", ".join(f"{k} {v.get('seconds', 0):.0f} s" for k, v in done.items() if isinstance(v, dict))
            rows.append((label, "-", _why(status, step) + (f"; stages done: {stages}" if stages else "")))
    width = max(len(r[0]) for r in rows)
    value_width = max(len(r[1]) for r in rows)
    print(f"\ngroundup GPU check: {meta.get('device', '?')}, torch {meta.get('torch', '?')}"
          + (" (DRY RUN on CPU: tiny shapes, figures mean nothing)" if meta.get("dry") else ""))
    print(f"| {'what':<{width}} | {'figure':<{value_width}} | note |")
    print(f"|{'-' * (width + 2)}|{'-' * (value_width + 2)}|------|")
    for label, value, note in rows:
        print(f"| {label:<{width}} | {value:<{value_width}} | {note} |")
    total = sum(seconds for _, seconds in status.values())
    print(f"\nsteps' wall time in all: {total:.0f} s; logs: {log}")
    failed = [s for s, (rc, _) in status.items() if rc]
    return 1 if failed else 0


def meta(log: Path, dry: bool, shape: str, compile: str) -> None:
    import torch

    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "CPU"
    precision = "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "fp32"
    note = "steps run with --dry-run (commands only)" if dry else "whole preset, fresh run folder"
    (log / "meta.json").write_text(json.dumps({"device": device, "torch": torch.__version__, "dry": dry,
                                               "shape": shape, "precision": precision, "speedrun_note": note,
                                               "compile": compile}))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("command", nargs="?", choices=["prepare", "finetune", "table", "meta"])
    parser.add_argument("paths", nargs="*")
    parser.add_argument("--dry", action="store_true")
    parser.add_argument("--shape", default="")
    parser.add_argument("--only", nargs="*", default=[])
    parser.add_argument("--compile", default="?")
    args = parser.parse_args(argv)
    if args.command is None:  # `make bench` runs every bench/*.py: this one is run by bench/gpu_check.sh
        print("bench/gpu_check.py: steps of bench/gpu_check.sh (GPU_CHECK_DRY=1 bash bench/gpu_check.sh on a CPU)")
        return 0
    if args.command == "prepare":
        prepare(Path(args.paths[0]), args.dry)
        return 0
    if args.command == "finetune":
        return finetune(Path(args.paths[0]), Path(args.paths[1]), args.dry, args.only)
    if args.command == "meta":
        meta(Path(args.paths[0]), args.dry, args.shape, args.compile)
        return 0
    return table(Path(args.paths[0]))


if __name__ == "__main__":
    sys.exit(main())
