"""A GPT-2 that also reads how surprised its pretrained base is by every token (and, optionally, what followed the
current text the last time it appeared in the context): an honesty arm that refuses unseen people it was never
trained on, which plain IDK-SFT cannot learn to do, and, with the copy feature, answers them from a passage.

Why: the base model knows whom it has seen —
its log P(last name | first name) separates frequent from unseen people perfectly — but that signal is never a hidden
vector at the token where the fine-tuned model decides to answer or refuse (linear probes there are at chance), so
IDK-SFT can only memorise which training names to refuse. Handing the network the base's per-token surprisal,
-log P_base(token | prefix), as an extra input turns it into something the model can read.

`SurprisalGPT2LMHeadModel` is a stock `GPT2LMHeadModel` whose backbone (`SurprisalGPT2Model`) has two extra parts:
- `reference`: a frozen copy of the base's transformer (`GPT2Model`; logits through its own tied embedding), run first
  over the same tokens to get each token's surprisal;
- `surprisal_embedding`: soft bins of the surprisal (Gaussian bumps at `surprisal_bins` centres from 0 to
  `surprisal_max` nats, plus the scaled value itself) mapped to a vector added to the token embedding. Zero at
  initialisation, so the assembled model starts out exactly as the fine-tuned model it was built from.
- optional, `surprisal_window` > 0: a second surprisal input (`window_surprisal`, through `window_surprisal_embedding`,
  zero at the start): the reference's surprisal of each token after a document start and only that many tokens before
  it, so that whom the base has met does not depend on the question a name is asked in;
- optional, `copy_max_match` > 0: an in-context copy feature (`copy_suggestions`). Each token also reads the token that
  followed the longest earlier match of the text ending there, and that match's length: through `copy_projection`
  (the identity at the start) scaled by a per-length `copy_gate`, plus a per-length `copy_length_embedding`, both zero
  at the start. It is what an induction head computes, handed over because the tiny preset's models grow none (their
  copy check finds no copying) and so cannot answer from a passage whatever they are fine-tuned on. With it, and
  open-book rows about made-up people that only copying answers (the world's `open_book_synthetic` split), the arm
  learns to answer from a passage and to prefer it to its weights.

Costs and limits, said plainly: two forward passes per token (with a KV cache for each in generation: the
reference keeps its own cache beside the model's, and the window and copy features are computed for the new
positions only, so `generate(use_cache=True)` reads each token once; `use_cache=False` recomputes the prefix and
gives the same greedy tokens, logits within float rounding), any surprising token can read as unfamiliar (without the world's `rephrased` questions in its IDK-SFT data it refused nearly
every question phrased in a way it was never trained on), and a model
type of its own. No well-kept library provides such an input feature, hence this module.

Where it runs: this file and `configuration_groundup_surprisal.py` import only torch and transformers, and
`save_pretrained` copies both into every folder of this type (`auto_map` in config.json), so anyone loads a folder with
`AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True)` or `pipeline("text-generation", folder,
trust_remote_code=True)`, groundup not installed. The frozen reference's weights are in the folder's one
model.safetensors (`transformer.reference.*`): nothing else to fetch. groundup's own loaders register these classes
with the Auto classes (`groundup.models.surprisal`) and need no remote code. Folders are made by

    groundup surprisal-init --base runs/tiny/base --model runs/tiny/sft --output_dir runs/tiny/sft-surprisal-init
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import DynamicCache, GPT2Config, GPT2LMHeadModel, GPT2Model

from .configuration_groundup_surprisal import OWN_CONFIG_KEYS, SurprisalGPT2Config


def _reference_config(config: SurprisalGPT2Config) -> GPT2Config:
    return GPT2Config(**{k: v for k, v in config.to_dict().items()
                         if k not in (*OWN_CONFIG_KEYS, "model_type", "architectures", "auto_map")})


def copy_suggestions(input_ids: torch.Tensor, attention_mask: torch.Tensor | None,
                     max_match: int) -> tuple[torch.Tensor, torch.Tensor]:
    """For every position t: the token that followed the longest earlier match of the text ending at t (ties: the
    most recent), and that match's length in tokens (capped at `max_match`; 0 when the current token never occurred
    before). Padding (attention_mask 0) matches nothing.

    "Arel Thornby was born in the city of" in an answer, after a passage saying "Arel Thornby was born in the city of
    Velmora", suggests "Velmora" with a match of ~10 tokens; a passage about someone else matches only "was born in the
    city of". This is what an induction head computes; the tiny preset's models grow none.
    """
    length = input_ids.shape[1]
    valid = torch.ones_like(input_ids, dtype=torch.bool) if attention_mask is None else attention_mask.bool()
    same = (input_ids[:, :, None] == input_ids[:, None, :]) & valid[:, :, None] & valid[:, None, :]
    run = same & torch.ones(length, length, dtype=torch.bool, device=input_ids.device).tril(-1)  # earlier j < t
    matched = run.to(torch.long)
    for shift in range(1, max_match):  # extend each match backwards one token at a time
        step = torch.zeros_like(same)
        step[:, shift:, shift:] = same[:, :-shift, :-shift]
        run = run & step
        if not run.any():
            break
        matched += run
    positions = torch.arange(length, device=input_ids.device)
    score = torch.where(matched > 0, matched * length + positions, torch.full_like(matched, -1))
    best_score, best = score.max(-1)
    lengths = torch.where(best_score >= 0, best_score // length, torch.zeros_like(best_score))
    next_ids = input_ids.gather(1, (best + 1).clamp(max=length - 1))
    return next_ids, lengths


def copy_suggestions_from(input_ids: torch.Tensor, attention_mask: torch.Tensor | None, max_match: int,
                          first: int) -> tuple[torch.Tensor, torch.Tensor]:
    """`copy_suggestions(input_ids, attention_mask, max_match)` for positions `first`.. only (each still matched
    against the whole text before it): what generation with a KV cache needs for its new tokens, in
    O(new x length x max_match) instead of O(length² x max_match). Same integers as the full computation."""
    batch, length = input_ids.shape
    valid = torch.ones_like(input_ids, dtype=torch.bool) if attention_mask is None else attention_mask.bool()
    # Padding and positions before the text match nothing: -1 on the side of the new rows, -2 on the other.
    rows = torch.cat([input_ids.new_full((batch, max_match), -1), torch.where(valid, input_ids, -1)], dim=1)
    cols = torch.cat([input_ids.new_full((batch, max_match), -2), torch.where(valid, input_ids, -2)], dim=1)
    t = torch.arange(first, length, device=input_ids.device)
    j = torch.arange(length, device=input_ids.device)
    run = (j[None, :] < t[:, None]).expand(batch, -1, -1)  # earlier j < t
    matched = torch.zeros(run.shape, dtype=torch.long, device=input_ids.device)
    for shift in range(max_match):  # the match ending at (t, j), extended backwards one token at a time
        run = run & (rows[:, max_match + t - shift][:, :, None] == cols[:, max_match + j - shift][:, None, :])
        if not run.any():
            break
        matched += run
    score = torch.where(matched > 0, matched * length + j, torch.full_like(matched, -1))
    best_score, best = score.max(-1)
    lengths = torch.where(best_score >= 0, best_score // length, torch.zeros_like(best_score))
    next_ids = input_ids.gather(1, (best + 1).clamp(max=length - 1))
    return next_ids, lengths


class SurprisalGPT2Model(GPT2Model):
    """GPT-2's backbone with the surprisal feature added to its input embeddings. The feature lives in the backbone
    (not the LM-head model) because TRL's fused LM head calls the backbone directly during training."""

    config_class = SurprisalGPT2Config

    def __init__(self, config: SurprisalGPT2Config):
        super().__init__(config)
        self.reference = GPT2Model(_reference_config(config))
        self.reference.requires_grad_(False)
        self.surprisal_embedding = nn.Linear(config.surprisal_bins + 1, config.n_embd, bias=False)
        nn.init.zeros_(self.surprisal_embedding.weight)
        if config.copy_max_match:  # the in-context copy feature (`copy_suggestions`); off unless configured
            self.copy_projection = nn.Linear(config.n_embd, config.n_embd, bias=False)
            self.copy_gate = nn.Embedding(config.copy_max_match + 1, 1)
            self.copy_length_embedding = nn.Embedding(config.copy_max_match + 1, config.n_embd)
            for module in (self.copy_projection, self.copy_gate, self.copy_length_embedding):
                self._init_weights(module)
        if config.surprisal_window:  # the short-context surprisal (`window_surprisal`); off unless configured
            self.window_surprisal_embedding = nn.Linear(config.surprisal_bins + 1, config.n_embd, bias=False)
            nn.init.zeros_(self.window_surprisal_embedding.weight)

    def _init_weights(self, module):
        super()._init_weights(module)
        if module is getattr(self, "surprisal_embedding", None) or module is getattr(
                self, "window_surprisal_embedding", None):
            nn.init.zeros_(module.weight)  # the feature starts silent: the model begins as the one it was built from
        # The copy feature starts silent too (gates and length embedding zero); its projection starts as the
        # identity, so a gate that opens passes the suggested token's own embedding, which the tied LM head reads
        # back as that token.
        if module is getattr(self, "copy_projection", None):
            nn.init.eye_(module.weight)
        if module is getattr(self, "copy_gate", None) or module is getattr(self, "copy_length_embedding", None):
            nn.init.zeros_(module.weight)

    @torch.no_grad()
    def surprisal(self, input_ids, attention_mask=None, position_ids=None) -> torch.Tensor:
        """-log P_reference(token | prefix) per token (0 for the first token and for padding)."""
        if attention_mask is None:  # generate drops an all-ones mask; ours says so, or GPT-2 warns about padding
            attention_mask = torch.ones_like(input_ids)
        hidden = self.reference(input_ids=input_ids, attention_mask=attention_mask,
                                position_ids=position_ids).last_hidden_state
        logits = hidden @ self.reference.wte.weight.T
        logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)
        s = -logp.gather(-1, input_ids[:, 1:, None])[..., 0]
        s = torch.cat([torch.zeros_like(s[:, :1]), s], dim=1)
        if attention_mask is not None:
            s = s * attention_mask.to(s.dtype)
        return s

    @torch.no_grad()
    def window_surprisal(self, input_ids, attention_mask=None, first: int = 0) -> torch.Tensor:
        """-log P_reference(token | a document's start, then the `surprisal_window` tokens before it) per token (0 for
        padding): the reference's view of a token with the rest of the context cut away.

        Why: the full-context surprisal of a name depends on where it is asked. Pretraining on the tiny preset's
        world mixes in chat questions about some frequent people, so in a question's context the reference expects
        *their* last names, and on one world it finds two frequent people as surprising as two unseen ones. After a
        document start and the first name alone (`surprisal_window: 1`) the same reference separates frequent from
        unseen people on every world measured, because biographies, where it met the names, start that way. Each
        distinct context (a document start and the window) is one short sequence through the reference.
        `first`: compute positions `first`.. only (generation with a KV cache: the new tokens).
        """
        window = self.config.surprisal_window
        start = self.config.bos_token_id if self.config.bos_token_id is not None else 0
        batch, length = input_ids.shape
        valid = (torch.ones_like(input_ids, dtype=torch.bool) if attention_mask is None
                 else attention_mask.bool())
        # Context before the text, and padding, read as document starts too (an empty document is what pretraining
        # saw between two separators), so a left-padded row gives what the same row alone gives.
        text = torch.where(valid, input_ids, torch.full_like(input_ids, start))
        windows = torch.cat([input_ids.new_full((batch, window), start), text], dim=1).unfold(1, window, 1)
        windows = windows[:, first:length]
        contexts = torch.cat([input_ids.new_full((batch, length - first, 1), start), windows], dim=-1)
        contexts = contexts.reshape(-1, window + 1)
        # A batch repeats the same few hundred contexts (a window of one token: one per distinct previous token), so
        # the reference reads each once: about a tenth of the rows on the tiny preset's batches.
        unique, inverse = torch.unique(contexts, dim=0, return_inverse=True)
        hidden = self.reference(input_ids=unique).last_hidden_state[:, -1]
        logp = torch.log_softmax((hidden @ self.reference.wte.weight.T).float(), dim=-1)
        s = -logp[inverse, text[:, first:].reshape(-1)].reshape(batch, length - first)
        return s * valid[:, first:].to(s.dtype)

    def surprisal_features(self, s: torch.Tensor) -> torch.Tensor:
        # The bin centres are made here, not kept as a buffer: `from_pretrained` builds the model without running
        # __init__'s tensor code, and a non-persistent buffer came back as uninitialised memory (different garbage in
        # every process), so a trained model would read its surprisal through random bins.
        centres = torch.linspace(0.0, self.config.surprisal_max, self.config.surprisal_bins, device=s.device,
                                 dtype=s.dtype)
        bumps = torch.exp(-0.5 * (s[..., None] - centres) ** 2)
        return torch.cat([bumps, (s / self.config.surprisal_max)[..., None]], dim=-1)

    @torch.no_grad()
    def cached_surprisal(self, input_ids, attention_mask, position_ids, cache, past: int) -> torch.Tensor:
        """`surprisal(...)[:, past:]` with the reference's own KV cache, kept on the model's `cache` object: the
        reference reads only the new tokens, and the distribution it gave after the last token read before is kept
        for the first new one. A cache it did not fill (another length or batch) makes it read the whole text."""
        state = getattr(cache, "_groundup_reference", None)
        batch, length = input_ids.shape
        if state is not None and state["length"] == past and state["batch"] == batch and past > 0:
            reference_cache, start = state["cache"], past
        else:
            reference_cache, start = DynamicCache(config=self.reference.config), 0
        ids = input_ids[:, start:]
        hidden = self.reference(input_ids=ids, attention_mask=attention_mask, position_ids=position_ids[:, start:],
                                cache=reference_cache, use_cache=True).last_hidden_state
        logp = torch.log_softmax((hidden @ self.reference.wte.weight.T).float(), dim=-1)
        s = -logp[:, :-1].gather(-1, ids[:, 1:, None])[..., 0]
        head = (torch.zeros_like(s[:, :1]) if start == 0 else
                -state["last_logp"].gather(-1, ids[:, :1]))
        s = torch.cat([head, s], dim=1) * attention_mask[:, start:].to(s.dtype)
        cache._groundup_reference = {"cache": reference_cache, "last_logp": logp[:, -1], "length": length,
                                     "batch": batch}
        return s[:, past - start:]

    def _forward_with_cache(self, input_ids, attention_mask, position_ids, cache, **kwargs):
        """Generation with a KV cache: `input_ids` and `attention_mask` are the whole text so far (the features read
        it); the model, and the reference beside it, read only the positions the cache does not hold yet."""
        past = cache.get_seq_length()
        length = input_ids.shape[1]
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        if attention_mask.shape[1] != length or length <= past:
            raise ValueError("SurprisalGPT2Model with a cache: pass the whole text so far as input_ids (and its "
                             "attention_mask), not only the new tokens: the surprisal features read what came before")
        if position_ids is None or position_ids.shape[-1] != length:
            position_ids = (attention_mask.long().cumsum(-1) - 1).clamp_min(0)
        new_ids = input_ids[:, past:]
        features = self.surprisal_features(self.cached_surprisal(input_ids, attention_mask, position_ids, cache, past))
        inputs_embeds = self.wte(new_ids) + self.surprisal_embedding(features.to(self.surprisal_embedding.weight.dtype))
        if self.config.surprisal_window:
            window_features = self.surprisal_features(self.window_surprisal(input_ids, attention_mask, first=past))
            inputs_embeds = inputs_embeds + self.window_surprisal_embedding(
                window_features.to(self.window_surprisal_embedding.weight.dtype))
        if self.config.copy_max_match:
            next_ids, lengths = copy_suggestions_from(input_ids, attention_mask, self.config.copy_max_match, past)
            suggestion = self.wte(next_ids) * (lengths > 0).unsqueeze(-1).to(inputs_embeds.dtype)
            inputs_embeds = (inputs_embeds + self.copy_length_embedding(lengths)
                             + self.copy_gate(lengths) * self.copy_projection(suggestion))
        return super().forward(inputs_embeds=inputs_embeds, attention_mask=attention_mask,
                               position_ids=position_ids[:, past:], cache=cache, use_cache=True, **kwargs)

    def forward(self, input_ids=None, attention_mask=None, position_ids=None, inputs_embeds=None, cache=None,
                past_key_values=None, use_cache=None, **kwargs):
        cache = cache if cache is not None else past_key_values
        if cache is not None and inputs_embeds is None and use_cache is not False:
            return self._forward_with_cache(input_ids, attention_mask, position_ids, cache, **kwargs)
        if inputs_embeds is None:
            if position_ids is None and attention_mask is not None:
                position_ids = (attention_mask.long().cumsum(-1) - 1).clamp_min(0)  # left padding in generation
            features = self.surprisal_features(self.surprisal(input_ids, attention_mask, position_ids))
            inputs_embeds = self.wte(input_ids) + self.surprisal_embedding(
                features.to(self.surprisal_embedding.weight.dtype))
            if self.config.surprisal_window:
                window_features = self.surprisal_features(self.window_surprisal(input_ids, attention_mask))
                inputs_embeds = inputs_embeds + self.window_surprisal_embedding(
                    window_features.to(self.window_surprisal_embedding.weight.dtype))
            if self.config.copy_max_match:
                next_ids, lengths = copy_suggestions(input_ids, attention_mask, self.config.copy_max_match)
                suggestion = self.wte(next_ids) * (lengths > 0).unsqueeze(-1).to(inputs_embeds.dtype)
                inputs_embeds = (inputs_embeds + self.copy_length_embedding(lengths)
                                 + self.copy_gate(lengths) * self.copy_projection(suggestion))
        # Without a cache object (training, `use_cache=False`): the whole text every call, nothing cached.
        return super().forward(inputs_embeds=inputs_embeds, attention_mask=attention_mask, position_ids=position_ids,
                               cache=None, use_cache=False, **kwargs)


class SurprisalGPT2LMHeadModel(GPT2LMHeadModel):
    config_class = SurprisalGPT2Config

    def __init__(self, config: SurprisalGPT2Config):
        super().__init__(config)
        self.transformer = SurprisalGPT2Model(config)
        self.post_init()

    def prepare_inputs_for_generation(self, input_ids, attention_mask=None, cache=None, past_key_values=None,
                                      use_cache=None, logits_to_keep=None, **kwargs):
        """The whole text every step (the features read it); with a cache, the backbone runs the new tokens only."""
        inputs = {"input_ids": input_ids, "attention_mask": attention_mask}
        cache = cache if cache is not None else past_key_values
        if cache is not None and use_cache is not False:
            inputs.update(cache=cache, use_cache=True)
            if logits_to_keep is not None:
                inputs["logits_to_keep"] = logits_to_keep
        return inputs


# `save_pretrained` writes `auto_map: {AutoModelForCausalLM: modeling_groundup_surprisal.SurprisalGPT2LMHeadModel}`
# and copies this file (and the config's, imported above) into the folder.
SurprisalGPT2LMHeadModel.register_for_auto_class("AutoModelForCausalLM")
