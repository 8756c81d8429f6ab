"""Fine-tuning throughput, side by side from one run: SFT packed vs padded, LoRA vs full, DPO reference precomputed
vs live.

    .venv/bin/python bench/bench_finetune.py [--steps 30] [--dpo_steps 20] [--threads 1]

Model: a random GPT-2 of the tiny preset's size (4 layers x 128 wide, 256 positions, our 2048-token BPE), built
in-process from the default world (320 people; its ~1,800 answerable SFT-pool questions are the data); throughput
does not depend on what the weights know, and nothing is downloaded. Every arm runs the same number of optimizer
steps with the same batch size (16 rows); tokens/s counts real tokens only (no padding), as TRL's `num_tokens` does.

- packed vs padded: full SFT, assistant-only loss; packed = bfd packing into rows of `max_length` tokens, kept as
  separate rows with per-row block-diagonal masks (groundup's `PackedRowsCollator`); padded = one conversation per
  row, padded to the longest in the batch. Target >= 1.3x. TRL's own padding-free collator (all rows flattened into
  one) runs as a third arm, with fewer steps: without FlashAttention its attention is quadratic in the batch.
- LoRA vs full: both packed; LoRA r=32 on c_attn/c_proj/c_fc + trained embeddings (the tiny preset's setting).
- DPO: full DPO, reference log-probs precomputed once before training vs a live reference copy every step. The
  precompute pass is reported, and counted in the end-to-end ratio.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path


def build(tmp: Path):
    import torch
    from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

    from groundup.train.tokenizer import main as tokenizer_main
    from groundup.world.generate import main as world_main

    world_main(["--output_dir", str(tmp / "data"), "--num_people", "320"])
    tokenizer_main(["--output_dir", str(tmp / "tokenizer"), "--dataset", str(tmp / "data"), "--vocab_size", "2048"])
    tokenizer = AutoTokenizer.from_pretrained(tmp / "tokenizer")
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=len(tokenizer), n_positions=256, n_embd=128, n_layer=4, n_head=4,
                        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                        pad_token_id=tokenizer.pad_token_id)
    GPT2LMHeadModel(config).save_pretrained(tmp / "model")
    tokenizer.save_pretrained(tmp / "model")
    return tmp / "model", tmp / "data"


COMMON = ["--per_device_train_batch_size", "16", "--logging_steps", "1", "--save_strategy", "no",
          "--report_to", "none", "--dataloader_pin_memory", "false", "--seed", "0", "--disable_tqdm", "true"]


def sft_arm(model, data, steps, *extra, packed_rows=True):
    from groundup.train.sft import parse_args as parse
    from trl import SFTTrainer

    from groundup.train.finetune import load_model_and_tokenizer, lora_config, use_packed_rows
    from groundup.data.chat_rows import load_training_data

    script, training, model_args, mixture = parse([
        "--model_name_or_path", str(model), "--dataset_name", str(data), "--output_dir", "/tmp/unused",
        "--assistant_only_loss", "true", "--max_length", "128", "--max_steps", str(steps), "--learning_rate", "1e-3",
        *COMMON, *extra])
    train, _ = load_training_data(script, mixture, "sft")
    m, tokenizer = load_model_and_tokenizer(model_args, training)
    training.output_dir = tempfile.mkdtemp()
    trainer = SFTTrainer(model=m, args=training, train_dataset=train, processing_class=tokenizer,
                         peft_config=lora_config(m, model_args))
    collator = use_packed_rows(trainer) if training.packing and packed_rows else None
    start = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - start
    # real tokens: TRL's num_tokens (attention-mask sum when padded, row length when padding-free) or the collator's
    tokens = collator.tokens if collator else max(e.get("num_tokens", 0) for e in trainer.state.log_history)
    return {"seconds": seconds, "tokens": tokens, "tokens_per_s": tokens / seconds, "steps_per_s": steps / seconds}


def dpo_arm(model, data, steps, precompute: bool):
    from groundup.train.dpo import build_trainer, parse_args as parse

    script, training, model_args, mixture = parse([
        "--model_name_or_path", str(model), "--dataset_name", str(data), "--output_dir", tempfile.mkdtemp(),
        "--max_length", "128", "--max_steps", str(steps), "--learning_rate", "1e-4",
        "--precompute_ref_log_probs", str(precompute).lower(), "--precompute_ref_batch_size", "64", *COMMON])
    start = time.perf_counter()
    trainer, _, train = build_trainer(script, training, model_args, mixture)  # precompute runs here
    setup = time.perf_counter() - start
    start = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - start
    return {"setup_seconds": setup, "seconds": seconds, "steps_per_s": steps / seconds, "pairs": len(train),
            "total_seconds": setup + seconds}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30, help="optimizer steps per SFT arm")
    parser.add_argument("--dpo_steps", type=int, default=20, help="optimizer steps per DPO arm")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest on a shared 2-core CPU)")
    args = parser.parse_args(argv)

    import datasets
    import torch
    import transformers

    torch.set_num_threads(args.threads)
    transformers.logging.set_verbosity_error()
    datasets.disable_progress_bars()
    with tempfile.TemporaryDirectory() as tmp:
        model, data = build(Path(tmp))
        sft_arm(model, data, 3)  # warm-up: first-call costs (allocator, dataset cache) out of the timed arms
        padded = sft_arm(model, data, args.steps)
        packed = sft_arm(model, data, args.steps, "--packing", "true")
        flat = sft_arm(model, data, max(args.steps // 6, 2), "--packing", "true", packed_rows=False)
        lora = sft_arm(model, data, args.steps, "--packing", "true", "--use_peft", "true", "--lora_r", "32",
                       "--lora_alpha", "64", "--lora_modules_to_save", "wte")
        live = dpo_arm(model, data, args.dpo_steps, precompute=False)
        pre = dpo_arm(model, data, args.dpo_steps, precompute=True)

    print(f"\nfine-tuning benchmark: random GPT-2 4x128 (tiny preset size), batch 16, {args.threads} thread(s), "
          f"{args.steps} SFT steps / {args.dpo_steps} DPO steps per arm")
    print(f"{'arm':<34}{'tokens/s':>10}{'steps/s':>9}{'seconds':>9}")
    for name, r in [("SFT full, padded", padded), ("SFT full, packed rows (groundup)", packed),
                    ("SFT full, packed, TRL padding-free", flat), ("SFT LoRA r32+wte, packed rows", lora)]:
        print(f"{name:<34}{r['tokens_per_s']:>10.0f}{r['steps_per_s']:>9.2f}{r['seconds']:>9.1f}")
    for name, r in [("DPO full, live reference", live), ("DPO full, precomputed reference", pre)]:
        print(f"{name:<34}{'':>10}{r['steps_per_s']:>9.2f}{r['seconds']:>9.1f}   (+{r['setup_seconds']:.1f} s setup,"
              f" {r['pairs']} pairs)")
    ratio = packed["tokens_per_s"] / padded["tokens_per_s"]
    print(f"\nSFT packed / padded tokens/s:            {ratio:.2f}x (target >= 1.3x)")
    print(f"SFT TRL padding-free / padded tokens/s:  {flat['tokens_per_s'] / padded['tokens_per_s']:.2f}x "
          "(one flattened row: quadratic attention without FlashAttention)")
    print(f"SFT LoRA / full tokens/s (packed):       {lora['tokens_per_s'] / packed['tokens_per_s']:.2f}x")
    print(f"DPO precomputed / live ref, train steps/s: {pre['steps_per_s'] / live['steps_per_s']:.2f}x")
    print(f"DPO precomputed / live ref, end to end:  {live['total_seconds'] / pre['total_seconds']:.2f}x "
          f"(precompute scores all {pre['pairs']} pairs once; pays off after ~"
          f"{pre['setup_seconds'] / max(1 / live['steps_per_s'] - 1 / pre['steps_per_s'], 1e-9):.0f} steps)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
