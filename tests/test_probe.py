"""Probe labelling on a stub model whose answers are scripted, the training data it writes, and a real run."""

import json
import math
from collections import Counter
from pathlib import Path

import pytest

from groundup.core.chat import REFUSAL
from groundup.core.configs import parse_config
from groundup.core.errors import GroundupError
from groundup.data.schema import Schema
from groundup.evaluate import probe
from groundup.evaluate.probe import (NAME_PART_MAX_REPEATS, ProbeArguments, entropy, main, name_part_repeats,
                                     probe_questions, probe_summary)
from groundup.core.jsonl import read_jsonl
from groundup.world.schema import ATTRIBUTE_VALUES, answer_sentence, schema

SCHEMA = Schema.from_dict(schema())  # what `main` reads from the world's schema.json: answers in its sentences


def build_training_data(*args, **kwargs):
    return probe.build_training_data(*args, schema=SCHEMA, **kwargs)

REPO = Path(__file__).resolve().parents[1]
CITIES = ATTRIBUTE_VALUES["birth_city"]


def _row(i, name, gold, tier):
    return {"id": f"p{i}", "question": f"In which city was {name} born?", "answer": gold, "tier": tier,
            "name": name, "attribute": "birth_city", "phrasing": "train"}


def _say(name, city):
    return answer_sentence(name, "birth_city", city)


class ScriptedModel:
    """A stand-in for HFGenerator: fixed greedy and sampled answers per question."""

    def __init__(self, script):
        self.script = script  # question -> (greedy answer, [sampled answers])
        self.calls = []

    def generate(self, questions, num_samples=1, do_sample=False, desc="", seed=None):
        self.calls.append((len(questions), num_samples, do_sample))
        if not do_sample:
            return [[self.script[q][0]] for q in questions]
        return [list(self.script[q][1][:num_samples]) for q in questions]


ROWS = [
    _row(0, "Ana Bell", "Velmora", "frequent"),  # knows it: greedy right, 10/10 samples right
    _row(1, "Bo Cald", "Korvath", "rare"),  # unknown: always wrong, mostly one wrong city
    _row(2, "Cy Dun", "Lunvale", "rare"),  # borderline: greedy right, 3/10 samples right
    _row(3, "Di Fell", None, "unseen"),  # unanswerable, already refused everywhere
    _row(4, "Ed Grim", "Rimeford", "frequent"),  # greedy wrong but 7/10 samples right
    _row(5, "Fay Hart", None, "unseen"),  # unanswerable, hallucinates
]
SCRIPT = {
    ROWS[0]["question"]: (_say("Ana Bell", "Velmora"), [_say("Ana Bell", "Velmora")] * 10),
    ROWS[1]["question"]: (_say("Bo Cald", "Dunmarsh"),
                          [_say("Bo Cald", "Sablecrest")] * 6 + [_say("Bo Cald", "Dunmarsh")] * 2 + ["zzz"] * 2),
    ROWS[2]["question"]: (_say("Cy Dun", "Lunvale"),
                          [_say("Cy Dun", "Lunvale")] * 3 + [_say("Cy Dun", "Korvath")] * 7),
    ROWS[3]["question"]: (REFUSAL, [REFUSAL] * 10),
    ROWS[4]["question"]: (_say("Ed Grim", "Velmora"),
                          [_say("Ed Grim", "Rimeford")] * 7 + [REFUSAL] * 3),
    ROWS[5]["question"]: (_say("Fay Hart", "Velmora"), [_say("Fay Hart", "Eskavel")] * 5 + [REFUSAL] * 5),
}
CANDS = [CITIES] * len(ROWS)


def _args(**overrides):
    return ProbeArguments(num_samples=10, sft_questions=None, **overrides)


def _records(**overrides):
    model = ScriptedModel(SCRIPT)
    records = probe_questions(model, ROWS, CANDS, _args(**overrides))
    assert model.calls == [(6, 1, False), (6, 10, True)]  # one greedy pass, one sampled pass
    return {r["id"]: r for r in records}


def test_probe_stats_and_labels():
    recs = _records()
    assert [recs[f"p{i}"]["label"] for i in range(6)] == ["known", "unknown", "borderline", "unknown", "borderline",
                                                          "unknown"]
    assert recs["p0"]["p_correct"] == 1.0 and recs["p0"]["entropy"] == 0.0 and recs["p0"]["agreement"] == 1.0
    assert recs["p0"]["slick"] == "highly_known"
    assert recs["p1"]["p_correct"] == 0.0 and recs["p1"]["slick"] == "unknown"
    assert recs["p1"]["agreement"] == 0.2  # 2 of 10 samples name the greedy answer's city
    assert recs["p2"]["p_correct"] == 0.3 and recs["p2"]["slick"] == "maybe_known"
    assert recs["p3"]["p_refused"] == 1.0 and recs["p3"]["greedy_grade"] == "refused"
    assert recs["p4"]["slick"] == "weakly_known" and recs["p4"]["p_correct"] == 0.7
    assert recs["p5"]["entropy"] == pytest.approx(math.log(2), abs=1e-6)
    relaxed = _records(known_requires_greedy=False)
    assert relaxed["p4"]["label"] == "known"
    assert _records(known_min_p_correct=0.3)["p2"]["label"] == "known"


def test_entropy():
    assert entropy(["a"] * 4) == 0.0
    assert entropy(["a", "b", "c", "d"]) == pytest.approx(math.log(4), abs=1e-6)


def test_idk_sft_and_dpo_pairs():
    records = list(_records().values())
    idk, pairs, stats = build_training_data(records, CANDS, _args())
    by_q = {row["messages"][0]["content"]: row["messages"][1]["content"] for row in idk}
    assert by_q == {ROWS[0]["question"]: _say("Ana Bell", "Velmora"), ROWS[1]["question"]: REFUSAL,
                    ROWS[3]["question"]: REFUSAL, ROWS[5]["question"]: REFUSAL}  # borderline dropped
    for row in idk:
        assert [m["role"] for m in row["messages"]] == ["user", "assistant"] and set(row) == {"messages"}
    pairs_by_q = {p["prompt"][0]["content"]: (p["chosen"][0]["content"], p["rejected"][0]["content"]) for p in pairs}
    for p in pairs:
        assert set(p) == {"prompt", "chosen", "rejected"}
        assert p["prompt"][0]["role"] == "user" and p["chosen"][0]["role"] == p["rejected"][0]["role"] == "assistant"
    # known: the answer over a refusal, so DPO cannot win by refusing everything
    assert pairs_by_q[ROWS[0]["question"]] == (_say("Ana Bell", "Velmora"), REFUSAL)
    # unknown: the refusal over the model's own most frequent wrong answer (in answer format)
    assert pairs_by_q[ROWS[1]["question"]] == (REFUSAL, _say("Bo Cald", "Sablecrest"))
    assert pairs_by_q[ROWS[5]["question"]] == (REFUSAL, _say("Fay Hart", "Eskavel"))
    # unknown and already refused: a fabricated wrong answer about that person
    chosen, rejected = pairs_by_q[ROWS[3]["question"]]
    assert chosen == REFUSAL and rejected.startswith("Di Fell was born in the city of ")
    assert ROWS[2]["question"] not in pairs_by_q and ROWS[4]["question"] not in pairs_by_q  # borderline: no pairs
    assert stats["dpo_unknown_fabricated"] == 1 and stats["dpo_unknown_own_answer"] == 2

    idk, pairs, stats = build_training_data(records, CANDS, _args(borderline="refuse", dpo_fallback_rejected="skip"))
    by_q = {row["messages"][0]["content"]: row["messages"][1]["content"] for row in idk}
    assert by_q[ROWS[2]["question"]] == REFUSAL and by_q[ROWS[4]["question"]] == REFUSAL
    assert ROWS[3]["question"] not in {p["prompt"][0]["content"] for p in pairs}
    assert stats["dpo_unknown_skipped"] == 1

    # without a schema (any question file): the gold answer itself
    idk, _, _ = probe.build_training_data(records, CANDS, _args())
    assert {row["messages"][0]["content"]: row["messages"][1]["content"] for row in idk}[ROWS[0]["question"]] \
        == "Velmora"


def test_dpo_pairs_balance_the_two_preferences():
    records = list(_records().values())  # 1 known (answer chosen), 3 unknown (refusal chosen)
    idk, pairs, stats = build_training_data(records, CANDS, _args())
    chosen = Counter(p["chosen"][0]["content"] == REFUSAL for p in pairs)
    assert chosen[True] == chosen[False] == 3 and stats["dpo_balance_repeats"] == 2
    answers = [p for p in pairs if p["chosen"][0]["content"] != REFUSAL]
    assert all(p == answers[0] for p in answers)  # the one answer pair, three times
    idk_plain, plain, plain_stats = build_training_data(records, CANDS, _args(dpo_balance=False))
    assert len(plain) == 4 and "dpo_balance_repeats" not in plain_stats
    assert idk_plain == idk  # balancing touches the DPO pairs only

    # more answers than refusals: refusal pairs repeat, each as evenly as the numbers allow
    sft_rows = [_row(10 + i, f"Gus Ith{i}", "Velmora", "frequent") for i in range(5)]
    _, pairs, stats = build_training_data(records, CANDS, _args(sft_questions_in_dpo=True), sft_rows, [CITIES] * 5)
    refusals = Counter(p["prompt"][0]["content"] for p in pairs if p["chosen"][0]["content"] == REFUSAL)
    assert sum(refusals.values()) == 6 and sorted(refusals.values()) == [2, 2, 2]


def _refused_share(idk, part):
    replies = [row["messages"][1]["content"] for row in idk if part in row["messages"][0]["content"].split()]
    return sum(r == REFUSAL for r in replies) / len(replies)


def test_balance_name_parts_takes_the_name_out_of_the_reply():
    # "Lor" is refused in 3 rows of 4, "Isa" in 1 of 4: a model can learn the reply from the first name alone
    people = [("Lor Aker", None, "unseen"), ("Lor Bram", None, "unseen"), ("Lor Cald", None, "unseen"),
              ("Lor Dun", "Velmora", "frequent"), ("Isa Aker", "Korvath", "frequent"),
              ("Isa Bram", "Lunvale", "frequent"), ("Isa Cald", "Rimeford", "frequent"), ("Isa Dun", None, "unseen")]
    sft_rows = [_row(10 + i, name, gold, tier) for i, (name, gold, tier) in enumerate(people)]
    plain, _, _ = build_training_data([], [], _args(), sft_rows, [CITIES] * len(sft_rows))
    idk, _, stats = build_training_data([], [], _args(balance_name_parts=True), sft_rows, [CITIES] * len(sft_rows))
    assert _refused_share(plain, "Lor") == 0.75 and _refused_share(plain, "Isa") == 0.25
    assert _refused_share(idk, "Lor") == pytest.approx(0.5, abs=0.1)
    assert _refused_share(idk, "Isa") == pytest.approx(0.5, abs=0.1)
    # repeats only: every row is still there, none more than the cap allows
    counts = Counter(row["messages"][0]["content"] for row in idk)
    assert set(counts) == {row["messages"][0]["content"] for row in plain}
    assert max(counts.values()) <= NAME_PART_MAX_REPEATS
    assert stats["idk_sft_name_part_repeats"] == len(idk) - len(plain) > 0
    assert idk == build_training_data([], [], _args(balance_name_parts=True), sft_rows, [CITIES] * len(sft_rows))[0]


def test_name_part_repeats_edge_cases():
    assert name_part_repeats([None, None], [True, False]) == [1.0, 1.0]  # no names: nothing to balance
    assert name_part_repeats(["A B", "A C"], [True, True]) == [1.0, 1.0]  # one reply only
    weights = name_part_repeats(["A B", "A C", "A D", "E B"], [True, True, True, False], max_repeats=2)
    assert min(weights) >= 1.0 and max(weights) <= 2.0


def test_sft_pool_rows_keep_the_model_answering():
    sft_rows = [_row(10, "Gus Ith", "Velmora", "frequent"), _row(11, "Hal Jor", "Korvath", "rare"),
                _row(12, "Ivy Kess", None, "unseen")]
    idk, pairs, stats = build_training_data([], [], _args(sft_questions_in_dpo=True), sft_rows, [CITIES] * 3)
    by_q = {row["messages"][0]["content"]: row["messages"][1]["content"] for row in idk}
    assert by_q == {sft_rows[0]["question"]: _say("Gus Ith", "Velmora"), sft_rows[2]["question"]: REFUSAL}
    assert stats["idk_sft_sft_pool_dropped"] == 1 and len(pairs) == 2


def test_rephrasings_take_the_label_of_the_question_they_rephrase():
    records = list(_records().values())
    sft_rows = [_row(10, "Gus Ith", "Velmora", "frequent"), _row(11, "Hal Jor", "Korvath", "rare")]

    def rephrase(source):
        return {"id": f"r-{source['id']}", "question": f"Tell me the birthplace of {source['name']}.",
                "answer": source["answer"], "rephrases": source["id"]}

    rephrasings = [rephrase(r) for r in [*ROWS, *sft_rows]]
    idk, pairs, stats = build_training_data(records, CANDS, _args(), sft_rows, [CITIES] * 2, rephrasings)
    by_q = {row["messages"][0]["content"]: row["messages"][1]["content"] for row in idk}
    assert by_q["Tell me the birthplace of Ana Bell."] == _say("Ana Bell", "Velmora")  # known
    assert by_q["Tell me the birthplace of Bo Cald."] == REFUSAL  # unknown
    assert by_q["Tell me the birthplace of Gus Ith."] == _say("Gus Ith", "Velmora")  # SFT pool, frequent
    # left out with the question they rephrase: borderline (dropped) and rare SFT-pool people
    assert "Tell me the birthplace of Cy Dun." not in by_q and "Tell me the birthplace of Hal Jor." not in by_q
    assert stats["idk_sft_rephrased"] == 5  # Ana, Bo, Di, Fay (probe) + Gus (SFT pool)
    assert len(pairs) == len(build_training_data(records, CANDS, _args())[1])  # DPO pairs unchanged

    # rephrase_refusals false: answers only
    idk, _, stats = build_training_data(records, CANDS, _args(rephrase_refusals=False), sft_rows, [CITIES] * 2,
                                        rephrasings)
    questions = {row["messages"][0]["content"] for row in idk}
    assert {"Tell me the birthplace of Ana Bell.", "Tell me the birthplace of Gus Ith."} <= questions
    assert "Tell me the birthplace of Bo Cald." not in questions and stats["idk_sft_rephrased"] == 2


def test_summary_auroc():
    summary = probe_summary(list(_records().values()))
    assert summary["labels"] == {"known": 1, "borderline": 2, "unknown": 3}
    assert list(summary["by_tier"]) == ["frequent", "rare", "unseen"]
    # greedy right: p0, p2 (p_correct 1.0, 0.3) against wrong p1, p3, p4, p5 (0.0, 0.0, 0.7, 0.0): 7 of 8 pairs
    assert summary["auroc_p_correct_vs_greedy_correct"] == pytest.approx(0.875, abs=1e-6)


def test_probe_yaml_parses():
    for preset in ("tiny", "gpt2-124m"):
        (args,) = parse_config([ProbeArguments], ["--config", str(REPO / "recipes" / preset / "probe.yaml")])
        assert args.num_samples == 10 and args.temperature == 0.7


def test_probe_stage_on_tiny_model(tiny_model_dir, world_dir, tmp_path):
    out = tmp_path / "probe"
    main(["--config", str(REPO / "recipes" / "tiny" / "probe.yaml"), "--model", str(tiny_model_dir),
          "--questions", str(world_dir / "questions" / "probe.jsonl"),
          "--sft_questions", str(world_dir / "questions" / "sft.jsonl"), "--output_dir", str(out),
          "--rephrasings", str(world_dir / "questions" / "rephrased.jsonl"),
          "--num_samples", "3", "--max_new_tokens", "4", "--limit", "12", "--progress", "false",
          "--balance_name_parts", "false"])  # each row once, so rows can be counted below (balancing: tests above)
    assert sorted(p.name for p in out.iterdir()) == ["dpo_pairs.jsonl", "idk_sft.jsonl", "probe.jsonl",
                                                     "probe_metrics.json", "recipe.yaml"]
    records = read_jsonl(out / "probe.jsonl")
    assert len(records) == 12 and all(len(r["samples"]) == 3 for r in records)
    assert all(r["label"] == "unknown" for r in records)  # a random model knows nothing
    summary = json.loads((out / "probe_metrics.json").read_text())
    assert summary["labels"]["unknown"] == 12 and summary["dpo_pairs"] == len(read_jsonl(out / "dpo_pairs.jsonl"))
    idk = read_jsonl(out / "idk_sft.jsonl")
    assert sum(r["messages"][1]["content"] == REFUSAL for r in idk) >= 12  # probe unknowns + unseen SFT people
    assert any(r["messages"][1]["content"] != REFUSAL for r in idk)  # frequent SFT people are still answered

    # the world's rephrased questions join with the labels of the questions they rephrase; a wrong file is refused
    from groundup.pipeline.speedrun import plan

    probe_step = next(step for step in plan("tiny") if step.name == "probe")  # the preset probes with rephrasings
    assert probe_step.inputs["rephrasings"] == "data/questions/rephrased.jsonl"
    summary_rephrased = summary["training_data"]["idk_sft_rephrased"]
    rephrased = {r["question"] for r in read_jsonl(world_dir / "questions" / "rephrased.jsonl")}
    assert summary_rephrased == sum(r["messages"][0]["content"] in rephrased for r in idk) >= 12  # the 12 unknowns
    for bad, error in [("eval.jsonl", "has no 'rephrases' key"), ("rephrased.jsonl", "no row rephrases")]:
        with pytest.raises(GroundupError, match=error):  # before any model is loaded
            main(["--config", str(REPO / "recipes" / "tiny" / "probe.yaml"), "--model", "no/such/model",
                  "--questions", str(world_dir / "questions" / "eval.jsonl"), "--sft_questions", "null",
                  "--rephrasings", str(world_dir / "questions" / bad), "--output_dir", str(tmp_path / "bad")])
