"""A GPT-2 that also reads how surprised its pretrained base is by every token (and, optionally, what followed the
current text the last time it appeared in the context): an honesty arm that refuses unseen people it was never
trained on (tiny preset, closed-book unseen refusal 0.97 / 0.96 on two seeds, against 0.39 / 0.43 for IDK-SFT) and,
with the copy feature, answers them from a passage (1.00 on both seeds, against 0.025).

Why (measured on the tiny preset, README "How the honest arm works"): the base model knows whom it has seen —
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
  it, so that whom the base has met does not depend on the question a name is asked in (tiny preset, world seed 2: DPO
  false refusal 0.040 -> 0.000, unseen refusal 0.900 -> 0.960);
- optional, `copy_max_match` > 0: an in-context copy feature (`copy_suggestions`). Each token also reads the token that
  followed the longest earlier match of the text ending there, and that match's length: through `copy_projection`
  (the identity at the start) scaled by a per-length `copy_gate`, plus a per-length `copy_length_embedding`, both zero
  at the start. It is what an induction head computes, handed over because the tiny preset's models grow none (copy
  check 0.00; README, working memory) and so cannot answer from a passage whatever they are fine-tuned on. With it, and
  open-book rows about made-up people that only copying answers (the world's `open_book_synthetic` split), the arm
  learns to answer from a passage and to prefer it to its weights.

Costs and limits, said plainly: two forward passes per token, no KV cache (generation recomputes the prefix), any
surprising token can read as unfamiliar (without the world's `rephrased` questions in its IDK-SFT data it refused nearly
every question phrased in a way it was never trained on; with them, docs/experiments.md, the surprisal arm), and a model
type of its own: the folder loads with `AutoModelForCausalLM` once `groundup.models.surprisal` is imported (groundup's own
loaders do this); without groundup it does not load. No well-kept library provides such an input feature, hence this
module.

    groundup surprisal-init --base runs/tiny/base --model runs/tiny/sft --output_dir runs/tiny/sft-surprisal-init
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn
from transformers import AutoConfig, AutoModelForCausalLM, GPT2Config, GPT2LMHeadModel, GPT2Model

MODEL_TYPE = "groundup_surprisal_gpt2"


# The keys SurprisalGPT2Config adds to GPT-2's: the frozen reference is a plain GPT-2 built without them.
OWN_CONFIG_KEYS = ("surprisal_bins", "surprisal_max", "copy_max_match", "surprisal_window")


class SurprisalGPT2Config(GPT2Config):
    model_type = MODEL_TYPE

    def __init__(self, surprisal_bins: int = 10, surprisal_max: float = 18.0, copy_max_match: int = 0,
                 surprisal_window: int = 0, **kwargs):
        super().__init__(**kwargs)
        self.surprisal_bins = surprisal_bins
        self.surprisal_max = surprisal_max
        self.copy_max_match = copy_max_match
        self.surprisal_window = surprisal_window


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
    city of". This is what an induction head computes; the tiny preset's models grow none (README, working memory).
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
    def window_surprisal(self, input_ids, attention_mask=None) -> torch.Tensor:
        """-log P_reference(token | a document's start, then the `surprisal_window` tokens before it) per token (0 for
        padding): the reference's view of a token with the rest of the context cut away.

        Why: the full-context surprisal of a name depends on where it is asked. Pretraining on the tiny preset's
        world mixes in chat questions about some frequent people, so in a question's context the reference expects
        *their* last names, and on one world (seed 2) it finds two frequent people (both called Loria) as surprising
        as two unseen ones (last name 6.3 and 5.0 nats against 5.3 and 6.4). After a document start and the first
        name alone (`surprisal_window: 1`) the same reference separates frequent from unseen people in every pool of
        all three worlds measured (seed 2: at most 3.3 nats for frequent people, at least 4.6 for unseen ones), because
        biographies, where it met the names, start that way. Each distinct context (a document start and the window)
        is one short sequence through the reference.
        """
        window = self.config.surprisal_window
        start = self.config.bos_token_id if self.config.bos_token_id is not None else 0
        batch, length = input_ids.shape
        valid = (torch.ones_like(input_ids, dtype=torch.bool) if attention_mask is None
                 else attention_mask.bool())
        # Context before the text, and padding, read as document starts too (an empty document is what pretraining
        # saw between two separators), so a left-padded row gives what the same row alone gives.
        text = torch.where(valid, input_ids, torch.full_like(input_ids, start))
        windows = torch.cat([input_ids.new_full((batch, window), start), text], dim=1).unfold(1, window, 1)[:, :length]
        contexts = torch.cat([input_ids.new_full((batch, length, 1), start), windows], dim=-1).reshape(-1, window + 1)
        # A batch repeats the same few hundred contexts (a window of one token: one per distinct previous token), so
        # the reference reads each once: about a tenth of the rows on the tiny preset's batches.
        unique, inverse = torch.unique(contexts, dim=0, return_inverse=True)
        hidden = self.reference(input_ids=unique).last_hidden_state[:, -1]
        logp = torch.log_softmax((hidden @ self.reference.wte.weight.T).float(), dim=-1)
        s = -logp[inverse, text.reshape(-1)].reshape(batch, length)
        return s * valid.to(s.dtype)

    def surprisal_features(self, s: torch.Tensor) -> torch.Tensor:
        # The bin centres are made here, not kept as a buffer: `from_pretrained` builds the model without running
        # __init__'s tensor code, and a non-persistent buffer came back as uninitialised memory (different garbage in
        # every process: the tiny preset's surprisal arm was trained and evaluated on such centres until this fix).
        centres = torch.linspace(0.0, self.config.surprisal_max, self.config.surprisal_bins, device=s.device,
                                 dtype=s.dtype)
        bumps = torch.exp(-0.5 * (s[..., None] - centres) ** 2)
        return torch.cat([bumps, (s / self.config.surprisal_max)[..., None]], dim=-1)

    def forward(self, input_ids=None, attention_mask=None, position_ids=None, inputs_embeds=None, cache=None,
                past_key_values=None, use_cache=None, **kwargs):
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
        # The whole prefix every call: a cached step would lack the reference's view of earlier tokens. (`cache` is
        # transformers 5's name; `past_key_values` is taken too, from older callers, and dropped alike.)
        return super().forward(inputs_embeds=inputs_embeds, attention_mask=attention_mask, position_ids=position_ids,
                               cache=None, use_cache=False, **kwargs)


class SurprisalGPT2LMHeadModel(GPT2LMHeadModel):
    config_class = SurprisalGPT2Config

    def __init__(self, config: SurprisalGPT2Config):
        super().__init__(config)
        self.transformer = SurprisalGPT2Model(config)
        self.post_init()

    def prepare_inputs_for_generation(self, input_ids, attention_mask=None, **kwargs):
        return {"input_ids": input_ids, "attention_mask": attention_mask}


AutoConfig.register(MODEL_TYPE, SurprisalGPT2Config, exist_ok=True)
AutoModelForCausalLM.register(SurprisalGPT2Config, SurprisalGPT2LMHeadModel, exist_ok=True)


def assemble(base_dir: str | Path, model_dir: str | Path, bins: int = 10, maximum: float = 18.0,
             copy_max_match: int = 0, surprisal_window: int = 0):
    """A `SurprisalGPT2LMHeadModel` with the fine-tuned model's weights and the base as its frozen reference."""
    from groundup.core.errors import GroundupError

    model = GPT2LMHeadModel.from_pretrained(model_dir, use_safetensors=True, dtype=torch.float32)
    base = GPT2LMHeadModel.from_pretrained(base_dir, use_safetensors=True, dtype=torch.float32)
    if base.config.vocab_size != model.config.vocab_size or base.config.n_embd != model.config.n_embd:
        raise GroundupError(f"surprisal-init: base {base_dir} and model {model_dir} differ in shape (vocab "
                            f"{base.config.vocab_size} vs {model.config.vocab_size}, width {base.config.n_embd} vs "
                            f"{model.config.n_embd}): the base must be the one the model was fine-tuned from")
    config = SurprisalGPT2Config(surprisal_bins=bins, surprisal_max=maximum, copy_max_match=copy_max_match,
                                 surprisal_window=surprisal_window, **{
        k: v for k, v in model.config.to_dict().items() if k not in ("model_type", "architectures", "transformers_version")})
    combined = SurprisalGPT2LMHeadModel(config)
    missing = combined.load_state_dict(model.state_dict(), strict=False)
    assert not missing.unexpected_keys, missing.unexpected_keys
    combined.transformer.reference.load_state_dict(base.transformer.state_dict())
    combined.generation_config = model.generation_config
    return combined


@dataclass
class SurprisalInitArguments:
    """`groundup surprisal-init`: assemble a fine-tuned model and its base into a surprisal-reading model folder."""

    base: str = field(default="runs/tiny/base", metadata={"help": "The pretrained base (the frozen reference)."})
    model: str = field(default="runs/tiny/sft", metadata={"help": "The fine-tuned model to start from."})
    output_dir: str = field(default="runs/tiny/sft-surprisal-init", metadata={"help": "Folder to write."})
    overwrite: bool = field(default=False, metadata={"help": "Replace a non-empty output folder."})
    surprisal_bins: int = field(default=10, metadata={"help": "Soft bins of the surprisal."})
    surprisal_max: float = field(default=18.0, metadata={"help": "Centre of the last bin, in nats."})
    copy_max_match: int = field(default=0, metadata={
        "help": "In-context copy feature: each token also reads the token that followed the longest earlier match "
                "of the text ending there (up to this many tokens) and the match's length. 0: off."})
    surprisal_window: int = field(default=0, metadata={
        "help": "Short-context surprisal: each token also reads the reference's surprisal of it after a document "
                "start and only this many tokens before it (1: a last name after its first name, as biographies "
                "begin), beside the full-context surprisal. 0: off."})

    def __post_init__(self):
        for key in ("copy_max_match", "surprisal_window"):  # parse_config turns this into one line naming the key
            if getattr(self, key) < 0:
                raise ValueError(f"{key} must be 0 (off) or more, got {getattr(self, key)}")


def parse_args(argv: list[str] | None = None) -> tuple:
    from groundup.core.configs import parse_config

    return parse_config([SurprisalInitArguments], argv)


def main(argv: list[str] | None = None) -> Path:
    from transformers import AutoTokenizer

    from groundup.core.configs import save_config
    from groundup.core.outputs import atomic_output_dir, check_output_dir

    (args,) = parse_args(argv)
    check_output_dir(args.output_dir, args.overwrite)
    model = assemble(args.base, args.model, args.surprisal_bins, args.surprisal_max, args.copy_max_match,
                     args.surprisal_window)
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    with atomic_output_dir(args.output_dir, args.overwrite) as out:
        model.save_pretrained(out)
        tokenizer.save_pretrained(out)
        save_config(out, args)
    print(f"surprisal-init: {args.model} + frozen reference {args.base} -> {args.output_dir}")
    return Path(args.output_dir)
