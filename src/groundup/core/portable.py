"""Folders that load in the tools people already use: transformers 4.x as well as 5.x, and llama.cpp's converter.

transformers 5 saves a fast tokenizer as `tokenizer_class: TokenizersBackend` with its extra special tokens in a list
`extra_special_tokens`, and leaves loader flags (`is_local`, `local_files_only`) in `tokenizer_config.json`.
transformers 4.57 (what llama.cpp's `convert_hf_to_gguf.py` pins) fails on both: "Tokenizer class TokenizersBackend
does not exist", then `'list' object has no attribute 'keys'` (4.x reads `extra_special_tokens` as a dict of named
tokens). `make_portable` rewrites the saved config in the form both read the same way:

- `tokenizer_class: PreTrainedTokenizerFast`: a real class in 4.x and an alias of `TokenizersBackend` in 5.x, so both
  build the tokenizer from `tokenizer.json` as saved (no GPT-2 defaults such as `unk_token` added on load);
- the extra special tokens as `additional_special_tokens` (5.x converts the old key back on load);
- `model_max_length` = the model's context (`n_positions`) when the folder holds a model, instead of 5.x's 1e30
  placeholder, so pipelines truncate where the position table ends;
- no `is_local` / `local_files_only`: they describe the machine that saved the folder, not the tokenizer.

Call it on every folder a stage writes, after `save_pretrained`: stages re-save the tokenizer they loaded, and
transformers 5 writes its own form again each time. Only the JSON is touched: tokens, ids and the chat template stay.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

TOKENIZER_CONFIG = "tokenizer_config.json"
PORTABLE_TOKENIZER_CLASS = "PreTrainedTokenizerFast"
# Classes that only transformers 5 knows; a model-specific class (GPT2Tokenizer, Qwen2Tokenizer) loads in both.
_V5_ONLY_CLASSES = {"TokenizersBackend", "PythonBackend"}
_MACHINE_KEYS = ("is_local", "local_files_only")
_CONTEXT_KEYS = ("n_positions", "max_position_embeddings", "n_ctx")


def model_context(folder: str | Path) -> int | None:
    """The context length in a folder's config.json (`n_positions` for GPT-2), or None without a model config."""
    path = Path(folder) / "config.json"
    if not path.is_file():
        return None
    config = json.loads(path.read_text())
    config = config.get("text_config") or config
    for key in _CONTEXT_KEYS:
        if isinstance(config.get(key), int) and config[key] > 0:
            return config[key]
    return None


def portable_tokenizer_config(config: dict[str, Any], model_max_length: int | None = None) -> dict[str, Any]:
    """`tokenizer_config.json` contents in the form transformers 4.x and 5.x both load (see the module docstring)."""
    config = dict(config)
    if config.get("tokenizer_class") in _V5_ONLY_CLASSES:
        config["tokenizer_class"] = PORTABLE_TOKENIZER_CLASS
    extra = config.get("extra_special_tokens")
    if isinstance(extra, list):  # 4.x wants a dict here; the list is what `additional_special_tokens` always held
        config.pop("extra_special_tokens")
        config["additional_special_tokens"] = list(dict.fromkeys([*config.get("additional_special_tokens", []),
                                                                  *extra]))
    for key in _MACHINE_KEYS:
        config.pop(key, None)
    if model_max_length is not None:
        config["model_max_length"] = int(model_max_length)
    return dict(sorted(config.items()))


def make_portable(folder: str | Path, model_max_length: int | None = None) -> bool:
    """Rewrite `folder/tokenizer_config.json` in the portable form; `model_max_length` defaults to the context in the
    folder's config.json. Returns False when the folder has no tokenizer config (nothing to do)."""
    path = Path(folder) / TOKENIZER_CONFIG
    if not path.is_file():
        return False
    if model_max_length is None:
        model_max_length = model_context(folder)
    config = portable_tokenizer_config(json.loads(path.read_text(encoding="utf-8")), model_max_length)
    path.write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return True
