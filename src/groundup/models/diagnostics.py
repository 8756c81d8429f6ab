"""Diagnostics of a model's abilities that need no data: run on any causal LM, after pretraining and by `groundup
inspect`."""

from __future__ import annotations

from groundup.models.loader import context_length


def copy_check(model, tokenizer, rows: int = 16, length: int | None = None, seed: int = 0) -> dict[str, float]:
    """Can the model copy from its context at all? Rows of random token sequences (8-32 tokens), each said twice,
    filling the context; greedy next-token accuracy on the second saying (from its second token: where a repeat
    starts cannot be guessed) against the first (chance). Olsson et al. 2022's test for induction heads, the circuit
    that reads a value back from a passage: an open-book answer needs it. A few forward passes; any causal LM."""
    import torch

    special = set(tokenizer.all_special_ids)
    ids = torch.tensor([i for i in range(len(tokenizer)) if i not in special])
    length = length or min(context_length(model) or 256, 256)
    g = torch.Generator().manual_seed(seed)
    batch, kinds = [], []  # per token: 0 first saying, 1 repeated (predictable by copying), 2 repeat's first token
    for _ in range(rows):
        row, kind = [], []
        while len(row) < length:
            k = int(torch.randint(8, 33, (1,), generator=g))
            seq = ids[torch.randint(len(ids), (k,), generator=g)].tolist()
            row += seq + seq
            kind += [0] * k + [2] + [1] * (k - 1)
        batch.append(row[:length])
        kinds.append(kind[:length])
    x = torch.tensor(batch, device=next(model.parameters()).device)
    was_training = model.training
    model.eval()
    with torch.no_grad():
        hit = (model(input_ids=x[:, :-1]).logits.argmax(-1) == x[:, 1:]).cpu()
    model.train(was_training)
    kind = torch.tensor(kinds)[:, 1:]
    return {"repeated": round(hit[kind == 1].float().mean().item(), 4),
            "first": round(hit[kind == 0].float().mean().item(), 4)}
