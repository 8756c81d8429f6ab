"""Every YAML under recipes/ parses into its stage's dataclasses; CLI flags override YAML; bad keys are named.
Every preset's pipeline.yaml is a sound DAG over settings-only YAMLs."""

import importlib
from pathlib import Path

import pytest
import yaml

from groundup.cli import STAGES
from groundup.core.errors import GroundupError
from groundup.pipeline.speedrun import PIPELINE_FILE, input_paths, plan, write_config
from groundup.world.generate import parse_args as parse_world

from .conftest import REPO

PRESETS = ("tiny", "smoke", "gpt2-124m")
STEPS = {preset: plan(preset) for preset in PRESETS}
YAMLS = sorted(p for p in (REPO / "recipes").glob("*/*.yaml") if p.name != PIPELINE_FILE)


@pytest.mark.parametrize("preset", PRESETS)
def test_every_pipeline_is_a_dag_over_existing_settings(preset):
    """Each step's settings YAML exists, and each input is what an earlier step wrote (its output or a file in it:
    the world's data/ folder, the probe's files) or, for the report, the whole run folder."""
    folder = REPO / "recipes" / preset
    steps = STEPS[preset]
    assert {s.stage for s in steps} == {"world", "tokenizer", "pretrain", "sft", "probe", "surprisal-init", "dpo",
                                        "eval", "report"}
    assert len({s.name for s in steps}) == len(steps) and steps[0].output == "data" and steps[-1].name == "report"
    for index, step in enumerate(steps):
        assert (folder / step.config).is_file(), f"{preset}/{step.name}: no {step.config}"
        earlier = [Path(s.output) for s in steps[:index]]
        for key, path in input_paths(step):
            assert (path == "." and step.stage == "report") or any(
                Path(path) == out or out in Path(path).parents for out in earlier), f"{preset}/{step.name}: {key}"
    # the settings are settings only: no run path, and no key the pipeline fills in
    for step in steps:
        settings = yaml.safe_load((folder / step.config).read_text())
        filled = {k for k, v in step.inputs.items() if not isinstance(v, list)} | {step.output_key}
        assert not filled & set(settings), f"{preset}/{step.config} sets {filled & set(settings)}"
        assert "runs/" not in yaml.safe_dump(settings), f"{preset}/{step.config} names a run path"


@pytest.mark.parametrize("path", YAMLS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_recipe_yaml_parses_into_its_stage_dataclasses(path: Path, tmp_path):
    """Each settings YAML, with its step's run paths filled in (the config the speedrun writes), parses into its
    stage's dataclasses and every key reaches one."""
    assert isinstance(yaml.safe_load(path.read_text()), dict)
    steps = [s for s in STEPS.get(path.parent.name, []) if s.config == path.name]
    assert steps, f"{path.name} is no step's settings in recipes/{path.parent.name}/{PIPELINE_FILE}"
    config = write_config(steps[0], path.parent, tmp_path / "run")
    module = importlib.import_module(STAGES[steps[0].stage])
    parsed = module.parse_args(["--config", str(config)])
    assert parsed and all(p is not None for p in parsed)
    fields = {k: v for p in parsed for k, v in vars(p).items()}
    for key in yaml.safe_load(config.read_text()):
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
