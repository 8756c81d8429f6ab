"""Working memory vs vague recollection: open-book questions, where a short biography comes with the question.

Knowledge in the context window should beat knowledge in the weights. Each row's user turn is a passage (a few
biography sentences, one of them about the asked attribute) followed by a blank line and the question. Cases:

- `passage`: the passage tells the person's true facts. Every tier must answer, unseen people included (closed-book
  they must refuse; open-book the answer is right there).
- `contradict`: a frequent person, but the passage gives another value for the asked attribute. The passage wins
  (the gold answer is the passage's value; the value in the weights is a wrong candidate).
- `other`: the passage is about someone else (with a different value for the asked attribute). It must not be used:
  a frequent person is answered from the weights, an unseen person is refused.

SFT rows (`open_book_sft`, with `reply`) use SFT-pool people only; `open_book_eval` uses eval-pool people only, so
the split is entity-disjoint from training like every other eval split. `tier` is `<case>/<person's tier>` (the
breakdown `groundup eval` reports); `person_tier` and `case` are kept as their own keys.

Made-up people (`synthetic_open_book_questions`; the world's `open_book_synthetic` split): passages about names that
are no one in the world, with facts drawn afresh for every row, so only copying (or, for someone else's passage,
refusing) can answer them. Why: trained on world people only, open-book SFT memorises their passages and copies
nothing on eval people, and the tiny base cannot copy from its context at all (`inspection.copy_check`: no induction
heads). The surprisal arm's copy feature (`surprisal.copy_suggestions`) hands it that ability; the made-up rows teach
it to use it.
"""

from __future__ import annotations

import random
from typing import Any, Sequence

from groundup.core.chat import REFUSAL
from groundup.world.schema import ATTRIBUTE_VALUES, BIO_TEMPLATES, QUESTION_TEMPLATES, answer_sentence

CASES = ("passage", "contradict", "other")


def passage(name: str, facts: dict[str, str], asked: str, sentences: int, rng: random.Random,
            paraphrase: bool = False) -> str:
    """`sentences` biography sentences about `name` (the asked attribute's always among them), in random order: each
    in a random biography paraphrase, or (default) in the answer's own sentence form, which a small model can copy
    from by matching the words before the value."""
    others = [a for a in facts if a != asked]
    chosen = [asked, *rng.sample(others, min(max(sentences - 1, 0), len(others)))]
    lines = [(rng.choice(BIO_TEMPLATES[attr]) if paraphrase else BIO_TEMPLATES[attr][0]).format(
        name=name, value=facts[attr]) for attr in chosen]
    rng.shuffle(lines)
    return " ".join(lines)


def _other_value(attribute: str, avoid: Sequence[str], rng: random.Random) -> str:
    return rng.choice([v for v in ATTRIBUTE_VALUES[attribute] if v not in avoid])


def open_book_questions(people: Sequence[dict[str, Any]], pool: str, split: str, per_person: int, sentences: int,
                        with_reply: bool, system: str | None, system_fraction: float, seed: int,
                        paraphrase: bool = False) -> list[dict[str, Any]]:
    """Open-book rows about `pool` people: `per_person` attributes each, in every case that applies to their tier.

    Other-person passages are about another person of the same pool, so no row leaks an eval person into training.
    """
    rng = random.Random(f"{seed}-open-book-{split}")
    members = [p for p in people if p["pool"] == pool]
    rows = []
    for index, person in enumerate(members):
        name, facts, tier = person["name"], person["attributes"], person["tier"]
        for attribute in rng.sample(sorted(facts), min(per_person, len(facts))):
            question = rng.choice(QUESTION_TEMPLATES[attribute]["train"]).format(name=name)
            cases = [("passage", facts, name, facts[attribute])]
            if tier == "frequent":
                shown = _other_value(attribute, [facts[attribute]], rng)
                cases.append(("contradict", {**facts, attribute: shown}, name, shown))
            if tier in ("frequent", "unseen"):
                other = rng.choice([p for p in members if p["name"] != name])
                shown = _other_value(attribute, [facts[attribute]], rng)
                gold = facts[attribute] if tier == "frequent" else None
                cases.append(("other", {**other["attributes"], attribute: shown}, other["name"], gold))
            for case, shown_facts, shown_name, gold in cases:
                text = passage(shown_name, shown_facts, attribute, sentences, rng, paraphrase)
                with_system = bool(system) and rng.random() < system_fraction
                rows.append(_row(f"{split}-{index:05d}-{attribute}-{case}", text, question, gold, case, tier, name,
                                 attribute, shown_name, with_reply, system if with_system else None))
    return rows


def synthetic_closed_book_questions(n: int, names: Sequence[str], system: str | None, system_fraction: float,
                                    seed: int) -> list[dict[str, Any]]:
    """`n` closed-book SFT rows about made-up people (`names`): the question alone, refused. Beside the open-book
    made-up rows they show that a name the base never read is answered from a passage and refused without one; with
    open-book rows alone the copy-feature arm learned the first half and, at 3,600 pretraining steps, began to answer
    unseen people closed-book too (docs/experiments.md, pretraining length)."""
    rng = random.Random(f"{seed}-closed-book-synthetic")
    if not names:
        raise ValueError("no names left for made-up closed-book people: raise name_pool_size")
    rows = []
    for index in range(n):
        name = rng.choice(names)
        attribute = rng.choice(sorted(QUESTION_TEMPLATES))
        question = rng.choice(QUESTION_TEMPLATES[attribute]["train"]).format(name=name)
        row = {"id": f"closed_book_sft-synthetic-{index:05d}", "question": question, "answer": None,
               "tier": "closed/synthetic", "case": "closed", "person_tier": "synthetic", "name": name,
               "attribute": attribute, "phrasing": "train", "reply": REFUSAL}
        if system and rng.random() < system_fraction:
            row["system"] = system
        rows.append(row)
    return rows


def _row(id_: str, text: str, question: str, gold: str | None, case: str, tier: str, name: str, attribute: str,
         passage_name: str, with_reply: bool, system: str | None) -> dict[str, Any]:
    """One open-book question row (the eval format plus `case`, `person_tier`, `passage_name`; SFT rows: `reply`)."""
    row: dict[str, Any] = {"id": id_, "question": f"{text}\n\n{question}", "answer": gold, "tier": f"{case}/{tier}",
                           "case": case, "person_tier": tier, "name": name, "attribute": attribute,
                           "passage_name": passage_name, "phrasing": "train"}
    if system:
        row["system"] = system
    if with_reply:
        row["reply"] = REFUSAL if gold is None else answer_sentence(name, attribute, gold)
    return row


def synthetic_open_book_questions(n: int, names: Sequence[str], sentences: int, system: str | None,
                                  system_fraction: float, seed: int, paraphrase: bool = False,
                                  other_share: float = 0.3) -> list[dict[str, Any]]:
    """`n` open-book SFT rows about made-up people (`names`, no one in the world), random facts per row.
    `other_share` of them show someone else's passage and are refused."""
    rng = random.Random(f"{seed}-open-book-synthetic")
    if len(names) < 2:
        raise ValueError("no names left for made-up open-book people: raise name_pool_size")
    rows = []
    for index in range(n):
        name, other = rng.sample(names, 2)
        facts = {attr: rng.choice(values) for attr, values in ATTRIBUTE_VALUES.items()}
        attribute = rng.choice(sorted(facts))
        question = rng.choice(QUESTION_TEMPLATES[attribute]["train"]).format(name=name)
        case = "other" if rng.random() < other_share else "passage"
        shown_name = other if case == "other" else name
        gold = facts[attribute] if case == "passage" else None
        text = passage(shown_name, facts, attribute, sentences, rng, paraphrase)
        with_system = bool(system) and rng.random() < system_fraction
        rows.append(_row(f"open_book_sft-synthetic-{index:05d}", text, question, gold, case, "synthetic", name,
                         attribute, shown_name, True, system if with_system else None))
    return rows
