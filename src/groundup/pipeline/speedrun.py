"""`groundup speedrun --preset tiny [--run-dir DIR] [--from STAGE] [--world-seed N] [--dry-run]`: every step of a preset.

world -> tokenizer -> pretrain -> sft -> probe -> sft-idk -> surprisal-init -> sft-idk-surprisal -> dpo -> eval (every
arm, both phrasings; chat arms also on identity and open-book questions) -> report.

The steps are the preset's `recipes/<preset>/pipeline.yaml`: for each, the stage it runs, its settings YAML and the
paths it reads and writes, relative to the run folder. A step's config is its settings YAML (yaml.safe_load) with
those paths filled in, as data, under the run folder; it is written to `DIR/configs/<step>.yaml` (the run's record)
and the step runs `groundup STAGE --config` that file, in this process (importing torch and TRL once saves a minute on
a small CPU run). `--dry-run` prints each step's command line with the paths as flags, runs nothing, writes nothing.

A step is skipped when its output exists: every stage writes its output atomically, so existence means complete, and
an interrupted speedrun resumes where it stopped; the training stages (pretrain, sft, dpo) get `resume: latest` and
continue from their last checkpoint (docs/reliability.md). `--from STAGE` deletes that stage's output and checkpoints
and everything after it, then runs them again. `--world-seed N` runs the same preset on another world (the world step's `seed`; every other
seed stays), in `runs/<preset>-seed<N>` unless `--run-dir` says otherwise: how to check that results hold on a second
world.
"""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from groundup.core.errors import GroundupError
from groundup.pipeline.design import eval_grid

TIMINGS_FILE = "speedrun.json"
PIPELINE_FILE = "pipeline.yaml"
STEP_KEYS = {"name", "stage", "config", "inputs", "output", "for_each"}
FOR_EACH = {"plain arm": False, "chat arm": True}  # for_each value -> the arms (design.py) whose `chat` is this
# Stages that checkpoint as they train: the speedrun passes them `resume: latest`, so a re-run after a kill continues
# from the last checkpoint made with the same settings and data (train/checkpoints.py), not from step 0.
RESUMABLE = {"pretrain", "sft", "dpo"}


@dataclass
class Step:
    name: str  # unique, shown in progress lines
    stage: str  # the `groundup` stage it runs; `--from` takes a stage or a step name
    config: str  # its settings YAML, in the preset folder
    output: str  # relative to the run folder; its existence means the step is complete
    output_key: str | None = None  # the stage's key for `output` (None: the stage derives it, as the report does)
    # stage key -> path relative to the run folder; for a list key (`datasets`), entries whose `path` is one
    inputs: dict[str, Any] = field(default_factory=dict)


# ---------------------------------------------------------------- the preset's pipeline.yaml


def preset_dir(preset: str | Path) -> Path:
    """A preset name (`tiny`: recipes/tiny in the current folder or the groundup checkout) or a folder path."""
    preset = str(preset)
    checkout = Path(__file__).resolve().parents[3] / "recipes" / preset  # src/groundup/pipeline/ -> the checkout
    for candidate in (Path(preset), Path.cwd() / "recipes" / preset, checkout):
        if candidate.is_dir() and (candidate / PIPELINE_FILE).is_file():
            return candidate
    raise GroundupError(f"preset {preset!r} not found (looked for recipes/{preset}/{PIPELINE_FILE})")


def plan(preset: str | Path = "tiny") -> list[Step]:
    """The steps of a preset (a name or a folder), in order, from its pipeline.yaml, `for_each` steps expanded; checked
    before anything runs (see `check_plan`)."""
    presets = preset_dir(preset)
    source = presets / PIPELINE_FILE
    try:
        data = yaml.safe_load(source.read_text())
    except yaml.YAMLError as err:
        raise GroundupError(f"{source} is not valid YAML: {err}") from None
    if not isinstance(data, dict) or not isinstance(data.get("steps"), list):
        raise GroundupError(f"{source}: needs a `steps:` list")
    steps = [step for entry in data["steps"] for step in _steps_of(entry, source)]
    check_plan(steps, presets)
    return steps


def _steps_of(entry: Any, source: Path) -> list[Step]:
    """One pipeline.yaml entry as steps: itself, or with `for_each`, one step per arm and kind of questions
    (design.py), `{arm}`, `{kind}` (the eval folder suffix) and `{split}` (the question file) filled in."""
    if not isinstance(entry, dict) or not {"name", "stage", "config", "output"} <= set(entry):
        raise GroundupError(f"{source}: every step needs name, stage, config and output; got {entry!r}")
    if unknown := set(entry) - STEP_KEYS:
        raise GroundupError(f"{source}, step {entry['name']}: unknown key(s) {', '.join(sorted(unknown))} "
                            f"(a step has {', '.join(sorted(STEP_KEYS))})")
    output, inputs = entry["output"], entry.get("inputs") or {}
    if isinstance(output, dict) and len(output) == 1:
        ((output_key, output),) = output.items()
    elif isinstance(output, str):
        output_key = None
    else:
        raise GroundupError(f"{source}, step {entry['name']}: output is one `key: path` (or a path the stage derives)")
    if not isinstance(inputs, dict):
        raise GroundupError(f"{source}, step {entry['name']}: inputs is a mapping of stage key -> path")
    step = Step(entry["name"], entry["stage"], entry["config"], output, output_key, inputs)
    if "for_each" not in entry:
        return [step]
    if entry["for_each"] not in FOR_EACH:
        raise GroundupError(f"{source}, step {entry['name']}: for_each is one of {', '.join(FOR_EACH)}")
    steps = []
    for arm, suffix, kind in eval_grid(chat=FOR_EACH[entry["for_each"]]):
        names = {"arm": arm.name, "kind": suffix, "split": kind.split}
        try:
            steps.append(Step(_fill(step.name, names), step.stage, step.config, _fill(step.output, names),
                              step.output_key, _fill(step.inputs, names)))
        except (KeyError, IndexError, ValueError) as err:
            raise GroundupError(f"{source}, step {entry['name']}: bad placeholder ({err}); a for_each step may "
                                "name {arm}, {kind} and {split}") from None
    return steps


def _fill(value: Any, names: dict[str, str]) -> Any:
    if isinstance(value, str):
        return value.format(**names)
    if isinstance(value, list):
        return [_fill(v, names) for v in value]
    if isinstance(value, dict):
        return {k: _fill(v, names) for k, v in value.items()}
    return value


def input_paths(step: Step) -> list[tuple[str, str]]:
    """(stage key, run-relative path) of every input of a step, the entries of a list key (`datasets`) included."""
    paths = []
    for key, value in step.inputs.items():
        for item in value if isinstance(value, list) else [value]:
            paths.append((key, item.get("path") if isinstance(item, dict) else item))
    return paths


def check_plan(steps: list[Step], presets: Path) -> None:
    """Every step's stage and settings YAML exist, its paths stay inside the run folder, and it reads only what an
    earlier step wrote (its output, or a file inside it) or, for the report, the whole run folder (`.`)."""
    from groundup.pipeline.stages import STAGES

    source = presets / PIPELINE_FILE
    written: list[Path] = []
    names: set[str] = set()
    for step in steps:
        where = f"{source}, step {step.name}"
        if step.name in names:
            raise GroundupError(f"{where}: a second step of that name")
        names.add(step.name)
        if step.stage not in STAGES:
            raise GroundupError(f"{where}: unknown stage {step.stage!r}")
        if not (presets / step.config).is_file():
            raise GroundupError(f"{where}: its settings {presets / step.config} do not exist")
        for key, path in input_paths(step) + [(step.output_key or "output", step.output)]:
            if not isinstance(path, str) or not path or Path(path).is_absolute() or ".." in Path(path).parts:
                raise GroundupError(f"{where}: {key}: {path!r} is not a path inside the run folder")
        for key, path in input_paths(step):
            if path != "." and not any(Path(path) == w or w in Path(path).parents for w in written):
                raise GroundupError(f"{where}: {key}: {path} is not written by an earlier step")
        written.append(Path(step.output))


# ---------------------------------------------------------------- a step's config: its settings plus the run's paths


def load_settings(presets: Path, step: Step) -> dict[str, Any]:
    path = presets / step.config
    try:
        settings = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise GroundupError(f"{path} is not valid YAML: {err}") from None
    if settings is None:
        return {}
    if not isinstance(settings, dict):
        raise GroundupError(f"{path} must be a YAML mapping of key: value")
    return settings


def step_paths(step: Step, run_dir: str | Path, settings: dict[str, Any],
               world_seed: int | None = None) -> dict[str, Any]:
    """What the pipeline sets in a step's config, as data: its inputs and output under the run folder (a list key
    such as `datasets` gets its entries after the settings' own ones, e.g. a Hub dataset) and, for the world step,
    `--world-seed`'s seed."""
    values: dict[str, Any] = {}
    for key, value in step.inputs.items():
        if isinstance(value, list):
            values[key] = list(settings.get(key) or []) + [{**e, "path": str(Path(run_dir) / e["path"])} for e in value]
        else:
            values[key] = str(Path(run_dir) / value)
    if step.output_key:
        values[step.output_key] = str(Path(run_dir) / step.output)
    if world_seed is not None and step.stage == "world":
        values["seed"] = world_seed
    if step.stage in RESUMABLE:  # an interrupted speedrun continues the stage from its last checkpoint
        values["resume"] = "latest"
    return values


def resolve(step: Step, presets: Path, run_dir: str | Path, world_seed: int | None = None) -> dict[str, Any]:
    """A step's whole config: its settings YAML with the run's paths filled in (refused if the settings name one)."""
    settings = load_settings(presets, step)
    paths = step_paths(step, run_dir, settings, world_seed)
    given = [key for key, value in step.inputs.items() if not isinstance(value, list)] + [step.output_key]
    clash = [key for key in given if key in settings]
    if clash:
        raise GroundupError(f"{presets / step.config} sets {', '.join(clash)}, a run path that {PIPELINE_FILE} gives "
                            f"(step {step.name}): remove it from the settings")
    return {**settings, **paths}


def write_config(step: Step, presets: Path, run_dir: Path, world_seed: int | None = None) -> Path:
    """`DIR/configs/<step>.yaml`: the step's resolved config, the run's record of what the stage was given."""
    target = run_dir / "configs" / f"{step.name}.yaml"
    target.parent.mkdir(parents=True, exist_ok=True)
    header = (f"# groundup speedrun: step {step.name} = {presets / step.config} + the run's paths "
              f"({presets / PIPELINE_FILE})" + (f", --world-seed {world_seed}" if world_seed is not None
                                                 and step.stage == "world" else "") + "\n")
    body = yaml.safe_dump(resolve(step, presets, run_dir, world_seed), sort_keys=False, allow_unicode=True)
    target.write_text(header + body, encoding="utf-8")
    return target


def command(step: Step, presets: Path, run_dir: str | Path, world_seed: int | None = None) -> list[str]:
    """The command line that runs a step by hand: `groundup STAGE --config <settings> --key value ...`, the run's paths
    as flags (a `datasets` entry as one JSON mapping, which groundup's parser reads)."""
    settings = load_settings(presets, step)
    resolve(step, presets, run_dir, world_seed)  # the same checks as a real run
    argv = ["groundup", step.stage, "--config", _shown(presets / step.config)]
    for key, value in step_paths(step, run_dir, settings, world_seed).items():
        if isinstance(value, list):
            argv += [f"--{key}", *[json.dumps(entry, ensure_ascii=False) for entry in value]]
        else:
            argv += [f"--{key}", str(value)]
    return argv


def _shown(path: Path) -> str:
    """A path as a user would type it here: relative to the current folder when inside it."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path.resolve())


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()


def _reset_distributed_state() -> None:
    """Stages share this process; accelerate keeps its state in singletons that the next stage must not inherit."""
    try:
        from accelerate.state import AcceleratorState, PartialState
    except ImportError:
        return
    AcceleratorState._reset_state(reset_partial_state=True)
    PartialState._reset_state()


def recorded_world_seed(run_dir: str | Path) -> Any:
    """The seed a run's world was generated with (the world stage's resolved config, `data/recipe.yaml`), or None when
    the run has no world yet."""
    from groundup.core.configs import RESOLVED_CONFIG_NAME

    recipe = Path(run_dir) / "data" / RESOLVED_CONFIG_NAME
    return (yaml.safe_load(recipe.read_text()) or {}).get("seed") if recipe.is_file() else None


def _check_world_seed(run_dir: Path, presets: Path, world_seed: int | None) -> None:
    """A run folder's world is reused when it exists: refuse one generated with another seed than this call asks for,
    rather than train on the wrong world under a record that names the right one."""
    found = recorded_world_seed(run_dir)
    if found is None:
        return
    if world_seed is None:  # the preset's: the settings of its world step
        world = next((step for step in plan(presets) if step.stage == "world"), None)
        expected = load_settings(presets, world).get("seed") if world else None
    else:
        expected = world_seed
    if expected is not None and int(found) != int(expected):
        raise GroundupError(f"{run_dir / 'data'} was generated with world seed {found}, and this call asks for "
                            f"{expected}: pass --world-seed {found} to resume it, or choose another --run-dir (or "
                            "--from world)")


def run(preset: str, run_dir: str | Path, start_from: str | None = None, world_seed: int | None = None,
        dry_run: bool = False) -> dict:
    import importlib

    from groundup.pipeline.stages import STAGES

    presets = preset_dir(preset)
    run_dir = Path(run_dir)
    steps = plan(presets)
    names = [s.name for s in steps]
    first = None  # index of the first step `--from` redoes
    if start_from is not None:
        matches = [i for i, s in enumerate(steps) if start_from in (s.name, s.stage)]
        if not matches:
            raise GroundupError(f"--from {start_from!r}: no such stage; choose one of: {', '.join(names)}")
        first = matches[0]
    if dry_run:
        _print_commands(steps, presets, run_dir, first, world_seed)
        return {}
    if first != 0:  # the world folder is kept: check its seed before anything is deleted
        _check_world_seed(run_dir, presets, world_seed)
    if first is not None:
        for step in steps[first:]:
            _remove(run_dir / step.output)
            _remove(run_dir / f"{step.output}.checkpoints")  # a redo starts from step 0, not from a checkpoint
    run_dir.mkdir(parents=True, exist_ok=True)
    timings_path = run_dir / TIMINGS_FILE
    timings = json.loads(timings_path.read_text()) if timings_path.is_file() else {}

    total_start = time.perf_counter()
    for index, step in enumerate(steps, 1):
        prefix = f"[{index:2d}/{len(steps)}] {step.name:<18}"
        output = run_dir / step.output
        if output.exists():
            print(f"{prefix} skipped ({output} is complete)", flush=True)
            timings.setdefault(step.name, {"seconds": None})["status"] = "skipped"
            continue
        argv = ["--config", str(write_config(step, presets, run_dir, world_seed))]
        print(f"{prefix} running: groundup {step.stage} {shlex.join(argv)}", flush=True)
        start = time.perf_counter()
        module = importlib.import_module(STAGES[step.stage])
        _reset_distributed_state()
        module.main(argv)
        seconds = time.perf_counter() - start
        timings[step.name] = {"seconds": round(seconds, 2), "status": "ran", "stage": step.stage}
        timings_path.write_text(json.dumps(timings, indent=1) + "\n")  # after every step: nothing lost on Ctrl-C
        print(f"{prefix} done in {seconds:6.1f} s", flush=True)
    timings_path.write_text(json.dumps(timings, indent=1) + "\n")
    _print_summary(timings, steps, time.perf_counter() - total_start)
    return timings


def _print_commands(steps: list[Step], presets: Path, run_dir: Path, first: int | None,
                    world_seed: int | None) -> None:
    """`--dry-run`: each step's command line, as a user would run it by hand; nothing is run or written."""
    print(f"# {len(steps)} steps of {presets / PIPELINE_FILE} into {run_dir} (dry run: nothing is run)")
    for index, step in enumerate(steps):
        done = (run_dir / step.output).exists() and (first is None or index < first)
        line = shlex.join(command(step, presets, run_dir, world_seed))
        print(line + (f"  # skipped: {run_dir / step.output} is complete" if done else ""), flush=True)


def _print_summary(timings: dict, steps: list[Step], wall: float) -> None:
    print("\n| stage | status | seconds |\n|---|---|---:|")
    for step in steps:
        entry = timings.get(step.name, {})
        seconds = entry.get("seconds")
        print(f"| {step.name} | {entry.get('status', 'not run')} | {'' if seconds is None else f'{seconds:.1f}'} |")
    ran = sum(e["seconds"] or 0 for e in timings.values() if e.get("status") == "ran")
    print(f"\nspeedrun: {wall:.1f} s wall this call, {ran:.1f} s in stages that ran")


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="groundup speedrun", description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="tiny", help="Preset name under recipes/ (tiny, smoke) or a folder.")
    parser.add_argument("--run-dir", "--run_dir", default=None, help="Run folder (default: runs/<preset>).")
    parser.add_argument("--from", dest="start_from", default=None,
                        help="Redo this stage or step (world, tokenizer, pretrain, sft, probe, sft-idk, surprisal-init, "
                             "sft-idk-surprisal, dpo, eval, report) and everything after it.")
    parser.add_argument("--world-seed", "--world_seed", type=int, default=None,
                        help="Run the preset on another world: this seed for the world step, every other seed "
                             "unchanged (default run folder: runs/<preset>-seed<N>).")
    parser.add_argument("--dry-run", "--dry_run", action="store_true",
                        help="Print each step's command line (groundup STAGE --config ... with the run's paths as "
                             "flags) and run nothing.")
    args = parser.parse_args(argv)
    name = Path(args.preset).name
    run_dir = args.run_dir or (f"runs/{name}" if args.world_seed is None else f"runs/{name}-seed{args.world_seed}")
    return run(args.preset, run_dir, args.start_from, args.world_seed, dry_run=args.dry_run)
