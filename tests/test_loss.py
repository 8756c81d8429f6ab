"""The pretraining loss inside the forward (`groundup.models.loss`): the chunked linear cross-entropy matches
`F.cross_entropy` on the full logits, loss and gradients (fp32, atol 1e-5), ignore_index included; the `logits` path
is bit-identical to computing the loss outside the model; the stock forward is untouched."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from groundup.models.loss import (attach_training_loss, causal_lm_loss, chunked_linear_cross_entropy,
                                  detach_training_loss)

pytestmark = pytest.mark.usefixtures("one_torch_thread")

ATOL = 1e-5


def _reference(hidden, weight, targets, ignore_index=-100):
    logits = hidden.reshape(-1, hidden.shape[-1]) @ weight.t()
    return F.cross_entropy(logits.float(), targets.reshape(-1), ignore_index=ignore_index)


@pytest.mark.parametrize("chunk", [1, 7, 64, 1000])
@pytest.mark.parametrize("ignore", [False, True])
def test_chunked_loss_and_gradients_match_full_logits(chunk, ignore):
    g = torch.Generator().manual_seed(chunk)
    n, d, vocab = 70, 16, 37
    hidden = torch.randn(n, d, generator=g, dtype=torch.float32)
    weight = torch.randn(vocab, d, generator=g) * 0.5
    targets = torch.randint(vocab, (n,), generator=g)
    if ignore:
        targets[::3] = -100
    upstream = 1.7  # a loss scale, as gradient accumulation or fp16 scaling applies
    grads = []
    for fn in (_reference, lambda h, w, t: chunked_linear_cross_entropy(h, w, t, chunk_tokens=chunk)):
        h, w = hidden.clone().requires_grad_(), weight.clone().requires_grad_()
        loss = fn(h, w, targets)
        (loss * upstream).backward()
        grads.append((loss.detach(), h.grad, w.grad))
    (ref_loss, ref_h, ref_w), (loss, gh, gw) = grads
    assert torch.allclose(loss, ref_loss, atol=ATOL, rtol=0)
    assert torch.allclose(gh, ref_h, atol=ATOL, rtol=0)
    assert torch.allclose(gw, ref_w, atol=ATOL, rtol=0)
    if ignore:
        assert (gh[::3] == 0).all()  # ignored rows get no gradient


def test_chunked_loss_with_a_tied_embedding_and_without_gradients():
    g = torch.Generator().manual_seed(0)
    emb = torch.nn.Embedding(29, 8)
    ids = torch.randint(29, (3, 11), generator=g)
    targets = torch.randint(29, (3, 11), generator=g)
    results = []
    for use_chunks in (False, True):
        emb.zero_grad()
        hidden = torch.tanh(emb(ids))  # the embedding is used at the input and as the output layer
        loss = (chunked_linear_cross_entropy(hidden, emb.weight, targets, chunk_tokens=5) if use_chunks
                else _reference(hidden, emb.weight, targets))
        loss.backward()
        results.append((loss.detach(), emb.weight.grad.clone()))
    assert torch.allclose(results[0][0], results[1][0], atol=ATOL, rtol=0)
    assert torch.allclose(results[0][1], results[1][1], atol=ATOL, rtol=0)
    with torch.no_grad():
        assert torch.allclose(chunked_linear_cross_entropy(torch.tanh(emb(ids)), emb.weight, targets, 4),
                              results[0][0], atol=ATOL, rtol=0)


def test_all_targets_ignored_gives_zero_loss_and_gradient():
    hidden = torch.randn(5, 4, requires_grad=True)
    weight = torch.randn(9, 4, requires_grad=True)
    loss = chunked_linear_cross_entropy(hidden, weight, torch.full((5,), -100), chunk_tokens=2)
    loss.backward()
    assert loss.item() == 0 and (hidden.grad == 0).all() and (weight.grad == 0).all()


def _tiny_gpt2(seed=0):
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(vocab_size=61, n_positions=32, n_embd=16, n_layer=2, n_head=2, resid_pdrop=0.0,
                        embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=0, eos_token_id=0)
    config._attn_implementation = "sdpa"
    torch.manual_seed(seed)
    return GPT2LMHeadModel(config)


def _loss_and_grads(model, fn):
    model.zero_grad(set_to_none=True)
    loss = fn()
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def test_logits_path_is_bit_identical_to_the_loss_outside_the_model_and_chunked_matches_it():
    model = _tiny_gpt2()
    rows = torch.randint(61, (4, 21), generator=torch.Generator().manual_seed(1))
    x, y = rows[:, :-1], rows[:, 1:]

    def outside():  # what groundup's pretraining loop computed before the loss moved into the forward
        logits = model(input_ids=x).logits
        return F.cross_entropy(logits.float().view(-1, logits.size(-1)), y.reshape(-1))

    before = _loss_and_grads(model, outside)
    attach_training_loss(model, "logits")
    inside = _loss_and_grads(model, lambda: model(input_ids=x, loss_targets=y))
    assert torch.equal(before[0], inside[0])
    assert before[1].keys() == inside[1].keys()
    assert all(torch.equal(before[1][k], inside[1][k]) for k in before[1])
    # the stock forward is still there for evaluation and generation
    assert torch.equal(model(input_ids=x).logits, detach_training_loss(model)(input_ids=x).logits)

    attach_training_loss(model, "chunked", chunk_tokens=13)
    chunked = _loss_and_grads(model, lambda: model(input_ids=x, loss_targets=y))
    assert torch.allclose(chunked[0], before[0], atol=ATOL, rtol=0)
    assert all(torch.allclose(chunked[1][k], before[1][k], atol=ATOL, rtol=0) for k in before[1])
    with torch.no_grad():
        assert torch.allclose(causal_lm_loss(model, x, y, "chunked", 8), before[0], atol=ATOL, rtol=0)
    out = model.generate(x[:1, :4], max_new_tokens=3, do_sample=False, pad_token_id=0)
    assert out.shape == (1, 7)


def test_a_deep_copy_computes_with_its_own_weights():
    import copy

    model = attach_training_loss(_tiny_gpt2(), "logits")
    rows = torch.randint(61, (2, 9), generator=torch.Generator().manual_seed(2))
    twin = copy.deepcopy(model)
    with torch.no_grad():
        twin.transformer.wte.weight.mul_(2.0)
        assert not torch.equal(twin(input_ids=rows).logits, model(input_ids=rows).logits)
        assert not torch.equal(twin(input_ids=rows[:, :-1], loss_targets=rows[:, 1:]),
                               model(input_ids=rows[:, :-1], loss_targets=rows[:, 1:]))


@pytest.mark.parametrize("implementation", ["logits", "chunked"])
def test_the_loss_compiles_with_the_model_in_one_graph(implementation):
    """torch.compile of the model traces the loss with it, no graph break (fullgraph; aot_eager: the trace and the
    autograd graph, without Inductor's code generation, so it stays fast on CPU)."""
    torch._dynamo.reset()
    eager = attach_training_loss(_tiny_gpt2(), implementation, chunk_tokens=13)
    compiled_model = attach_training_loss(_tiny_gpt2(), implementation, chunk_tokens=13)
    compiled = torch.compile(compiled_model, fullgraph=True, backend="aot_eager")
    rows = torch.randint(61, (4, 21), generator=torch.Generator().manual_seed(1))
    for model in (eager, compiled):
        model(input_ids=rows[:, :-1], loss_targets=rows[:, 1:]).backward()
    assert torch.allclose(eager.transformer.wte.weight.grad, compiled_model.transformer.wte.weight.grad,
                          atol=ATOL, rtol=0)
