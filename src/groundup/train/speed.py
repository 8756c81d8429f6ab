"""Speed settings and honest speed figures of the pretraining loop (`groundup.train.pretrain`).

- `check_speed_keys`: the levers' values, checked before any tokenizing (docs/speed.md says what each buys).
- `resolve_loss_implementation`: what `loss_implementation: auto` means on this run.
- `speed_results` / `speed_phrase`: the tokens/s and MFU a run prints and saves are steady-state: the first
  `speed_warmup_steps` steps of each start of the loop (torch.compile's compilation, the allocator and kernel caches
  warming up) are left out, and the results name the steps that were counted, beside the run's total wall time.
  A 124M run on an H200 spends ~45 s compiling before its first fast step: averaged in, it halves a short run's
  figure.
"""

from __future__ import annotations

import math
from typing import Any

LOSS_CHOICES = ("auto", "logits", "chunked")


def check_speed_keys(args) -> None:
    if args.loss_implementation not in LOSS_CHOICES:
        raise ValueError(f"loss_implementation must be one of {', '.join(LOSS_CHOICES)}, "
                         f"got {args.loss_implementation!r}")
    if args.loss_chunk_tokens < 1:
        raise ValueError(f"loss_chunk_tokens must be at least 1, got {args.loss_chunk_tokens}")
    if args.speed_warmup_steps < 0:
        raise ValueError(f"speed_warmup_steps must be 0 or more, got {args.speed_warmup_steps}")
    if args.loss_implementation == "chunked" and not args.loss_in_forward:
        raise ValueError("loss_implementation: chunked computes the loss inside the forward; set loss_in_forward: "
                         "true (the default)")
    from transformers.activations import ACT2FN

    if args.activation_function not in ACT2FN:
        raise ValueError(f"activation_function {args.activation_function!r} is not a transformers activation "
                         "(e.g. gelu_new, gelu_pytorch_tanh)")


def resolve_loss_implementation(args, accelerator) -> str:
    """`auto`: chunked on CUDA without torch_compile (no fp32 logits are ever written); logits otherwise: on CPU
    (unchanged results), with torch_compile (Inductor fuses the fp32 cast into the loss kernel, as in nanoGPT), and
    under FSDP/DeepSpeed (ZeRO-3 gathers a weight only when its module is called; the chunked loss reads it
    directly)."""
    if args.loss_implementation != "auto":
        return args.loss_implementation
    if not args.loss_in_forward:
        return "logits"
    distributed = str(getattr(accelerator.distributed_type, "value", accelerator.distributed_type))
    if accelerator.device.type == "cuda" and not args.torch_compile and distributed not in ("FSDP", "DEEPSPEED"):
        return "chunked"
    return "logits"


def _ranges_text(ranges: list[list[int]]) -> str:
    return ", ".join(f"{a}-{b}" if a != b else f"{a}" for a, b in ranges)


def duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    minutes, s = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m {s:02d}s"
    hours, m = divmod(minutes, 60)
    return f"{hours}h {m:02d}m {s:02d}s"


def speed_results(state, warmup_steps: int, fpt: float, peak: float | None, world: int,
                  wall_seconds: float) -> dict[str, Any]:
    """The speed part of `pretrain_results.json`: steady-state tokens/s and MFU when any step was counted, else the
    average over all steps (said so), the counted steps, the all-steps average, and the wall time."""
    from groundup.models.gpt2 import mfu

    all_steps = state.tokens / max(state.train_seconds, 1e-9)
    ranges = [list(r) for r in getattr(state, "steady_ranges", [])]
    if getattr(state, "steady_seconds", 0.0) > 0 and ranges:
        tps = state.steady_tokens / state.steady_seconds
        scope = f"steady-state (steps {_ranges_text(ranges)}"  # e.g. "steady-state (steps 11-1800)"
        scope += (f": the first {warmup_steps} after each start left out)" if len(ranges) > 1 else ")")
    else:
        tps = all_steps
        scope = (f"all {state.step} steps (too few to leave out {warmup_steps} warm-up steps: compilation and "
                 "warm-up included)")
    return {"tokens_per_s": tps, "mfu": mfu(tps, fpt, peak, world), "tokens_per_s_scope": scope,
            "speed_warmup_steps": warmup_steps,  # left out after each start: compilation, allocator, caches
            "steady_steps": getattr(state, "steady_steps", 0), "steady_step_ranges": ranges,
            "steady_seconds": getattr(state, "steady_seconds", 0.0), "tokens_per_s_all_steps": all_steps,
            "mfu_all_steps": mfu(all_steps, fpt, peak, world), "wall_seconds": wall_seconds}


def speed_phrase(results: dict[str, Any]) -> str:
    """`6,120 tokens/s steady-state (steps 11-1800; ...), MFU 31.0%; 5m 12s wall time in all`."""
    text = f"{results['tokens_per_s']:,.0f} tokens/s {results['tokens_per_s_scope']}"
    if results.get("mfu") is not None and math.isfinite(results["mfu"]):
        text += f", MFU {100 * results['mfu']:.1f}%"
    return text + f"; {duration(results['wall_seconds'])} wall time in all"
