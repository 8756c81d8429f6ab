"""The main job end to end on the smoke preset: every stage, every artifact, skip on re-run, --from, the notebook;
the run folder may be any path (spaces, `#`, unicode) and holds everything; --dry-run; required paths."""

import json
import os
import shlex
import subprocess

import pytest
import yaml

from groundup.pipeline.design import ARM_ORDER
from groundup.pipeline.speedrun import plan
from groundup.core.jsonl import read_jsonl

from .conftest import PYTHON, REPO

ARMS = list(ARM_ORDER)
MODEL_FOLDERS = ["base", "sft", "sft-idk", "dpo"]
# sft-idk-surprisal and dpo (trained from it) have groundup's own model type: they carry its code (trust_remote_code)
PLAIN_MODEL_FOLDERS = ["base", "sft", "sft-idk"]


def _speedrun(run_dir, *extra, cwd=REPO):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run([PYTHON, "-m", "groundup.cli", "speedrun", "--preset", "smoke", "--run-dir",
                             str(run_dir), *extra], cwd=cwd, capture_output=True, text=True, timeout=900, env=env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    """The smoke speedrun into a run folder whose name YAML and shells trip on, started from an empty folder."""
    parent = tmp_path_factory.mktemp("speedrun")
    (parent / "cwd").mkdir()
    run_dir = parent / "with space #2"
    out = _speedrun(run_dir, cwd=parent / "cwd")
    return run_dir, out


def test_speedrun_prints_a_line_per_stage_and_a_summary(smoke_run):
    run_dir, out = smoke_run
    for step in plan("smoke"):
        assert f"{step.name} " in out and "done in" in out
    assert "| stage | status | seconds |" in out
    timings = json.loads((run_dir / "speedrun.json").read_text())
    assert {s.name for s in plan("smoke")} <= set(timings) and all(t["status"] == "ran" for t in timings.values())


def test_everything_lands_in_the_run_folder_and_each_config_names_its_paths(smoke_run):
    run_dir, _ = smoke_run
    assert sorted(p.name for p in run_dir.parent.iterdir()) == ["cwd", "with space #2"]
    assert not list((run_dir.parent / "cwd").iterdir())  # nothing written in the folder it was started from
    for step in plan("smoke"):
        config = yaml.safe_load((run_dir / "configs" / f"{step.name}.yaml").read_text())
        if step.output_key:
            assert config[step.output_key] == str(run_dir / step.output)
        for key, value in step.inputs.items():
            if isinstance(value, list):  # e.g. datasets: each entry's path in the run folder
                assert [e["path"] for e in config[key]] == [str(run_dir / e["path"]) for e in value]
            else:
                assert config[key] == str(run_dir / value)


def test_every_artifact_exists_and_the_plain_models_load_without_groundup(smoke_run):
    run_dir, _ = smoke_run
    for path in ["data/world.jsonl", "data/questions/eval_heldout.jsonl", "tokenizer/tokenizer.json",
                 "probe/idk_sft.jsonl", "probe/dpo_pairs.jsonl", "report.md", "report/outcomes.png",
                 "report/pretrain_loss.png", "report/selective.png", "configs/pretrain.yaml"]:
        assert (run_dir / path).is_file() and (run_dir / path).stat().st_size > 0, path
    for arm in ARMS:
        for suffix in ("", "-heldout"):
            metrics = json.loads((run_dir / "eval" / f"{arm}{suffix}" / "metrics.json").read_text())
            assert set(metrics["by_tier"]) == {"frequent", "rare", "unseen"}
    for arm in ARMS[1:]:  # chat arms: identity (category, with and without system) and open-book (case/tier)
        identity = json.loads((run_dir / "eval" / f"{arm}-identity" / "metrics.json").read_text())
        assert {"name", "name/system", "maker", "limits/system"} <= set(identity["by_tier"])
        open_book = json.loads((run_dir / "eval" / f"{arm}-open-book" / "metrics.json").read_text())
        assert {"passage/unseen", "contradict/frequent", "other/unseen"} <= set(open_book["by_tier"])
    report = (run_dir / "report.md").read_text()
    assert "## Knowledge of self" in report and "## Working memory: closed-book vs open-book" in report
    assert "| sft | identity held-out accuracy >= 0.9 |" in report
    assert "## Selective answering: refuse when unsure" in report and "| dpo, min_answer_prob 0.5 |" in report
    assert all("answer_prob" in p for p in read_jsonl(run_dir / "eval" / "dpo" / "predictions.jsonl"))
    assert (run_dir / "report" / "outcomes_open_book.png").stat().st_size > 0
    # the surprisal arm carries the in-context copy feature, trained on the made-up people's open-book split
    assert json.loads((run_dir / "sft-idk-surprisal" / "config.json").read_text())["copy_max_match"] == 16
    assert read_jsonl(run_dir / "data" / "questions" / "open_book_synthetic.jsonl")
    # ... and the surprisal arm's folders with the code they carry (trust_remote_code), groundup never imported
    code = ("import sys\nfrom transformers import AutoModelForCausalLM, AutoTokenizer\nremote = False\n"
            "for d in sys.argv[1:]:\n"
            "    if d == '--remote':\n        remote = True\n        continue\n"
            "    t = AutoTokenizer.from_pretrained(d, trust_remote_code=remote)\n"
            "    m = AutoModelForCausalLM.from_pretrained(d, trust_remote_code=remote)\n"
            "    ids = t.apply_chat_template([{'role': 'user', 'content': 'Hi'}], add_generation_prompt=True,"
            " return_tensors='pt', return_dict=True)\n"
            "    m.generate(**ids, max_new_tokens=3)\n"
            "assert 'groundup' not in sys.modules\nprint('ok')\n")
    folders = [str(run_dir / m) for m in PLAIN_MODEL_FOLDERS] + ["--remote"] + [
        str(run_dir / m) for m in ("sft-surprisal-init", "sft-idk-surprisal", "dpo")]
    env = {**os.environ, "HF_MODULES_CACHE": str(run_dir.parent / "hf-modules")}
    result = subprocess.run([PYTHON, "-c", code, *folders], capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0 and result.stdout.strip().endswith("ok"), result.stderr[-2000:]


def test_model_cards_are_hub_ready(smoke_run):
    from huggingface_hub import ModelCard

    run_dir, _ = smoke_run
    for folder in MODEL_FOLDERS:
        card = ModelCard.load(run_dir / folder / "README.md")
        data = card.data.to_dict()
        assert data["license"] == "apache-2.0" and "groundup" in data["tags"]
        assert data.get("model-index"), f"{folder}: no eval results in the card"
        assert ".tmp-" not in card.text  # the card names the final folder, not the staging one
        # the usage snippet asks for the folder's own code exactly where stock transformers lacks the model type
        assert ("trust_remote_code=True" in card.text) == (folder not in PLAIN_MODEL_FOLDERS)
        assert "import groundup" not in card.text


def test_rerun_skips_every_stage(smoke_run):
    run_dir, _ = smoke_run
    out = _speedrun(run_dir)
    assert out.count("skipped (") == len(plan("smoke")) and "running:" not in out


def test_from_sft_redoes_sft_onward_only(smoke_run):
    run_dir, _ = smoke_run
    before = {p: (run_dir / p).stat().st_mtime_ns for p in ("data", "tokenizer", "base", "sft", "dpo", "report.md")}
    out = _speedrun(run_dir, "--from", "sft")
    after = {p: (run_dir / p).stat().st_mtime_ns for p in before}
    assert all(before[p] == after[p] for p in ("data", "tokenizer", "base"))
    assert all(before[p] != after[p] for p in ("sft", "dpo", "report.md"))
    assert "world              skipped" in out and "pretrain           skipped" in out


def test_unknown_from_stage_is_one_line(tmp_path):
    result = subprocess.run([PYTHON, "-m", "groundup.cli", "speedrun", "--preset", "smoke", "--run-dir",
                             str(tmp_path / "r"), "--from", "sfft"], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 2 and result.stderr.startswith("error: --from 'sfft': no such stage")


def test_evaluation_notebook_executes_on_the_run(smoke_run):
    import nbformat
    from nbclient import NotebookClient

    run_dir, _ = smoke_run
    notebook = nbformat.read(REPO / "notebooks" / "evaluate_refusal.ipynb", as_version=4)
    os.environ["GROUNDUP_RUN_DIR"] = str(run_dir)
    try:
        NotebookClient(notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(REPO)}}).execute()
    finally:
        os.environ.pop("GROUNDUP_RUN_DIR")
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    assert [o for o in outputs if "image/png" in o.get("data", {})]  # the plots were drawn


def test_world_seed_generates_another_world_and_records_it(tmp_path, monkeypatch):
    from groundup.pipeline import speedrun

    monkeypatch.setattr(speedrun, "plan", lambda preset: plan(preset)[:1])  # the world step only: seconds
    speedrun.run("smoke", tmp_path / "default")
    speedrun.run("smoke", tmp_path / "seed1", world_seed=1)
    record = (tmp_path / "seed1" / "configs" / "world.yaml").read_text()
    assert record.startswith("# groundup speedrun: step world") and "--world-seed 1" in record.splitlines()[0]
    assert yaml.safe_load(record)["seed"] == 1 and yaml.safe_load(record)["num_people"] == 40  # set as data
    assert "seed: 1" in (tmp_path / "seed1" / "data" / "recipe.yaml").read_text()
    people = {d: [p["name"] for p in read_jsonl(tmp_path / d / "data" / "world.jsonl")] for d in ("default", "seed1")}
    assert people["default"] != people["seed1"]


def test_resuming_a_run_with_another_world_seed_is_refused(tmp_path, capsys):
    from groundup.cli import main as cli_main

    (tmp_path / "r" / "data").mkdir(parents=True)
    (tmp_path / "r" / "data" / "recipe.yaml").write_text("seed: 1\n")
    args = ["speedrun", "--preset", "smoke", "--run-dir", str(tmp_path / "r")]
    assert cli_main(args) == 2  # the preset says seed 0
    assert "generated with world seed 1, and this call asks for 0: pass --world-seed 1" in capsys.readouterr().err
    assert cli_main([*args, "--world-seed", "2"]) == 2
    assert "asks for 2" in capsys.readouterr().err
    (tmp_path / "r" / "sft").mkdir()
    assert cli_main([*args, "--from", "sft"]) == 2
    assert (tmp_path / "r" / "sft").is_dir()  # refused before `--from` deleted anything


def test_world_seed_names_its_own_run_folder(monkeypatch):
    from groundup.pipeline import speedrun

    calls = []
    monkeypatch.setattr(speedrun, "run", lambda *a, **k: calls.append(a))
    speedrun.main(["--preset", "tiny", "--world-seed", "2"])
    speedrun.main(["--preset", "tiny"])
    assert calls == [("tiny", "runs/tiny-seed2", None, 2), ("tiny", "runs/tiny", None, None)]


def test_dry_run_prints_commands_that_run_each_step_by_hand(tmp_path, capsys, monkeypatch):
    """Each printed line, split as a shell would, parses into exactly the config the speedrun would write; nothing is
    created, even for a run folder with spaces, `#` and unicode in its name."""
    import importlib

    from groundup.core.configs import config_dict
    from groundup.pipeline import speedrun
    from groundup.pipeline.stages import STAGES

    monkeypatch.chdir(REPO)
    run_dir = tmp_path / "rün #1 x"
    speedrun.main(["--preset", "smoke", "--run-dir", str(run_dir), "--dry-run", "--world-seed", "3"])
    lines = [line for line in capsys.readouterr().out.splitlines() if not line.startswith("#")]
    assert not list(tmp_path.iterdir())  # a dry run writes nothing
    steps = plan("smoke")
    assert len(lines) == len(steps)
    for step, line in zip(steps, lines):
        argv = shlex.split(line, comments=True)
        assert argv[:4] == ["groundup", step.stage, "--config", f"recipes/smoke/{step.config}"]
        module = importlib.import_module(STAGES[step.stage])
        resolved = tmp_path / "resolved.yaml"
        resolved.write_text(yaml.safe_dump(speedrun.resolve(step, REPO / "recipes" / "smoke", run_dir, 3)))
        assert config_dict(*module.parse_args(argv[2:])) == config_dict(*module.parse_args(["--config", str(resolved)]))
    assert "--seed 3" in lines[0] and str(run_dir / "eval" / "dpo-open-book") in lines[-2]


def test_a_stage_without_its_paths_names_the_missing_keys(tmp_path, capsys, monkeypatch):
    """The settings YAMLs hold no paths: run by hand without them, a stage stops with one line naming them."""
    from groundup.cli import main as cli_main

    monkeypatch.chdir(tmp_path)
    recipes = REPO / "recipes" / "smoke"
    expected = {"world": "output_dir", "tokenizer": "output_dir, dataset", "pretrain": "output_dir, tokenizer, dataset",
                "sft": "model_name_or_path, datasets (or dataset_name), output_dir", "probe": "model, questions, "
                "output_dir", "surprisal-init": "base, model, output_dir", "report": "run_dir",
                "dpo": "model_name_or_path, datasets (or dataset_name), output_dir"}
    configs = {"world": "world", "tokenizer": "tokenizer", "pretrain": "pretrain", "sft": "sft", "probe": "probe",
               "surprisal-init": "surprisal_init", "report": "report", "dpo": "dpo"}
    for stage, keys in expected.items():
        assert cli_main([stage, "--config", str(recipes / f"{configs[stage]}.yaml")]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"error: {stage}: {keys} not set") and err.count("\n") == 1, err
    assert cli_main(["eval", "--config", str(recipes / "eval.yaml")]) == 2
    assert capsys.readouterr().err.startswith("error: missing model")
    assert not list(tmp_path.iterdir())  # no default folder was made


def test_settings_that_name_a_run_path_and_inputs_nobody_wrote_are_refused(tmp_path):
    import shutil

    from groundup.core.errors import GroundupError
    from groundup.pipeline import speedrun

    preset = tmp_path / "mine"
    shutil.copytree(REPO / "recipes" / "smoke", preset)
    with (preset / "sft.yaml").open("a") as f:
        f.write("output_dir: runs/smoke/sft\n")
    with pytest.raises(GroundupError, match=r"sft.yaml sets output_dir, a run path that pipeline.yaml gives"):
        speedrun.main(["--preset", str(preset), "--run-dir", str(tmp_path / "r"), "--dry-run"])
    text = (preset / "pipeline.yaml").read_text()
    (preset / "pipeline.yaml").write_text(text.replace("model_name_or_path: base", "model_name_or_path: bsae"))
    with pytest.raises(GroundupError, match=r"step sft: model_name_or_path: bsae is not written by an earlier step"):
        plan(preset)
