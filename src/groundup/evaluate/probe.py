"""`groundup probe`: what does the model know? Sample it k times per question, label each question, write the data
that teaches it to say "I don't know" where it doesn't.

    python recipes/probe.py --config recipes/tiny/probe.yaml

After the Llama 3 paper's factuality recipe (section 4.3.6: sample several answers, refuse where the model is
consistently wrong) and Gekhman et al. 2024 (SliCK: relabel what the model does not know as "I don't know"):

1. For every probe-pool question: the greedy answer plus `num_samples` sampled answers at `temperature`.
2. Per question: `p_correct` (share of samples graded correct), `p_refused`, `entropy` (nats, over answer clusters:
   the candidate values a sample names, or "refused"/"empty"/its normalised text), `agreement` (share of samples in
   the greedy answer's cluster: a confidence that needs no gold), and the SliCK category.
3. Label: **known** when p_correct >= `known_min_p_correct` (and the greedy answer is correct, if
   `known_requires_greedy`); **unknown** when p_correct <= `unknown_max_p_correct` and the greedy answer is not correct;
   otherwise **borderline**. An unanswerable question (gold null) is always unknown.
4. Write `idk_sft.jsonl` (known -> the answer sentence, unknown -> the canonical refusal, borderline per `borderline`,
   plus optionally the SFT pool's questions so IDK-SFT does not forget how to answer) and `dpo_pairs.jsonl` (unknown:
   refusal > the model's own sampled wrong answer; known: correct answer > refusal, so DPO cannot win by refusing;
   with `dpo_balance`, the rarer preference's pairs repeat until both are as many, so it cannot win by answering).
"""

from __future__ import annotations

import json
import math
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from groundup.core.chat import REFUSAL, conversation, preference_pair
from groundup.core.errors import GroundupError
from groundup.core.jsonl import write_jsonl
from groundup.core.grading import CORRECT, INCORRECT, REFUSED, auroc, grade, mentioned, normalise
from groundup.data.schema import Schema
from groundup.data.schema import answer_text as _say

LABELS = ("known", "borderline", "unknown")
BORDERLINE_CHOICES = ("drop", "answer", "refuse")
FALLBACK_CHOICES = ("fabricate", "skip")


@dataclass
class ProbeArguments:
    """`groundup probe`: sample the model k times per probe question; write IDK-SFT data and DPO pairs."""

    model: str | None = field(default=None, metadata={"help": "The model to probe, usually the SFT model (required)."})
    questions: str | None = field(default=None, metadata={"help": "Probe-pool question file, eval format (required)."})
    output_dir: str | None = field(default=None, metadata={"help": "Folder for probe outputs (required)."})
    overwrite: bool = field(default=False, metadata={"help": "Replace a non-empty output folder."})
    schema: str = field(default="auto", metadata={"help": "schema.json with candidate values; 'auto' or 'none'."})
    num_samples: int = field(default=10, metadata={"help": "Sampled answers per question (besides the greedy one)."})
    temperature: float = field(default=0.7, metadata={"help": "Sampling temperature."})
    top_p: float = field(default=1.0, metadata={"help": "Nucleus sampling."})
    max_new_tokens: int = field(default=32, metadata={"help": "Answers are one sentence: ~20 tokens."})
    batch_size: int = field(default=64, metadata={"help": "Prompts per greedy call; sampled rows per call."})
    seed: int = field(default=0, metadata={"help": "Sampling and shuffling seed."})
    limit: int | None = field(default=None, metadata={"help": "Probe only the first N questions."})
    known_min_p_correct: float = field(default=0.6, metadata={"help": "known: at least this share of samples right."})
    known_requires_greedy: bool = field(default=True, metadata={"help": "known also needs a correct greedy answer."})
    unknown_max_p_correct: float = field(default=0.1, metadata={"help": "unknown: at most this share right (and "
                                                                         "greedy wrong)."})
    borderline: str = field(default="drop", metadata={"help": "Borderline questions in IDK-SFT: drop, answer or "
                                                              "refuse. (No DPO pairs for borderline.)"})
    sft_questions: str | None = field(
        default=None,
        metadata={"help": "Also put the SFT pool's questions into idk_sft.jsonl (labelled by tier, not probed) so "
                          "IDK-SFT keeps answering (a world's questions/sft.jsonl); unset or null: left out."})
    sft_known_tiers: list[str] = field(default_factory=lambda: ["frequent"],
                                       metadata={"help": "SFT-pool tiers answered in idk_sft.jsonl."})
    sft_unknown_tiers: list[str] = field(default_factory=lambda: ["unseen"],
                                         metadata={"help": "SFT-pool tiers refused in idk_sft.jsonl (gold null "
                                                           "is always refused)."})
    rephrasings: str | None = field(
        default=None,
        metadata={"help": "Question file whose rows name (`rephrases`) a probe or SFT-pool question id: each joins "
                          "idk_sft.jsonl with that question's reply (a world's questions/rephrased.jsonl)."})
    rephrase_refusals: bool = field(
        default=True,
        metadata={"help": "Rephrase refused questions too. Off: only answered ones, so a new wording always "
                          "comes with an answer, and the model learns to answer unseen people asked in new words."})
    sft_questions_in_dpo: bool = field(default=False, metadata={"help": "Also make DPO pairs from the SFT pool "
                                                                        "(rejected answers are fabricated)."})
    dpo_balance: bool = field(
        default=True,
        metadata={"help": "Repeat pairs of the rarer preference (refusal or answer chosen) until both are as many, so "
                          "DPO cannot win by leaning either way; off: every pair once."})
    balance_name_parts: bool = field(
        default=False,
        metadata={"help": "Repeat IDK-SFT rows so that no first or last name predicts the reply: for each name part, "
                          "rows of the reply it has too few of are repeated (up to 4 times each) until its refused "
                          "share is the data's. Rows without a `name` are left as they are."})
    dpo_fallback_rejected: str = field(
        default="fabricate",
        metadata={"help": "Unknown question whose samples hold no wrong answer (all refusals): fabricate one from "
                          "another candidate value, or skip the pair."})
    device: str = field(default="auto", metadata={"help": "auto, cpu, cuda ..."})
    num_threads: int | None = field(default=None, metadata={"help": "CPU threads for generation (null: torch's "
                                                                     "default; 1 is fastest for tiny models)."})
    dtype: str = field(default="auto", metadata={"help": "auto (fp32 on CPU), float32, bfloat16, float16."})
    trust_remote_code: bool = field(default=False, metadata={"help": "Allow a Hub model's own code."})
    progress: bool = field(default=True, metadata={"help": "Show progress bars."})

    def __post_init__(self):
        if self.num_samples < 1:
            raise ValueError(f"num_samples must be at least 1, got {self.num_samples}")
        from groundup.evaluate.evaluation import check_generation_numbers

        check_generation_numbers(self)  # the probe always samples: temperature > 0
        if not 0 <= self.unknown_max_p_correct < self.known_min_p_correct <= 1:
            raise ValueError("need 0 <= unknown_max_p_correct < known_min_p_correct <= 1")
        if self.borderline not in BORDERLINE_CHOICES:
            raise ValueError(f"borderline must be one of {BORDERLINE_CHOICES}, got {self.borderline!r}")
        if self.dpo_fallback_rejected not in FALLBACK_CHOICES:
            raise ValueError(f"dpo_fallback_rejected must be one of {FALLBACK_CHOICES}")
        for key in ("sft_questions", "rephrasings"):
            value = getattr(self, key)
            if isinstance(value, str) and value.lower() in ("", "none", "null"):
                setattr(self, key, None)


# --------------------------------------------------------------------------------------------------------------------
# Per-question statistics and labels (pure: a test drives them with a scripted generator)


def answer_cluster(response: str, response_grade: str, candidates: Sequence[str]) -> str:
    """Which answer a response gives, for entropy and agreement: the candidate values it names, else its kind."""
    if response_grade == REFUSED:
        return "<refused>"
    if not response.strip():
        return "<empty>"
    named = mentioned(response, candidates)
    if named:
        return "|".join(sorted(normalise(c) for c in named))
    return normalise(response)


def entropy(clusters: Sequence[str]) -> float:
    """Shannon entropy in nats of the empirical distribution of answer clusters."""
    counts = Counter(clusters)
    n = sum(counts.values())
    return round(-sum(c / n * math.log(c / n) for c in counts.values()), 6) if n else 0.0


def slick_category(greedy_correct: bool, p_correct: float) -> str:
    """Gekhman et al. 2024's SliCK categories, with one greedy answer standing in for their several."""
    if greedy_correct:
        return "highly_known" if p_correct == 1.0 else "maybe_known"
    return "weakly_known" if p_correct > 0 else "unknown"


def label(answerable: bool, greedy_correct: bool, p_correct: float, args: ProbeArguments) -> str:
    if not answerable:
        return "unknown"
    if p_correct >= args.known_min_p_correct and (greedy_correct or not args.known_requires_greedy):
        return "known"
    if p_correct <= args.unknown_max_p_correct and not greedy_correct:
        return "unknown"
    return "borderline"


def probe_questions(generator, rows: Sequence[dict[str, Any]], candidates: Sequence[Sequence[str]],
                    args: ProbeArguments) -> list[dict[str, Any]]:
    """Greedy + `num_samples` sampled answers per question, graded, with stats and a label. One dict per question."""
    questions = [r["question"] for r in rows]
    greedy = generator.generate(questions, num_samples=1, do_sample=False, desc="probe greedy", seed=args.seed)
    sampled = generator.generate(questions, num_samples=args.num_samples, do_sample=True, desc="probe samples",
                                 seed=args.seed)
    records = []
    for row, cands, g, samples in zip(rows, candidates, greedy, sampled):
        gold, aliases = row["answer"], row.get("aliases") or []
        if len(samples) != args.num_samples:
            raise RuntimeError(f"generator gave {len(samples)} samples for {row['id']}, expected {args.num_samples}")
        g_grade = grade(g[0], gold, aliases, cands)
        s_grades = [grade(s, gold, aliases, cands) for s in samples]
        clusters = [answer_cluster(s, sg, cands) for s, sg in zip(samples, s_grades)]
        greedy_cluster = answer_cluster(g[0], g_grade, cands)
        p_correct = s_grades.count(CORRECT) / len(samples)
        record = {
            "id": row["id"],
            "question": row["question"],
            "gold": gold,
            **{k: row[k] for k in ("tier", "name", "attribute") if k in row},
            "greedy": g[0],
            "greedy_grade": g_grade,
            "samples": list(samples),
            "sample_grades": s_grades,
            "p_correct": round(p_correct, 6),
            "p_refused": round(s_grades.count(REFUSED) / len(samples), 6),
            "entropy": entropy(clusters),
            "agreement": round(clusters.count(greedy_cluster) / len(samples), 6),
            "slick": slick_category(g_grade == CORRECT, p_correct),
            "label": label(gold is not None, g_grade == CORRECT, p_correct, args),
        }
        records.append(record)
    return records


# --------------------------------------------------------------------------------------------------------------------
# Training data from the labels


def answer_text(row: dict[str, Any], schema: Schema | None = None) -> str:
    """What the assistant should say when it knows: the schema's answer sentence, or the gold answer itself."""
    return _say(row, row["gold"], schema)


def _chat(question: str, answer: str) -> dict[str, Any]:
    return {"messages": conversation(question, answer)}


def balance_pairs(pairs: Sequence[dict[str, Any]], rng: random.Random) -> list[dict[str, Any]]:
    """`pairs` plus repeats of the rarer preference's pairs (refusal chosen, or answer chosen), drawn without
    replacement in a shuffled cycle, until both preferences are as many. Why: most probe pairs prefer an answer, and DPO
    on them buys fewer false refusals with more answers to unseen people; balanced, it can gain on both. A weighted
    loss would do the same; TRL's DPOTrainer takes no per-pair weights, so the data carries them."""
    refuse = [p for p in pairs if p["chosen"][-1]["content"] == REFUSAL]
    answer = [p for p in pairs if p["chosen"][-1]["content"] != REFUSAL]
    small, large = sorted((refuse, answer), key=len)
    if not small:
        return list(pairs)
    order = small[:]
    rng.shuffle(order)
    return [*pairs, *(order[i % len(order)] for i in range(len(large) - len(small)))]


NAME_PART_MAX_REPEATS = 4


def name_part_repeats(names: Sequence[str | None], refused: Sequence[bool], rounds: int = 20,
                      max_repeats: float = NAME_PART_MAX_REPEATS) -> list[float]:
    """How many times to put each row in the data (>= 1) so that each first and each last name carries the data's own
    share of refusals. Why: with a few hundred people built from a pool of name parts, chance makes some parts mostly
    refused and others mostly answered, a shortcut a model can learn in place of what it knows. Raking (iterative
    proportional fitting) over the two margins, upward only (no row is dropped), capped at `max_repeats`."""
    target = sum(refused) / max(len(refused), 1)
    weights = [1.0] * len(names)
    if not 0 < target < 1:
        return weights
    groups: dict[tuple[int, str], list[int]] = {}
    for i, name in enumerate(names):
        parts = (name or "").split()
        if parts:
            groups.setdefault((0, parts[0]), []).append(i)
            groups.setdefault((1, parts[-1]), []).append(i)
    for _ in range(rounds):
        for members in groups.values():
            r = sum(weights[i] for i in members if refused[i])
            a = sum(weights[i] for i in members if not refused[i])
            if not r or not a:
                continue  # a part with one reply only: no repeat can balance it
            if r / (r + a) < target:
                scale, side = target * a / ((1 - target) * r), True
            else:
                scale, side = (1 - target) * r / (target * a), False
            for i in members:
                if refused[i] == side:
                    weights[i] = min(weights[i] * scale, max_repeats)
    return weights


def repeat_rows(rows: Sequence[Any], weights: Sequence[float], rng: random.Random) -> list[Any]:
    """Each row floor(w) times, and once more with probability w - floor(w)."""
    out = []
    for row, w in zip(rows, weights):
        out.extend([row] * (int(w) + (rng.random() < w - int(w))))
    return out


def fabricated_wrong_answer(row: dict[str, Any], candidates: Sequence[str], rng: random.Random,
                            schema: Schema | None = None) -> str | None:
    """A confident wrong answer in the answer format, from another candidate value; None if there is none."""
    gold = normalise(row["gold"]) if row.get("gold") is not None else None
    others = [c for c in candidates if normalise(c) != gold]
    if not others:
        return None
    return answer_text({**row, "gold": rng.choice(others)}, schema)


def own_wrong_answer(record: dict[str, Any], candidates: Sequence[str] = ()) -> str | None:
    """The model's most frequent sampled (else greedy) answer that is wrong and not a refusal; answers that name a
    candidate value (a hallucination in the answer format) are preferred over ones that name none."""
    wrong = [s for s, g in zip(record["samples"], record["sample_grades"]) if g == INCORRECT and s.strip()]
    if record["greedy_grade"] == INCORRECT and record["greedy"].strip():
        wrong.append(record["greedy"])
    if not wrong:
        return None
    in_format = [s for s in wrong if mentioned(s, candidates)]
    return Counter(in_format or wrong).most_common(1)[0][0]


def build_training_data(records: Sequence[dict[str, Any]], candidates: Sequence[Sequence[str]], args: ProbeArguments,
                        sft_rows: Sequence[dict[str, Any]] = (), sft_candidates: Sequence[Sequence[str]] = (),
                        rephrasings: Sequence[dict[str, Any]] = (), schema: Schema | None = None,
                        sft_schema: Schema | None = None):
    """(idk_sft rows, dpo pairs, stats). Rows: {"messages": [...]}; pairs: {"prompt", "chosen", "rejected"}.

    Answers are said in the answer sentence of `schema` (of the probed questions' data folder; `sft_schema`, default
    `schema`, for the SFT pool's), else as the gold answer itself.

    A `rephrasings` row joins IDK-SFT with the reply of the question it rephrases (answers only, without
    `rephrase_refusals`); none when that question is left out."""
    rng = random.Random(args.seed)
    sft_schema = schema if sft_schema is None else sft_schema
    idk, pairs = [], []
    idk_names: list[str | None] = []  # whom each IDK-SFT row asks about (balance_name_parts)
    stats = Counter()
    rephrased: dict[str, list[str]] = {}
    for row in rephrasings:
        rephrased.setdefault(row["rephrases"], []).append(row["question"])

    def add(question_id: str, question: str, reply: str, kind: str, name: str | None) -> None:
        idk.append(_chat(question, reply))
        idk_names.append(name)
        stats[kind] += 1
        if reply == REFUSAL and not args.rephrase_refusals:
            return
        for other in rephrased.get(question_id, ()):
            idk.append(_chat(other, reply))
            idk_names.append(name)
            stats["idk_sft_rephrased"] += 1

    for record, cands in zip(records, candidates):
        lab = record["label"]
        if lab == "known" or (lab == "borderline" and args.borderline == "answer"):
            add(record["id"], record["question"], answer_text(record, schema), "idk_sft_probe_answer",
                record.get("name"))
        elif lab == "unknown" or (lab == "borderline" and args.borderline == "refuse"):
            add(record["id"], record["question"], REFUSAL, "idk_sft_probe_refusal", record.get("name"))
        if lab == "known":
            pairs.append(preference_pair(record["question"], answer_text(record, schema), REFUSAL))
            stats["dpo_known"] += 1
        elif lab == "unknown":
            rejected = own_wrong_answer(record, cands)
            if rejected is not None:
                stats["dpo_unknown_own_answer"] += 1
            elif args.dpo_fallback_rejected == "fabricate":
                rejected = fabricated_wrong_answer(record, cands, rng, schema)
                if rejected is not None:
                    stats["dpo_unknown_fabricated"] += 1
            if rejected is None:
                stats["dpo_unknown_skipped"] += 1
            else:
                pairs.append(preference_pair(record["question"], REFUSAL, rejected))
    known_tiers, unknown_tiers = set(args.sft_known_tiers), set(args.sft_unknown_tiers)
    for row, cands in zip(sft_rows, sft_candidates):
        item = {**row, "gold": row["answer"]}
        if row["answer"] is None or row.get("tier") in unknown_tiers:
            add(row["id"], row["question"], REFUSAL, "idk_sft_sft_pool_refusal", row.get("name"))
            if args.sft_questions_in_dpo:
                rejected = fabricated_wrong_answer(item, cands, rng, sft_schema)
                if rejected is not None:
                    pairs.append(preference_pair(row["question"], REFUSAL, rejected))
                    stats["dpo_sft_pool_unknown"] += 1
        elif row.get("tier") in known_tiers:
            add(row["id"], row["question"], answer_text(item, sft_schema), "idk_sft_sft_pool_answer", row.get("name"))
            if args.sft_questions_in_dpo:
                pairs.append(preference_pair(row["question"], answer_text(item, sft_schema), REFUSAL))
                stats["dpo_sft_pool_known"] += 1
        else:
            stats["idk_sft_sft_pool_dropped"] += 1
    if args.dpo_balance:
        # own generator: balancing leaves the IDK-SFT rows (and their order) exactly as they are without it
        balanced = balance_pairs(pairs, random.Random(f"{args.seed}-dpo-balance"))
        stats["dpo_balance_repeats"] = len(balanced) - len(pairs)
        pairs = balanced
    if args.balance_name_parts:
        # own generator, as for DPO balancing
        weights = name_part_repeats(idk_names, [row["messages"][-1]["content"] == REFUSAL for row in idk])
        before = len(idk)
        idk = repeat_rows(idk, weights, random.Random(f"{args.seed}-name-parts"))
        stats["idk_sft_name_part_repeats"] = len(idk) - before
    rng.shuffle(idk)
    rng.shuffle(pairs)
    return idk, pairs, dict(sorted(stats.items()))


def probe_summary(records: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Label counts overall and per tier, and how well the probe's confidences predict a correct greedy answer."""
    present = list(dict.fromkeys(r.get("tier") for r in records))
    tiers = [t for t in ("frequent", "rare", "unseen") if t in present] + [
        t for t in present if t not in ("frequent", "rare", "unseen")]
    by_tier = {}
    for tier in tiers:
        group = [r for r in records if r.get("tier") == tier]
        by_tier[str(tier)] = {
            "n": len(group),
            "labels": {lab: sum(r["label"] == lab for r in group) for lab in LABELS},
            "greedy_accuracy": round(sum(r["greedy_grade"] == CORRECT for r in group) / len(group), 6),
            "mean_p_correct": round(sum(r["p_correct"] for r in group) / len(group), 6),
            "mean_entropy": round(sum(r["entropy"] for r in group) / len(group), 6),
        }
    correct = [r["greedy_grade"] == CORRECT for r in records]
    return {
        "n": len(records),
        "labels": {lab: sum(r["label"] == lab for r in records) for lab in LABELS},
        "slick": dict(Counter(r["slick"] for r in records)),
        "by_tier": by_tier,
        # Confidence signals vs the greedy answer's correctness (on the probed questions themselves).
        "auroc_p_correct_vs_greedy_correct": auroc([r["p_correct"] for r in records], correct),
        "auroc_agreement_vs_greedy_correct": auroc([r["agreement"] for r in records], correct),
        "auroc_neg_entropy_vs_greedy_correct": auroc([-r["entropy"] for r in records], correct),
    }


def load_rephrasings(path: str, sources: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rephrasing rows of `path` whose `rephrases` id is among `sources` (the probed and SFT-pool questions; with
    `limit` some are not); an error if a row lacks the key or none matches, which means the wrong file."""
    from groundup.evaluate.evaluation import load_questions

    rows = load_questions(path)
    missing = [r["id"] for r in rows if not r.get("rephrases")]
    if missing:
        raise GroundupError(f"{path}: row {missing[0]} has no 'rephrases' key (the id of the question it rephrases)")
    ids = {r["id"] for r in sources}
    kept = [r for r in rows if r["rephrases"] in ids]
    if rows and not kept:
        raise GroundupError(f"{path}: no row rephrases a question of the probe or SFT-pool files")
    return kept


def parse_args(argv: list[str] | None = None) -> tuple:
    from groundup.core.configs import parse_config

    return parse_config([ProbeArguments], argv)


def main(argv: list[str] | None = None) -> Path:
    from groundup.core.configs import save_config
    from groundup.data.schema import resolve
    from groundup.evaluate.evaluation import candidates_for, load_questions
    from groundup.evaluate.generation import HFGenerator, torch_threads
    from groundup.core.outputs import atomic_output_dir, check_output_dir

    from groundup.core.configs import require

    (args,) = parse_args(argv)
    require("probe", {"model": args.model, "questions": args.questions, "output_dir": args.output_dir})
    check_output_dir(args.output_dir, args.overwrite, inputs={
        "model": args.model, "questions": args.questions, "sft_questions": args.sft_questions,
        "rephrasings": args.rephrasings})
    rows = load_questions(args.questions, args.limit)
    schema = resolve(args.schema, args.questions)
    candidates = candidates_for(rows, schema.attributes if schema else None)
    sft_rows, sft_candidates, sft_schema = [], [], None
    if args.sft_questions:
        sft_rows = load_questions(args.sft_questions)
        probe_names = {r.get("name") for r in rows if r.get("name")}
        if probe_names & {r.get("name") for r in sft_rows}:
            raise GroundupError(f"{args.sft_questions} shares people with {args.questions}: pools must be disjoint")
        sft_schema = resolve(args.schema, args.sft_questions)
        sft_candidates = candidates_for(sft_rows, sft_schema.attributes if sft_schema else None)
    else:  # said, not silent: the presets pass the SFT pool, and IDK-SFT without it forgets how to answer
        print("probe: no --sft_questions: idk_sft.jsonl holds the probed questions only", flush=True)
    rephrasings = load_rephrasings(args.rephrasings, [*rows, *sft_rows]) if args.rephrasings else []
    generator = HFGenerator.load(args.model, trust_remote_code=args.trust_remote_code, dtype=args.dtype,
                                 device=args.device, max_new_tokens=args.max_new_tokens, batch_size=args.batch_size,
                                 temperature=args.temperature, top_p=args.top_p, progress=args.progress)
    with torch_threads(args.num_threads):
        start = time.perf_counter()
        records = probe_questions(generator, rows, candidates, args)
        seconds = time.perf_counter() - start
    idk, pairs, stats = build_training_data(records, candidates, args, sft_rows, sft_candidates, rephrasings, schema,
                                            sft_schema)
    summary = {"model": args.model, "questions": args.questions, **probe_summary(records), "training_data": stats,
               "idk_sft_rows": len(idk), "dpo_pairs": len(pairs),
               "timing": {"generate_seconds": round(seconds, 3),
                          "generations_per_second": round(len(rows) * (1 + args.num_samples) / max(seconds, 1e-9), 1)}}
    with atomic_output_dir(args.output_dir, args.overwrite) as out:
        write_jsonl(out / "probe.jsonl", records)
        write_jsonl(out / "idk_sft.jsonl", idk)
        write_jsonl(out / "dpo_pairs.jsonl", pairs)
        (out / "probe_metrics.json").write_text(json.dumps(summary, indent=1, ensure_ascii=False) + "\n")
        save_config(out, args)
    labels = summary["labels"]
    print(f"probe {args.model}: {len(records)} questions x (1 greedy + {args.num_samples} samples) in {seconds:.1f}s; "
          f"{labels['known']} known, {labels['borderline']} borderline, {labels['unknown']} unknown; "
          f"{len(idk)} IDK-SFT rows, {len(pairs)} DPO pairs -> {args.output_dir}")
    return Path(args.output_dir)
