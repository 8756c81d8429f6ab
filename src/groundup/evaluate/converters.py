"""Bring your own evaluation set: convert SimpleQA-, SelfAware- and TruthfulQA-style local files to the eval format.

    python -m groundup.evaluate.converters simpleqa simple_qa_test_set.csv runs/real/simpleqa.jsonl
    python -m groundup.evaluate.converters selfaware SelfAware.json runs/real/selfaware.jsonl
    python -m groundup.evaluate.converters truthfulqa TruthfulQA.csv runs/real/truthfulqa.jsonl
    groundup eval --model Qwen/Qwen2.5-0.5B-Instruct --questions runs/real/selfaware.jsonl --output runs/real/eval

Nothing is downloaded: get the file yourself (the dataset's release, or `datasets.load_dataset(...).to_json(...)`).
Output rows: `{"id", "question", "answer" (null = unanswerable), "aliases", "tier", ...source keys}`.

Layouts read (CSV, JSON lines, a JSON list, or a JSON object holding the list; `.parquet` too):
- **SimpleQA** (OpenAI `simple_qa_test_set.csv`, or the Hub copies): columns `problem`, `answer`, `metadata` (a dict,
  or its Python/JSON string, with `topic` and `answer_type`). All answerable; tier = metadata `topic`.
- **SelfAware** (Yin et al. 2023, `SelfAware.json`): `{"example": [{"question_id", "question", "answer": [str] | null,
  "answerable": bool, "source"}]}`. Unanswerable -> `answer: null`; the first answer is the gold, the rest aliases;
  tier = "answerable" / "unanswerable" (the source is kept in `source`).
- **TruthfulQA** (`TruthfulQA.csv`: `Type, Category, Question, Best Answer, Correct Answers, Incorrect Answers,
  Source` with `;`-separated answer lists; or the Hub `generation` config: `question, best_answer,
  correct_answers, incorrect_answers, category, type`). Gold = best answer, aliases = the other correct answers,
  `candidates` = correct + incorrect answers (so naming an incorrect answer grades incorrect); tier = category.
  Caveat: TruthfulQA answers are whole sentences and groundup grades by containment, so free-form responses rarely
  match them word for word: treat its accuracy as a lower bound and read the refusal rate, which is exact.
"""

from __future__ import annotations

import argparse
import ast
import csv
import json
import sys
from pathlib import Path
from typing import Any, Callable, Iterable

from groundup.core.errors import GroundupError
from groundup.core.jsonl import write_jsonl


def read_records(path: str | Path, list_key: str | None = None) -> list[dict[str, Any]]:
    """Rows of a CSV, JSON lines, JSON (a list, or an object holding one list) or parquet file."""
    path = Path(path)
    if not path.is_file():
        raise GroundupError(f"input file not found: {path}")
    suffix = path.suffix.lower()
    if suffix in (".csv", ".tsv"):
        with path.open(encoding="utf-8", newline="") as f:
            return list(csv.DictReader(f, delimiter="\t" if suffix == ".tsv" else ","))
    if suffix == ".parquet":
        import pyarrow.parquet as pq

        return pq.read_table(path).to_pylist()
    text = path.read_text(encoding="utf-8")
    if suffix == ".jsonl":
        return [json.loads(line) for line in text.splitlines() if line.strip()]
    if suffix == ".json":
        data = json.loads(text)
        if isinstance(data, dict):
            lists = {k: v for k, v in data.items() if isinstance(v, list)}
            if list_key is not None:
                if list_key not in lists:
                    raise GroundupError(f"{path}: no list under key {list_key!r} (keys: {', '.join(data)})")
                data = lists[list_key]
            elif len(lists) == 1:
                data = next(iter(lists.values()))
            else:
                raise GroundupError(f"{path}: a JSON object with {len(lists)} lists; say which one (list_key)")
        if not isinstance(data, list):
            raise GroundupError(f"{path}: expected a JSON list of rows")
        return data
    raise GroundupError(f"{path}: unsupported file type {suffix!r} (csv, tsv, jsonl, json, parquet)")


def _get(row: dict[str, Any], *keys: str, required: bool = True, where: str = "") -> Any:
    for key in keys:
        if key in row:
            return row[key]
    if required:
        raise GroundupError(f"{where}: no column {' / '.join(repr(k) for k in keys)} (columns: {', '.join(row)})")
    return None


def _as_list(value: Any, sep: str = ";") -> list[str]:
    """A list of non-empty strings from a list, a `sep`-separated string, or a JSON/Python list literal."""
    if value is None:
        return []
    if isinstance(value, str):
        stripped = value.strip()
        if stripped.startswith("["):
            try:
                value = json.loads(stripped)
            except json.JSONDecodeError:
                try:
                    value = ast.literal_eval(stripped)
                except (ValueError, SyntaxError):
                    value = stripped.split(sep)
        else:
            value = stripped.split(sep)
    return [str(v).strip() for v in value if str(v).strip()]


def _metadata(value: Any) -> dict[str, Any]:
    if isinstance(value, dict):
        return value
    if isinstance(value, str) and value.strip():
        for parse in (json.loads, ast.literal_eval):
            try:
                parsed = parse(value)
            except (ValueError, SyntaxError):
                continue
            if isinstance(parsed, dict):
                return parsed
    return {}


def convert_simpleqa(rows: Iterable[dict[str, Any]], name: str = "simpleqa") -> list[dict[str, Any]]:
    out = []
    for i, row in enumerate(rows):
        where = f"{name} row {i}"
        meta = _metadata(_get(row, "metadata", required=False, where=where))
        answer = _get(row, "answer", "Answer", where=where)
        out.append({
            "id": f"{name}-{i:05d}",
            "question": str(_get(row, "problem", "question", "Question", where=where)).strip(),
            "answer": str(answer).strip(),
            "aliases": [],
            "tier": str(meta.get("topic", name)),
            **({"answer_type": meta["answer_type"]} if "answer_type" in meta else {}),
        })
    return out


def convert_selfaware(rows: Iterable[dict[str, Any]], name: str = "selfaware") -> list[dict[str, Any]]:
    out = []
    for i, row in enumerate(rows):
        where = f"{name} row {i}"
        answerable = _get(row, "answerable", where=where)
        if isinstance(answerable, str):
            answerable = answerable.strip().lower() in ("true", "1", "yes")
        answers = _as_list(_get(row, "answer", "answers", required=False, where=where), sep="|")
        if answerable and not answers:
            raise GroundupError(f"{where}: answerable but has no answer")
        qid = _get(row, "question_id", "id", required=False, where=where)
        out.append({
            "id": f"{name}-{qid if qid is not None else i}",
            "question": str(_get(row, "question", where=where)).strip(),
            "answer": answers[0] if answerable else None,
            "aliases": answers[1:] if answerable else [],
            "tier": "answerable" if answerable else "unanswerable",
            **({"source": row["source"]} if row.get("source") is not None else {}),
        })
    return out


def convert_truthfulqa(rows: Iterable[dict[str, Any]], name: str = "truthfulqa") -> list[dict[str, Any]]:
    out = []
    for i, row in enumerate(rows):
        where = f"{name} row {i}"
        best = str(_get(row, "best_answer", "Best Answer", where=where)).strip()
        correct = _as_list(_get(row, "correct_answers", "Correct Answers", where=where))
        incorrect = _as_list(_get(row, "incorrect_answers", "Incorrect Answers", where=where))
        aliases = [a for a in correct if a != best]
        out.append({
            "id": f"{name}-{i:05d}",
            "question": str(_get(row, "question", "Question", where=where)).strip(),
            "answer": best,
            "aliases": aliases,
            "candidates": list(dict.fromkeys([best, *aliases, *incorrect])),
            "tier": str(_get(row, "category", "Category", required=False, where=where) or name),
            **({"type": t} if (t := _get(row, "type", "Type", required=False)) else {}),
        })
    return out


CONVERTERS: dict[str, Callable[..., list[dict[str, Any]]]] = {
    "simpleqa": convert_simpleqa,
    "selfaware": convert_selfaware,
    "truthfulqa": convert_truthfulqa,
}


def convert_file(kind: str, src: str | Path, dst: str | Path, list_key: str | None = None,
                 limit: int | None = None) -> list[dict[str, Any]]:
    """Convert `src` (layout `kind`) and write eval-format JSON lines to `dst`; returns the rows."""
    if kind not in CONVERTERS:
        raise GroundupError(f"unknown layout {kind!r}; choose one of {', '.join(CONVERTERS)}")
    records = read_records(src, list_key)
    if limit is not None:
        records = records[:limit]
    rows = CONVERTERS[kind](records)
    if not rows:
        raise GroundupError(f"{src}: no rows")
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    write_jsonl(dst, rows)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m groundup.evaluate.converters", description=__doc__.split("\n\n")[0])
    parser.add_argument("layout", choices=sorted(CONVERTERS))
    parser.add_argument("input", help="local csv / tsv / jsonl / json / parquet file")
    parser.add_argument("output", help="eval-format JSON lines to write")
    parser.add_argument("--list_key", default=None, help="key of the row list in a JSON object (e.g. example)")
    parser.add_argument("--limit", type=int, default=None, help="convert only the first N rows")
    args = parser.parse_args(argv)
    try:
        rows = convert_file(args.layout, args.input, args.output, args.list_key, args.limit)
    except GroundupError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    n_unans = sum(r["answer"] is None for r in rows)
    print(f"{args.layout}: {len(rows)} questions ({len(rows) - n_unans} answerable, {n_unans} unanswerable) "
          f"-> {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
