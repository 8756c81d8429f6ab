import hashlib
import re
from collections import Counter
from pathlib import Path

import pytest

from groundup.core.chat import is_refusal
from groundup.core.errors import GroundupError
from groundup.core.jsonl import read_jsonl
from groundup.world.generate import main
from groundup.world.schema import ATTRIBUTE_VALUES, BIO_TEMPLATES, QUESTION_KEYWORDS, QUESTION_TEMPLATES

from .conftest import SMALL_WORLD


def _digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_world_is_byte_identical_for_a_seed_and_differs_for_another(tmp_path):
    main(["--output_dir", str(tmp_path / "a"), "--seed", "3", *SMALL_WORLD])
    main(["--output_dir", str(tmp_path / "b"), "--seed", "3", *SMALL_WORLD])
    main(["--output_dir", str(tmp_path / "c"), "--seed", "4", *SMALL_WORLD])
    a, b, c = (_digest(tmp_path / x) for x in "abc")
    a.pop("recipe.yaml"), b.pop("recipe.yaml")  # it records the output folder, which differs
    assert a == b
    assert a["world.jsonl"] != c["world.jsonl"] and a["corpus.jsonl"] != c["corpus.jsonl"]


def test_world_jsonl_follows_the_documented_schema(world_dir):
    people = read_jsonl(world_dir / "world.jsonl")
    assert len(people) == 60
    for person in people:
        assert set(person) == {"name", "attributes", "tier", "pool", "exposures"}
        assert person["tier"] in {"frequent", "rare", "unseen"} and person["pool"] in {"sft", "probe", "eval"}
        assert set(person["attributes"]) == set(ATTRIBUTE_VALUES) and len(person["attributes"]) >= 5
    # every pool holds every tier, so each can be measured per tier
    assert {(p["pool"], p["tier"]) for p in people} == {(pool, tier) for pool in ("sft", "probe", "eval")
                                                         for tier in ("frequent", "rare", "unseen")}


def test_pools_are_entity_disjoint_and_eval_people_never_reach_finetuning_files(world_dir):
    people = read_jsonl(world_dir / "world.jsonl")
    pool_of = {p["name"]: p["pool"] for p in people}
    assert len(pool_of) == len(people)
    eval_names = [name for name, pool in pool_of.items() if pool == "eval"]
    for split in ("sft", "probe"):
        text = (world_dir / "questions" / f"{split}.jsonl").read_text()
        rows = read_jsonl(world_dir / "questions" / f"{split}.jsonl")
        assert {pool_of[r["name"]] for r in rows} == {split}
        assert not [n for n in eval_names if n in text]  # not even mentioned in passing
    for split in ("eval", "eval_heldout"):
        assert {pool_of[r["name"]] for r in read_jsonl(world_dir / "questions" / f"{split}.jsonl")} == {"eval"}


def test_tier_exposures_in_the_corpus_match_world_jsonl(world_dir):
    people = read_jsonl(world_dir / "world.jsonl")
    corpus = [row["text"] for row in read_jsonl(world_dir / "corpus.jsonl")]
    mentions = Counter()
    for text in corpus:
        for person in people:
            if re.search(rf"\b{person['name']}\b", text):
                mentions[person["name"]] += 1
    for person in people:
        assert mentions[person["name"]] == person["exposures"], person["name"]
        if person["tier"] == "unseen":
            assert person["exposures"] == 0
        elif person["tier"] == "rare":
            assert 1 <= person["exposures"] <= 3
        else:
            assert person["exposures"] >= 8


def test_question_files_follow_the_eval_format_and_unseen_people_are_unanswerable(world_dir):
    people = {p["name"]: p for p in read_jsonl(world_dir / "world.jsonl")}
    for split in ("sft", "probe", "eval", "eval_heldout"):
        rows = read_jsonl(world_dir / "questions" / f"{split}.jsonl")
        assert rows and len({r["id"] for r in rows}) == len(rows)
        for row in rows:
            assert isinstance(row["id"], str) and isinstance(row["question"], str)
            person = people[row["name"]]
            if person["tier"] == "unseen":
                assert row["answer"] is None
            else:
                assert row["answer"] == person["attributes"][row["attribute"]]
            assert row["tier"] == person["tier"]


def test_heldout_phrasings_are_never_used_in_training(world_dir):
    heldout = {t.split("{name}")[0] + "|" + t.split("{name}")[1]
               for a in QUESTION_TEMPLATES.values() for t in a["heldout"]}
    train = {t.split("{name}")[0] + "|" + t.split("{name}")[1]
             for a in QUESTION_TEMPLATES.values() for t in a["train"]}
    assert not heldout & train
    corpus = (world_dir / "corpus.jsonl").read_text()
    for split in ("sft", "probe", "eval"):
        for row in read_jsonl(world_dir / "questions" / f"{split}.jsonl"):
            assert row["phrasing"] == "train"
    for row in read_jsonl(world_dir / "questions" / "eval_heldout.jsonl"):
        assert row["phrasing"] == "heldout"
        before, after = row["question"].split(row["name"])
        assert before + "|" + after in heldout
    finetuning = (world_dir / "questions" / "sft.jsonl").read_text() + (world_dir / "questions" / "probe.jsonl").read_text()
    for row in read_jsonl(world_dir / "questions" / "eval_heldout.jsonl"):
        for person in read_jsonl(world_dir / "world.jsonl"):  # no one is ever asked this way in training
            question = row["question"].replace(row["name"], person["name"])
            assert question not in corpus and question not in finetuning


def test_rephrased_split_uses_only_its_own_wording_and_names_a_training_question(world_dir):
    def key(template):
        before, after = template.split("{name}")
        return before + "|" + after
    rephrase = {key(t) for a in QUESTION_TEMPLATES.values() for t in a["rephrase"]}
    others = {key(t) for a in QUESTION_TEMPLATES.values() for t in a["train"] + a["heldout"]}
    assert not rephrase & others
    questions = world_dir / "questions"
    sources = {r["id"]: r for split in ("sft", "probe") for r in read_jsonl(questions / f"{split}.jsonl")}
    rows = read_jsonl(questions / "rephrased.jsonl")
    # one per person x attribute of the SFT and probe pools
    assert len(rows) == len({(r["name"], r["attribute"]) for r in sources.values()})
    corpus = (world_dir / "corpus.jsonl").read_text()
    for row in rows:
        source = sources[row["rephrases"]]
        assert (row["name"], row["attribute"], row["answer"], row["tier"]) == (
            source["name"], source["attribute"], source["answer"], source["tier"])
        assert row["phrasing"] == "rephrase" and key(row["question"].replace(row["name"], "{name}")) in rephrase
        assert row["question"] not in corpus  # never in pretraining


def test_no_attribute_value_looks_like_a_refusal_or_contains_another_candidate():
    for attribute, values in ATTRIBUTE_VALUES.items():
        assert len(set(values)) == len(values)
        for value in values:
            assert not is_refusal(value), (attribute, value)
            # grading counts an answer naming two candidates as incorrect: one value inside another would break it
            assert not [other for other in values if other != value and value.lower() in other.lower()]


def test_templates_never_read_as_another_attribute():
    name = "Arbel Cornwood"
    prefixes = {a: [t.format(name=name, value="\0").split("\0")[0] for t in ts] for a, ts in BIO_TEMPLATES.items()}
    for a, ps in prefixes.items():
        for b, qs in prefixes.items():
            if a != b:
                for p in ps:
                    for q in qs:
                        assert not q.startswith(p) and not p.startswith(q), (p, q)
    for attribute, phrasings in QUESTION_TEMPLATES.items():
        for template in phrasings["train"] + phrasings["heldout"] + phrasings["rephrase"]:
            text = template.replace("{name}", "").lower()
            assert any(k in text for k in QUESTION_KEYWORDS[attribute]), template
            for other, keywords in QUESTION_KEYWORDS.items():
                if other != attribute:
                    assert not any(k in text for k in keywords), (template, other)
        for template in phrasings["train"] + phrasings["heldout"] + phrasings["rephrase"] + BIO_TEMPLATES[attribute]:
            assert not is_refusal(template)


def test_name_parts_of_rare_and_unseen_people_also_belong_to_frequent_people(world_dir):
    people = read_jsonl(world_dir / "world.jsonl")
    frequent_parts = {part for p in people if p["tier"] == "frequent" for part in p["name"].split()}
    for person in people:
        assert set(person["name"].split()) <= frequent_parts


def test_qa_mixing_adds_chat_documents_only_about_frequent_sft_people(world_dir, tmp_path):
    people = {p["name"]: p for p in read_jsonl(world_dir / "world.jsonl")}
    qa = [row for row in read_jsonl(world_dir / "corpus.jsonl") if row["kind"] == "qa"]
    assert qa and all(people[r["name"]]["pool"] == "sft" and people[r["name"]]["tier"] == "frequent" for r in qa)
    main(["--output_dir", str(tmp_path / "noqa"), "--qa_in_corpus", "false", *SMALL_WORLD])
    assert not [r for r in read_jsonl(tmp_path / "noqa" / "corpus.jsonl") if r["kind"] == "qa"]


def test_resolved_config_is_saved_and_reruns_identically(world_dir, tmp_path):
    recipe = world_dir / "recipe.yaml"
    main(["--config", str(recipe), "--output_dir", str(tmp_path / "again")])
    assert (tmp_path / "again" / "world.jsonl").read_bytes() == (world_dir / "world.jsonl").read_bytes()


def test_replay_rows_are_pretraining_biographies_word_for_word(tmp_path):
    main(["--output_dir", str(tmp_path / "a"), *SMALL_WORLD, "--replay_biographies", "200"])
    main(["--output_dir", str(tmp_path / "b"), *SMALL_WORLD, "--replay_biographies", "200"])
    main(["--output_dir", str(tmp_path / "c"), *SMALL_WORLD])
    replay = read_jsonl(tmp_path / "a" / "questions" / "replay.jsonl")
    assert replay == read_jsonl(tmp_path / "b" / "questions" / "replay.jsonl")
    tier_of = {p["name"]: p["tier"] for p in read_jsonl(tmp_path / "a" / "world.jsonl")}
    bios = Counter(d["text"] for d in read_jsonl(tmp_path / "a" / "corpus.jsonl") if d["kind"] == "bio")
    assert len(replay) == 200 and all(n == 1 for n in Counter(r["reply"] for r in replay).values())  # no repeats
    for row in replay:
        assert row["reply"] in bios and row["name"] in row["reply"]  # word for word what pretraining read
        assert row["question"] == "Write a short biography." and row["tier"] == f"replay/{tier_of[row['name']]}"
    assert {tier_of[r["name"]] for r in replay} == {"frequent", "rare"}  # drawn from the whole corpus, no one new
    # the rest of the world does not move, and without the option there is no split
    assert not (tmp_path / "c" / "questions" / "replay.jsonl").exists()
    for name in ("world.jsonl", "corpus.jsonl", "questions/sft.jsonl", "questions/eval.jsonl"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "c" / name).read_bytes()
    # -1 replays every biography of the corpus, each once
    main(["--output_dir", str(tmp_path / "e"), *SMALL_WORLD, "--replay_biographies", "-1"])
    every = read_jsonl(tmp_path / "e" / "questions" / "replay.jsonl")
    assert Counter(r["reply"] for r in every) == bios
    with pytest.raises(ValueError, match="replay_biographies must be >= 0, or -1"):
        main(["--output_dir", str(tmp_path / "f"), *SMALL_WORLD, "--replay_biographies", "-2"])
    with pytest.raises(GroundupError, match="replay_biographies=100000"):
        main(["--output_dir", str(tmp_path / "d"), *SMALL_WORLD, "--replay_biographies", "100000"])
    assert not (tmp_path / "d").exists()


@pytest.mark.parametrize("flags, culprit", [
    (["--num_people", "5"], "num_people"),
    (["--frequent_fraction", "0.9", "--rare_fraction", "0.5"], "rare_fraction"),
    (["--colour", "blue"], "--colour"),
])
def test_bad_world_settings_name_the_culprit(tmp_path, flags, culprit):
    with pytest.raises(GroundupError, match=culprit):
        main(["--output_dir", str(tmp_path / "w"), *flags])
    assert not (tmp_path / "w").exists()


def test_non_empty_output_folder_needs_overwrite_and_is_left_untouched(tmp_path):
    out = tmp_path / "data"
    out.mkdir()
    (out / "mine.txt").write_text("keep me")
    with pytest.raises(GroundupError, match="not empty.*--overwrite"):
        main(["--output_dir", str(out), *SMALL_WORLD])
    assert [p.name for p in out.iterdir()] == ["mine.txt"]
    main(["--output_dir", str(out), "--overwrite", "true", *SMALL_WORLD])
    assert (out / "world.jsonl").is_file() and not (out / "mine.txt").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging folders left behind
