"""The one way groundup loads a model folder (or a Hub id): `load_tokenizer`, `load_model`, `load_model_and_tokenizer`,
and `context_length`. Every stage that reads a model goes through here (fine-tuning, generation and eval, the probe,
chat, inspect), so a missing or unfinished folder always gives the same one-line `GroundupError`, groundup's own model
types are always registered with the Auto classes, and remote code stays off unless the caller asks for it.

Each caller keeps its own settings: `dtype` (None: transformers' default), `attn_implementation`, a quantization
config, `use_safetensors`, the device, and whether the model is put in eval mode.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from groundup.core.errors import GroundupError

HINTS = {"model": "train it first, e.g. `groundup pretrain`", "tokenizer": "train one with `groundup tokenizer`"}


def _register_own_model_types() -> None:
    # AutoConfig / AutoTokenizer read the folder's config too: without the registration transformers falls back to the
    # generic config class and warns that a `groundup_surprisal_gpt2` checkpoint instantiates "a model of type ``".
    from groundup.models import surprisal  # noqa: F401  (registers groundup's surprisal-reading model type)


def _first_line(err: Exception) -> str:
    text = str(err)
    return text.splitlines()[0] if text else type(err).__name__


def check_folder(path: str, kind: str = "model") -> None:
    """One clear line for a local path that is not a loadable folder (a Hub id, `org/name`, passes through)."""
    p = Path(path)
    if p.is_dir():
        if kind == "model" and not (p / "config.json").is_file() and not (p / "adapter_config.json").is_file():
            raise GroundupError(f"model folder {path} has no config.json (is it a finished model folder?)")
        if kind == "model":
            check_weights(p)
        return
    if p.exists():
        raise GroundupError(f"{kind} folder {path} is a file, not a folder")
    if path.startswith((".", "/", "~", "runs/")) or path.count("/") > 1:
        raise GroundupError(f"{kind} folder {path} not found ({HINTS.get(kind, 'check the path')})")


def check_weights(folder: str | Path) -> None:
    """One line for a `*.safetensors` file whose header does not parse or does not cover the file (cut short by a full
    disk or a kill, or overwritten): reading a header costs nothing, and safetensors' own error is not an OSError."""
    from safetensors import safe_open

    for weights in sorted(Path(folder).glob("*.safetensors")):
        try:
            with safe_open(str(weights), framework="pt"):
                pass
        except Exception as err:  # noqa: BLE001 - SafetensorError, or an OSError for an unreadable file
            raise GroundupError(f"model folder {folder}: {weights.name} is damaged ({_first_line(err)}); it was cut "
                                "short or overwritten: train or copy the model again") from None


def resolve_device(device: str | None) -> str | None:
    """`auto`: a CUDA GPU when there is one, else the CPU; anything else as given."""
    if device == "auto":
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def resolve_dtype(dtype: str, device: str | None):
    """A dtype name as a torch dtype; `auto`: float32 on the CPU (no fast bf16 there), the checkpoint's own on a GPU."""
    import torch

    if dtype == "auto":
        return torch.float32 if device == "cpu" else "auto"
    torch_dtype = getattr(torch, dtype, None)
    if not isinstance(torch_dtype, torch.dtype):
        raise GroundupError(f"dtype {dtype!r} is not a torch dtype (try auto, float32, bfloat16, float16)")
    return torch_dtype


def load_tokenizer(path: str, *, revision: str | None = None, trust_remote_code: bool = False, kind: str = "model"):
    """`AutoTokenizer` of a model folder (`kind="model"`), a tokenizer folder (`kind="tokenizer"`) or a Hub id."""
    from transformers import AutoTokenizer

    _register_own_model_types()
    check_folder(path, kind)
    kwargs: dict[str, Any] = {"trust_remote_code": trust_remote_code}
    if revision is not None:
        kwargs["revision"] = revision
    try:
        return AutoTokenizer.from_pretrained(path, **kwargs)
    except (OSError, ValueError) as err:
        what = "could not load its tokenizer" if kind == "model" else "could not load it"
        raise GroundupError(f"{kind} {path}: {what} ({_first_line(err)})") from None


def load_model(path: str, *, dtype: Any = None, device: str | None = None, revision: str | None = None,
               trust_remote_code: bool = False, use_safetensors: bool | None = None,
               attn_implementation: str | None = None, quantization_config: Any = None, eval_mode: bool = True):
    """`AutoModelForCausalLM` from a folder or Hub id. Options left at None are not passed (transformers' defaults);
    `device`: move the model there; `eval_mode`: call `.eval()` (dropout off) rather than leave the mode as loaded."""
    from transformers import AutoModelForCausalLM

    _register_own_model_types()
    check_folder(path, "model")
    kwargs: dict[str, Any] = {"trust_remote_code": trust_remote_code}
    for key, value in (("revision", revision), ("use_safetensors", use_safetensors), ("dtype", dtype),
                       ("attn_implementation", attn_implementation), ("quantization_config", quantization_config)):
        if value is not None:
            kwargs[key] = value
    try:
        model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
    except (OSError, ValueError) as err:
        raise GroundupError(f"model {path}: could not load it ({_first_line(err)})") from None
    if device is not None:
        model.to(device)
    if eval_mode:
        model.eval()
    return model


def load_model_and_tokenizer(path: str, *, revision: str | None = None, trust_remote_code: bool = False,
                             **model_kwargs) -> tuple[Any, Any]:
    """(model, tokenizer) of one folder or Hub id; `model_kwargs` go to `load_model`."""
    tokenizer = load_tokenizer(path, revision=revision, trust_remote_code=trust_remote_code)
    model = load_model(path, revision=revision, trust_remote_code=trust_remote_code, **model_kwargs)
    return model, tokenizer


def context_length(model) -> int | None:
    """The most tokens the model reads at once (its position table), or None when its config does not say."""
    config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    for key in ("n_positions", "max_position_embeddings", "n_ctx", "seq_length"):
        value = getattr(config, key, None)
        if isinstance(value, int) and value > 0:
            return value
    return None
