"""`groundup eval`: ask a model every question of a file, grade each answer correct / incorrect / refused.

    groundup eval --model runs/tiny/dpo --questions runs/tiny/data/questions/eval.jsonl --output runs/tiny/eval/dpo
    python recipes/evaluate.py --config recipes/tiny/eval.yaml --model runs/tiny/sft \
        --questions runs/tiny/data/questions/eval.jsonl --output_dir runs/tiny/eval/sft

Works on any causal LM with a chat template (a folder or a Hub id; `trust_remote_code` stays off unless set), and on
a base model with `prompt_format: few_shot` (plain-text Q/A examples) or, for world questions, `cloze` (the model
completes "<name> was born in the city of"; the response graded is the whole sentence; it can never refuse). Question file: JSON lines
`{"id": str, "question": str, "answer": str | null, "aliases": [str], "tier": str, ...}`; `answer: null` means
unanswerable; `aliases` and `tier` may be absent; a row's `system` is its system message (chat format; in place of
`system_prompt`); other keys are carried into predictions.jsonl untouched.

Candidate values (the "no other candidate appears" half of the correct rule), per question, first that applies:
1. the row's own `candidates` list;
2. the schema's values for the row's `attribute` (`schema: auto` finds `schema.json` of the data folder the question
   file lives in, `<folder>/questions/*.jsonl`; or give a path; `none` turns it off; `groundup.data.schema`);
3. every gold answer and alias of the same `attribute` in the file;
4. none: then only the gold and aliases are looked for.

Greedy decoding also records, per answer, `answer_prob`: the probability of its least likely token (for a world answer,
usually the value; `generation.ChosenTokenProbability`), and metrics.json its AUROC for telling right answers from
wrong ones. `min_answer_prob` turns that into selective answering: an answer below it becomes the canonical refusal
(graded refused; the answer given stays in `raw_response` / `raw_grade`).

Writes `metrics.json` (overall and per tier, with Wilson 95% intervals), `predictions.jsonl` and `recipe.yaml`.
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from groundup.core.chat import REFUSAL, REFUSAL_LEXICON
from groundup.core.errors import GroundupError
from groundup.core.jsonl import write_jsonl
from groundup.data.schema import resolve
from groundup.evaluate.generation import torch_threads
from groundup.core.grading import abstain_below, answer_prob_auroc, grade, metrics_from_predictions, over_conservativeness

PREDICTION_KEYS = ("id", "question", "gold", "response", "grade", "tier")


@dataclass
class EvalArguments:
    """`groundup eval`: grade a model's answers (correct / incorrect / refused) and write metrics.json."""

    model: str | None = field(default=None, metadata={"help": "Model folder or Hub id (any causal LM)."})
    questions: str | None = field(default=None, metadata={"help": "Question file (JSON lines: id, question, answer "
                                                                    "or null, aliases, tier)."})
    output_dir: str | None = field(default=None, metadata={"help": "Folder for metrics.json and predictions.jsonl.",
                                                           "aliases": ["--output"]})
    overwrite: bool = field(default=False, metadata={"help": "Replace a non-empty output folder."})
    arm: str | None = field(default=None, metadata={"help": "A label for this model in metrics.json (e.g. sft)."})
    schema: str = field(default="auto", metadata={"help": "schema.json with candidate values (and answer sentences) "
                                                           "per attribute; 'auto' (the question file's data folder; "
                                                           "for few-shot examples, the few-shot file's) or 'none'."})
    reference_predictions: str | None = field(
        default=None, metadata={"help": "predictions.jsonl of a reference arm (e.g. vanilla SFT): adds paired "
                                        "over-conservativeness to metrics.json."})
    prompt_format: str = field(default="chat", metadata={"help": "chat (chat template), few_shot (Q/A plain text) or "
                                                                  "cloze (world questions: complete the answer "
                                                                  "sentence; for a base model)."})
    few_shot_file: str | None = field(default=None, metadata={"help": "Training question file for few-shot "
                                                                      "examples (never the eval people)."})
    few_shot_n: int = field(default=3, metadata={"help": "Number of few-shot examples."})
    few_shot_include_refusal: bool = field(default=False, metadata={"help": "Add one unanswerable example answered "
                                                                            "with the canonical refusal."})
    system_prompt: str | None = field(default=None, metadata={"help": "Optional system message (chat format)."})
    max_new_tokens: int = field(default=32, metadata={"help": "Answers are one sentence: ~20 tokens."})
    batch_size: int = field(default=64, metadata={"help": "Prompts per generate call."})
    do_sample: bool = field(default=False, metadata={"help": "Greedy by default; sample at `temperature` if set."})
    temperature: float = field(default=0.7, metadata={"help": "Sampling temperature (with do_sample)."})
    top_p: float = field(default=1.0, metadata={"help": "Nucleus sampling (with do_sample)."})
    seed: int = field(default=0, metadata={"help": "Seed for sampling and few-shot selection."})
    min_answer_prob: float | None = field(
        default=None, metadata={"help": "Selective answering (greedy only): an answer whose least likely token had "
                                        "probability below this becomes the canonical refusal; what the model said "
                                        "stays in predictions.jsonl as raw_response. null: off."})
    limit: int | None = field(default=None, metadata={"help": "Evaluate only the first N questions."})
    device: str = field(default="auto", metadata={"help": "auto, cpu, cuda, cuda:1, mps ..."})
    num_threads: int | None = field(default=None, metadata={"help": "CPU threads for generation (null: torch's "
                                                                     "default; 1 is fastest for tiny models)."})
    dtype: str = field(default="auto", metadata={"help": "auto (fp32 on CPU), float32, bfloat16, float16."})
    trust_remote_code: bool = field(default=False, metadata={"help": "Allow a Hub model's own code (off by default)."})
    revision: str | None = field(default=None, metadata={"help": "Hub revision of the model."})
    progress: bool = field(default=True, metadata={"help": "Show a progress bar."})

    def __post_init__(self):
        check_generation_numbers(self)
        if self.few_shot_n < 0:
            raise ValueError(f"few_shot_n must be 0 or more, got {self.few_shot_n}")


def check_generation_numbers(args) -> None:
    """Numbers generation would take and fail on after loading the model, or run with silently (`limit: 0` graded
    one question). parse_config turns the ValueError into one line."""
    for key in ("batch_size", "max_new_tokens", "limit", "num_threads"):
        value = getattr(args, key, None)
        if value is not None and value < 1:
            raise ValueError(f"{key} must be at least 1{' (or null: all)' if key == 'limit' else ''}, got {value}")
    if getattr(args, "do_sample", True) and not args.temperature > 0:
        raise ValueError(f"temperature must be positive when sampling, got {args.temperature} (greedy: do_sample "
                         "false)")
    if not 0 < args.top_p <= 1:
        raise ValueError(f"top_p must be in (0, 1], got {args.top_p}")


# --------------------------------------------------------------------------------------------------------------------
# Question files


def load_questions(path: str | Path, limit: int | None = None) -> list[dict[str, Any]]:
    """Read and check a question file; every problem names the file and line."""
    path = Path(path)
    if not path.is_file():
        raise GroundupError(f"question file not found: {path}")
    rows, ids = [], set()
    from groundup.core.jsonl import decode_line

    with path.open("rb") as f:
        for lineno, raw in enumerate(f, 1):
            line = decode_line(raw, path, lineno)
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise GroundupError(f"{path}:{lineno}: not valid JSON ({err.msg})") from None
            if not isinstance(row, dict):
                raise GroundupError(f"{path}:{lineno}: expected a JSON object")
            for key in ("id", "question", "answer"):
                if key not in row:
                    raise GroundupError(f"{path}:{lineno}: missing key {key!r} (need id, question, answer)")
            if not isinstance(row["question"], str) or not row["question"].strip():
                raise GroundupError(f"{path}:{lineno}: 'question' must be a non-empty string")
            if row["answer"] is not None and not isinstance(row["answer"], str):
                raise GroundupError(f"{path}:{lineno}: 'answer' must be a string or null")
            aliases = row.get("aliases", [])
            if aliases is None:
                aliases = []
            if not isinstance(aliases, list) or not all(isinstance(a, str) for a in aliases):
                raise GroundupError(f"{path}:{lineno}: 'aliases' must be a list of strings")
            row["id"] = str(row["id"])
            if row["id"] in ids:
                raise GroundupError(f"{path}:{lineno}: duplicate id {row['id']!r}")
            ids.add(row["id"])
            rows.append(row)
            if limit is not None and len(rows) >= limit:
                break
    if not rows:
        raise GroundupError(f"question file {path} has no questions")
    return rows


def resolve_schema(schema: str | None, questions_path: str | Path) -> tuple[dict[str, list[str]] | None, str]:
    """Candidate values per attribute from a schema.json, and where they came from."""
    loaded = resolve(schema, questions_path)
    return (loaded.attributes, str(loaded.path)) if loaded is not None else (None, "none")


def candidates_for(rows: Sequence[dict[str, Any]], schema: dict[str, list[str]] | None) -> list[list[str]]:
    """Candidate values for each row (see the module docstring for the order of sources)."""
    inferred: dict[str, set[str]] = defaultdict(set)
    for row in rows:
        if row.get("attribute") is not None and row["answer"] is not None:
            inferred[str(row["attribute"])].update([row["answer"], *(row.get("aliases") or [])])
    result = []
    for row in rows:
        attribute = row.get("attribute")
        if isinstance(row.get("candidates"), list):
            result.append([str(c) for c in row["candidates"]])
        elif attribute is not None and schema is not None and str(attribute) in schema:
            result.append(schema[str(attribute)])
        elif attribute is not None:
            result.append(sorted(inferred.get(str(attribute), ())))
        else:
            result.append([])
    return result


# --------------------------------------------------------------------------------------------------------------------
# Grading a set of responses


def grade_rows(rows: Sequence[dict[str, Any]], responses: Sequence[str],
               candidates: Sequence[Sequence[str]]) -> list[dict[str, Any]]:
    """predictions.jsonl rows: id, question, gold, response, grade, tier (null if the row has none), then the row's
    other keys untouched (a key that clashes with ours is written as `input_<key>`)."""
    predictions = []
    for row, response, cands in zip(rows, responses, candidates):
        pred = {
            "id": row["id"],
            "question": row["question"],
            "gold": row["answer"],
            "response": response,
            "grade": grade(response, row["answer"], row.get("aliases") or [], cands),
            "tier": row.get("tier"),  # always present (null without tiers), so every file has the same columns
        }
        for key, value in row.items():
            if key in ("id", "question", "answer", "tier"):
                continue
            pred[key if key not in pred else f"input_{key}"] = value
        predictions.append(pred)
    return predictions


def build_generator(args: EvalArguments, rows: Sequence[dict[str, Any]]):
    from groundup.core.jsonl import read_jsonl
    from groundup.evaluate.generation import HFGenerator, few_shot_prefix

    prefix = ""
    if args.prompt_format == "few_shot":
        if not args.few_shot_file:
            raise GroundupError("prompt_format few_shot needs few_shot_file (a training question file, e.g. "
                                "runs/tiny/data/questions/sft.jsonl)")
        if not Path(args.few_shot_file).is_file():
            raise GroundupError(f"few_shot_file not found: {args.few_shot_file}")
        eval_names = {r["name"] for r in rows if r.get("name")}
        prefix = few_shot_prefix(read_jsonl(args.few_shot_file), args.few_shot_n, args.few_shot_include_refusal,
                                 seed=args.seed, exclude_names=eval_names,
                                 schema=resolve(args.schema, args.few_shot_file))
    return HFGenerator.load(
        args.model, trust_remote_code=args.trust_remote_code, dtype=args.dtype, device=args.device,
        revision=args.revision, prompt_format=args.prompt_format, few_shot=prefix, system_prompt=args.system_prompt,
        max_new_tokens=args.max_new_tokens, batch_size=args.batch_size, temperature=args.temperature,
        top_p=args.top_p, progress=args.progress)


def run_eval(args: EvalArguments) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Generate, grade, compute metrics. Writes nothing."""
    if args.min_answer_prob is not None:
        if args.do_sample:
            raise GroundupError("min_answer_prob needs greedy decoding (do_sample false): a sampled token's "
                                "probability says how it was drawn, not how sure the model is")
        if not 0.0 <= args.min_answer_prob <= 1.0:
            raise GroundupError(f"min_answer_prob {args.min_answer_prob} is not a probability (0 to 1)")
    rows = load_questions(args.questions, args.limit)
    loaded = resolve(args.schema, args.questions)
    schema, schema_source = (loaded.attributes, str(loaded.path)) if loaded is not None else (None, "none")
    candidates = candidates_for(rows, schema)
    if args.prompt_format == "cloze" and loaded is None:
        raise GroundupError("prompt_format cloze needs the answer sentences of a schema.json (`schema: auto` finds "
                            "the question file's data folder's; or give a path)")
    generator = build_generator(args, rows)
    if args.prompt_format == "cloze":  # the model completes "<name> was born in the city of"
        texts = [loaded.cloze_prefix(r) for r in rows]
    else:
        texts = [r["question"] for r in rows]
    desc, systems = f"eval {args.arm or Path(args.model).name}", [r.get("system") for r in rows]
    with torch_threads(args.num_threads):
        start = time.perf_counter()
        if args.do_sample:
            responses = [a[0] for a in generator.generate(texts, num_samples=1, do_sample=True, desc=desc,
                                                          seed=args.seed, systems=systems)]
            answer_probs = None
        else:  # greedy: also the probability of each answer's least likely token (selective answering)
            responses, answer_probs = generator.generate_with_confidence(texts, desc=desc, systems=systems)
        seconds = time.perf_counter() - start
    if args.prompt_format == "cloze":  # grade (and show) the whole sentence
        responses = [f"{prefix} {response}".rstrip() + "." if response else "" for prefix, response in
                     zip(texts, responses)]
    predictions = grade_rows(rows, responses, candidates)
    if answer_probs is not None:
        for pred, prob in zip(predictions, answer_probs):
            pred["answer_prob"] = prob
    selective: dict[str, Any] = {"answer_prob_auroc": answer_prob_auroc(predictions)} if answer_probs else {}
    if args.min_answer_prob is not None:
        predictions = abstain_below(predictions, args.min_answer_prob)
        selective.update(min_answer_prob=args.min_answer_prob,
                         abstained=sum("raw_response" in p for p in predictions))
    scores = metrics_from_predictions(predictions)
    metrics: dict[str, Any] = {
        "arm": args.arm,
        "model": args.model,
        "questions": str(args.questions),
        "n_questions": len(rows),
        **scores,
        "grading": {
            "candidates_source": schema_source if schema is not None else "row candidates / inferred from the file",
            "refusal": REFUSAL,
            "refusal_lexicon": list(REFUSAL_LEXICON),
        },
        "generation": {"prompt_format": args.prompt_format, "do_sample": args.do_sample,
                       "max_new_tokens": args.max_new_tokens, "batch_size": args.batch_size,
                       "few_shot_n": args.few_shot_n if args.prompt_format == "few_shot" else 0},
        **({"selective_answering": selective} if selective else {}),
        "timing": {"generate_seconds": round(seconds, 3),
                   "questions_per_second": round(len(rows) / max(seconds, 1e-9), 2)},
    }
    if args.reference_predictions:
        from groundup.core.jsonl import read_jsonl

        if not Path(args.reference_predictions).is_file():
            raise GroundupError(f"reference_predictions not found: {args.reference_predictions}")
        metrics["over_conservativeness"] = over_conservativeness(read_jsonl(args.reference_predictions), predictions)
        metrics["over_conservativeness"]["reference"] = str(args.reference_predictions)
    return metrics, predictions


def summary(metrics: dict[str, Any]) -> str:
    def fmt(value):
        return "n/a" if value is None else f"{value:.3f}"

    lines = []
    for name, block in [("overall", metrics["overall"]), *metrics["by_tier"].items()]:
        lines.append(f"  {name:>10}: n={block['counts']['n']:<4} acc={fmt(block['accuracy_answerable'])} "
                     f"false_refusal={fmt(block['false_refusal_rate_answerable'])} "
                     f"refusal_unans={fmt(block['refusal_rate_unanswerable'])} "
                     f"correct|attempted={fmt(block['correct_given_attempted'])}")
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> tuple:
    from groundup.core.configs import parse_config

    return parse_config([EvalArguments], argv)


def main(argv: list[str] | None = None) -> Path:
    from groundup.core.configs import save_config
    from groundup.core.outputs import atomic_output_dir, check_output_dir

    (args,) = parse_args(argv)
    for key in ("model", "questions", "output_dir"):
        if not getattr(args, key):
            raise GroundupError(f"missing {key}: groundup eval --model DIR_OR_HUB_ID --questions FILE --output DIR")
    check_output_dir(args.output_dir, args.overwrite, inputs={
        "model": args.model, "questions": args.questions, "few_shot_file": args.few_shot_file,
        "reference_predictions": args.reference_predictions})
    metrics, predictions = run_eval(args)
    with atomic_output_dir(args.output_dir, args.overwrite) as out:
        (out / "metrics.json").write_text(json.dumps(metrics, indent=1, ensure_ascii=False) + "\n")
        write_jsonl(out / "predictions.jsonl", predictions)
        save_config(out, args)
    print(f"eval {args.model} on {args.questions} ({len(predictions)} questions, "
          f"{metrics['timing']['questions_per_second']} q/s) -> {args.output_dir}\n{summary(metrics)}")
    return Path(args.output_dir)
