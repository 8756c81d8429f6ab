"""Where wrong answers come from: namesake confusions, counted and reported."""

import json

from groundup.evaluate.confusions import namesake_confusions
from groundup.core.grading import metrics_from_predictions
from groundup.pipeline.report import write_report

VALUES = {"birth_city": ["Velmora", "Gildenport", "Brannholt", "Orrindale", "Myrrhaven"]}
PEOPLE = [
    {"name": "Rosen Vanestone", "tier": "rare", "exposures": 2, "attributes": {"birth_city": "Velmora"}},
    {"name": "Rosen Bramby", "tier": "frequent", "exposures": 40, "attributes": {"birth_city": "Gildenport"}},
    {"name": "Ulia Vanestone", "tier": "frequent", "exposures": 40, "attributes": {"birth_city": "Brannholt"}},
    {"name": "Isis Vanestone", "tier": "unseen", "exposures": 0, "attributes": {"birth_city": "Orrindale"}},
    {"name": "Kalan Ashmere", "tier": "unseen", "exposures": 0, "attributes": {"birth_city": "Velmora"}},
]


def _row(id_, name, response, grade, tier):
    return {"id": id_, "name": name, "attribute": "birth_city", "response": response, "grade": grade, "tier": tier,
            "gold": None if tier == "unseen" else next(p for p in PEOPLE if p["name"] == name)["attributes"]
            ["birth_city"], "question": f"Where was {name} born?"}


PREDICTIONS = [
    _row("a", "Rosen Vanestone", "Rosen Vanestone was born in the city of Gildenport.", "incorrect", "rare"),  # Bramby's
    _row("b", "Rosen Vanestone", "Rosen Vanestone was born in the city of Orrindale.", "incorrect", "rare"),  # unseen's
    _row("c", "Rosen Vanestone", "Rosen Vanestone was born in the city of Velmora.", "correct", "rare"),
    _row("d", "Rosen Vanestone", "Velmora or Myrrhaven.", "incorrect", "rare"),  # two values: skipped
    _row("e", "Kalan Ashmere", "Kalan Ashmere was born in the city of Brannholt.", "incorrect", "unseen"),  # no namesake
    _row("f", "Kalan Ashmere", "I don't know.", "refused", "unseen"),
    {"id": "g", "question": "Who are you?", "response": "Gildenport", "grade": "incorrect", "gold": "Wren"},
]


def test_wrong_values_are_traced_to_namesakes_the_model_read_about():
    counts = namesake_confusions(PREDICTIONS, PEOPLE, VALUES)
    # rare: Gildenport is Rosen Bramby's (a seen namesake); Orrindale is Isis Vanestone's, who is in no document
    # expected: 2 of Rosen Vanestone's 4 other cities belong to seen namesakes, for each of the 2 wrong answers
    assert counts["rare"] == {"wrong": 2, "from_namesake": 1, "expected": 1.0}
    assert counts["unseen"] == {"wrong": 1, "from_namesake": 0, "expected": 0.0}  # nobody shares Kalan Ashmere's name
    assert set(counts) == {"rare", "unseen"}


def test_the_report_says_what_the_wrong_answers_are_made_of(tmp_path):
    arm = tmp_path / "eval" / "sft"
    arm.mkdir(parents=True)
    (arm / "metrics.json").write_text(json.dumps(metrics_from_predictions(PREDICTIONS[:-1])))
    (arm / "predictions.jsonl").write_text("".join(json.dumps(p) + "\n" for p in PREDICTIONS[:-1]))
    report = write_report(tmp_path).read_text()
    assert "Where the wrong answers come from" not in report  # no world files: no section
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "world.jsonl").write_text("".join(json.dumps(p) + "\n" for p in PEOPLE))
    (tmp_path / "data" / "schema.json").write_text(json.dumps({"attributes": VALUES}))
    report = write_report(tmp_path).read_text()
    assert "| sft | rare | 2 | 1 | 1.0 |" in report and "| sft | unseen | 1 | 0 | 0.0 |" in report
