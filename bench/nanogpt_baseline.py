"""A bare nanoGPT-style GPT-2 and training step: the yardstick groundup's pretraining loop is measured against.

Written here after Karpathy's nanoGPT `model.py` / `train.py` / `bench.py` (MIT), reduced to what a timing needs:
- model: token + position embeddings, pre-LayerNorm blocks (bias on), causal self-attention through
  `F.scaled_dot_product_attention(is_causal=True)`, MLP with exact GELU, final LayerNorm, `lm_head` tied to `wte`;
  nanoGPT's init (N(0, 0.02), residual projections scaled by 1/sqrt(2 * n_layer));
- loss computed inside `forward` (so `torch.compile` of the model compiles it too), `ignore_index=-1`;
- optimizer as nanoGPT's `configure_optimizers`: AdamW, decay on every tensor of rank >= 2 (embeddings included),
  `fused=True` on CUDA only;
- step: bf16 autocast where the GPU has it (else fp32), forward + loss, backward, clip to 1.0, step, zero grads.

No groundup import: this file is the baseline, so it must not share any of the code it is compared with.

    python bench/nanogpt_baseline.py --steps 20                         # CPU, the tiny preset's shape
    python bench/nanogpt_baseline.py --n_layer 12 --n_embd 768 --n_head 12 --block_size 1024 --batch_size 32 \
        --vocab_size 50304 --compile                                    # GPU, GPT-2 small (bench.py's shape)
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class GPTConfig:
    block_size: int = 256
    vocab_size: int = 2048
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128
    dropout: float = 0.0
    bias: bool = True


class CausalSelfAttention(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.n_head, self.n_embd, self.dropout = config.n_head, config.n_embd, config.dropout

    def forward(self, x):
        B, T, C = x.size()
        q, k, v = self.c_attn(x).split(self.n_embd, dim=2)
        q = q.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        k = k.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        v = v.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        y = F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout if self.training else 0.0, is_causal=True)
        return self.c_proj(y.transpose(1, 2).contiguous().view(B, T, C))


class MLP(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        self.gelu = nn.GELU()
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=config.bias)

    def forward(self, x):
        return self.c_proj(self.gelu(self.c_fc(x)))


class Block(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.mlp = MLP(config)

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.config = config
        self.transformer = nn.ModuleDict(dict(
            wte=nn.Embedding(config.vocab_size, config.n_embd),
            wpe=nn.Embedding(config.block_size, config.n_embd),
            h=nn.ModuleList([Block(config) for _ in range(config.n_layer)]),
            ln_f=nn.LayerNorm(config.n_embd, bias=config.bias),
        ))
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.transformer.wte.weight = self.lm_head.weight  # weight tying
        self.apply(self._init_weights)
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))

    @staticmethod
    def _init_weights(module):
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def forward(self, idx, targets=None):
        t = idx.size(1)
        pos = torch.arange(0, t, dtype=torch.long, device=idx.device)
        x = self.transformer.wte(idx) + self.transformer.wpe(pos)
        for block in self.transformer.h:
            x = block(x)
        logits = self.lm_head(self.transformer.ln_f(x))
        if targets is None:
            return logits, None
        return logits, F.cross_entropy(logits.view(-1, logits.size(-1)), targets.reshape(-1), ignore_index=-1)

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def configure_optimizers(self, weight_decay: float, learning_rate: float, betas, device_type: str):
        params = [p for p in self.parameters() if p.requires_grad]
        groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
                  {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
        extra = {"fused": True} if device_type == "cuda" else {}
        return torch.optim.AdamW(groups, lr=learning_rate, betas=betas, **extra)


def flops_per_token(config: GPTConfig) -> float:
    """nanoGPT's `estimate_mfu` count (6N + 12·L·H·Q·T, N without the position embeddings)."""
    n = sum([config.vocab_size * config.n_embd, config.n_layer * (12 * config.n_embd ** 2 + 13 * config.n_embd),
             2 * config.n_embd])
    return 6 * n + 12 * config.n_layer * config.n_embd * config.block_size


class Baseline:
    """Model, optimizer and `step(x, y)`; `device` 'cpu' or 'cuda'. Batches come from the caller."""

    def __init__(self, config: GPTConfig, device: str = "cpu", compile: bool = False, seed: int = 0,
                 learning_rate: float = 3e-3, weight_decay: float = 0.1, grad_clip: float = 1.0):
        torch.manual_seed(seed)
        self.device = device
        self.config = config
        self.model = GPT(config).to(device)
        self.model.train()
        self.optimizer = self.model.configure_optimizers(weight_decay, learning_rate, (0.9, 0.95), device)
        self.grad_clip = grad_clip
        use_bf16 = device == "cuda" and torch.cuda.is_bf16_supported()
        self.autocast = (torch.autocast(device_type="cuda", dtype=torch.bfloat16) if use_bf16
                         else torch.autocast(device_type=device, enabled=False))
        self.forward = torch.compile(self.model) if compile else self.model

    def step(self, x, y) -> torch.Tensor:
        with self.autocast:
            _, loss = self.forward(x, y)
        loss.backward()
        if self.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.grad_clip)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return loss.detach()


def random_batches(config: GPTConfig, batch_size: int, device: str, seed: int = 0):
    """nanoGPT's get_batch over random tokens: pinned host memory and non-blocking copies on CUDA."""
    g = torch.Generator().manual_seed(seed)
    while True:
        rows = torch.randint(config.vocab_size, (batch_size, config.block_size + 1), generator=g)
        if device == "cuda":
            rows = rows.pin_memory().to(device, non_blocking=True)
        yield rows[:, :-1], rows[:, 1:]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n_layer", type=int, default=4)
    parser.add_argument("--n_embd", type=int, default=128)
    parser.add_argument("--n_head", type=int, default=4)
    parser.add_argument("--block_size", type=int, default=256)
    parser.add_argument("--vocab_size", type=int, default=2048)
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps (compilation, allocator)")
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--peak_tflops", type=float, default=989.0, help="for MFU on CUDA (H100/H200 bf16 dense)")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    config = GPTConfig(block_size=args.block_size, vocab_size=args.vocab_size, n_layer=args.n_layer,
                       n_head=args.n_head, n_embd=args.n_embd)
    base = Baseline(config, args.device, args.compile)
    batches = random_batches(config, args.batch_size, args.device)
    sync = torch.cuda.synchronize if args.device == "cuda" else (lambda: None)
    for _ in range(args.warmup):
        base.step(*next(batches))
    sync()
    start = time.perf_counter()
    for _ in range(args.steps):
        loss = base.step(*next(batches))
    loss.item()
    sync()
    seconds = time.perf_counter() - start
    tps = args.steps * args.batch_size * args.block_size / seconds
    line = (f"nanoGPT-style {base.model.num_params() / 1e6:.2f}M params on {args.device}: {tps:,.0f} tokens/s "
            f"steady-state ({args.steps} steps after {args.warmup} warm-up)")
    mfu = tps * flops_per_token(config) / (args.peak_tflops * 1e12) if args.device == "cuda" else None
    if mfu is not None:
        line += f", MFU {100 * mfu:.1f}%"
    print(line)
    if args.json:
        import json

        with open(args.json, "w") as f:
            json.dump({"tokens_per_s": tps, "mfu": mfu, "steps": args.steps, "warmup": args.warmup,
                       "seconds": seconds, "device": args.device, "compile": args.compile,
                       "parameters": base.model.num_params()}, f)
    return 0


if __name__ == "__main__":
    sys.exit(main())
