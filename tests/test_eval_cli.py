"""`groundup eval` end to end on the tiny random model, in a fresh process, plus its input checks in-process."""

import json
import subprocess
import sys

import pytest

from groundup.cli import run_stage
from groundup.evaluate.evaluation import candidates_for, grade_rows, load_questions, main, resolve_schema
from groundup.core.errors import GroundupError
from groundup.core.grading import RATE_KEYS
from groundup.core.jsonl import read_jsonl
from groundup.world.schema import ATTRIBUTE_VALUES


def _cli(*args, timeout=120):
    return subprocess.run([sys.executable, "-m", "groundup.cli", "eval", *args], capture_output=True, text=True,
                          timeout=timeout)


def test_eval_cli_chat_format(tiny_model_dir, world_dir, tmp_path):
    out = tmp_path / "eval"
    questions = world_dir / "questions" / "eval.jsonl"
    result = _cli("--model", str(tiny_model_dir), "--questions", str(questions), "--output", str(out),
                  "--max_new_tokens", "8", "--arm", "random", "--progress", "false", "--num_threads", "1")
    assert result.returncode == 0, result.stderr[-2000:]
    assert sorted(p.name for p in out.iterdir()) == ["metrics.json", "predictions.jsonl", "recipe.yaml"]
    metrics = json.loads((out / "metrics.json").read_text())
    rows = read_jsonl(questions)
    predictions = read_jsonl(out / "predictions.jsonl")
    assert [p["id"] for p in predictions] == [r["id"] for r in rows]
    for p, r in zip(predictions, rows):
        assert list(p)[:6] == ["id", "question", "gold", "response", "grade", "tier"]
        assert p["gold"] == r["answer"] and p["grade"] in ("correct", "incorrect", "refused")
        assert (p["name"], p["attribute"], p["phrasing"]) == (r["name"], r["attribute"], r["phrasing"])  # carried
    assert metrics["arm"] == "random" and metrics["n_questions"] == len(rows)
    assert metrics["grading"]["candidates_source"].endswith("schema.json")
    assert set(metrics["by_tier"]) == {r["tier"] for r in rows}
    for block in [metrics["overall"], *metrics["by_tier"].values()]:
        for key in RATE_KEYS:
            assert key in block and f"{key}_ci95" in block
        assert block["counts"]["n"] == block["counts"]["answerable"] + block["counts"]["unanswerable"]
    # A random model never says "I don't know.": every unanswerable question is a hallucination.
    assert metrics["by_tier"]["unseen"]["refusal_rate_unanswerable"] == 0.0
    assert "prompt_format: chat" in (out / "recipe.yaml").read_text()


def test_eval_cli_few_shot_config_and_reference(tiny_model_dir, world_dir, tmp_path):
    """A base-model arm from a YAML config: few-shot plain text from the SFT pool; over-conservativeness vs a
    reference predictions file (the run compared with itself: nothing newly refused)."""
    questions = world_dir / "questions" / "eval_heldout.jsonl"
    first = tmp_path / "first"
    config = tmp_path / "eval.yaml"
    config.write_text(f"model: {tiny_model_dir}\nquestions: {questions}\nprompt_format: few_shot\n"
                      f"few_shot_file: {world_dir / 'questions' / 'sft.jsonl'}\nfew_shot_n: 1\n"
                      f"max_new_tokens: 6\nlimit: 12\nprogress: false\nnum_threads: 1\n")
    result = _cli("--config", str(config), "--output_dir", str(first))
    assert result.returncode == 0, result.stderr[-2000:]
    second = tmp_path / "second"  # in-process this time (a fresh process was checked above)
    main(["--config", str(config), "--output_dir", str(second), "--reference_predictions",
          str(first / "predictions.jsonl")])
    metrics = json.loads((second / "metrics.json").read_text())
    assert metrics["generation"]["prompt_format"] == "few_shot" and metrics["n_questions"] == 12
    assert metrics["over_conservativeness"]["overall"]["tuned_refused"] == 0
    first_responses = [p["response"] for p in read_jsonl(first / "predictions.jsonl")]
    assert [p["response"] for p in read_jsonl(second / "predictions.jsonl")] == first_responses  # greedy: same
    assert all("\n\n" not in r for r in first_responses)  # stopped at the blank line


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_question_file_checks(tmp_path):
    good = _write(tmp_path / "q.jsonl", [{"id": 1, "question": "Q?", "answer": None}])
    assert load_questions(good)[0]["id"] == "1"
    for rows, message in [
        ([{"id": "a", "question": "Q?"}], "missing key 'answer'"),
        ([{"id": "a", "question": "Q?", "answer": 3}], "string or null"),
        ([{"id": "a", "question": "Q?", "answer": "x", "aliases": "y"}], "aliases"),
        ([{"id": "a", "question": "Q?", "answer": "x"}, {"id": "a", "question": "R?", "answer": "y"}], "duplicate"),
    ]:
        with pytest.raises(GroundupError, match=message):
            load_questions(_write(tmp_path / "bad.jsonl", rows))
    (tmp_path / "broken.jsonl").write_text('{"id": \n')
    with pytest.raises(GroundupError, match=r"broken.jsonl:1: not valid JSON"):
        load_questions(tmp_path / "broken.jsonl")


def test_candidates_sources_and_carried_keys(tmp_path, world_dir):
    rows = [
        {"id": "a", "question": "Where?", "answer": "Oslo", "attribute": "city", "extra": {"k": 1}},
        {"id": "b", "question": "Where?", "answer": "Lima", "aliases": ["Lima, Peru"], "attribute": "city"},
        {"id": "c", "question": "Who?", "answer": None, "candidates": ["Ann", "Bo"], "response": "kept"},
        {"id": "d", "question": "What?", "answer": "x"},
    ]
    cands = candidates_for(rows, None)  # inferred from the file's gold answers of the same attribute
    assert cands == [["Lima", "Lima, Peru", "Oslo"]] * 2 + [["Ann", "Bo"], []]
    preds = grade_rows(rows, ["Oslo.", "Oslo or Lima", "Bo", "no idea"], cands)
    assert [p["grade"] for p in preds] == ["correct", "incorrect", "incorrect", "refused"]
    assert preds[0]["extra"] == {"k": 1} and preds[1]["aliases"] == ["Lima, Peru"]
    assert preds[2]["response"] == "Bo" and preds[2]["input_response"] == "kept"  # a clashing key is renamed
    assert preds[3]["tier"] is None  # the column is always there
    schema, source = resolve_schema("auto", world_dir / "questions" / "eval.jsonl")
    assert schema["birth_city"] == ATTRIBUTE_VALUES["birth_city"] and source.endswith("schema.json")
    assert resolve_schema("auto", tmp_path / "q.jsonl") == (None, "none")


def test_eval_bad_input_is_one_line(tmp_path, capsys):
    assert run_stage(main, ["--model", "m", "--questions", "q.jsonl", "--output", str(tmp_path / "o"),
                            "--no_such_key", "1"]) == 2
    assert "no_such_key" in capsys.readouterr().err
    assert run_stage(main, ["--model", "m", "--output", str(tmp_path / "o")]) == 2
    assert "missing questions" in capsys.readouterr().err
    assert run_stage(main, ["--model", "m", "--questions", str(tmp_path / "nope.jsonl"),
                            "--output", str(tmp_path / "o")]) == 2
    assert "question file not found" in capsys.readouterr().err
    for bad, message in ((["--min_answer_prob", "1.5"], "not a probability"),
                         (["--min_answer_prob", "0.5", "--do_sample", "true"], "greedy")):
        assert run_stage(main, ["--model", "m", "--questions", "q.jsonl", "--output", str(tmp_path / "o"),
                                *bad]) == 2
        assert message in capsys.readouterr().err


def test_eval_yamls_parse():
    from pathlib import Path

    from groundup.core.configs import parse_config
    from groundup.evaluate.evaluation import EvalArguments

    recipes = Path(__file__).resolve().parents[1] / "recipes" / "tiny"
    (args,) = parse_config([EvalArguments], ["--config", str(recipes / "eval.yaml"), "--model", "m"])
    assert args.prompt_format == "chat" and not args.do_sample and args.model == "m"
    (args,) = parse_config([EvalArguments], ["--config", str(recipes / "eval_base.yaml")])
    assert args.prompt_format == "few_shot" and args.few_shot_file is None  # a path: the preset's pipeline.yaml gives it


def test_generation_batched_matches_one_at_a_time(tiny_model_dir, world_dir):
    """Left padding + KV cache in batches gives the same greedy answers as one unpadded question at a time."""
    from groundup.evaluate.generation import HFGenerator, eos_token_ids, few_shot_prefix, torch_threads

    with torch_threads(1):  # tiny matrices: one thread is much faster on a busy 2-core machine
        _check_generation(tiny_model_dir, world_dir, HFGenerator, eos_token_ids, few_shot_prefix)


def _check_generation(tiny_model_dir, world_dir, HFGenerator, eos_token_ids, few_shot_prefix):
    questions = [r["question"] for r in read_jsonl(world_dir / "questions" / "eval.jsonl")][:10]
    generator = HFGenerator.load(str(tiny_model_dir), max_new_tokens=6, batch_size=10, progress=False)
    batched = generator.generate(questions)
    generator.batch_size, generator.use_cache = 1, False
    assert generator.generate(questions) == batched
    tok = generator.tokenizer
    assert set(eos_token_ids(generator.model, tok)) == set(tok.convert_tokens_to_ids(["<|im_end|>", "<|im_start|>"]))
    assert generator.prompt("Q?").endswith("<|im_start|>assistant\n")
    sampled = generator.generate(questions[:2], num_samples=3, do_sample=True, seed=0)
    assert [len(s) for s in sampled] == [3, 3]
    with pytest.raises(ValueError, match="greedy"):
        generator.generate(questions[:1], num_samples=2)

    from groundup.data.schema import find_schema

    rows = read_jsonl(world_dir / "questions" / "sft.jsonl")
    prefix = few_shot_prefix(rows, 3, exclude_names={rows[0]["name"]}, schema=find_schema(world_dir))
    assert prefix.count("Q: ") == 3 and prefix.endswith("\n\n") and rows[0]["name"] not in prefix
    assert " was born in the " in prefix or " works as a " in prefix or " is employed by " in prefix \
        or "In free time" in prefix
    # without a schema the examples answer with the gold value itself
    plain = few_shot_prefix(rows, 3, exclude_names={rows[0]["name"]})
    golds = {r["answer"] for r in rows}
    assert plain.count("Q: ") == 3 and all(line[3:] in golds for line in plain.splitlines() if line.startswith("A: "))
    with pytest.raises(GroundupError, match="wanted 99"):
        few_shot_prefix(rows[:5], 99)


def test_cloze_format_for_a_base_model(tiny_model_dir, world_dir):
    """`prompt_format: cloze` completes the answer sentence; the graded response is the whole sentence."""
    from groundup.data.schema import Schema, find_schema
    from groundup.evaluate.evaluation import EvalArguments, run_eval
    from groundup.world.schema import schema

    cloze_prefix = Schema.from_dict(schema()).cloze_prefix
    row = {"id": "x", "name": "Arel Thornby", "attribute": "hobby"}
    assert cloze_prefix(row) == "In free time, Arel Thornby enjoys"
    assert cloze_prefix({**row, "attribute": "birth_city"}) == "Arel Thornby was born in the city of"
    with pytest.raises(GroundupError, match="cloze needs world questions"):
        cloze_prefix({"id": "y", "question": "Q?"})
    args = EvalArguments(model=str(tiny_model_dir), questions=str(world_dir / "questions" / "eval.jsonl"),
                         output_dir="unused", prompt_format="cloze", max_new_tokens=4, limit=6, progress=False,
                         num_threads=1)
    metrics, predictions = run_eval(args)
    assert metrics["generation"]["prompt_format"] == "cloze" and len(predictions) == 6
    for p in predictions:
        assert p["response"] == "" or p["response"].startswith(find_schema(world_dir).cloze_prefix(p))
    with pytest.raises(GroundupError, match="cloze needs the answer sentences"):
        run_eval(EvalArguments(**{**vars(args), "schema": "none"}))


def test_answer_prob_is_the_least_likely_chosen_token(tiny_model_dir, world_dir):
    """generate_with_confidence gives the same answers as generate, and per answer the smallest probability the model
    gave a token it emitted, as transformers' own scores say (one unpadded question at a time, no cache)."""
    import torch

    from groundup.evaluate.generation import HFGenerator, torch_threads

    questions = [r["question"] for r in read_jsonl(world_dir / "questions" / "eval.jsonl")][:6]
    generator = HFGenerator.load(str(tiny_model_dir), max_new_tokens=6, batch_size=6, progress=False)
    tok, model = generator.tokenizer, generator.model
    with torch_threads(1), torch.inference_mode():
        answers, probs = generator.generate_with_confidence(questions)
        assert answers == [a[0] for a in generator.generate(questions)]
        for question, prob in zip(questions, probs):
            ids = tok(generator.prompt(question), add_special_tokens=False, return_tensors="pt")
            out = model.generate(**ids, max_new_tokens=6, do_sample=False, output_scores=True, use_cache=False,
                                 return_dict_in_generate=True, eos_token_id=generator.eos_ids,
                                 pad_token_id=tok.pad_token_id)
            chosen = []
            for step, token in zip(out.scores, out.sequences[0, ids["input_ids"].shape[1]:].tolist()):
                if token in generator.eos_ids:
                    break
                chosen.append(float(step[0].softmax(-1)[token]))
            assert prob == pytest.approx(min(chosen), abs=1e-5)
            assert 0.0 < prob <= 1.0


def test_min_answer_prob_turns_unsure_answers_into_refusals(tiny_model_dir, world_dir, tmp_path):
    questions = world_dir / "questions" / "eval.jsonl"
    common = ["--model", str(tiny_model_dir), "--questions", str(questions), "--max_new_tokens", "6", "--limit", "20",
              "--progress", "false", "--num_threads", "1"]
    main([*common, "--output", str(tmp_path / "all")])
    plain = read_jsonl(tmp_path / "all" / "predictions.jsonl")
    probs = sorted(p["answer_prob"] for p in plain)
    threshold = (probs[9] + probs[10]) / 2  # half the answers fall below
    main([*common, "--output", str(tmp_path / "gated"), "--min_answer_prob", str(threshold)])
    gated = read_jsonl(tmp_path / "gated" / "predictions.jsonl")
    for before, after in zip(plain, gated):
        if before["answer_prob"] < threshold and before["grade"] != "refused":
            assert after["response"] == "I don't know." and after["grade"] == "refused"
            assert (after["raw_response"], after["raw_grade"]) == (before["response"], before["grade"])
        else:
            assert after == before
    selective = json.loads((tmp_path / "gated" / "metrics.json").read_text())["selective_answering"]
    assert selective["min_answer_prob"] == threshold and selective["abstained"] == 10
    assert selective["answer_prob_auroc"]["overall"]["n"] <= 20
