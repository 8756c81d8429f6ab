"""Eval throughput: batched generation with KV cache vs one question at a time without cache.

    .venv/bin/python bench/bench_eval.py [--questions 256] [--baseline_questions 24] [--max_new_tokens 24]

Same model, same questions, same greedy decoding; prints questions/second for each and the ratio (target >= 30x on
CPU). The model is a random GPT-2 of the tiny preset's size (~1M parameters, 4 layers x 128 wide, our 2048-token
BPE), built in-process from a small world: nothing is downloaded. A random model never emits <|im_end|>, so every
answer runs to max_new_tokens: the worst case, and the same work for both arms. The baseline is slow, so it runs on
the first `--baseline_questions` only; throughput is per question, and the greedy answers of those questions are
checked to be identical in both arms (and with `answer_prob` recorded, the path `groundup eval` takes). Two more arms
(batched without cache, one at a time with cache) show which of the two tricks buys what.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path


def build(tmp: Path, vocab_size: int):
    import torch
    from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

    from groundup.train.tokenizer import main as tokenizer_main
    from groundup.world.generate import main as world_main
    from groundup.core.jsonl import read_jsonl

    world_main(["--output_dir", str(tmp / "data"), "--num_people", "320"])
    tokenizer_main(["--output_dir", str(tmp / "tokenizer"), "--dataset", str(tmp / "data"),
                    "--vocab_size", str(vocab_size)])
    tokenizer = AutoTokenizer.from_pretrained(tmp / "tokenizer")
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=len(tokenizer), n_positions=256, n_embd=128, n_layer=4, n_head=4,
                        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                        pad_token_id=tokenizer.pad_token_id)
    model = GPT2LMHeadModel(config).eval()
    questions = [r["question"] for r in read_jsonl(tmp / "data" / "questions" / "eval.jsonl")]
    questions += [r["question"] for r in read_jsonl(tmp / "data" / "questions" / "eval_heldout.jsonl")]
    return model, tokenizer, questions


def timed(generator, questions, confidence=False):
    start = time.perf_counter()
    if confidence:  # what `groundup eval` runs when greedy: answers plus answer_prob
        answers, _ = generator.generate_with_confidence(questions)
    else:
        answers = [a[0] for a in generator.generate(questions)]
    seconds = time.perf_counter() - start
    return answers, seconds


def main(argv=None) -> int:
    import torch

    from groundup.evaluate.generation import HFGenerator, torch_threads

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--questions", type=int, default=256)
    parser.add_argument("--baseline_questions", type=int, default=24)
    parser.add_argument("--max_new_tokens", type=int, default=24)
    parser.add_argument("--batch_size", type=int, default=128)
    parser.add_argument("--vocab_size", type=int, default=2048)
    parser.add_argument("--threads", type=int, default=1, help="torch threads for every arm (1: see generation.py)")
    args = parser.parse_args(argv)
    default_threads = torch.get_num_threads()

    with tempfile.TemporaryDirectory() as tmp:
        model, tokenizer, questions = build(Path(tmp), args.vocab_size)
    questions = questions[:args.questions]
    base_q = questions[:args.baseline_questions]
    n_params = sum(p.numel() for p in model.parameters())

    def make(batch_size, use_cache):
        return HFGenerator(model=model, tokenizer=tokenizer, max_new_tokens=args.max_new_tokens,
                           batch_size=batch_size, use_cache=use_cache, progress=False)

    with torch_threads(default_threads):
        timed(make(args.batch_size, True), questions[:8])
        _, default_threads_s = timed(make(args.batch_size, True), questions)
    with torch_threads(args.threads):
        timed(make(args.batch_size, True), questions[:8])  # warm-up (allocator, first-call overheads)
        fast_answers, fast_s = timed(make(args.batch_size, True), questions)
        slow_answers, slow_s = timed(make(1, False), base_q)
        _, batched_nocache_s = timed(make(args.batch_size, False), questions)
        _, single_cache_s = timed(make(1, True), base_q)
        confident_answers, confidence_s = timed(make(args.batch_size, True), questions, confidence=True)

    same = fast_answers[:len(base_q)] == slow_answers and confident_answers == fast_answers
    fast_qps = len(questions) / fast_s
    slow_qps = len(base_q) / slow_s
    print(f"model: random GPT-2, {n_params / 1e6:.2f}M parameters, vocab {len(tokenizer)}; "
          f"{args.max_new_tokens} new tokens per answer (greedy); torch threads {args.threads} unless noted")
    print(f"{'arm':<46}{'questions':>10}{'seconds':>10}{'q/s':>10}")
    rows = [("one at a time, no KV cache (baseline)", len(base_q), slow_s),
            ("one at a time, KV cache", len(base_q), single_cache_s),
            (f"batched ({args.batch_size}), no KV cache", len(questions), batched_nocache_s),
            (f"batched ({args.batch_size}) + KV cache, {default_threads} threads", len(questions), default_threads_s),
            (f"batched ({args.batch_size}) + KV cache + left padding", len(questions), fast_s),
            ("... + answer_prob (what groundup eval runs)", len(questions), confidence_s)]
    for name, n, s in rows:
        print(f"{name:<46}{n:>10}{s:>10.2f}{n / s:>10.1f}")
    print(f"greedy answers identical on the {len(base_q)} shared questions: {same}")
    print(f"speed-up batched + KV cache vs one at a time without cache: {fast_qps / slow_qps:.1f}x (target >= 30x); "
          f"with answer_prob recorded: {len(questions) / confidence_s / slow_qps:.1f}x")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
