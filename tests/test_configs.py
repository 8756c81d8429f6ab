"""Every YAML under recipes/ parses into its stage's dataclasses; CLI flags override YAML; bad keys are named."""

import importlib
from pathlib import Path

import pytest
import yaml

from groundup.cli import STAGES
from groundup.core.errors import GroundupError
from groundup.pipeline.speedrun import plan
from groundup.world.generate import parse_args as parse_world

from .conftest import REPO

CONFIG_STAGE = {step.config: step.stage for step in plan()}
# Flags the speedrun passes on the command line rather than in the YAML (per-arm paths).
RUNTIME_FLAGS = {"eval": ["--model", "some/model", "--questions", "q.jsonl", "--output_dir", "out"]}
YAMLS = sorted((REPO / "recipes").glob("*/*.yaml"))


def test_every_preset_folder_has_a_yaml_per_speedrun_stage():
    for preset in ("tiny", "smoke", "gpt2-124m"):
        missing = [c for c in CONFIG_STAGE if not (REPO / "recipes" / preset / c).is_file()]
        assert not missing, f"recipes/{preset} lacks {missing}"


@pytest.mark.parametrize("path", YAMLS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_recipe_yaml_parses_into_its_stage_dataclasses(path: Path):
    assert isinstance(yaml.safe_load(path.read_text()), dict)
    stage = CONFIG_STAGE.get(path.name)
    assert stage is not None, f"{path.name} does not belong to any stage"
    module = importlib.import_module(STAGES[stage])
    parsed = module.parse_args(["--config", str(path), *RUNTIME_FLAGS.get(stage, [])])
    assert parsed and all(p is not None for p in parsed)
    # every key of the YAML reached some dataclass with the YAML's value
    fields = {k: v for p in parsed for k, v in vars(p).items()}
    for key, value in yaml.safe_load(path.read_text()).items():
        assert key in fields, f"{path}: {key} not parsed"


def test_cli_flags_override_the_yaml(tmp_path):
    config = tmp_path / "w.yaml"
    config.write_text("num_people: 50\nseed: 7\n")
    (args,) = parse_world(["--config", str(config), "--seed", "9"])
    assert args.num_people == 50 and args.seed == 9


def test_unknown_yaml_key_and_unknown_flag_are_named(tmp_path):
    config = tmp_path / "w.yaml"
    config.write_text("num_people: 50\nnum_peeple: 7\n")
    with pytest.raises(GroundupError, match=r"^unknown config key\(s\): num_peeple$"):
        parse_world(["--config", str(config)])
    with pytest.raises(GroundupError, match="--sed"):
        parse_world(["--sed", "3"])
    with pytest.raises(GroundupError, match="config file not found"):
        parse_world(["--config", str(tmp_path / "missing.yaml")])


def test_launch_lines_in_recipes_name_existing_accelerate_configs_and_scripts():
    import re

    lines = [(path, line) for path in YAMLS for line in path.read_text().splitlines()
             if "accelerate launch" in line]
    assert any("gpt2-124m" in str(path) for path, _ in lines)
    for path, line in lines:
        for config in re.findall(r"--config_file (\S+)", line):
            assert (REPO / config).is_file(), f"{path.name}: {config}"
        for script in re.findall(r"(recipes/\w+\.py)", line):
            assert (REPO / script).is_file(), f"{path.name}: {script}"
        for recipe in re.findall(r"--config (recipes/\S+\.yaml)", line):
            assert (REPO / recipe).is_file(), f"{path.name}: {recipe}"
