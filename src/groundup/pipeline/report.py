"""`groundup report --run_dir DIR`: the run's report card, `DIR/report.md` with PNG plots in `DIR/report/`.

Every figure comes from the run's own files: `speedrun.json` (time per stage), the pretraining log (loss and
bits-per-byte curves), the fine-tuning logs (SFT/DPO losses) and `eval/<arm>/` (the honesty table and plots).
The plotting functions take plain data so the evaluation notebook draws the same pictures from any `eval/` folder.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from groundup.core.jsonl import read_jsonl
from groundup.core.plotting import fmt, pyplot
# the study's arms, kinds of questions and targets (one place for the speedrun, the report and compare)
from groundup.pipeline.design import (ARM_ORDER, ASSISTANT_TARGETS, EVAL_KINDS, REFUSING_ARMS, TARGETS,
                                      split_eval_name)

GRADES = ("correct", "incorrect", "refused")
GRADE_COLOURS = {"correct": "#2a9d55", "incorrect": "#d1495b", "refused": "#8d99ae"}
TIER_ORDER = ("frequent", "rare", "unseen")


@dataclass
class ReportArguments:
    """`groundup report`: write DIR/report.md and DIR/report/*.png from a run folder."""

    run_dir: str | None = field(default=None, metadata={"help": "The run folder to report on (required)."})
    title: str = field(default="groundup run report", metadata={"help": "Heading of the report."})
    min_answer_prob: float = field(default=0.5, metadata={
        "help": "Threshold of the selective-answering table and target rows (what `groundup eval "
                "--min_answer_prob` would give); the plot shows every threshold."})


# ---------------------------------------------------------------- reading a run


def load_eval(eval_dir: str | Path) -> dict[str, dict[str, Any]]:
    """Every evaluated arm under an `eval/` folder: name -> {"metrics": dict, "predictions": list}."""
    arms = {}
    for folder in sorted(Path(eval_dir).iterdir()) if Path(eval_dir).is_dir() else []:
        if (folder / "metrics.json").is_file() and (folder / "predictions.jsonl").is_file():
            arms[folder.name] = {"metrics": json.loads((folder / "metrics.json").read_text()),
                                 "predictions": read_jsonl(folder / "predictions.jsonl")}
    return dict(sorted(arms.items(), key=lambda kv: _arm_key(kv[0])))


def _arm_key(name: str) -> tuple:
    base, kind = split_eval_name(name)
    return (list(EVAL_KINDS).index(kind), ARM_ORDER.index(base) if base in ARM_ORDER else len(ARM_ORDER), name)


def tier_metrics(metrics: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """`{"overall": {...}, tier: {...}}` from a metrics.json."""
    out = {"overall": metrics.get("overall", {})}
    out.update(metrics.get("by_tier", {}))
    return out


def outcome_counts(predictions: list[dict[str, Any]]) -> dict[str, dict[str, int]]:
    """tier -> grade -> count (plus "all")."""
    counts: dict[str, dict[str, int]] = {}
    for row in predictions:
        for tier in ("all", row.get("tier") or "untiered"):
            counts.setdefault(tier, {g: 0 for g in GRADES})[row["grade"]] += 1
    return counts


# ---------------------------------------------------------------- plots


def plot_outcomes(arms: dict[str, list[dict[str, Any]]], path: str | Path | None = None):
    """Stacked correct / incorrect / refused bars, one panel per arm, one bar per tier."""
    plt = pyplot()
    fig, axes = plt.subplots(1, len(arms), figsize=(3.2 * len(arms), 3.4), sharey=True, squeeze=False)
    for ax, (arm, predictions) in zip(axes[0], arms.items()):
        counts = outcome_counts(predictions)
        tiers = [t for t in TIER_ORDER if t in counts] + [t for t in counts if t not in TIER_ORDER + ("all",)]
        bottom = [0.0] * len(tiers)
        for grade in GRADES:
            share = [counts[t][grade] / max(sum(counts[t].values()), 1) for t in tiers]
            ax.bar(tiers, share, bottom=bottom, color=GRADE_COLOURS[grade], label=grade)
            bottom = [b + s for b, s in zip(bottom, share)]
        ax.set_title(arm)
        ax.set_ylim(0, 1)
    axes[0][0].set_ylabel("share of questions")
    axes[0][-1].legend(loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    return _finish(fig, path)


def plot_tradeoff(arms: dict[str, dict[str, Any]], path: str | Path | None = None):
    """Accuracy on answerable questions vs refusal on unanswerable ones, one point per arm: up and right is better."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(4.6, 4.0))
    for arm, metrics in arms.items():
        overall = tier_metrics(metrics)["overall"]
        x, y = overall.get("refusal_rate_unanswerable"), overall.get("accuracy_answerable")
        if x is None or y is None:
            continue
        ax.scatter([x], [y], s=60)
        ax.annotate(arm, (x, y), textcoords="offset points", xytext=(5, 5))
    ax.set_xlabel("refusal rate on unanswerable (unseen people)")
    ax.set_ylabel("accuracy on answerable")
    ax.set_xlim(-0.05, 1.05)
    ax.set_ylim(-0.05, 1.05)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return _finish(fig, path)


SELECTIVE_THRESHOLDS = [round(i / 20, 2) for i in range(20)]  # 0.00, 0.05, ..., 0.95


def selective_sweep(predictions: list[dict[str, Any]], thresholds: list[float]) -> dict[str, dict[str, list]]:
    """tier -> metric key -> one value per threshold: the metrics had every answer below it been a refusal."""
    from groundup.core.grading import abstain_below, metrics_from_predictions

    sweep: dict[str, dict[str, list]] = {}
    for threshold in thresholds:
        for tier, block in tier_metrics(metrics_from_predictions(abstain_below(predictions, threshold))).items():
            for key, value in block.items():
                sweep.setdefault(tier, {}).setdefault(key, []).append(value)
    return sweep


def plot_selective(arms: dict[str, list[dict[str, Any]]], path: str | Path | None = None):
    """Selective answering: each honesty target (`TARGETS`) as the answer-probability threshold rises, one line per
    arm, the target dashed."""
    plt = pyplot()
    fig, axes = plt.subplots(1, len(TARGETS), figsize=(3.6 * len(TARGETS), 3.4), squeeze=False)
    for arm, predictions in arms.items():
        sweep = selective_sweep(predictions, SELECTIVE_THRESHOLDS)
        for ax, (tier, key, _, _) in zip(axes[0], TARGETS):
            values = sweep.get(tier, {}).get(key)
            if values:
                ax.plot(SELECTIVE_THRESHOLDS, [float("nan") if v is None else v for v in values], label=arm)
    for ax, (tier, key, _, target) in zip(axes[0], TARGETS):
        ax.axhline(target, color="black", linestyle="--", linewidth=0.8)
        ax.set_title(f"{tier}: {key.replace('_', ' ')}", fontsize=9)
        ax.set_xlabel("min_answer_prob")
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
    axes[0][-1].legend(loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    return _finish(fig, path)


def plot_curves(series: dict[str, tuple[list[float], list[float]]], ylabel: str, path: str | Path | None = None,
                xlabel: str = "step"):
    """Line plot of named (x, y) series, e.g. train and validation loss."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5.2, 3.4))
    for name, (xs, ys) in series.items():
        ax.plot(xs, ys, label=name, marker="o" if len(xs) < 30 else None, markersize=3)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    if len(series) > 1:
        ax.legend()
    fig.tight_layout()
    return _finish(fig, path)


def plot_stage_times(timings: dict[str, dict[str, Any]], path: str | Path | None = None):
    plt = pyplot()
    names = [n for n, t in timings.items() if t.get("seconds")]
    fig, ax = plt.subplots(figsize=(6.0, 0.3 * len(names) + 1.2))
    ax.barh(names[::-1], [timings[n]["seconds"] for n in names][::-1], color="#457b9d")
    ax.set_xlabel("seconds")
    fig.tight_layout()
    return _finish(fig, path)


def _finish(fig, path):
    if path is None:
        return fig
    fig.savefig(path, dpi=110)
    pyplot().close(fig)
    return Path(path)


# ---------------------------------------------------------------- the report


def _log_series(path: Path, keys: tuple[str, ...]) -> dict[str, tuple[list[float], list[float]]]:
    """Named (step, value) series for each key present in a JSON-lines training log."""
    if not path.is_file():
        return {}
    rows = read_jsonl(path)
    series = {}
    for key in keys:
        points = [(r["step"], r[key]) for r in rows if r.get(key) is not None and "step" in r]
        if points:
            series[key] = ([p[0] for p in points], [p[1] for p in points])
    return series


def _met(value: float | None, op: str, bound: float) -> bool | None:
    return None if value is None else (value >= bound if op == ">=" else value <= bound)


def check_targets(metrics: dict[str, Any]) -> list[tuple[str, str, float | None, bool | None]]:
    """(label, comparison, value, met) for each honesty target."""
    tiers = tier_metrics(metrics)
    results = []
    for tier, key, op, bound in TARGETS:
        value = tiers.get(tier, {}).get(key)
        results.append((f"{tier} {key}", f"{op} {bound}", value, _met(value, op, bound)))
    return results


def assistant_targets(arms: dict[str, dict[str, Any]], model: str) -> list[tuple[str, str, float | None, bool | None]]:
    """(label, comparison, value, met) for the identity / open-book targets of one model (skipped if not evaluated)."""
    results = []
    for label, kind, group, key, op, bound in ASSISTANT_TARGETS:
        if model + kind not in arms:
            continue
        value = tier_metrics(arms[model + kind]["metrics"]).get(group, {}).get(key)
        results.append((label, f"{op} {bound}", value, _met(value, op, bound)))
    return results


def identity_section(arms: dict[str, dict[str, Any]]) -> list[str]:
    """Knowledge of self: per arm and category, and how often a response claims another assistant or maker."""
    from groundup.world.identity import claims_other

    md = ["## Knowledge of self", "",
          "Identity questions in phrasings never used in training, each asked without and with the system prompt "
          "(`/system`). *limits* questions are about the real world: the right answer is a refusal.", "",
          "| arm | category | n | correct | refused | claims another assistant or maker |",
          "|---|---|---:|---:|---:|---:|"]
    for arm, data in arms.items():
        groups: dict[str, list[dict[str, Any]]] = {}
        for row in data["predictions"]:
            groups.setdefault(str(row.get("tier")), []).append(row)
        for group, rows in [*sorted(groups.items()), ("all", data["predictions"])]:
            n = len(rows)
            claims = sum(bool(claims_other(r["response"] or "")) for r in rows)
            md.append(f"| {split_eval_name(arm)[0]} | {group} | {n} | "
                      f"{sum(r['grade'] == 'correct' for r in rows) / n:.2f} | "
                      f"{sum(r['grade'] == 'refused' for r in rows) / n:.2f} | {claims} |")
    return md + [""]


OPEN_BOOK_COLUMNS = [("closed-book", "frequent", "accuracy_answerable", "frequent acc"),
                     ("closed-book", "unseen", "refusal_rate_unanswerable", "unseen refusal"),
                     ("open-book", "passage/frequent", "accuracy_answerable", "passage: frequent acc"),
                     ("open-book", "passage/rare", "accuracy_answerable", "passage: rare acc"),
                     ("open-book", "passage/unseen", "accuracy_answerable", "passage: unseen acc"),
                     ("open-book", "contradict/frequent", "accuracy_answerable", "contradicting passage wins"),
                     ("open-book", "other/frequent", "accuracy_answerable", "other's passage: frequent acc"),
                     ("open-book", "other/unseen", "refusal_rate_unanswerable", "other's passage: unseen refusal")]


def open_book_section(closed: dict[str, dict[str, Any]], open_book: dict[str, dict[str, Any]],
                      plots: Path | None = None) -> list[str]:
    """Working memory vs recollection: closed-book figures beside open-book ones, per arm (and, with `plots`, the
    open-book outcome bars as a PNG there)."""
    md = ["## Working memory: closed-book vs open-book", "",
          "Open-book: a short biography comes with the question in the user turn. *passage*: the person's true facts "
          "(unseen people must now answer); *contradict*: a frequent person's passage gives another value (the "
          "passage must win); *other*: the passage is about someone else (it must not be used: frequent people "
          "answered from memory, unseen people refused).", "",
          "| arm | " + " | ".join(label for *_, label in OPEN_BOOK_COLUMNS) + " |",
          "|---|" + "---:|" * len(OPEN_BOOK_COLUMNS)]
    for arm, data in open_book.items():
        model = split_eval_name(arm)[0]
        sources = {"open-book": tier_metrics(data["metrics"]),
                   "closed-book": tier_metrics(closed[model]["metrics"]) if model in closed else {}}
        cells = [fmt(sources[source].get(group, {}).get(key)) for source, group, key, _ in OPEN_BOOK_COLUMNS]
        md.append(f"| {model} | " + " | ".join(cells) + " |")
    if plots is None:
        return md + [""]
    plot_outcomes({split_eval_name(k)[0]: v["predictions"] for k, v in open_book.items()},
                  plots / "outcomes_open_book.png")
    return md + ["", "![open-book outcomes](report/outcomes_open_book.png)", ""]


HONESTY_COLUMNS = [("accuracy_answerable", "accuracy"), ("false_refusal_rate_answerable", "false refusal"),
                   ("correct_given_attempted", "correct given attempted"),
                   ("refusal_rate_unanswerable", "refusal (unanswerable)"),
                   ("hallucination_rate_unanswerable", "hallucination (unanswerable)")]


def honesty_table(arms: dict[str, dict[str, Any]]) -> list[str]:
    lines = ["| arm | tier | n | " + " | ".join(label for _, label in HONESTY_COLUMNS) + " |",
             "|---|---|---:|" + "---:|" * len(HONESTY_COLUMNS)]
    for arm, data in arms.items():
        for tier, values in tier_metrics(data["metrics"]).items():
            n = values.get("counts", {}).get("n", "")
            cells = [fmt(values.get(key)) for key, _ in HONESTY_COLUMNS]
            lines.append(f"| {arm} | {tier} | {n} | " + " | ".join(cells) + " |")
    return lines


def selective_section(closed: dict[str, dict[str, Any]], threshold: float, plots: Path) -> list[str]:
    """Selective answering from each arm's own predictions: how well the probability of an answer's least likely
    token tells right from wrong (AUROC), and the honesty metrics had every answer below `threshold` been refused."""
    from groundup.core.grading import abstain_below, answer_prob_auroc, metrics_from_predictions

    arms = {arm: data["predictions"] for arm, data in closed.items() if arm != "base" and _has_answer_prob(data)}
    if not arms:
        return []
    md = ["## Selective answering: refuse when unsure", "",
          "`answer_prob` is the probability of the least likely token of a greedy answer (for a world answer, "
          "usually the value). AUROC: how well it tells right answers from wrong ones among the questions an arm "
          f"attempted. The right-hand columns are the metrics had every answer below `min_answer_prob` = {threshold} "
          "been \"I don't know.\" (`groundup eval --min_answer_prob`).", "",
          "| arm | AUROC (attempted) | AUROC (rare) | frequent acc | frequent false refusal | rare correct given "
          "attempted | unseen refusal | answers withdrawn |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for arm, predictions in arms.items():
        auroc = answer_prob_auroc(predictions)
        gated = abstain_below(predictions, threshold)
        tiers = tier_metrics(metrics_from_predictions(gated))
        cells = [fmt(auroc["overall"]["auroc"]), fmt(auroc["by_tier"].get("rare", {}).get("auroc")),
                 fmt(tiers.get("frequent", {}).get("accuracy_answerable")),
                 fmt(tiers.get("frequent", {}).get("false_refusal_rate_answerable")),
                 fmt(tiers.get("rare", {}).get("correct_given_attempted")),
                 fmt(tiers.get("unseen", {}).get("refusal_rate_unanswerable")),
                 str(sum("raw_response" in p and "raw_response" not in q for p, q in zip(gated, predictions)))]
        md.append(f"| {arm} | " + " | ".join(cells) + " |")
    plot_selective(arms, plots / "selective.png")
    md += ["", "![selective answering](report/selective.png)", ""]
    return md


def confusion_section(closed: dict[str, dict[str, Any]], world_dir: Path) -> list[str]:
    """What the wrong answers about the world's people are made of (confusions.py); empty without the world files."""
    from groundup.evaluate.confusions import namesake_confusions
    from groundup.core.jsonl import read_jsonl
    from groundup.world.schema import TIERS

    if not (world_dir / "world.jsonl").is_file() or not (world_dir / "schema.json").is_file():
        return []
    people = read_jsonl(world_dir / "world.jsonl")
    values = json.loads((world_dir / "schema.json").read_text())["attributes"]
    order = {tier: i for i, tier in enumerate(TIERS)}
    rows = [(arm, tier, counts) for arm, data in closed.items()
            for tier, counts in sorted(namesake_confusions(data["predictions"], people, values).items(),
                                       key=lambda item: order.get(item[0], len(order)))]
    if not rows:
        return []
    md = ["### Where the wrong answers come from", "",
          "Wrong answers about a person of the world that name one value, and how many of those values belong to "
          "someone the model read about who shares the person's first or last name; *expected* is that count had "
          "each wrong value been drawn at random from the attribute's other values.", "",
          "| arm | tier | wrong answers | a namesake's value | expected by chance |", "|---|---|---:|---:|---:|"]
    md += [f"| {arm} | {tier} | {c['wrong']} | {c['from_namesake']} | {c['expected']:.1f} |" for arm, tier, c in rows]
    return md + [""]


def _has_answer_prob(data: dict[str, Any]) -> bool:
    return any(p.get("answer_prob") is not None for p in data["predictions"])


def _gated_metrics(data: dict[str, Any], threshold: float) -> dict[str, Any]:
    from groundup.core.grading import abstain_below, metrics_from_predictions

    return metrics_from_predictions(abstain_below(data["predictions"], threshold))


def write_report(run_dir: str | Path, title: str = "groundup run report", min_answer_prob: float = 0.5) -> Path:
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        from groundup.core.errors import GroundupError

        raise GroundupError(f"report: run folder {run_dir} does not exist")
    plots = run_dir / "report"
    plots.mkdir(exist_ok=True)
    md = [f"# {title}", "", f"Run folder: `{run_dir}`. Every figure below comes from this run's own files.", ""]

    timings_path = run_dir / "speedrun.json"
    if timings_path.is_file():
        timings = json.loads(timings_path.read_text())
        timed = {k: v for k, v in timings.items() if v.get("seconds")}
        md += ["## Time per stage", "", "| stage | seconds |", "|---|---:|"]
        md += [f"| {name} | {entry['seconds']:.1f} |" for name, entry in timed.items()]
        md += [f"| **total** | **{sum(e['seconds'] for e in timed.values()):.1f}** |", ""]
        if timed:
            plot_stage_times(timed, plots / "stage_times.png")
            md += ["![time per stage](report/stage_times.png)", ""]

    curves = _log_series(run_dir / "base" / "pretrain_log.jsonl", ("loss", "val_loss"))
    if curves:
        plot_curves(curves, "loss (nats/token)", plots / "pretrain_loss.png")
        md += ["## Pretraining", "", "![pretraining loss](report/pretrain_loss.png)", ""]
        bpb = _log_series(run_dir / "base" / "pretrain_log.jsonl", ("val_bpb",))
        if bpb:
            plot_curves(bpb, "validation bits per byte", plots / "pretrain_bpb.png")
            md += ["![bits per byte](report/pretrain_bpb.png)", ""]

    finetune = {}
    for stage in ("sft", "sft-idk", "sft-idk-surprisal", "dpo"):
        series = _log_series(run_dir / stage / "train_log.jsonl", ("loss",))
        if series:
            finetune[stage] = series["loss"]
    if finetune:
        plot_curves(finetune, "training loss", plots / "finetune_loss.png")
        md += ["## Fine-tuning", "", "![SFT and DPO losses](report/finetune_loss.png)", ""]

    arms = load_eval(run_dir / "eval")
    kinds = {kind: {k: v for k, v in arms.items() if split_eval_name(k)[1] == kind} for kind in EVAL_KINDS}
    closed, heldout = kinds[""], kinds["-heldout"]
    if closed:
        md += ["## Honesty: what each arm knows, and when it makes things up", "",
               "Graded correct / incorrect / refused on the eval pool (people never seen in fine-tuning), per "
               "knowledge tier: *frequent* people were in many pretraining documents, *rare* in one to three, "
               "*unseen* in none (their questions are unanswerable).", ""]
        md += honesty_table(closed) + [""]
        plot_outcomes({k: v["predictions"] for k, v in closed.items()}, plots / "outcomes.png")
        plot_tradeoff({k: v["metrics"] for k, v in closed.items()}, plots / "tradeoff.png")
        md += ["![outcomes per arm and tier](report/outcomes.png)", "",
               "![accuracy vs refusal](report/tradeoff.png)", ""]
        md += confusion_section(closed, run_dir / "data")
        if heldout:
            md += ["### Held-out phrasings", "", "The same people asked with question templates never used in "
                   "training.", ""] + honesty_table(heldout) + [""]
            plot_outcomes({k: v["predictions"] for k, v in heldout.items()}, plots / "outcomes_heldout.png")
            md += ["![outcomes, held-out phrasings](report/outcomes_heldout.png)", ""]
        md += selective_section(closed, min_answer_prob, plots)
    if kinds["-identity"]:
        md += identity_section(kinds["-identity"])
    if kinds["-open-book"]:
        md += open_book_section(closed, kinds["-open-book"], plots)
    if arms:
        rows = [(arm, check_targets(arms[arm]["metrics"])) for arm in [*closed, *heldout]
                if split_eval_name(arm)[0] in REFUSING_ARMS]
        rows += [(f"{arm}, min_answer_prob {min_answer_prob}",
                  check_targets(_gated_metrics(arms[arm], min_answer_prob)))
                 for arm in closed if arm in REFUSING_ARMS and _has_answer_prob(arms[arm])]
        rows += [(model, assistant_targets(arms, model)) for model in ARM_ORDER if model != "base"]
        md += ["## Targets", "", "| arm | target | value | met |", "|---|---|---:|---|"]
        md += [f"| {arm} | {label} {comparison} | {fmt(value)} | {'–' if met is None else ('yes' if met else '**no**')} |"
               for arm, results in rows for label, comparison, value, met in results]
        md.append("")

    _cards_with_results(run_dir, arms)
    path = run_dir / "report.md"
    staging = run_dir / ".report.md.tmp"
    staging.write_text("\n".join(md) + "\n")
    staging.replace(path)  # atomic: the speedrun treats an existing report.md as complete
    return path


def _cards_with_results(run_dir: Path, arms: dict[str, dict[str, Any]]) -> None:
    """Every evaluated model folder of the run gets its figures in its card's `model-index`."""
    from groundup.core.model_card import add_eval_results

    for arm, data in arms.items():
        model, kind = split_eval_name(arm)
        add_eval_results(run_dir / model, data["metrics"], EVAL_KINDS[kind].about, f"groundup-{run_dir.name}-{model}")


def parse_args(argv: list[str] | None = None) -> tuple:
    from groundup.core.configs import parse_config

    return parse_config([ReportArguments], argv)


def main(argv: list[str] | None = None) -> Path:
    from groundup.core.configs import require

    (args,) = parse_args(argv)
    require("report", {"run_dir": args.run_dir})
    path = write_report(args.run_dir, args.title, args.min_answer_prob)
    print(f"report: {path}")
    return path
