"""Where a model came from, in a form that travels: Hub ids, never the local paths of the machine that trained it.

A fine-tuned folder names its base twice: the card's `base_model` metadata and, for a peft adapter,
`base_model_name_or_path` in `adapter_config.json` (what `AutoPeftModelForCausalLM` and transformers' peft
integration load). Training from `runs/tiny/base` would write that local path into both, and on the Hub it points
nowhere. The base's Hub id is known when the stage started from a Hub id, or when the base folder's `recipe.yaml`
records the `hub_model_id` it was (or is to be) pushed under; `base_hub_id` finds it. When it is not known, the
adapter keeps the local path (so the folder still loads where it was made) and the card says how to set the id.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

ADAPTER_CONFIG = "adapter_config.json"
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[\w.-]+)?")


def is_hub_id(ref: str | None) -> bool:
    """`org/name` (or a legacy bare `name`) that is not a local path."""
    if not ref or ref.startswith((".", "/", "~")) or Path(ref).exists():
        return False
    return bool(_HUB_ID.fullmatch(ref))


def recorded_hub_id(folder: str | Path) -> str | None:
    """The `hub_model_id` a groundup folder's `recipe.yaml` records, when it is a Hub id."""
    path = Path(folder) / "recipe.yaml"
    if not path.is_file():
        return None
    try:
        recipe = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError:
        return None
    value = recipe.get("hub_model_id") if isinstance(recipe, dict) else None
    return value if isinstance(value, str) and "/" in value and is_hub_id(value) else None


def base_hub_id(base: str | None) -> str | None:
    """The Hub id of a base model given as a Hub id or a local folder (its recorded `hub_model_id`), else None."""
    if not base:
        return None
    if Path(base).is_dir():
        return recorded_hub_id(base)
    return base if is_hub_id(base) else None


def set_adapter_base(adapter_dir: str | Path, base_id: str) -> None:
    """Point a peft adapter at its base's Hub id (`base_model_name_or_path` in adapter_config.json)."""
    path = Path(adapter_dir) / ADAPTER_CONFIG
    config = json.loads(path.read_text(encoding="utf-8"))
    config["base_model_name_or_path"] = base_id
    path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def local_adapter_bases(folder: str | Path) -> dict[str, str]:
    """adapter_config.json files under `folder` (itself, `adapter/`) whose base is a local path: file -> path."""
    found = {}
    for path in (Path(folder) / ADAPTER_CONFIG, Path(folder) / "adapter" / ADAPTER_CONFIG):
        if path.is_file():
            base = json.loads(path.read_text(encoding="utf-8")).get("base_model_name_or_path")
            if base and not is_hub_id(base):
                found[str(path.relative_to(folder))] = base
    return found
