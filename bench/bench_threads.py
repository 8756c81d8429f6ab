"""CPU thread count under contention: a short pretraining run and a short SFT run at 1 vs 2 torch threads while
another process keeps one core busy (a spinning loop), interleaved, printed as ratios.

    .venv/bin/python bench/bench_threads.py [--steps 10] [--rounds 2] [--no-spinner]

Why: torch starts one thread per core. When other work holds a core, a step's second thread waits for it at every
parallel region (OpenMP threads spin, then sleep), and a step can take many times longer than with one thread. The
presets leave `cpu_threads` unset (full runs are compared byte for byte, and float results change with the thread
count); docs/speed.md says when to set it. Models: the tiny preset's shape (4 x 128, context 256, batch 8) for
pretraining; a random GPT-2 of the same size for SFT (packed rows, batch 16), as bench/bench_finetune.py.
"""

from __future__ import annotations

import argparse
import multiprocessing
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def _spin(stop) -> None:
    x = 0
    while not stop.is_set():
        for _ in range(100000):
            x += 1


def _load(name: str):
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, HERE / f"{name}.py")
    module = sys.modules.setdefault(name, importlib.util.module_from_spec(spec))
    if not hasattr(module, "main"):
        spec.loader.exec_module(module)
    return module


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=10, help="timed steps per run")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--run-dir", default="runs/bench", help="pretraining data (built if missing)")
    parser.add_argument("--no-spinner", action="store_true", help="measure without the busy process")
    args = parser.parse_args(argv)

    import datasets
    import torch
    import transformers

    transformers.logging.set_verbosity_error()
    datasets.disable_progress_bars()
    pre, ft = _load("bench_pretrain"), _load("bench_finetune")
    setup_args = argparse.Namespace(run_dir=args.run_dir, overrides=[])
    pargs, tokenizer, data = pre.setup(setup_args)
    tmp = tempfile.TemporaryDirectory()
    model_dir, world_dir = ft.build(Path(tmp.name))

    def pretrain():
        start = time.perf_counter()
        pre.run_ours(pargs, tokenizer, data, 2, args.steps)
        return (time.perf_counter() - start) / (args.steps + 2)

    def sft():
        return ft.sft_arm(model_dir, world_dir, args.steps, "--packing", "true")["seconds"] / args.steps

    stop = multiprocessing.Event()
    spinner = None if args.no_spinner else multiprocessing.Process(target=_spin, args=(stop,), daemon=True)
    if spinner:
        spinner.start()
    seconds: dict[tuple[str, int], list[float]] = {}
    try:
        torch.set_num_threads(1)
        sft()  # warm-up: first-call costs out of the timed runs
        for _ in range(args.rounds):
            for threads in (1, 2):
                torch.set_num_threads(threads)
                for name, fn in (("pretraining step", pretrain), ("SFT step", sft)):
                    seconds.setdefault((name, threads), []).append(fn())
                    print(f"{name}, {threads} thread(s): {seconds[(name, threads)][-1]:.3f} s", flush=True)
    finally:
        stop.set()
        if spinner:
            spinner.join(timeout=5)
        tmp.cleanup()
    load = "one core kept busy by a spinning process" if spinner else "no extra load"
    print(f"\n{multiprocessing.cpu_count()} cores, {load}; medians of {args.rounds} interleaved rounds, "
          f"torch {torch.__version__}")
    print(f"{'':18s}{'1 thread':>12s}{'2 threads':>12s}{'2 / 1':>8s}")
    for name in ("pretraining step", "SFT step"):
        one, two = statistics.median(seconds[(name, 1)]), statistics.median(seconds[(name, 2)])
        print(f"{name:18s}{one:>11.3f}s{two:>11.3f}s{two / one:>7.1f}x")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(HERE.parent / "src"))
    sys.exit(main())
