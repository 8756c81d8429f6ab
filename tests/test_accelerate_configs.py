"""Every YAML in accelerate_configs/ goes through accelerate's own launch path: the config file loader (unknown keys
are errors), `accelerate launch`'s argument checks, the environment it hands to the worker processes, and the
DeepSpeed / FSDP plugin those workers build from that environment. Nothing is launched (no GPU needed); the 2-process
CPU run is in test_pretrain_run.py."""

from __future__ import annotations

import os
import re
from pathlib import Path
from unittest import mock

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
CONFIGS = sorted((REPO / "accelerate_configs").glob("*.yaml"))


def launch_environment(path: Path):
    """(config, parsed launch args, the environment `accelerate launch` would give every worker)."""
    from accelerate.commands.config.config_args import load_config_from_file
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser
    from accelerate.utils.launch import (prepare_deepspeed_cmd_env, prepare_multi_gpu_env,
                                         prepare_simple_launcher_cmd_env)

    config = load_config_from_file(str(path))
    args = launch_command_parser().parse_args(["--config_file", str(path), "recipes/pretrain.py"])
    args, defaults, mixed_precision_from_config = _validate_launch_command(args)
    if args.use_deepspeed:  # as accelerate's launch_command does before its DeepSpeed launcher
        fields = list(defaults.deepspeed_config) + (["mixed_precision"] if mixed_precision_from_config else [])
        args.deepspeed_fields_from_accelerate_config = ",".join(fields)
        _, env = prepare_deepspeed_cmd_env(args)
    elif args.multi_gpu or args.use_fsdp:
        env = prepare_multi_gpu_env(args)
    else:
        _, env = prepare_simple_launcher_cmd_env(args)
    return config, args, env


def test_the_folder_holds_the_documented_configs():
    assert {p.stem for p in CONFIGS} >= {"cpu_ddp", "single_gpu", "multi_gpu", "multi_node", "fsdp",
                                         "deepspeed_zero2", "deepspeed_zero3"}


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_accelerate_reads_the_config_as_accelerate_launch_would(path):
    config, args, env = launch_environment(path)
    raw = yaml.safe_load(path.read_text())
    assert args.num_processes == raw["num_processes"] and config.num_machines == raw["num_machines"]
    assert env["ACCELERATE_MIXED_PRECISION"] == str(raw["mixed_precision"])
    # the header comment shows how to use it: an `accelerate launch --config_file` line naming this very file
    commands = re.findall(r"accelerate launch --config_file (\S+)", path.read_text())
    assert commands and all(c == f"accelerate_configs/{path.name}" for c in commands), commands
    if raw["distributed_type"] == "DEEPSPEED":
        from accelerate.utils import DeepSpeedPlugin

        with mock.patch.dict(os.environ, env):
            plugin = DeepSpeedPlugin()
        assert plugin.zero_stage == raw["deepspeed_config"]["zero_stage"]
        assert plugin.gradient_accumulation_steps == raw["deepspeed_config"]["gradient_accumulation_steps"]
    if raw["distributed_type"] == "FSDP":
        from accelerate.utils import FullyShardedDataParallelPlugin
        from transformers.models.gpt2 import modeling_gpt2

        with mock.patch.dict(os.environ, env):
            plugin = FullyShardedDataParallelPlugin()
        assert env["ACCELERATE_USE_FSDP"] == "true" and plugin.fsdp_version == 2
        assert plugin.transformer_cls_names_to_wrap == ["GPT2Block"] and hasattr(modeling_gpt2, "GPT2Block")
    if path.stem == "cpu_ddp":  # torchrun starts 2 workers; groundup adds cpu=True (gloo) itself
        assert args.multi_gpu and not args.cpu and env["ACCELERATE_MIXED_PRECISION"] == "no"


def test_deepspeed_gradient_accumulation_matches_the_124m_recipe():
    """DeepSpeed takes gradient_accumulation_steps from its own config: it must equal the recipe's."""
    recipe = yaml.safe_load((REPO / "recipes" / "gpt2-124m" / "pretrain.yaml").read_text())
    for name in ("deepspeed_zero2", "deepspeed_zero3"):
        raw = yaml.safe_load((REPO / "accelerate_configs" / f"{name}.yaml").read_text())
        assert raw["deepspeed_config"]["gradient_accumulation_steps"] == recipe["gradient_accumulation_steps"], name
