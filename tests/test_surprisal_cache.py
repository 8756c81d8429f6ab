"""KV cache of the surprisal-reading model: generation with the cache gives the same greedy tokens as without it
(exact), the same logits within 1e-5, on a tiny random-weight model with every feature on (full-context surprisal,
window surprisal, copy feature), left-padded batches included; the incremental features equal the full ones."""

from __future__ import annotations

import pytest
import torch

from groundup.models.surprisal import SurprisalGPT2LMHeadModel
from groundup.models.configuration_groundup_surprisal import SurprisalGPT2Config
from groundup.models.modeling_groundup_surprisal import copy_suggestions, copy_suggestions_from

pytestmark = pytest.mark.usefixtures("one_torch_thread")

VOCAB, PAD, BOS = 97, 1, 0


def _model(seed=0, window=2, copy=4):
    config = SurprisalGPT2Config(vocab_size=VOCAB, n_positions=96, n_embd=32, n_layer=2, n_head=2, resid_pdrop=0.0,
                                 embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=BOS, eos_token_id=2,
                                 pad_token_id=PAD, surprisal_window=window, copy_max_match=copy)
    config._attn_implementation = "sdpa"
    torch.manual_seed(seed)
    model = SurprisalGPT2LMHeadModel(config).eval()
    with torch.no_grad():  # every feature's weights away from their silent start, the reference's too
        for name, p in model.named_parameters():
            if "surprisal_embedding" in name or "copy_" in name:
                p.normal_(0.0, 0.3)
        model.transformer.reference.wte.weight.normal_(0.0, 0.5)
    return model


def _batch(seed=0, rows=4):
    """Left-padded prompts of different lengths, each repeating a stretch of itself (the copy feature fires)."""
    g = torch.Generator().manual_seed(seed)
    texts = []
    for i in range(rows):
        part = torch.randint(3, VOCAB, (3 + i,), generator=g).tolist()
        texts.append([BOS] + part + torch.randint(3, VOCAB, (2,), generator=g).tolist() + part[: 2 + i % 3])
    width = max(map(len, texts))
    ids = torch.tensor([[PAD] * (width - len(t)) + t for t in texts])
    mask = torch.tensor([[0] * (width - len(t)) + [1] * len(t) for t in texts])
    return ids, mask


def _generate(model, ids, mask, use_cache, **extra):
    with torch.inference_mode():
        return model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=16, do_sample=False,
                              use_cache=use_cache, pad_token_id=PAD, eos_token_id=None, return_dict_in_generate=True,
                              output_logits=True, **extra)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("features", [(2, 4), (1, 0), (0, 6), (0, 0)])
def test_cached_generation_equals_recomputed_generation(seed, features):
    model = _model(seed, *features)
    ids, mask = _batch(seed)
    cached = _generate(model, ids, mask, True)
    full = _generate(model, ids, mask, False)
    assert torch.equal(cached.sequences, full.sequences)
    for a, b in zip(cached.logits, full.logits):
        assert torch.allclose(a, b, atol=1e-5, rtol=0), (a - b).abs().max()
    # one prompt alone, unpadded: the same with and without the cache too
    alone = [_generate(model, ids[1:2, (mask[1] == 0).sum():], None, flag).sequences for flag in (True, False)]
    assert torch.equal(*alone)


def test_the_cache_really_holds_the_prefix():
    """With the cache, each step after the first feeds one token through the model (and one through the reference)."""
    model = _model()
    ids, mask = _batch()
    seen = []
    hook = model.transformer.reference.register_forward_pre_hook(
        lambda module, args, kwargs: seen.append(kwargs["input_ids"].shape[1]), with_kwargs=True)
    try:
        _generate(model, ids, mask, True)
    finally:
        hook.remove()
    full = [n for n in seen if n > 3]  # the window feature runs the reference on short contexts too
    assert full[0] == ids.shape[1] and seen.count(1) >= 15


def test_incremental_features_equal_the_full_ones():
    g = torch.Generator().manual_seed(3)
    for trial in range(20):
        length = 5 + trial
        ids = torch.randint(0, 4, (3, length), generator=g)  # few distinct tokens: many and long matches
        mask = torch.ones_like(ids)
        mask[1, : trial % 4] = 0
        for max_match in (1, 3, 8):
            full_next, full_len = copy_suggestions(ids, mask, max_match)
            for first in (0, length // 2, length - 1):
                next_ids, lengths = copy_suggestions_from(ids, mask, max_match, first)
                assert torch.equal(lengths, full_len[:, first:])
                matched = lengths > 0  # where nothing matched the suggestion is multiplied by 0
                assert torch.equal(next_ids[matched], full_next[:, first:][matched])
    model = _model(window=2)
    ids, mask = _batch(4)
    with torch.no_grad():
        full = model.transformer.window_surprisal(ids, mask)
        assert torch.allclose(model.transformer.window_surprisal(ids, mask, first=5), full[:, 5:], atol=1e-5)


def test_a_cache_with_only_new_tokens_is_refused():
    from transformers import DynamicCache

    model = _model()
    ids, mask = _batch()
    cache = DynamicCache(config=model.config)
    with torch.no_grad():
        model(input_ids=ids, attention_mask=mask, cache=cache, use_cache=True)
        with pytest.raises(ValueError, match="whole text so far"):
            model(input_ids=ids[:, -1:], attention_mask=torch.cat([mask, mask[:, -1:]], 1), cache=cache,
                  use_cache=True)
