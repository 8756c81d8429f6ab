"""A GPT-2 that also reads how surprised its pretrained base is by every token: an honesty arm that refuses unseen
people it was never trained on (tiny preset: unseen refusal 0.99 / 0.97 on two seeds, against 0.39 / 0.40 for IDK-SFT).

Why (measured on the tiny preset, README "Where the honesty results stand"): the base model knows whom it has seen —
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

Costs and limits, said plainly: two forward passes per token, no KV cache (generation recomputes the prefix), any
surprising token can read as unfamiliar (without the world's `rephrased` questions in its IDK-SFT data it refused
nearly every question phrased in a way it was never trained on; with them, see the README), and a model type of its
own: the folder loads with `AutoModelForCausalLM` once `groundup.surprisal` is imported (groundup's
own loaders do this); without groundup it does not load. No well-kept library provides such an input feature, hence
this module.

    groundup surprisal-init --base runs/tiny/base --model runs/tiny/sft --output_dir runs/tiny/sft-surprisal-init
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn
from transformers import AutoConfig, AutoModelForCausalLM, GPT2Config, GPT2LMHeadModel, GPT2Model

MODEL_TYPE = "groundup_surprisal_gpt2"


class SurprisalGPT2Config(GPT2Config):
    model_type = MODEL_TYPE

    def __init__(self, surprisal_bins: int = 10, surprisal_max: float = 18.0, **kwargs):
        super().__init__(**kwargs)
        self.surprisal_bins = surprisal_bins
        self.surprisal_max = surprisal_max


def _reference_config(config: SurprisalGPT2Config) -> GPT2Config:
    return GPT2Config(**{k: v for k, v in config.to_dict().items()
                         if k not in ("surprisal_bins", "surprisal_max", "model_type", "architectures", "auto_map")})


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

    def _init_weights(self, module):
        super()._init_weights(module)
        if module is getattr(self, "surprisal_embedding", None):
            nn.init.zeros_(module.weight)  # the feature starts silent: the model begins as the one it was built from

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


def assemble(base_dir: str | Path, model_dir: str | Path, bins: int = 10, maximum: float = 18.0):
    """A `SurprisalGPT2LMHeadModel` with the fine-tuned model's weights and the base as its frozen reference."""
    from .errors import GroundupError

    model = GPT2LMHeadModel.from_pretrained(model_dir, use_safetensors=True, dtype=torch.float32)
    base = GPT2LMHeadModel.from_pretrained(base_dir, use_safetensors=True, dtype=torch.float32)
    if base.config.vocab_size != model.config.vocab_size or base.config.n_embd != model.config.n_embd:
        raise GroundupError(f"surprisal-init: base {base_dir} and model {model_dir} differ in shape (vocab "
                            f"{base.config.vocab_size} vs {model.config.vocab_size}, width {base.config.n_embd} vs "
                            f"{model.config.n_embd}): the base must be the one the model was fine-tuned from")
    config = SurprisalGPT2Config(surprisal_bins=bins, surprisal_max=maximum, **{
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


def parse_args(argv: list[str] | None = None) -> tuple:
    from .configs import parse_config

    return parse_config([SurprisalInitArguments], argv)


def main(argv: list[str] | None = None) -> Path:
    from transformers import AutoTokenizer

    from .configs import save_config
    from .outputs import atomic_output_dir, check_output_dir

    (args,) = parse_args(argv)
    check_output_dir(args.output_dir, args.overwrite)
    model = assemble(args.base, args.model, args.surprisal_bins, args.surprisal_max)
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    with atomic_output_dir(args.output_dir, args.overwrite) as out:
        model.save_pretrained(out)
        tokenizer.save_pretrained(out)
        save_config(out, args)
    print(f"surprisal-init: {args.model} + frozen reference {args.base} -> {args.output_dir}")
    return Path(args.output_dir)
