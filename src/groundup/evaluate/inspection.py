"""`groundup inspect DIR --prompt TEXT`: look inside the model while it answers.

Writes PNGs into `--output_dir`:
- `attention_layer{L}.png`: one heatmap per head of layer L (query token × key token) for the prompt;
- `next_token.png`: for each generated token, the probabilities of the top candidates — where the model hesitates
  between a fact and "I don't know" shows up as two tall bars instead of one.
The prompt is wrapped in the model's chat template (as a user turn) unless `--raw true`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from groundup.core.errors import GroundupError
from groundup.core.plotting import pyplot
from groundup.models.diagnostics import copy_check
from groundup.models.loader import context_length, load_model_and_tokenizer


@dataclass
class InspectArguments:
    """`groundup inspect`: attention heatmaps and next-token probabilities as PNGs."""

    model: str | None = field(default=None, metadata={"help": "Model folder or Hub id (required)."})
    prompt: str = field(default="In which city was Arbel Cornwood born?", metadata={"help": "User message."})
    output_dir: str | None = field(default=None, metadata={"help": "Folder for the PNGs (required)."})
    raw: bool = field(default=False, metadata={"help": "Use the prompt as is, without the chat template."})
    max_new_tokens: int = field(default=16, metadata={"help": "Tokens to generate greedily."})
    top_k: int = field(default=5, metadata={"help": "Candidates shown per generated token."})
    trust_remote_code: bool = field(default=False, metadata={"help": "Allow custom model code (off by default)."})


def _label(token: str) -> str:
    """A token as printable text for a plot label (newlines and control characters escaped)."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in token) or "∅"


def _tokens(tokenizer, ids) -> list[str]:
    return [_label(tokenizer.decode([i])) for i in ids]


def attention_maps(model, input_ids):
    """Attention probabilities: a tuple over layers of [heads, query, key] tensors."""
    import torch

    with torch.no_grad():
        out = model(input_ids=input_ids, output_attentions=True)
    return [layer[0].float() for layer in out.attentions]


def next_token_candidates(model, tokenizer, input_ids, max_new_tokens: int, top_k: int, eos_ids: set[int]):
    """Greedy decoding that records, per step, the top-k (token, probability) candidates."""
    import torch

    steps = []
    ids = input_ids
    limit = context_length(model)
    with torch.no_grad():
        for _ in range(max_new_tokens):
            logits = model(input_ids=ids).logits[0, -1]
            probs = torch.softmax(logits.float(), dim=-1)
            top = torch.topk(probs, top_k)
            steps.append([(tokenizer.decode([int(i)]), float(p)) for p, i in zip(top.values, top.indices)])
            chosen = top.indices[:1].view(1, 1)
            ids = torch.cat([ids, chosen], dim=1)
            if int(chosen) in eos_ids or (limit is not None and ids.shape[1] >= limit):
                break
    return steps


def plot_attention(layer_attention, tokens: list[str], title: str, path: Path) -> Path:
    plt = pyplot()
    heads = layer_attention.shape[0]
    cols = min(heads, 4)
    rows = (heads + cols - 1) // cols
    size = max(3.0, 0.18 * len(tokens))
    fig, axes = plt.subplots(rows, cols, figsize=(size * cols, size * rows), squeeze=False)
    for h in range(rows * cols):
        ax = axes[h // cols][h % cols]
        if h >= heads:
            ax.axis("off")
            continue
        ax.imshow(layer_attention[h].numpy(), cmap="viridis", vmin=0, vmax=1)
        ax.set_title(f"head {h}", fontsize=9)
        ax.set_xticks(range(len(tokens)), tokens, rotation=90, fontsize=6)
        ax.set_yticks(range(len(tokens)), tokens, fontsize=6)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_candidates(steps, path: Path) -> Path:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(max(4.0, 0.9 * len(steps)), 4.2))
    width = 0.8 / max(len(steps[0]) if steps else 1, 1)
    for s, candidates in enumerate(steps):
        for k, (token, prob) in enumerate(candidates):
            x = s + (k - len(candidates) / 2) * width
            ax.bar(x, prob, width=width, color="#2a9d55" if k == 0 else "#8d99ae")
            ax.text(x, prob + 0.01, _label(token), rotation=90, fontsize=6, ha="center", va="bottom")
    ax.set_xticks(range(len(steps)), [_label(c[0][0]) for c in steps], rotation=60, fontsize=7)
    ax.set_ylim(0, 1.25)
    ax.set_ylabel("probability")
    ax.set_title("next-token candidates while answering (chosen token first, in green)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def inspect_model(args: InspectArguments) -> list[Path]:
    try:
        # eager attention: SDPA kernels do not return attention probabilities
        model, tokenizer = load_model_and_tokenizer(args.model, trust_remote_code=args.trust_remote_code,
                                                    use_safetensors=True, attn_implementation="eager")
    except GroundupError as err:
        raise GroundupError(f"inspect: cannot load a model from {args.model} ({err})") from None
    if args.raw or not tokenizer.chat_template:
        input_ids = tokenizer(args.prompt, return_tensors="pt")["input_ids"]
    else:
        input_ids = tokenizer.apply_chat_template([{"role": "user", "content": args.prompt}], tokenize=True,
                                                  add_generation_prompt=True, return_tensors="pt",
                                                  return_dict=True)["input_ids"]
    context = context_length(model)
    if context is not None and input_ids.shape[1] >= context:
        raise GroundupError(f"inspect: the prompt takes {input_ids.shape[1]} tokens; the model's context is {context}")
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokens = _tokens(tokenizer, input_ids[0].tolist())
    written = [plot_attention(layer, tokens, f"layer {i}", out / f"attention_layer{i}.png")
               for i, layer in enumerate(attention_maps(model, input_ids))]
    eos = model.generation_config.eos_token_id
    eos_ids = set(eos if isinstance(eos, list) else [eos] if eos is not None else [tokenizer.eos_token_id])
    steps = next_token_candidates(model, tokenizer, input_ids, args.max_new_tokens, args.top_k, eos_ids)
    written.append(plot_candidates(steps, out / "next_token.png"))
    answer = "".join(step[0][0] for step in steps)
    copying = copy_check(model, tokenizer)
    print(f"inspect: {args.model} answered {answer!r}; {len(written)} PNGs in {out}; copy check: "
          f"{copying['repeated']:.2f} of repeated random tokens predicted ({copying['first']:.2f} on first sayings)")
    return written


def parse_args(argv: list[str] | None = None) -> tuple:
    from groundup.core.configs import parse_config

    return parse_config([InspectArguments], argv)


def main(argv: list[str] | None = None) -> list[Path]:
    from groundup.core.configs import require

    (args,) = parse_args(argv)
    require("inspect", {"model": args.model, "output_dir": args.output_dir})
    return inspect_model(args)
