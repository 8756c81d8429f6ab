"""`groundup compare RUN [RUN ...] [--arm dpo] [--output FILE]`: the targets of several run folders side by side.

The honesty targets are to hold on a second world, and one run's report cannot say whether they do. This puts the runs
of one preset on several worlds (`groundup speedrun --preset tiny --world-seed N`, one folder each) in one table: per
run its world seed, every honesty target (eval pool, training phrasings) and every knowledge-of-self / working-memory
target of one arm, how many it meets, and, reported beside them and not as targets, the held-out phrasings. It reads
only each run's `data/recipe.yaml` and `eval/` folder, so it also compares runs made on other machines.

    groundup compare runs/tiny runs/tiny-seed1 runs/tiny-seed2 --output runs/compare.md
"""

from __future__ import annotations

import argparse
from pathlib import Path

from groundup.core.errors import GroundupError
from groundup.core.grading import CORRECT, REFUSED
from groundup.core.plotting import fmt
from groundup.pipeline.design import ASSISTANT_TARGETS, TARGETS, split_eval_name
from groundup.pipeline.report import assistant_targets, check_targets, load_eval, tier_metrics
from groundup.pipeline.speedrun import recorded_world_seed

# Held-out phrasings: reported next to the targets (does honesty hold for wordings never trained on?), not counted.
HELDOUT_COLUMNS = [("frequent", "accuracy_answerable", "frequent acc"),
                   ("frequent", "false_refusal_rate_answerable", "false refusal"),
                   ("unseen", "refusal_rate_unanswerable", "unseen refusal")]


def _cell(value: float | None, met: bool | None, detail: str = "") -> str:
    text = fmt(value) + detail
    return f"**{text}**" if met is False else text


def run_row(run_dir: Path, arm: str) -> tuple[list[str], int, int]:
    """(cells, targets met, targets checked) of one run: seed, the honesty targets, the assistant targets (closed-book
    unseen refusal is an honesty target already, so it is not counted twice), the held-out phrasings."""
    arms = load_eval(run_dir / "eval")
    if arm not in arms:
        evaluated = [name for name in arms if split_eval_name(name)[1] == ""]
        raise GroundupError(f"{run_dir}: no eval/{arm}/metrics.json and predictions.jsonl (run its speedrun through "
                            f"the eval stage, or choose another --arm; evaluated: {', '.join(evaluated) or 'nothing'})")

    def right_of_attempted(tier: str) -> str:
        attempted = [r for r in arms[arm]["predictions"] if r.get("tier") == tier and r["grade"] != REFUSED]
        return f" ({sum(r['grade'] == CORRECT for r in attempted)}/{len(attempted)})"

    results = [(value, met, right_of_attempted(tier) if key == "correct_given_attempted" else "")
               for (tier, key, *_), (_, _, value, met) in zip(TARGETS, check_targets(arms[arm]["metrics"]))]
    assistant = {label: (value, met) for label, _, value, met in assistant_targets(arms, arm)}
    results += [(*assistant.get(label, (None, None)), "") for label, kind, *_ in ASSISTANT_TARGETS if kind]
    checked = [met for _, met, _ in results if met is not None]
    heldout = tier_metrics(arms[f"{arm}-heldout"]["metrics"]) if f"{arm}-heldout" in arms else {}
    cells = [str(run_dir), fmt(recorded_world_seed(run_dir))]
    cells += [_cell(value, met, detail) for value, met, detail in results]
    cells.append(f"{sum(checked)} of {len(checked)}")
    cells += [fmt(heldout.get(tier, {}).get(key)) for tier, key, _ in HELDOUT_COLUMNS]
    return cells, sum(checked), len(checked)


def compare_table(run_dirs: list[str | Path], arm: str = "dpo") -> str:
    """Markdown: one row per run folder, the targets of `arm` (bold: missed), then the held-out phrasings."""
    target_heads = [f"{tier} {key.replace('_answerable', '').replace('_unanswerable', '').replace('_', ' ')} "
                    f"{op} {bound}" for tier, key, op, bound in TARGETS]
    target_heads += [f"{label} {op} {bound}" for label, kind, _, _, op, bound in ASSISTANT_TARGETS if kind]
    heads = ["run", "world seed", *target_heads, "targets met",
             *[f"held-out: {name}" for _, _, name in HELDOUT_COLUMNS]]
    rows, met, checked = [], 0, 0
    for run_dir in run_dirs:
        cells, run_met, run_checked = run_row(Path(run_dir), arm)
        rows.append(cells)
        met, checked = met + run_met, checked + run_checked
    lines = [f"Targets of `{arm}` per run (eval pool, training phrasings; **bold**: missed); held-out phrasings beside "
             f"them, reported and not counted. Met: {met} of {checked}.", "",
             "| " + " | ".join(heads) + " |", "|" + "---|" * 2 + "---:|" * (len(heads) - 2)]
    lines += ["| " + " | ".join(cells) + " |" for cells in rows]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(prog="groundup compare", description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", help="Run folders (each with data/ and eval/), e.g. one per world seed.")
    parser.add_argument("--arm", default="dpo", help="The arm whose targets are compared (an eval/ folder name).")
    parser.add_argument("--output", default=None, help="Also write the table to this markdown file.")
    args = parser.parse_args(argv)
    for run in args.runs:
        if not Path(run).is_dir():
            raise GroundupError(f"run folder {run} does not exist")
    table = compare_table(args.runs, args.arm)
    print(table, end="")
    if args.output:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(table)
        print(f"compare: {args.output}")
    return table
