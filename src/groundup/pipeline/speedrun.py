"""`groundup speedrun --preset tiny [--run-dir DIR] [--from STAGE] [--world-seed N]`: every stage of a preset, in order.

world -> tokenizer -> pretrain -> sft -> probe -> sft-idk -> surprisal-init -> sft-idk-surprisal -> dpo -> eval (every
arm, both phrasings; chat arms also on identity and open-book questions) -> report.

Each step runs `groundup STAGE --config <its YAML>` in this process (importing torch and TRL once saves a minute on
a small CPU run). A step is skipped when its output exists: every stage writes its output atomically, so existence
means complete, and an interrupted speedrun resumes where it stopped. `--from STAGE` deletes that stage's output and
everything after it, then runs them again. The YAMLs say `runs/<preset>/...`; with `--run-dir` those paths are
rewritten and the resolved YAMLs kept in `DIR/configs/` as the run's record. `--world-seed N` runs the same preset on
another world (`world.yaml`'s `seed`; every other seed stays), in `runs/<preset>-seed<N>` unless `--run-dir` says
otherwise: how to check that results hold on a second world.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from groundup.core.errors import GroundupError

TIMINGS_FILE = "speedrun.json"


@dataclass
class Step:
    name: str  # unique, shown in progress lines
    stage: str  # the `groundup` CLI stage it runs; `--from` takes a stage or a step name
    config: str  # YAML file in the preset folder
    output: str  # relative to the run folder; its existence means the step is complete
    args: list[str] = field(default_factory=list)  # extra CLI flags (run-folder relative paths start with "@/")


# Arms of the honesty comparison: (name, model folder, eval config). A base model does not follow chat, so its
# config prompts it few-shot in plain text.
ARMS = [
    ("base", "base", "eval_base.yaml"),
    ("sft", "sft", "eval.yaml"),
    ("sft-idk", "sft-idk", "eval.yaml"),
    ("sft-idk-surprisal", "sft-idk-surprisal", "eval.yaml"),
    ("dpo", "dpo", "eval.yaml"),
]
# Question files (output folder suffix, split): eval people asked in the training phrasings, then in phrasings never
# used in training; then, for chat arms only, identity questions (held-out phrasings) and open-book questions.
EVAL_SPLITS = [("", "eval"), ("-heldout", "eval_heldout")]
CHAT_EVAL_SPLITS = [("-identity", "identity_eval"), ("-open-book", "open_book_eval")]


def plan() -> list[Step]:
    steps = [
        Step("world", "world", "world.yaml", "data"),
        Step("tokenizer", "tokenizer", "tokenizer.yaml", "tokenizer"),
        Step("pretrain", "pretrain", "pretrain.yaml", "base"),
        Step("sft", "sft", "sft.yaml", "sft"),
        Step("probe", "probe", "probe.yaml", "probe"),
        Step("sft-idk", "sft", "sft_idk.yaml", "sft-idk"),
        # IDK-SFT on a model that also reads the base's per-token surprisal (src/groundup/surprisal.py)
        Step("surprisal-init", "surprisal-init", "surprisal_init.yaml", "sft-surprisal-init"),
        Step("sft-idk-surprisal", "sft", "sft_idk_surprisal.yaml", "sft-idk-surprisal"),
        Step("dpo", "dpo", "dpo.yaml", "dpo"),  # from the surprisal arm (the preset's dpo.yaml says which)
    ]
    for arm, model, config in ARMS:
        for suffix, questions in EVAL_SPLITS + (CHAT_EVAL_SPLITS if arm != "base" else []):
            steps.append(Step(f"eval-{arm}{suffix}", "eval", config, f"eval/{arm}{suffix}",
                              ["--model", f"@/{model}", "--questions", f"@/data/questions/{questions}.jsonl",
                               "--output_dir", f"@/eval/{arm}{suffix}"]))
    steps.append(Step("report", "report", "report.yaml", "report.md"))
    return steps


def preset_dir(preset: str) -> Path:
    """A preset name (`tiny`: recipes/tiny in the current folder or the groundup checkout) or a folder path."""
    candidates = [Path(preset), Path.cwd() / "recipes" / preset, Path(__file__).resolve().parents[2] / "recipes" / preset]
    for candidate in candidates:
        if candidate.is_dir() and (candidate / "world.yaml").is_file():
            return candidate
    raise GroundupError(f"preset {preset!r} not found (looked for recipes/{preset}/world.yaml)")


# The top-level `seed:` line of a world.yaml (its value and any comment after it).
_SEED_LINE = re.compile(r"^seed:.*$", flags=re.M)


def with_world_seed(text: str, seed: int, source: Path) -> str:
    """world.yaml text with its top-level `seed:` set to `seed`. A line edit, not a YAML round trip: the resolved YAML
    is the run's record and keeps the preset's comments."""
    if not _SEED_LINE.search(text):
        raise GroundupError(f"--world-seed: {source} has no top-level 'seed:' line to set")
    return _SEED_LINE.sub(f"seed: {seed}                  # --world-seed {seed}", text, count=1)


def resolve_config(source: Path, target: Path, preset: str, run_dir: Path, world_seed: int | None = None) -> Path:
    """Copy a preset YAML with `runs/<preset>` rewritten to the run folder (and, for world.yaml, `world_seed` set)."""
    text = source.read_text()
    default = f"runs/{preset}"
    if Path(run_dir) != Path(default):
        text = text.replace(default + "/", f"{run_dir}/").replace(default + "\n", f"{run_dir}\n")
    if world_seed is not None and source.name == "world.yaml":
        text = with_world_seed(text, world_seed, source)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text)
    yaml.safe_load(text)  # fail here, not inside the stage, on a YAML the rewrite broke
    return target


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
    if world_seed is None:
        expected = (yaml.safe_load((presets / "world.yaml").read_text()) or {}).get("seed")
    else:
        expected = world_seed
    if expected is not None and int(found) != int(expected):
        raise GroundupError(f"{run_dir / 'data'} was generated with world seed {found}, and this call asks for "
                            f"{expected}: pass --world-seed {found} to resume it, or choose another --run-dir (or "
                            "--from world)")


def run(preset: str, run_dir: str | Path, start_from: str | None = None, world_seed: int | None = None) -> dict:
    import importlib

    from groundup.pipeline.stages import STAGES

    presets = preset_dir(preset)
    preset_name = presets.name
    run_dir = Path(run_dir)
    steps = plan()
    names = [s.name for s in steps]
    first = None  # index of the first step `--from` redoes
    if start_from is not None:
        matches = [i for i, s in enumerate(steps) if start_from in (s.name, s.stage)]
        if not matches:
            raise GroundupError(f"--from {start_from!r}: no such stage; choose one of: {', '.join(names)}")
        first = matches[0]
    if first != 0:  # the world folder is kept: check its seed before anything is deleted
        _check_world_seed(run_dir, presets, world_seed)
    if first is not None:
        for step in steps[first:]:
            _remove(run_dir / step.output)
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
        source = presets / step.config
        if not source.is_file():
            raise GroundupError(f"preset {preset_name}: missing {source}")
        config = resolve_config(source, run_dir / "configs" / f"{step.name}.yaml", preset_name, run_dir, world_seed)
        argv = ["--config", str(config)] + [str(run_dir / a[2:]) if a.startswith("@/") else a for a in step.args]
        print(f"{prefix} running: groundup {step.stage} {' '.join(argv)}", flush=True)
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
                        help="Run the preset on another world: this seed in world.yaml, every other seed unchanged "
                             "(default run folder: runs/<preset>-seed<N>).")
    args = parser.parse_args(argv)
    name = Path(args.preset).name
    run_dir = args.run_dir or (f"runs/{name}" if args.world_seed is None else f"runs/{name}-seed{args.world_seed}")
    return run(args.preset, run_dir, args.start_from, args.world_seed)
