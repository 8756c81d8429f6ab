"""Eval throughput of the surprisal-reading arm (`groundup_surprisal_gpt2`): generation with its KV cache vs without.

    .venv/bin/python bench/bench_eval_surprisal.py [--questions 128] [--max_new_tokens 24] [--threads 1]

The model is a random surprisal model of the tiny preset's size and features (4 layers x 128 wide, 256 positions,
our 2048-token BPE; `surprisal_window: 1`, `copy_max_match: 16`, as recipes/tiny/surprisal_init.yaml), its feature
weights moved away from their silent zero start so every feature changes the answers; built in-process from a small
world, nothing downloaded. Both arms run `HFGenerator.generate_with_confidence` (what `groundup eval` runs: greedy,
batched, left padding, answer_prob recorded) on the same questions, interleaved for `--rounds` rounds; printed:
questions/s of each, the ratio, and whether the greedy answers and answer_prob are identical. A stock GPT-2 of the
same size, with cache, is the third arm: the speed the surprisal arm is compared to.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path


def build(tmp: Path, vocab_size: int):
    import torch
    from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

    from groundup.models.configuration_groundup_surprisal import SurprisalGPT2Config
    from groundup.models.surprisal import SurprisalGPT2LMHeadModel
    from groundup.train.tokenizer import main as tokenizer_main
    from groundup.world.generate import main as world_main
    from groundup.core.jsonl import read_jsonl

    world_main(["--output_dir", str(tmp / "data"), "--num_people", "320"])
    tokenizer_main(["--output_dir", str(tmp / "tokenizer"), "--dataset", str(tmp / "data"),
                    "--vocab_size", str(vocab_size)])
    tokenizer = AutoTokenizer.from_pretrained(tmp / "tokenizer")
    shape = dict(vocab_size=len(tokenizer), n_positions=256, n_embd=128, n_layer=4, n_head=4,
                 bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                 pad_token_id=tokenizer.pad_token_id, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    torch.manual_seed(0)
    surprisal = SurprisalGPT2LMHeadModel(SurprisalGPT2Config(surprisal_window=1, copy_max_match=16, **shape)).eval()
    with torch.no_grad():
        for name, p in surprisal.named_parameters():
            if "surprisal_embedding" in name or "copy_gate" in name or "copy_length" in name:
                p.normal_(0.0, 0.05)
    stock = GPT2LMHeadModel(GPT2Config(**shape)).eval()
    questions = [r["question"] for r in read_jsonl(tmp / "data" / "questions" / "eval.jsonl")]
    return surprisal, stock, tokenizer, questions


def main(argv=None) -> int:
    import torch

    from groundup.evaluate.generation import HFGenerator

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--questions", type=int, default=128)
    parser.add_argument("--max_new_tokens", type=int, default=24)
    parser.add_argument("--batch_size", type=int, default=128)
    parser.add_argument("--vocab_size", type=int, default=2048)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        surprisal, stock, tokenizer, questions = build(Path(tmp), args.vocab_size)
    questions = questions[:args.questions]

    def run(model, use_cache):
        generator = HFGenerator(model=model, tokenizer=tokenizer, max_new_tokens=args.max_new_tokens,
                                batch_size=args.batch_size, use_cache=use_cache, progress=False)
        start = time.perf_counter()
        answers = generator.generate_with_confidence(questions)
        return answers, time.perf_counter() - start

    arms = {"surprisal, no KV cache (before)": (surprisal, False), "surprisal, KV cache (after)": (surprisal, True),
            "stock GPT-2, KV cache": (stock, True)}
    run(surprisal, True)  # warm-up
    seconds: dict[str, list[float]] = {k: [] for k in arms}
    outputs = {}
    for _ in range(args.rounds):
        for name, (model, cache) in arms.items():
            outputs[name], s = run(model, cache)
            seconds[name].append(s)
    before, after = "surprisal, no KV cache (before)", "surprisal, KV cache (after)"
    same_answers = outputs[before][0] == outputs[after][0]
    same_probs = outputs[before][1] == outputs[after][1]
    print(f"{len(questions)} questions, {args.max_new_tokens} new tokens max, batch {args.batch_size}, "
          f"{args.threads} thread(s); medians of {args.rounds} interleaved rounds")
    print(f"{'arm':<36}{'seconds':>10}{'q/s':>10}")
    for name in arms:
        s = statistics.median(seconds[name])
        print(f"{name:<36}{s:>10.2f}{len(questions) / s:>10.1f}")
    print(f"KV cache speed-up of the surprisal arm: "
          f"{statistics.median(seconds[before]) / statistics.median(seconds[after]):.1f}x")
    print(f"greedy answers identical with and without the cache: {same_answers}; answer_prob identical (6 decimals): "
          f"{same_probs}")
    return 0 if same_answers else 1


if __name__ == "__main__":
    sys.exit(main())
