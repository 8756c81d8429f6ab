"""`groundup compare`: several runs' targets side by side, from hand-made run folders with known outcomes."""

import json

import pytest

from groundup.cli import main as cli_main
from groundup.pipeline.compare import compare_table
from groundup.core.errors import GroundupError
from groundup.core.grading import metrics_from_predictions


def _rows(tier, grades, answerable=True):
    return [{"id": f"{tier}-{i}", "tier": tier, "grade": g, "gold": "x" if answerable else None}
            for i, g in enumerate(grades)]


def _write_arm(run_dir, name, rows):
    folder = run_dir / "eval" / name
    folder.mkdir(parents=True)
    (folder / "metrics.json").write_text(json.dumps(metrics_from_predictions(rows)))
    (folder / "predictions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def _run(tmp_path, name, seed, rare_wrong, identity_wrong):
    """A run whose dpo arm answers every frequent question right, refuses every unseen one, gets rare questions right
    but `rare_wrong` of 10 attempted, and misses `identity_wrong` of 10 identity questions."""
    run_dir = tmp_path / name
    (run_dir / "data").mkdir(parents=True)
    (run_dir / "data" / "recipe.yaml").write_text(f"output_dir: {run_dir}/data\nseed: {seed}\n")
    closed = (_rows("frequent", ["correct"] * 20) + _rows("unseen", ["refused"] * 20, answerable=False)
              + _rows("rare", ["correct"] * (10 - rare_wrong) + ["incorrect"] * rare_wrong + ["refused"] * 5))
    _write_arm(run_dir, "dpo", closed)
    _write_arm(run_dir, "dpo-heldout", _rows("frequent", ["correct"] * 15 + ["refused"] * 5)
               + _rows("unseen", ["refused"] * 20, answerable=False))
    _write_arm(run_dir, "dpo-identity",
               _rows("name", ["correct"] * (10 - identity_wrong) + ["incorrect"] * identity_wrong))
    _write_arm(run_dir, "dpo-open-book",
               _rows("passage/unseen", ["correct"] * 10) + _rows("contradict/frequent", ["correct"] * 10))
    return run_dir


def test_one_row_per_run_with_seed_targets_met_and_misses_in_bold(tmp_path):
    good = _run(tmp_path, "tiny", seed=0, rare_wrong=0, identity_wrong=0)
    weak = _run(tmp_path, "tiny-seed1", seed=1, rare_wrong=2, identity_wrong=2)
    table = compare_table([good, weak])
    lines = table.splitlines()
    rows = [line for line in lines if line.startswith(f"| {tmp_path}")]
    assert len(rows) == 2
    good_cells = [c.strip() for c in rows[0].strip("|").split("|")]
    weak_cells = [c.strip() for c in rows[1].strip("|").split("|")]
    assert good_cells[1] == "0" and weak_cells[1] == "1"  # world seeds from data/recipe.yaml
    assert "1.000 (10/10)" in good_cells and "7 of 7" in good_cells and "**" not in rows[0]
    # rare: 8 right of 10 attempted (0.8 < 0.9), identity 0.8 < 0.9: both bold, 5 of 7 met
    assert "**0.800 (8/10)**" in weak_cells and weak_cells.count("**0.800**") == 1 and "5 of 7" in weak_cells
    assert "Met: 12 of 14." in table
    # held-out phrasings are reported (frequent accuracy 0.75, false refusal 0.25) but never counted or bolded
    assert good_cells[-3:] == ["0.750", "0.250", "1.000"]


def test_a_run_without_the_arm_is_one_clear_error(tmp_path):
    run_dir = _run(tmp_path, "tiny", seed=0, rare_wrong=0, identity_wrong=0)
    with pytest.raises(GroundupError, match=r"tiny: no eval/sft/metrics.json .* evaluated: dpo\)"):
        compare_table([run_dir], arm="sft")


def test_cli_writes_the_table_and_names_a_missing_folder(tmp_path, capsys):
    run_dir = _run(tmp_path, "tiny", seed=3, rare_wrong=1, identity_wrong=0)
    output = tmp_path / "out" / "compare.md"
    assert cli_main(["compare", str(run_dir), "--output", str(output)]) == 0
    assert output.read_text() in capsys.readouterr().out and "| 3 |" in output.read_text()
    assert cli_main(["compare", str(tmp_path / "nope")]) == 2
    assert "run folder" in capsys.readouterr().err
