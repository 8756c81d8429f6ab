"""A data folder's `schema.json`: per attribute, its candidate values and the sentence an answer is said in.

Whoever writes a data folder may put a `schema.json` next to its `questions/` (the embedded world does); generic code
(chat rows, the tokenizer's chat text, the pretraining recall check, few-shot and cloze prompts, the probe's training
data, grading) reads it from the folder it already reads, so it never needs to know who wrote the data. Keys:
- `attributes`: attribute -> candidate values. Grading calls an answer correct when the gold value appears and no
  other candidate of its attribute does.
- `bio_templates` (optional): attribute -> sentence templates with `{name}` and `{value}`. The first one is the answer
  sentence: SFT answers in it, so that answering reuses what pretraining taught, and a cloze prompt is it cut before
  the value.
Other keys (`question_templates`, `refusal`) are for readers; nothing here needs them.

Without a schema every caller falls back to the gold answer as the answer text, as for any question file.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from groundup.core.errors import GroundupError

SCHEMA_FILE = "schema.json"


@dataclass(frozen=True)
class Schema:
    attributes: dict[str, list[str]]
    bio_templates: dict[str, list[str]] = field(default_factory=dict)
    path: str | None = None  # where it was read from, if from a file

    @classmethod
    def from_dict(cls, data: Any, path: str | None = None) -> "Schema":
        what = f"schema {path}" if path else "schema"
        try:
            attributes = {str(k): [str(v) for v in vs] for k, vs in data["attributes"].items()}
        except (KeyError, TypeError, AttributeError):
            raise GroundupError(f"{what}: expected JSON with an 'attributes' object of value lists") from None
        templates = data.get("bio_templates") or {}
        if not isinstance(templates, dict) or not all(
                isinstance(ts, list) and all(isinstance(t, str) for t in ts) for ts in templates.values()):
            raise GroundupError(f"{what}: 'bio_templates' must map each attribute to a list of sentence templates")
        return cls(attributes, {str(k): list(ts) for k, ts in templates.items()}, path)

    @classmethod
    def load(cls, path: str | Path) -> "Schema":
        path = Path(path)
        if not path.is_file():
            raise GroundupError(f"schema file not found: {path}")
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError:
            raise GroundupError(f"schema {path}: expected JSON with an 'attributes' object of value lists") from None
        return cls.from_dict(data, str(path))

    def candidates(self, attribute: Any) -> list[str] | None:
        return self.attributes.get(str(attribute))

    def sentence_template(self, attribute: Any) -> str | None:
        """The answer sentence's template for `attribute` (its first biography template), or None."""
        templates = self.bio_templates.get(str(attribute))
        return templates[0] if templates else None

    def answer_sentence(self, name: str, attribute: str, value: str) -> str:
        template = self.sentence_template(attribute)
        if template is None:
            raise GroundupError(f"{self._what()}: no sentence template for attribute {attribute!r}")
        return template.format(name=name, value=value)

    def cloze_prefix(self, row: Mapping[str, Any]) -> str:
        """The answer sentence cut before the value: "Arel Thornby was born in the city of". A base model continues
        text and does not follow a Q/A format, so this asks it in the one format it knows."""
        template = self.sentence_template(row.get("attribute"))
        if template is None or not row.get("name"):
            raise GroundupError(f"prompt_format cloze needs world questions (name and attribute); row {row.get('id')!r} "
                                f"has attribute {row.get('attribute')!r}")
        return template.split("{value}")[0].format(name=row["name"]).rstrip()

    def _what(self) -> str:
        return f"schema {self.path}" if self.path else "schema"


def answer_text(row: Mapping[str, Any], value: Any, schema: Schema | None) -> str:
    """What the assistant says to give `value` for `row`: the schema's answer sentence when the row names a person
    (`name`) and an attribute the schema has a sentence for, else the value itself."""
    if schema is not None and row.get("name") and schema.sentence_template(row.get("attribute")) is not None:
        return schema.answer_sentence(row["name"], row["attribute"], value)
    return str(value)


def find_schema(data_dir: str | Path) -> Schema | None:
    """`data_dir/schema.json`, or None when the folder has none."""
    path = Path(data_dir) / SCHEMA_FILE
    return Schema.load(path) if path.is_file() else None


def questions_schema(questions_path: str | Path) -> Schema | None:
    """The schema of the data folder a question file lives in (`<folder>/questions/<split>.jsonl`), or None."""
    return find_schema(Path(questions_path).resolve().parent.parent)


def resolve(schema: str | None, questions_path: str | Path | None) -> Schema | None:
    """A `schema` option: `auto` (the question file's data folder, see `questions_schema`; None if it has none), a
    path to a schema.json, or `none`/empty (no schema)."""
    if schema in (None, "none", ""):
        return None
    if schema == "auto":
        return questions_schema(questions_path) if questions_path else None
    return Schema.load(schema)
