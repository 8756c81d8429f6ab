"""The model: a stock Hugging Face GPT-2, sized from a few YAML numbers, plus the arithmetic to judge its speed.

Nothing custom in the architecture: `GPT2LMHeadModel` with SDPA attention, so every output folder loads with
`AutoModelForCausalLM` and no groundup code. What this module adds:
- `build_config`: `GPT2Config` from (layers, width, heads, context, dropout) and the tokenizer's special ids, with
  the vocabulary rounded up to a multiple of 64 (matmuls on GPUs are faster on such shapes; the extra rows are never
  a target, so training pushes their logits down and generation never picks them);
- `flops_per_token` and `peak_flops`: model FLOPs utilisation (MFU), as in the PaLM paper's appendix B and nanoGPT.
"""

from __future__ import annotations

import math

from groundup.core.chat import DOC_TOKEN, TURN_END
from groundup.core.errors import GroundupError

VOCAB_MULTIPLE = 64

# Dense bf16 tensor-core peak per device, FLOP/s (vendor datasheets, SXM parts, no sparsity). MFU is only reported
# where the peak is known, or where the user gives `peak_tflops` in the recipe.
PEAK_BF16_FLOPS = {
    "H200": 989e12,
    "H100": 989e12,  # SXM; the PCIe part is 756e12: set peak_tflops for it
    "GH200": 989e12,
    "B200": 2250e12,
    "A100": 312e12,
    "A10G": 70e12,
    "A10": 125e12,
    "L40S": 362e12,
    "L4": 121e12,
    "RTX 4090": 165e12,
    "RTX 3090": 71e12,
    "V100": 125e12,  # fp16
    "T4": 65e12,  # fp16
}


def round_up(n: int, multiple: int = VOCAB_MULTIPLE) -> int:
    return ((n + multiple - 1) // multiple) * multiple


def build_config(tokenizer, *, n_layer: int, n_embd: int, n_head: int, n_positions: int, dropout: float = 0.0,
                 vocab_size: int | None = None, activation_function: str = "gelu_new"):
    """A `GPT2Config` for `tokenizer`; `vocab_size=None` means the tokenizer's size rounded up to 64.
    `activation_function`: GPT-2's `gelu_new` by default; `gelu_pytorch_tanh` is the same curve in one kernel."""
    from transformers import GPT2Config

    if n_embd % n_head:
        raise GroundupError(f"n_embd={n_embd} must be divisible by n_head={n_head}")
    n_tokens = len(tokenizer)
    if vocab_size is None:
        vocab_size = round_up(n_tokens)
    elif vocab_size < n_tokens:
        raise GroundupError(f"vocab_size={vocab_size} is smaller than the tokenizer's {n_tokens} tokens "
                            f"(tokenizer/model vocab mismatch); leave vocab_size unset to derive it")
    doc_id = tokenizer.convert_tokens_to_ids(DOC_TOKEN)
    end_id = tokenizer.convert_tokens_to_ids(TURN_END)
    if doc_id is None or doc_id == tokenizer.unk_token_id:
        raise GroundupError(f"tokenizer has no {DOC_TOKEN} token: train it with `groundup tokenizer`")
    return GPT2Config(
        vocab_size=vocab_size,
        n_positions=n_positions,
        n_ctx=n_positions,  # not read by transformers (same numerics); llama.cpp's GGUF converter wants it
        n_embd=n_embd,
        n_layer=n_layer,
        n_head=n_head,
        resid_pdrop=dropout,
        embd_pdrop=dropout,
        attn_pdrop=dropout,
        bos_token_id=doc_id,
        eos_token_id=end_id if end_id is not None else doc_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
        activation_function=activation_function,
    )


def build_model(config, attn_implementation: str = "sdpa"):
    """A randomly initialised `GPT2LMHeadModel` (GPT-2's init: N(0, 0.02), residual projections scaled by depth)."""
    from transformers import GPT2LMHeadModel

    config._attn_implementation = attn_implementation
    return GPT2LMHeadModel(config)


def check_vocab(config, tokenizer) -> None:
    """A model must have an embedding row for every token id the tokenizer can produce."""
    if config.vocab_size < len(tokenizer):
        raise GroundupError(f"tokenizer/model vocab mismatch: the tokenizer has {len(tokenizer)} tokens but the "
                            f"model only {config.vocab_size} embedding rows")


def generation_config(tokenizer, **kwargs):
    """Stop at end of turn (chat) or at end of document (plain text); pad with the pad token."""
    from transformers import GenerationConfig

    doc_id = tokenizer.convert_tokens_to_ids(DOC_TOKEN)
    end_id = tokenizer.convert_tokens_to_ids(TURN_END)
    return GenerationConfig(bos_token_id=doc_id, eos_token_id=[end_id, doc_id], pad_token_id=tokenizer.pad_token_id,
                            **kwargs)


def count_params(model, non_embedding: bool = False) -> int:
    """Parameters, tied ones once. `non_embedding=True` leaves out the token and position embeddings."""
    n = sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())
    if non_embedding:
        n -= model.transformer.wte.weight.numel() + model.transformer.wpe.weight.numel()
    return n


def flops_per_token(config, seq_len: int) -> float:
    """Training FLOPs per token: 6N for the matmuls (forward 2N, backward 4N) plus attention scores, 12·L·d·T.

    N counts every weight a token's activations are multiplied by: the blocks and the (tied) output projection, but
    not the position embeddings, which are looked up. The attention term is PaLM's (appendix B), as in nanoGPT.
    """
    d, n_layer, vocab = config.n_embd, config.n_layer, config.vocab_size
    per_block = 12 * d * d + 13 * d  # qkv + proj (4d²) + MLP (8d²), biases and the two layer norms
    n = n_layer * per_block + vocab * d + 2 * d  # + lm_head (tied to wte) + final layer norm
    return 6 * n + 12 * n_layer * d * seq_len


def peak_flops(device_name: str | None, override_tflops: float | None = None) -> float | None:
    """Peak dense bf16 FLOP/s of one device, or None when unknown (CPUs: MFU is not reported)."""
    if override_tflops:
        return override_tflops * 1e12
    if not device_name:
        return None
    name = device_name.upper()
    for key in sorted(PEAK_BF16_FLOPS, key=len, reverse=True):  # "GH200" before "H200" before "H100"...
        if key in name:
            return PEAK_BF16_FLOPS[key]
    return None


def describe(config, n_params: int) -> str:
    return (f"GPT-2 {config.n_layer} layers x {config.n_embd} wide, {config.n_head} heads, context "
            f"{config.n_positions}, vocab {config.vocab_size}: {n_params / 1e6:.2f}M parameters")


def mfu(tokens_per_s: float, fpt: float, peak: float | None, n_devices: int) -> float | None:
    if not peak or not math.isfinite(tokens_per_s):
        return None
    return tokens_per_s * fpt / (peak * n_devices)
