"""Where a wrong answer comes from: a namesake's fact.

In the tiny preset almost every wrong answer about a rare or unseen person of the world names a value that belongs to
someone the model read about who shares that person's first or last name, far more often than a wrong value drawn at
random would. The world draws rare and unseen
people's name parts from frequent people's on purpose (a name's look must not tell whom the model met), so the model's
vague recollection of "Rosen Vanestone" is a blend of Rosen Bramby and Ulia Vanestone. This module counts that, so a
report can say what the hallucinations are made of, not only how many there are.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from groundup.core.grading import INCORRECT, mentioned


def namesake_confusions(predictions: Sequence[Mapping[str, Any]], people: Sequence[Mapping[str, Any]],
                        attribute_values: Mapping[str, Sequence[str]]) -> dict[str, dict[str, float | int]]:
    """Per tier: `wrong` (incorrect answers about a person of the world that name exactly one other value of the
    attribute), `from_namesake` (that value belongs to another person sharing the first or last name who is in the
    pretraining text), and `expected` (how many would, had each wrong value been drawn at random from the attribute's
    other values). Rows without `name` / `attribute`, or about no one in `people`, are skipped."""
    by_name = {p["name"]: p for p in people}
    seen = [p for p in people if p.get("exposures", 0) > 0]
    out: dict[str, dict[str, float | int]] = {}
    for row in predictions:
        person = by_name.get(row.get("name"))
        attribute = row.get("attribute")
        if row.get("grade") != INCORRECT or person is None or attribute not in attribute_values:
            continue
        gold = person["attributes"][attribute]
        others = [v for v in attribute_values[attribute] if v != gold]
        named = mentioned(row.get("response", ""), attribute_values[attribute])
        if len(named) != 1 or named[0] == gold:  # hedges between values (or the truth, for unseen people) say nothing
            continue
        first, last = person["name"].split(" ", 1)
        namesake_values = {p["attributes"][attribute] for p in seen if p["name"] != person["name"]
                           and (p["name"].split(" ", 1)[0] == first or p["name"].split(" ", 1)[1] == last)}
        counts = out.setdefault(str(row.get("tier")), {"wrong": 0, "from_namesake": 0, "expected": 0.0})
        counts["wrong"] += 1
        counts["from_namesake"] += named[0] in namesake_values
        counts["expected"] += len(namesake_values - {gold}) / len(others)
    return out
