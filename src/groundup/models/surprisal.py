"""groundup's side of the surprisal-reading GPT-2 (`groundup_surprisal_gpt2`, an honesty arm): the model itself is
`modeling_groundup_surprisal.py` and `configuration_groundup_surprisal.py` (torch and transformers only, copied into
every folder so it loads with `trust_remote_code=True` without groundup; read their docstring for what it computes and
why). Importing this module registers both classes with the Auto classes, so groundup loads such folders without
remote code; `assemble` builds one from a fine-tuned model and its base (the `surprisal-init` stage,
`groundup.train.surprisal_init`).
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForCausalLM, GPT2LMHeadModel

from groundup.models.configuration_groundup_surprisal import (  # noqa: F401  (re-exported)
    MODEL_TYPE,
    OWN_CONFIG_KEYS,
    SurprisalGPT2Config,
)
from groundup.models.modeling_groundup_surprisal import (  # noqa: F401  (re-exported)
    SurprisalGPT2LMHeadModel,
    SurprisalGPT2Model,
    copy_suggestions,
)

# groundup loads its own folders with its own classes, without remote code (transformers prefers a registered local
# class to a folder's `auto_map` even under trust_remote_code=True).
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

