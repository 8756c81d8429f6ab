"""YAML recipes + CLI overrides, parsed into dataclasses by TRL's `TrlParser`.

`TrlParser` already does what a recipe needs: `--config FILE` sets the defaults, CLI flags override them, and an
unknown YAML key or flag is an error. We only add readable error messages and a way to save the resolved config next
to a stage's output (`recipe.yaml`), in the same flat format, so `--config DIR/recipe.yaml` re-runs the stage.
"""

from __future__ import annotations

import dataclasses
import enum
import re
from pathlib import Path
from typing import Any, Sequence

import yaml

from groundup.core.errors import GroundupError

RESOLVED_CONFIG_NAME = "recipe.yaml"


def parse_config(dataclass_types: Sequence[type], argv: Sequence[str] | None = None) -> tuple:
    """Parse `--config FILE` plus CLI flags into one instance per dataclass type."""
    from trl import TrlParser  # heavy import: keep `groundup --help` fast

    argv = list(argv) if argv is not None else None
    if argv is not None and "--config" in argv:
        i = argv.index("--config")
        if i + 1 >= len(argv):
            raise GroundupError("--config needs a YAML file path")
        path = Path(argv[i + 1])
        if not path.is_file():
            raise GroundupError(f"config file not found: {path}")
        from groundup.core.jsonl import decode_line

        with open(path, "rb") as f:
            for lineno, raw in enumerate(f, 1):
                decode_line(raw, path, lineno)  # not UTF-8: one line naming the line, not a UnicodeDecodeError
        try:
            yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError as err:
            raise GroundupError(f"config file {path} is not valid YAML: {err}") from None
    parser = TrlParser(list(dataclass_types))
    try:
        parsed = tuple(parser.parse_args_and_config(args=argv))
    except ValueError as err:
        raise GroundupError(_explain(str(err))) from None
    except TypeError as err:  # a `datasets:` entry TRL's DatasetConfig does not take (no `path`, an unknown key)
        if "DatasetConfig" not in str(err):
            raise
        raise GroundupError(f"datasets: every entry needs a `path` and only TRL's keys ({err})") from None
    for config in parsed:
        if isinstance(getattr(config, "datasets", None), list):
            config.datasets = [_dataset_entry(entry) for entry in config.datasets]
    return parsed


def _dataset_entry(entry: Any) -> Any:
    """A `--datasets` value on the command line is one entry: a path, or a JSON/YAML mapping of TRL's keys
    (`'{"path": "runs/tiny/data", "split": "sft"}'`, as `groundup speedrun --dry-run` prints them)."""
    path = getattr(entry, "path", None)
    if not isinstance(path, str) or not path.lstrip().startswith("{"):
        return entry
    try:
        mapping = yaml.safe_load(path)
        if not isinstance(mapping, dict):
            raise ValueError("not a mapping")
        return type(entry)(**mapping)
    except (yaml.YAMLError, ValueError, TypeError) as err:
        raise GroundupError(f"--datasets {path}: not one dataset entry ({str(err).splitlines()[0]})") from None


def require(stage: str, values: dict[str, Any]) -> None:
    """Stop with one line naming every unset key a stage cannot run without. No code default points into a run
    folder: the paths come from the command line or the preset's pipeline.yaml."""
    missing = [key for key, value in values.items() if value is None or value == "" or value == []]
    if missing:
        raise GroundupError(f"{stage}: {', '.join(missing)} not set (pass --{missing[0].split()[0]} ...; "
                            "`groundup speedrun --dry-run` prints each step's command with its paths)")


def _explain(message: str) -> str:
    """Turn TrlParser / HfArgumentParser errors into one line that names the bad key."""
    match = re.search(r"Unknown arguments from config file: \[(.*?)\]", message)
    if match:
        keys = re.findall(r"'--([^']+)'", match.group(1))
        return f"unknown config key(s): {', '.join(keys)}"
    match = re.search(r"Some specified arguments are not used by the HfArgumentParser: \[(.*?)\]", message)
    if match:
        return f"unknown command-line argument(s): {match.group(1)}"
    return message.splitlines()[0] if message else "invalid configuration"


def config_dict(*configs: Any) -> dict[str, Any]:
    """The fields of several config dataclasses as one flat, YAML-safe dict (the format `--config` reads)."""
    merged: dict[str, Any] = {}
    for config in configs:
        if hasattr(config, "to_dict"):  # transformers TrainingArguments (SFTConfig, DPOConfig) hide tokens there
            values = config.to_dict()
        else:
            values = {f.name: getattr(config, f.name) for f in dataclasses.fields(config)}
        for key, value in values.items():
            merged[key] = _plain(value)
    return merged


def _plain(value: Any) -> Any:
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


def save_config(out_dir: str | Path, *configs: Any) -> Path:
    """Write the resolved config of a stage into its output folder."""
    path = Path(out_dir) / RESOLVED_CONFIG_NAME
    path.write_text(yaml.safe_dump(config_dict(*configs), sort_keys=False))
    return path
