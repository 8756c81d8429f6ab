"""The pretraining loss, computed inside the model's forward, with or without the full matrix of logits.

Why inside the forward: `torch.compile(model)` then compiles the loss with the model (the cast of the logits to fp32
and the softmax fuse into one kernel instead of writing fp32 copies of a batch x sequence x vocabulary tensor), and
Accelerate's mixed-precision wrapper, which converts every half-precision output of the forward to fp32, sees one
scalar instead of the logits. nanoGPT computes its loss in `forward` for the same reason.

How, without a custom model class: `attach_training_loss` gives one model *instance* a forward that, called with
`loss_targets=`, returns the mean next-token loss, and otherwise is the stock forward untouched (evaluation,
`generate` and `save_pretrained` see a plain `GPT2LMHeadModel`; nothing of this is saved). Calls still go through
the module's `__call__`, so DDP, FSDP and DeepSpeed wrappers and their hooks run as before.

Two implementations:
- `logits`: the stock forward, then `F.cross_entropy(logits.float(), targets)`: the same operations as computing the
  loss outside the model, bit for bit (tested), so CPU runs of the presets are unchanged;
- `chunked`: a chunked linear cross-entropy (`chunked_linear_cross_entropy`): the final hidden states times the
  output embedding in chunks of `chunk_tokens` rows, each chunk's loss and gradients computed at once and the chunk's
  logits dropped, so neither the full logits nor an fp32 copy of them ever exists (the idea of Liger-Kernel's fused
  linear cross-entropy, in plain PyTorch). Same FLOPs as the full path; its memory for logits is one chunk's.
"""

from __future__ import annotations

from types import MethodType

import torch
import torch.nn.functional as F

LOSS_IMPLEMENTATIONS = ("logits", "chunked")
IGNORE_INDEX = -100


class _ChunkedLinearCrossEntropy(torch.autograd.Function):
    """mean over non-ignored rows of -log softmax(hidden @ weight.T)[target], gradients computed chunk by chunk during
    the forward (softmax - one_hot, times 1/count) and only scaled by the incoming gradient in the backward."""

    @staticmethod
    def forward(ctx, hidden, weight, targets, chunk_tokens: int, ignore_index: int, want_hidden: bool,
                want_weight: bool):
        n = hidden.shape[0]
        valid = targets != ignore_index
        count = valid.sum().clamp_min(1).to(torch.float32)
        safe = torch.where(valid, targets, torch.zeros_like(targets))
        grad_hidden = torch.empty_like(hidden) if want_hidden else None
        grad_weight = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device) if want_weight else None
        total = torch.zeros((), dtype=torch.float32, device=hidden.device)
        for start in range(0, n, chunk_tokens):
            end = min(start + chunk_tokens, n)
            h, t, v = hidden[start:end], safe[start:end], valid[start:end]
            logits = (h @ weight.t()).float()  # under autocast: a bf16 matmul, upcast one chunk at a time
            lse = torch.logsumexp(logits, dim=-1)
            picked = logits.gather(1, t[:, None])[:, 0]
            total = total + ((lse - picked) * v).sum()
            if want_hidden or want_weight:
                grad = torch.exp(logits - lse[:, None])  # softmax, in place of the logits
                grad.scatter_add_(1, t[:, None], -torch.ones_like(lse)[:, None])
                grad = grad * (v.to(grad.dtype) / count)[:, None]
                grad = grad.to(h.dtype if not torch.is_autocast_enabled(h.device.type)
                               else torch.get_autocast_dtype(h.device.type))
                if want_hidden:
                    grad_hidden[start:end] = grad @ weight.to(grad.dtype)
                if want_weight:
                    grad_weight += (grad.t() @ h.to(grad.dtype)).float()
        ctx.save_for_backward(grad_hidden if want_hidden else None, grad_weight if want_weight else None)
        ctx.weight_dtype = weight.dtype
        return total / count

    @staticmethod
    def backward(ctx, grad_output):
        grad_hidden, grad_weight = ctx.saved_tensors
        if grad_hidden is not None:
            grad_hidden = grad_hidden * grad_output.to(grad_hidden.dtype)
        if grad_weight is not None:
            grad_weight = (grad_weight * grad_output).to(ctx.weight_dtype)
        return grad_hidden, grad_weight, None, None, None, None, None


def chunked_linear_cross_entropy(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor,
                                 chunk_tokens: int = 8192, ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """`F.cross_entropy(hidden @ weight.T, targets, ignore_index=...)` (mean over non-ignored targets) without the
    full logits: `hidden` (N, d) or (B, T, d), `weight` (V, d), `targets` (N,) or (B, T). Gradients flow to `hidden`
    and `weight` (autograd-correct; a tied embedding gets both its uses' gradients)."""
    if chunk_tokens < 1:
        raise ValueError(f"chunk_tokens must be at least 1, got {chunk_tokens}")
    hidden = hidden.reshape(-1, hidden.shape[-1])
    targets = targets.reshape(-1)
    grad = torch.is_grad_enabled()  # without gradients (evaluation): the loss alone, one chunk of logits at a time
    return _ChunkedLinearCrossEntropy.apply(hidden, weight, targets, chunk_tokens, ignore_index,
                                            grad and hidden.requires_grad, grad and weight.requires_grad)


def causal_lm_loss(model, input_ids: torch.Tensor, targets: torch.Tensor, implementation: str = "logits",
                   chunk_tokens: int = 8192, forward=None) -> torch.Tensor:
    """Mean cross-entropy of `targets` (already shifted: targets[:, t] follows input_ids[:, t]) for a Hugging Face
    causal LM with `.transformer` (GPT-2) or its base model, and an output embedding. `forward`: the stock forward to
    use for the logits path (default: the class's)."""
    if implementation == "logits":
        if forward is not None:
            logits = forward(input_ids=input_ids, use_cache=False).logits
        else:  # the class's forward, called directly: torch.compile traces it without a graph break
            logits = type(model).forward(model, input_ids=input_ids, use_cache=False).logits
        return F.cross_entropy(logits.float().view(-1, logits.size(-1)), targets.reshape(-1))
    if implementation == "chunked":
        head = model.get_output_embeddings()
        if getattr(head, "bias", None) is not None:
            raise ValueError("chunked loss: the output layer has a bias; use loss_implementation=logits")
        hidden = model.base_model(input_ids=input_ids, use_cache=False).last_hidden_state
        return chunked_linear_cross_entropy(hidden, head.weight, targets, chunk_tokens)
    raise ValueError(f"loss implementation must be one of {', '.join(LOSS_IMPLEMENTATIONS)}, got {implementation!r}")


def _forward_with_loss(self, *args, loss_targets=None, **kwargs):
    """The forward `attach_training_loss` installs: the stock forward, or the loss when `loss_targets` is given."""
    if loss_targets is None:
        return type(self).forward(self, *args, **kwargs)
    implementation, chunk_tokens = self._groundup_training_loss
    return causal_lm_loss(self, kwargs["input_ids"], loss_targets, implementation, chunk_tokens)


def attach_training_loss(model, implementation: str = "logits", chunk_tokens: int = 8192):
    """Give this model instance a forward that returns the training loss when called with `loss_targets=` (and is the
    stock forward otherwise). Returns the model. Attaching again replaces the settings; a deep copy keeps them."""
    if implementation not in LOSS_IMPLEMENTATIONS:
        raise ValueError(f"loss implementation must be one of {', '.join(LOSS_IMPLEMENTATIONS)}, "
                         f"got {implementation!r}")
    model._groundup_training_loss = (implementation, chunk_tokens)
    model.forward = MethodType(_forward_with_loss, model)
    return model


def detach_training_loss(model):
    """Undo `attach_training_loss` (the instance falls back to its class's forward)."""
    model.__dict__.pop("forward", None)
    model.__dict__.pop("_groundup_training_loss", None)
    return model
