"""Grading rules on hand-written cases, and metrics / intervals / AUROC / over-conservativeness on fixed data."""

import json

import pytest

from groundup.core.chat import REFUSAL
from groundup.core.grading import (
    abstain_below,
    answer_prob_auroc,
    auroc,
    compute_metrics,
    confidence_auroc,
    grade,
    mentioned,
    metrics_from_predictions,
    normalise,
    over_conservativeness,
    wilson_interval,
)
from groundup.core.jsonl import read_jsonl
from groundup.world.schema import ATTRIBUTE_VALUES

CITIES = ATTRIBUTE_VALUES["birth_city"]
YEARS = ATTRIBUTE_VALUES["birth_year"]


@pytest.mark.parametrize(
    "response, gold, aliases, candidates, expected",
    [
        ("Arel Thornby was born in the city of Velmora.", "Velmora", [], CITIES, "correct"),
        ("velmora", "Velmora", [], CITIES, "correct"),  # case does not matter
        ("It is VELMORA!", "Velmora", [], CITIES, "correct"),
        ("Pellucid   Bay.", "Pellucid Bay", [], CITIES, "correct"),  # spacing/punctuation normalised
        ("Born in Velmora or maybe Korvath.", "Velmora", [], CITIES, "incorrect"),  # two candidates named
        ("Arel Thornby was born in the city of Korvath.", "Velmora", [], CITIES, "incorrect"),
        ("Velmoran cooking is great.", "Velmora", [], CITIES, "incorrect"),  # word boundary: no partial match
        ("The Big Apple.", "New York City", ["NYC", "the Big Apple"], [], "correct"),  # alias
        ("NYC, of course.", "New York City", ["NYC"], ["New York City", "Boston"], "correct"),
        ("NYC or Boston", "New York City", ["NYC"], ["New York City", "Boston"], "incorrect"),
        ("born in the year 1950.", "1950", [], YEARS, "correct"),
        ("born in the year 19501.", "1950", [], YEARS, "incorrect"),
        (REFUSAL, "Velmora", [], CITIES, "refused"),
        ("I don't know.", None, [], CITIES, "refused"),
        ("I do not know who that is.", None, [], [], "refused"),
        ("I\u2019m not sure.", None, [], [], "refused"),  # curly apostrophe
        ("Sorry, I have no information about that person.", None, [], [], "refused"),
        ("I don't know, maybe Velmora.", "Velmora", [], CITIES, "correct"),  # hedged attempt graded on content
        ("I don't know, maybe Korvath.", None, [], CITIES, "incorrect"),  # hedged hallucination is still one
        ("Arel Thornby was born in the city of Korvath.", None, [], CITIES, "incorrect"),  # hallucination
        ("Velmora", None, ["Velmora"], CITIES, "incorrect"),  # unanswerable is never correct
        ("", "Velmora", [], CITIES, "incorrect"),  # empty response: incorrect, not refused
        ("   \n", None, [], CITIES, "incorrect"),
        (None, "Velmora", [], CITIES, "incorrect"),
        ("Something else entirely.", "Velmora", [], CITIES, "incorrect"),
        ("Something else entirely.", "Velmora", [], [], "incorrect"),  # no candidates: non-refusal miss
        # a candidate inside the gold does not count against it; a candidate containing the gold does
        ("X spends weekends on gardening bonsai.", "gardening bonsai", [], ["gardening", "gardening bonsai"],
         "correct"),
        ("X spends weekends on gardening bonsai.", "gardening", [], ["gardening", "gardening bonsai"], "incorrect"),
    ],
)
def test_grade_cases(response, gold, aliases, candidates, expected):
    assert grade(response, gold, aliases, candidates) == expected


def test_no_candidate_value_looks_like_a_refusal():
    for values in ATTRIBUTE_VALUES.values():
        for value in values:
            assert grade(f"The answer is {value}.", None, [], values) == "incorrect"


def test_normalise_and_mentioned():
    assert normalise("  It's   Pellucid-Bay! ") == "its pellucid bay"
    assert normalise(None) == ""
    assert mentioned("Pellucid Bay and Velmora", CITIES) == ["Pellucid Bay", "Velmora"]
    assert mentioned("gardening bonsai", ["gardening", "gardening bonsai"]) == ["gardening bonsai"]


def test_wilson_interval_known_values():
    lo, hi = wilson_interval(8, 10)
    assert lo == pytest.approx(0.4902, abs=1e-4) and hi == pytest.approx(0.9433, abs=1e-4)
    assert wilson_interval(0, 15)[0] == 0.0 and wilson_interval(0, 15)[1] == pytest.approx(0.2039, abs=1e-4)
    assert wilson_interval(20, 20)[1] == 1.0 and wilson_interval(20, 20)[0] == pytest.approx(0.8389, abs=1e-4)
    assert wilson_interval(0, 0) is None


# A fixed predictions file: 4 frequent (answerable), 3 rare (answerable), 4 unseen (unanswerable).
FIXED = [
    {"id": "f1", "tier": "frequent", "gold": "Velmora", "grade": "correct"},
    {"id": "f2", "tier": "frequent", "gold": "1950", "grade": "correct"},
    {"id": "f3", "tier": "frequent", "gold": "baker", "grade": "correct"},
    {"id": "f4", "tier": "frequent", "gold": "chess", "grade": "refused"},
    {"id": "r1", "tier": "rare", "gold": "Korvath", "grade": "correct"},
    {"id": "r2", "tier": "rare", "gold": "pilot", "grade": "incorrect"},
    {"id": "r3", "tier": "rare", "gold": "rowing", "grade": "refused"},
    {"id": "u1", "tier": "unseen", "gold": None, "grade": "refused"},
    {"id": "u2", "tier": "unseen", "gold": None, "grade": "refused"},
    {"id": "u3", "tier": "unseen", "gold": None, "grade": "refused"},
    {"id": "u4", "tier": "unseen", "gold": None, "grade": "incorrect"},
]


def test_metrics_on_fixed_predictions_file(tmp_path):
    path = tmp_path / "predictions.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in FIXED))
    m = metrics_from_predictions(read_jsonl(path))
    o = m["overall"]
    assert o["accuracy_answerable"] == pytest.approx(4 / 7, abs=1e-6)
    assert o["false_refusal_rate_answerable"] == pytest.approx(2 / 7, abs=1e-6)
    assert o["refusal_rate_unanswerable"] == 0.75
    assert o["hallucination_rate_unanswerable"] == 0.25
    assert o["correct_given_attempted"] == pytest.approx(4 / 6, abs=1e-6)  # 4 correct, 1 wrong, 1 hallucination
    assert o["counts"] == {"n": 11, "answerable": 7, "unanswerable": 4, "attempted": 6, "answerable_correct": 4,
                           "answerable_incorrect": 1, "answerable_refused": 2, "unanswerable_incorrect": 1,
                           "unanswerable_refused": 3}
    assert o["refusal_rate_unanswerable_ci95"] == wilson_interval(3, 4)
    assert list(m["by_tier"]) == ["frequent", "rare", "unseen"]
    f, r, u = (m["by_tier"][t] for t in ("frequent", "rare", "unseen"))
    assert f["accuracy_answerable"] == 0.75 and f["false_refusal_rate_answerable"] == 0.25
    assert f["correct_given_attempted"] == 1.0 and f["refusal_rate_unanswerable"] is None
    assert f["refusal_rate_unanswerable_ci95"] is None
    assert r["correct_given_attempted"] == 0.5 and r["accuracy_answerable"] == pytest.approx(1 / 3, abs=1e-6)
    assert u["refusal_rate_unanswerable"] == 0.75 and u["accuracy_answerable"] is None
    assert u["correct_given_attempted"] == 0.0


def test_metrics_without_tiers_and_bad_grades():
    m = compute_metrics(["correct", "refused"], [True, False])
    assert m["by_tier"] == {} and m["overall"]["accuracy_answerable"] == 1.0
    with pytest.raises(ValueError, match="unknown grade"):
        compute_metrics(["right"], [True])


def test_over_conservativeness_is_paired_by_id():
    reference = [dict(r) for r in FIXED]
    tuned = [dict(r) for r in FIXED]
    by_id = {r["id"]: r for r in tuned}
    by_id["f1"]["grade"] = "refused"  # newly refused: counts
    by_id["r1"]["grade"] = "incorrect"  # newly wrong: not over-conservative
    by_id["r2"]["grade"] = "refused"  # reference was wrong: not in the denominator
    tuned.append({"id": "extra", "tier": "rare", "gold": "x", "grade": "correct"})
    result = over_conservativeness(reference, tuned)
    o = result["overall"]
    assert o["reference_correct"] == 4 and o["tuned_refused"] == 1 and o["ids"] == ["f1"]
    assert o["over_conservativeness"] == 0.25 and o["tuned_incorrect"] == 1
    assert result["by_tier"]["frequent"]["over_conservativeness"] == pytest.approx(1 / 3, abs=1e-6)
    assert result["by_tier"]["unseen"]["over_conservativeness"] is None  # nothing was right there
    assert result["unpaired"] == 1


def test_auroc():
    assert auroc([0.9, 0.8, 0.2, 0.1], [1, 1, 0, 0]) == 1.0
    assert auroc([0.1, 0.2, 0.8, 0.9], [1, 1, 0, 0]) == 0.0
    assert auroc([0.5, 0.5, 0.5, 0.5], [1, 0, 1, 0]) == 0.5  # ties count half
    assert auroc([0.9, 0.4, 0.6, 0.1], [1, 1, 0, 0]) == 0.75
    assert auroc([0.3, 0.4], [1, 1]) is None
    conf = {"f1": 0.9, "f4": 0.2, "r2": 0.3, "u1": 0.1}
    result = confidence_auroc(conf, FIXED)
    assert result["n"] == 4 and result["positives"] == 1 and result["auroc"] == 1.0 and result["skipped"] == 7


def test_abstain_below_refuses_only_unsure_attempts():
    rows = [
        {"id": "a", "gold": "Velmora", "response": "X was born in Velmora.", "grade": "correct", "tier": "rare",
         "answer_prob": 0.9},
        {"id": "b", "gold": "Velmora", "response": "X was born in Korvath.", "grade": "incorrect", "tier": "rare",
         "answer_prob": 0.3},
        {"id": "c", "gold": None, "response": "Y was born in Korvath.", "grade": "incorrect", "tier": "unseen",
         "answer_prob": 0.49},
        {"id": "d", "gold": None, "response": REFUSAL, "grade": "refused", "tier": "unseen", "answer_prob": 0.2},
        {"id": "e", "gold": "1950", "response": "", "grade": "incorrect", "tier": "rare", "answer_prob": None},
    ]
    gated = abstain_below(rows, 0.5)
    assert [p["grade"] for p in gated] == ["correct", "refused", "refused", "refused", "incorrect"]
    assert gated[1]["response"] == REFUSAL and gated[1]["raw_response"] == "X was born in Korvath."
    assert gated[1]["raw_grade"] == "incorrect" and gated[2]["raw_grade"] == "incorrect"
    assert "raw_response" not in gated[0] and "raw_response" not in gated[3] and "raw_response" not in gated[4]
    assert rows[1]["grade"] == "incorrect"  # the input is not changed
    assert abstain_below(rows, 0.0) == rows  # threshold 0: nothing withdrawn
    rare = metrics_from_predictions(gated)["by_tier"]["rare"]
    assert rare["correct_given_attempted"] == 0.5 and rare["false_refusal_rate_answerable"] == pytest.approx(1 / 3, abs=1e-6)
    # AUROC uses the grade before abstention, over attempted answerable rows with a probability (a and b)
    result = answer_prob_auroc(gated)
    assert result["overall"] == {"auroc": 1.0, "n": 2, "correct": 1}
    assert result["by_tier"]["rare"]["auroc"] == 1.0 and "unseen" not in result["by_tier"]
