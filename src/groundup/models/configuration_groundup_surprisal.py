"""The config of groundup's surprisal-reading GPT-2 (`groundup_surprisal_gpt2`; the model is in
`modeling_groundup_surprisal.py`).

This file imports only transformers: `save_pretrained` copies it into every folder of this model type (with `auto_map`
in config.json), so `AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True)` loads the folder where
groundup is not installed. groundup itself registers the classes with the Auto classes (`groundup.models.surprisal`)
and loads without remote code.
"""

from __future__ import annotations

from transformers import GPT2Config

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


# `save_pretrained` writes `auto_map: {AutoConfig: configuration_groundup_surprisal.SurprisalGPT2Config}` and copies
# this file into the folder.
SurprisalGPT2Config.register_for_auto_class("AutoConfig")
