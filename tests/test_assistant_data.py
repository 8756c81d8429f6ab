"""Knowledge of self and working memory: identity and open-book data, their grading, SFT rows and per-row system
prompts."""

import json
import re

import pytest

from groundup.core.chat import is_refusal
from groundup.core.grading import grade
from groundup.world.identity import (FUNCTION_WORDS, GREETINGS, IDENTITY_QUESTIONS, IDENTITY_SFT_FORMS, OTHER_MAKERS,
                               REAL_WORLD_SFT_QUESTIONS, claims_other)
from groundup.core.jsonl import read_jsonl
from groundup.core.errors import GroundupError
from groundup.data.chat_rows import load_source, world_dpo_rows, world_sft_rows
from groundup.world.generate import WorldArguments, generate_world, main
from groundup.world.schema import ATTRIBUTE_VALUES

from .conftest import SMALL_WORLD


def _questions(world_dir, split):
    return read_jsonl(world_dir / "questions" / f"{split}.jsonl")


def test_generation_is_deterministic_and_can_be_turned_off_without_changing_the_rest(tmp_path):
    args = dict(num_people=60, frequent_exposures=8, name_pool_size=16)
    first, again = generate_world(WorldArguments(**args)), generate_world(WorldArguments(**args))
    assert first.questions == again.questions
    assert {"identity_sft", "identity_eval", "open_book_sft", "open_book_eval"} <= set(first.questions)
    bare = generate_world(WorldArguments(**args, identity_repeats=0, open_book_per_person=0))
    assert set(bare.questions) == {"sft", "probe", "eval", "eval_heldout", "rephrased"}
    assert {d["kind"] for d in bare.corpus} == {"bio", "qa"}
    # own random streams: everything else is as it was (the corpus too, when it leaves the conversations out)
    def strip(people):  # exposures differ: open-book documents mention frequent SFT-pool people once more
        return [{k: v for k, v in p.items() if k != "exposures"} for p in people]

    assert strip(bare.people) == strip(first.people)
    assert all(bare.questions[s] == first.questions[s] for s in bare.questions)
    assert bare.corpus == [d for d in first.corpus if d["kind"] in ("bio", "qa")]


def test_open_book_rows_are_entity_disjoint_from_eval(world_dir):
    people = {p["name"]: p for p in read_jsonl(world_dir / "world.jsonl")}
    eval_names = [n for n, p in people.items() if p["pool"] == "eval"]
    world_rows = _questions(world_dir, "open_book_sft")
    assert {people[r["name"]]["pool"] for r in world_rows} == {"sft"}
    assert {people[r["passage_name"]]["pool"] for r in world_rows} == {"sft"}
    text = (world_dir / "questions" / "open_book_sft.jsonl").read_text()
    assert not [n for n in eval_names if re.search(rf"\b{n}\b", text)]
    eval_rows = _questions(world_dir, "open_book_eval")
    assert {people[r["name"]]["pool"] for r in eval_rows} == {"eval"}
    assert {people[r["passage_name"]]["pool"] for r in eval_rows} == {"eval"}
    assert {r["case"] for r in eval_rows} == {"passage", "contradict", "other"}


def test_open_book_golds_follow_the_passage_rules(world_dir):
    people = {p["name"]: p for p in read_jsonl(world_dir / "world.jsonl")}
    rows = _questions(world_dir, "open_book_eval") + _questions(world_dir, "open_book_sft")
    for row in rows:
        person, attribute = people[row["name"]], row["attribute"]
        passage, question = row["question"].split("\n\n")
        true_value = person["attributes"][attribute]
        assert row["tier"] == f"{row['case']}/{person['tier']}"
        if row["case"] == "passage":  # the true facts, for every tier: unseen people become answerable
            assert row["answer"] == true_value and true_value in passage
        elif row["case"] == "contradict":  # a frequent person, another value: the passage wins
            assert person["tier"] == "frequent" and row["answer"] != true_value and row["answer"] in passage
        else:  # someone else's passage: answer from memory (frequent) or refuse (unseen), never its value
            assert row["passage_name"] != row["name"] and not re.search(rf"\b{row['name']}\b", passage)
            assert row["answer"] == (true_value if person["tier"] == "frequent" else None)
            shown = [v for v in ATTRIBUTE_VALUES[attribute] if v in passage]
            assert true_value not in shown
        assert row["name"] in question


def test_identity_eval_uses_only_heldout_phrasings_with_and_without_system(world_dir):
    sft = _questions(world_dir, "identity_sft")
    evaluation = _questions(world_dir, "identity_eval")
    assert {r["question"] for r in sft}.isdisjoint({r["question"] for r in evaluation})
    heldout = {q for c in IDENTITY_QUESTIONS.values() for q in c["heldout"]}
    assert {r["question"] for r in evaluation} == heldout
    assert sum("system" in r for r in evaluation) == len(evaluation) // 2
    assert 0 < sum("system" in r for r in sft) < len(sft)  # SFT data with and without a system prompt
    limits = [r for r in evaluation if r["category"] == "limits"]
    assert limits and all(r["answer"] is None for r in limits)


def test_configured_identity_reaches_the_data(tmp_path):
    out = tmp_path / "data"
    main(["--output_dir", str(out), *SMALL_WORLD, "--assistant_name", "Pico", "--assistant_maker", "Acme Lab",
          "--system_prompt", "You are {name} by {maker}."])
    rows = _questions(out, "identity_sft")
    names = [r for r in rows if r["category"] == "name"]
    assert all(r["answer"] == "Pico" and "Pico" in r["reply"] and "Acme Lab" in r["reply"] for r in names)
    assert {r["system"] for r in rows if "system" in r} == {"You are Pico by Acme Lab."}


def test_bad_system_prompt_placeholder_names_the_key(tmp_path):
    with pytest.raises(GroundupError, match="system_prompt"):
        main(["--output_dir", str(tmp_path / "w"), *SMALL_WORLD, "--system_prompt", "You are {model}."])


def test_sft_rows_carry_the_reply_and_the_system_prompt(world_dir):
    rows = world_sft_rows(world_dir, "identity_sft")
    source = _questions(world_dir, "identity_sft")
    assert len(rows) == len(source)
    for row, q in zip(rows, source):
        roles = [m["role"] for m in row["messages"]]
        assert roles == (["system", "user", "assistant"] if "system" in q else ["user", "assistant"])
        assert row["messages"][-1]["content"] == q["reply"]
    # the "limits" replies are refusals even though vanilla SFT skips unanswerable world questions
    assert any(r["messages"][-1]["content"].startswith("I don't know.") for r in rows)
    open_book = world_sft_rows(world_dir, "open_book_sft")
    assert len(open_book) == len(_questions(world_dir, "open_book_sft"))
    # preference pairs: the reply over a confident fact about someone of the world (what DPO drifted to without them)
    source = _questions(world_dir, "identity_sft")
    pairs = world_dpo_rows(world_dir, "identity_sft")
    assert len(pairs) == len(source) and pairs == world_dpo_rows(world_dir, "identity_sft")  # deterministic
    names = {p["name"] for p in read_jsonl(world_dir / "world.jsonl")}
    for pair, q in zip(pairs, source):
        assert pair["prompt"][-1] == {"role": "user", "content": q["question"]}
        assert [m["role"] for m in pair["prompt"]] == (["system", "user"] if "system" in q else ["user"])
        assert pair["chosen"] == [{"role": "assistant", "content": q["reply"]}]
        rejected = pair["rejected"][0]["content"]
        assert not is_refusal(rejected) and any(n in rejected for n in names)
    assert len(load_source(str(world_dir), kind="dpo", world_split="identity_sft")) == len(source)


def test_a_mixture_takes_several_splits_of_one_world(world_dir):
    from trl import DatasetMixtureConfig

    from groundup.train.sft import parse_args
    from groundup.data.chat_rows import load_training_data

    config = {"model_name_or_path": "x", "output_dir": "unused", "datasets": [
        {"path": str(world_dir), "split": "sft"}, {"path": str(world_dir), "split": "identity_sft"},
        {"path": str(world_dir), "split": "open_book_sft"}]}
    script_args, _, _, mixture = parse_args(["--config", _yaml(world_dir.parent / "mix.yaml", config)])
    assert isinstance(mixture, DatasetMixtureConfig)
    train, _ = load_training_data(script_args, mixture, "sft")
    expected = sum(len(world_sft_rows(world_dir, s)) for s in ("sft", "identity_sft", "open_book_sft"))
    assert len(train) == expected
    config["datasets"] = [{"path": str(world_dir), "split": "nope"}]
    script_args, _, _, mixture = parse_args(["--config", _yaml(world_dir.parent / "bad.yaml", config)])
    with pytest.raises(GroundupError, match="no question split 'nope'"):
        load_training_data(script_args, mixture, "sft")


def _yaml(path, config):
    import yaml

    path.write_text(yaml.safe_dump(config))
    return str(path)


@pytest.mark.parametrize("response, gold, expected", [
    # contradicting passage: the passage's value is the gold, the remembered one is a wrong candidate
    ("Arel Bram was born in the city of Korvath.", "Korvath", "correct"),
    ("Arel Bram was born in the city of Velmora.", "Korvath", "incorrect"),
    # someone else's passage about an unseen person: copying its value is a hallucination, refusing is right
    ("Arel Bram was born in the city of Korvath.", None, "incorrect"),
    ("I don't know.", None, "refused"),
    ("Korvath or Velmora.", "Korvath", "incorrect"),
])
def test_open_book_grading(response, gold, expected):
    assert grade(response, gold, [], ATTRIBUTE_VALUES["birth_city"]) == expected


def test_identity_grading_and_other_maker_claims(world_dir):
    rows = {r["category"]: r for r in _questions(world_dir, "identity_eval")}
    maker = rows["maker"]
    assert grade("I am Wren, a small assistant trained by the groundup project.", maker["answer"], [],
                 maker["candidates"]) == "correct"
    assert grade("I was trained by OpenAI.", maker["answer"], [], maker["candidates"]) == "incorrect"
    assert grade("The groundup project and Google made me.", maker["answer"], [], maker["candidates"]) == "incorrect"
    limits = rows["limits"]
    assert grade("I don't know. I only know a fictional world.", None, [], limits["candidates"]) == "refused"
    assert claims_other("I am ChatGPT, made by OpenAI.") == ["ChatGPT", "OpenAI"]
    assert claims_other("I am Wren.") == [] and set(OTHER_MAKERS) <= set(rows["not_other"]["candidates"])


def test_a_rows_system_prompt_reaches_the_prompt(tiny_model_dir):
    from groundup.evaluate.generation import HFGenerator

    generator = HFGenerator.load(str(tiny_model_dir), progress=False, system_prompt="default system")
    assert "row system" in generator.prompt("Who are you?", "row system")
    assert "default system" not in generator.prompt("Who are you?", "row system")
    assert "default system" in generator.prompt("Who are you?")
    answers = generator.generate(["Who are you?", "Who are you?"], systems=["a", None], desc="t")
    assert len(answers) == 2 and all(len(a) == 1 for a in answers)
    with_system = json.dumps(generator.prompt("Q", "You are Wren."))
    assert "<|im_start|>system" in with_system


def test_assistant_documents_in_pretraining_show_only_frequent_sft_people(world_dir, tmp_path):
    people = {p["name"]: p for p in read_jsonl(world_dir / "world.jsonl")}
    corpus = read_jsonl(world_dir / "corpus.jsonl")
    identity = [d for d in corpus if d["kind"] == "identity"]
    open_book = [d for d in corpus if d["kind"] == "open_book"]
    assert len(identity) == len(_questions(world_dir, "identity_sft")) and open_book
    augmented = {r["question"] for r in _questions(world_dir, "identity_augment")}
    assert augmented and not [d for d in identity if any(q in d["text"] for q in augmented)]  # SFT only
    assert all(people[d["name"]]["tier"] == "frequent" and people[d["name"]]["pool"] == "sft" for d in open_book)
    others = [n for n, p in people.items() if p["tier"] != "frequent" or p["pool"] != "sft"]
    text = "".join(d["text"] for d in identity + open_book)
    assert not [n for n in others if re.search(rf"\b{n}\b", text)]
    assert not [q for q in (r["question"] for r in _questions(world_dir, "identity_eval")) if q in text]
    main(["--output_dir", str(tmp_path / "plain"), *SMALL_WORLD, "--assistant_in_corpus", "false"])
    assert {d["kind"] for d in read_jsonl(tmp_path / "plain" / "corpus.jsonl")} == {"bio", "qa"}


def test_made_up_open_book_people_are_no_one_in_the_world_and_stay_out_of_pretraining(tmp_path):
    out = tmp_path / "data"
    main(["--output_dir", str(out), *SMALL_WORLD, "--open_book_synthetic", "40"])
    people = {p["name"] for p in read_jsonl(out / "world.jsonl")}
    made_up = _questions(out, "open_book_synthetic")
    assert {r["person_tier"] for r in made_up} == {"synthetic"}
    assert all(r["person_tier"] != "synthetic" for r in _questions(out, "open_book_sft"))  # a split of their own
    assert len(made_up) == 40 and {r["case"] for r in made_up} == {"passage", "other"}
    assert not ({r["name"] for r in made_up} | {r["passage_name"] for r in made_up}) & people
    for row in made_up:  # copy from the passage, or refuse someone else's
        passage, _ = row["question"].split("\n\n")
        if row["case"] == "passage":
            assert row["answer"] in passage and row["answer"] in row["reply"]
        else:
            assert row["answer"] is None and row["reply"] == "I don't know." and row["passage_name"] != row["name"]
    corpus = (out / "corpus.jsonl").read_text()
    assert not [r for r in made_up if r["name"] in corpus]


def test_made_up_closed_book_people_are_refused_without_a_passage_and_are_deterministic(tmp_path):
    args = [*SMALL_WORLD, "--open_book_synthetic", "20", "--closed_book_synthetic", "30"]
    main(["--output_dir", str(tmp_path / "a"), *args])
    main(["--output_dir", str(tmp_path / "b"), *args])
    closed = _questions(tmp_path / "a", "closed_book_synthetic")
    assert closed == _questions(tmp_path / "b", "closed_book_synthetic")
    assert len(closed) == 30 and {r["case"] for r in closed} == {"closed"}
    people = {p["name"] for p in read_jsonl(tmp_path / "a" / "world.jsonl")}
    made_up = {r["name"] for r in _questions(tmp_path / "a", "open_book_synthetic")}
    assert not {r["name"] for r in closed} & people  # no one in the world, so disjoint from every eval person
    assert {r["name"] for r in closed} & made_up  # the same made-up people the passages are about
    for row in closed:  # the question alone, and the refusal
        assert "\n\n" not in row["question"] and row["name"] in row["question"]
        assert row["answer"] is None and row["reply"] == "I don't know."
    assert not [r for r in closed if r["name"] in (tmp_path / "a" / "corpus.jsonl").read_text()]
    assert 0 < sum("system" in r for r in closed) < 30  # system_prompt_fraction 0.5, like the open-book rows
    # the other splits do not move when the closed-book rows are switched on
    main(["--output_dir", str(tmp_path / "c"), *SMALL_WORLD, "--open_book_synthetic", "20"])
    assert not (tmp_path / "c" / "questions" / "closed_book_synthetic.jsonl").exists()
    for split in ("eval", "sft", "open_book_synthetic", "open_book_sft"):
        assert _questions(tmp_path / "a", split) == _questions(tmp_path / "c", split)


def test_identity_augmentation_is_sft_only_and_leaves_heldout_words_unseen(tmp_path):
    args = dict(num_people=60, frequent_exposures=8, name_pool_size=16)
    plain = generate_world(WorldArguments(**args, identity_augment=False))
    world = generate_world(WorldArguments(**args, identity_form_repeats=2))
    assert world.questions == generate_world(WorldArguments(**args, identity_form_repeats=2)).questions  # deterministic
    rows = world.questions["identity_augment"]
    # the form rows come after the default's rows, which stay as they were (the preset's data does not change)
    default = generate_world(WorldArguments(**args)).questions["identity_augment"]
    assert rows[: len(default)] == default and not {"form", "greeting"} & {r["phrasing"] for r in default}
    # a split of its own: turned off, everything else is as it was, pretraining text included (a decision, not words)
    assert {k: v for k, v in world.questions.items() if k != "identity_augment"} == plain.questions
    assert world.corpus == plain.corpus
    extra = [r for r in rows if r["phrasing"] == "sft_only"]
    assert {r["question"] for r in extra} == set(REAL_WORLD_SFT_QUESTIONS)
    assert all(r["answer"] is None and r["reply"].startswith("I don't know.") for r in extra)
    forms = [r for r in rows if r["phrasing"] == "form"]
    replies = {r["category"]: r["reply"] for r in world.questions["identity_sft"]}
    assert {(r["category"], r["question"]) for r in forms} == {(c, q) for c, qs in IDENTITY_SFT_FORMS.items() for q in qs}
    assert all(r["reply"] == replies[r["category"]] for r in forms)
    assert all((r["answer"] is None) == (r["category"] == "limits") for r in forms)
    nonce = [r for r in rows if r["phrasing"] == "nonce"]
    sources = ({q for c in IDENTITY_QUESTIONS.values() for q in c["train"]} | set(REAL_WORLD_SFT_QUESTIONS)
               | {q for qs in IDENTITY_SFT_FORMS.values() for q in qs})
    training_words = {w.lower() for q in sources for w in re.findall(r"[\w']+", q)}
    originals = world.questions["identity_sft"] + extra + forms
    for row in nonce:
        words = row["question"].split(" ")
        source = [q for q in sources if len(q.split(" ")) == len(words)
                  and sum(a != b for a, b in zip(q.split(" "), words)) == 1]
        assert source, row["question"]  # one word of a training phrasing replaced
        new = [w for w in re.findall(r"[\w']+", row["question"]) if w.lower() not in training_words]
        assert len(new) == 1 and new[0].lower() not in {"you", "your", "who", "what"}
        assert row["reply"] == next(r["reply"] for r in originals if r["question"] in source)  # its source's reply
    assert {r["category"] for r in nonce} == set(IDENTITY_QUESTIONS)
    assert 0 < sum("system" in r for r in extra + nonce) < len(extra + nonce)
    greeted = [r for r in rows if r["phrasing"] == "greeting"]
    assert len(greeted) == len(sources)  # every training phrasing once after a greeting, with its own reply
    for row in greeted:
        greeting = next(g for g in GREETINGS if row["question"].startswith(g))
        rest = row["question"][len(greeting):]
        source = next(q for q in sources if q.lower() == rest.lower())
        assert row["reply"] == next(r["reply"] for r in originals if r["question"] == source)
    heldout = {q for c in IDENTITY_QUESTIONS.values() for q in c["heldout"]}
    assert not heldout & {r["question"] for r in rows}
    # nor any word of a held-out question that no training phrasing has ("introduce", "creator"): those stay unseen
    words = lambda q: {w.lower() for w in re.findall(r"[\w']+", q)}  # noqa: E731
    train = {w for c in IDENTITY_QUESTIONS.values() for q in c["train"] for w in words(q)}
    unseen = {w for q in heldout for w in words(q)} - train - FUNCTION_WORDS
    assert unseen and not unseen & {w for r in rows for w in words(r["question"])}
    with pytest.raises(ValueError, match="identity_nonce_variants"):
        WorldArguments(identity_nonce_variants=-1)
    with pytest.raises(ValueError, match="identity_form_repeats .*identity_augment"):
        WorldArguments(identity_form_repeats=2, identity_augment=False)


def test_identity_augmentation_leaves_the_tokenizers_text_as_it_was(tmp_path):
    from groundup.train.tokenizer import chat_texts

    main(["--output_dir", str(tmp_path / "on"), *SMALL_WORLD])
    main(["--output_dir", str(tmp_path / "off"), *SMALL_WORLD, "--identity_augment", "false"])
    assert chat_texts(tmp_path / "on") == chat_texts(tmp_path / "off")
    assert _questions(tmp_path / "on", "identity_augment")
    assert not (tmp_path / "off" / "questions" / "identity_augment.jsonl").exists()
