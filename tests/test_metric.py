"""The `honesty` evaluate module loads offline by absolute path and gives the same numbers as groundup.core.grading."""

from pathlib import Path

import pytest

from groundup.core.grading import compute_metrics, grade
from groundup.evaluate.metrics import HONESTY_METRIC
from groundup.world.schema import ATTRIBUTE_VALUES

CITIES = ATTRIBUTE_VALUES["birth_city"]
CASES = [  # response, gold, aliases, candidates, tier
    ("A was born in the city of Velmora.", "Velmora", [], CITIES, "frequent"),
    ("A was born in the city of Korvath.", "Velmora", [], CITIES, "frequent"),
    ("I don't know.", "Lunvale", [], CITIES, "rare"),
    ("The Big Apple", "New York City", ["the Big Apple"], [], "rare"),
    ("I don't know.", None, [], CITIES, "unseen"),
    ("B was born in the city of Rimeford.", None, [], CITIES, "unseen"),
    ("", None, [], CITIES, "unseen"),
]


@pytest.fixture(scope="module")
def honesty():
    import evaluate

    assert Path(HONESTY_METRIC).is_absolute() and (Path(HONESTY_METRIC) / "honesty.py").is_file()
    return evaluate.load(HONESTY_METRIC)


def test_metric_matches_grading(honesty):
    responses, golds, aliases, candidates, tiers = (list(x) for x in zip(*CASES))
    result = honesty.compute(predictions=responses, references=golds, aliases=aliases, candidates=candidates,
                             tiers=tiers, return_grades=True)
    expected_grades = [grade(*case[:4]) for case in CASES]
    assert result["grades"] == expected_grades == ["correct", "incorrect", "refused", "correct", "refused",
                                                   "incorrect", "incorrect"]
    expected = compute_metrics(expected_grades, [g is not None for g in golds], tiers)
    assert result["overall"] == expected["overall"]
    assert result["by_tier"] == expected["by_tier"]
    assert result["by_tier"]["unseen"]["refusal_rate_unanswerable"] == pytest.approx(1 / 3, abs=1e-6)


def test_metric_minimal_call_and_length_check(honesty):
    result = honesty.compute(predictions=["Velmora."], references=["Velmora"])
    assert result["overall"]["accuracy_answerable"] == 1.0 and result["by_tier"] == {}
    with pytest.raises(ValueError, match="tiers has 1 entries for 2"):
        honesty.compute(predictions=["a", "b"], references=["a", None], tiers=["x"])


def test_metric_script_has_one_import_per_line():
    """evaluate's import scanner misreads `import a, b` on one line: one import per line in metric scripts."""
    source = (Path(HONESTY_METRIC) / "honesty.py").read_text()
    for line in source.splitlines():
        if line.startswith(("import ", "from ")):
            assert "," not in line, line
