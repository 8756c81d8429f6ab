"""groundup's honesty eval as an lm-evaluation-harness task (`groundup_honesty.yaml` beside this file).

    lm_eval --include_path <this folder> --tasks groundup_honesty --model hf --model_args pretrained=runs/tiny/sft-idk \
        --metadata '{"questions": "runs/tiny/data/questions/eval.jsonl"}'

Needs groundup installed (`pip install -e .` in its repository): the questions are read, the candidate values found
and the answers graded by groundup's own code (`groundup.evaluate.evaluation`, `groundup.core.grading`), so the
grades are those of `groundup eval --batch_size 1` on the same file. Each question is put to the model through its
own chat template (rendered here, with the row's `system` message if it has one: do not add `--apply_chat_template`),
answered greedily for at most 32 new tokens, stopped at end of turn, and graded correct / incorrect / refused.

The question file comes from `--metadata` (`questions`; also `schema`: auto | none | a schema.json, as for `groundup
eval`) or the GROUNDUP_QUESTIONS environment variable. The tokenizer is the model's (`pretrained` of `--model_args`,
which lm-eval merges into the metadata) unless `tokenizer` is given.

Metrics (null where the group has no question of the kind): `overall_*` and, for the world's tiers, `frequent_*`,
`rare_*`, `unseen_*`: accuracy_answerable, false_refusal_rate_answerable, refusal_rate_unanswerable,
hallucination_rate_unanswerable (and overall_correct_given_attempted), with groundup's definitions
(`groundup.core.grading.metrics_block`). lm-eval prints no stderr for them: `groundup eval` gives Wilson intervals.
"""

from __future__ import annotations

import os

try:
    from groundup.core.chat import TURN_END
    from groundup.core.grading import grade, metrics_block
    from groundup.data.schema import resolve
    from groundup.evaluate.evaluation import candidates_for
    from groundup.evaluate.evaluation import load_questions as read_question_file
    from groundup.evaluate.generation import truncate_at_stops
except ImportError as err:  # pragma: no cover - the message is the point
    raise ImportError("the groundup_honesty lm-eval task grades with groundup's own rules: install groundup "
                      f"(`pip install -e .` in its repository) ({err})") from err

TIERS = ("frequent", "rare", "unseen")  # the world's tiers; other tiers count in overall_* only
OVERALL_KEYS = ("accuracy_answerable", "false_refusal_rate_answerable", "refusal_rate_unanswerable",
                "hallucination_rate_unanswerable", "correct_given_attempted")
TIER_KEYS = OVERALL_KEYS[:4]
HIGHER_IS_BETTER = {"accuracy_answerable": True, "false_refusal_rate_answerable": False,
                    "refusal_rate_unanswerable": True, "hallucination_rate_unanswerable": False,
                    "correct_given_attempted": True}
METRICS = [f"overall_{k}" for k in OVERALL_KEYS] + [f"{t}_{k}" for t in TIERS for k in TIER_KEYS]


def _flag(value) -> bool:
    return value is True or str(value).lower() in ("1", "true", "yes")


def prompt(tokenizer, question: str, system: str | None = None) -> str:
    """What `groundup eval` feeds the model (`HFGenerator.prompt`, chat format)."""
    messages = [{"role": "user", "content": question}]
    if system:
        messages.insert(0, {"role": "system", "content": system})
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def load_questions(questions: str | None = None, pretrained: str | None = None, tokenizer: str | None = None,
                   schema: str = "auto", system_prompt: str | None = None, revision: str | None = None,
                   trust_remote_code=False, **_):
    """lm-eval's `custom_dataset`: the question file as a `test` split, each row with its rendered prompt and the
    candidate values its grade needs. Gets the task metadata merged with `--model_args` and `--metadata`."""
    import datasets

    from groundup.models.loader import load_tokenizer

    path = questions or os.environ.get("GROUNDUP_QUESTIONS")
    if not path:
        raise ValueError("groundup_honesty: which questions? pass --metadata "
                         "'{\"questions\": \"runs/tiny/data/questions/eval.jsonl\"}' or set GROUNDUP_QUESTIONS")
    source = tokenizer or pretrained
    if not isinstance(source, str):
        raise ValueError("groundup_honesty: no tokenizer to render the chat template: pass `pretrained=FOLDER` in "
                         "--model_args or `tokenizer` in --metadata")
    tok = load_tokenizer(source, revision=revision, trust_remote_code=_flag(trust_remote_code))
    rows = read_question_file(path)
    loaded = resolve(schema, path)
    candidates = candidates_for(rows, loaded.attributes if loaded is not None else None)
    records = [{"id": row["id"], "question": row["question"], "answer": row["answer"],
                "aliases": list(row.get("aliases") or []), "tier": None if row.get("tier") is None else str(row["tier"]),
                "candidates": list(cands), "prompt": prompt(tok, row["question"], row.get("system") or system_prompt)}
               for row, cands in zip(rows, candidates)]
    return datasets.DatasetDict({"test": datasets.Dataset.from_list(records)})


def process_results(doc: dict, results: list[str]) -> dict:
    """Grade one answer (cut at end of turn and stripped, as `groundup eval` does); every metric gets the same
    (grade, answerable, tier) item and its aggregation picks what it counts."""
    response = truncate_at_stops(results[0], (TURN_END,))
    item = (grade(response, doc["answer"], doc["aliases"], doc["candidates"]), doc["answer"] is not None, doc["tier"])
    return {name: item for name in METRICS}


def _aggregation(tier: str | None, key: str):
    def aggregate(items):
        chosen = [(g, a) for g, a, t in items if tier is None or t == tier]
        return metrics_block([g for g, _ in chosen], [a for _, a in chosen])[key]

    aggregate.__name__ = f"agg_{tier or 'overall'}_{key}"
    return aggregate


for _name in METRICS:
    _tier, _, _key = _name.partition("_")
    globals()[f"agg_{_name}"] = _aggregation(None if _tier == "overall" else _tier, _key)
