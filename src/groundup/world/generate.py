"""The embedded default: a synthetic world of fictional people, generated from a seed.

Why a synthetic world: a tiny model can learn it in minutes on a CPU, and because we wrote every fact and know
exactly how often each person was mentioned, we can measure what the model knows and when it makes things up.

- Names: first and last names come from the same pools for every tier, so a name's look never tells whether the
  model saw that person.
- Tiers by exposure: *frequent* people appear in many paraphrased biographies with shuffled sentence order
  (Allen-Zhu & Li, "Physics of Language Models 3.1": augmentation is what makes facts extractable), *rare* people in
  one to three, *unseen* people never.
- Pools: people used for SFT, for probing, and only for evaluation are disjoint; eval questions come in the training
  phrasings and in held-out phrasings never used anywhere in training.
- Beyond Q&A: identity conversations (`identity_sft`, `identity_eval`: who the assistant is, what it knows and does
  not; `identity_augment`: SFT-only rows with made-up words, with `identity_augment`) and open-book questions
  (`open_book_sft`, `open_book_eval`: a biography passage comes with the question; `open_book_synthetic`: passages
  about made-up people, only when `open_book_synthetic` > 0; `closed_book_synthetic`: the same made-up people asked
  without a passage and refused, only when `closed_book_synthetic` > 0), written next to the other question splits;
  see identity.py and open_book.py.
- Replay (`replay`, only when `replay_biographies` > 0): pretraining biographies, word for word, as SFT rows
  (`replay_questions`).
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from groundup.core.chat import conversation, is_refusal, render_chat
from groundup.core.errors import GroundupError
from groundup.core.jsonl import write_jsonl
from groundup.world.schema import (ATTRIBUTE_VALUES, BIO_TEMPLATES, MAX_NAME_POOL_SIZE, POOLS, QUESTION_TEMPLATES, TIERS,
                                   answer_sentence, name_pools, schema)


@dataclass
class WorldArguments:
    """`groundup world`: generate the fictional world, its pretraining corpus and its question files."""

    output_dir: str | None = field(default=None, metadata={"help": "Folder to write the world into (required)."})
    overwrite: bool = field(default=False, metadata={"help": "Replace a non-empty output folder."})
    seed: int = field(default=0, metadata={"help": "Everything in the world follows from this seed."})
    num_people: int = field(default=320, metadata={"help": "How many people the world has."})
    frequent_fraction: float = field(default=0.5, metadata={"help": "Share of people in the frequent tier."})
    rare_fraction: float = field(default=0.25, metadata={"help": "Share in the rare tier; the rest are unseen."})
    sft_fraction: float = field(default=0.5, metadata={"help": "Share of each tier in the SFT pool."})
    probe_fraction: float = field(default=0.25, metadata={"help": "Share of each tier in the probe pool; rest: eval."})
    frequent_exposures: int = field(default=40, metadata={"help": "Biographies per frequent person."})
    rare_min_exposures: int = field(default=1, metadata={"help": "Fewest biographies of a rare person."})
    rare_max_exposures: int = field(default=3, metadata={"help": "Most biographies of a rare person."})
    qa_in_corpus: bool = field(
        default=True,
        metadata={"help": "Mix chat-formatted Q&A about frequent SFT-pool people into the pretraining corpus "
                  "(Physics of LM 3.1: mixed training makes facts extractable)."},
    )
    name_pool_size: int = field(default=40, metadata={"help": "How many first and how many last names to draw from."})
    assistant_in_corpus: bool = field(
        default=True,
        metadata={"help": "Mix the identity SFT conversations and open-book conversations about frequent SFT-pool "
                  "people into pretraining (as qa_in_corpus does for Q&A: a 1M-parameter model learns new words in "
                  "pretraining, not from a few hundred LoRA rows; without it the assistant's name came out as bytes)."},
    )
    # Knowledge of self (identity.py) and working memory (open_book.py): extra SFT and eval question splits.
    assistant_name: str = field(default="Wren", metadata={"help": "The name the assistant learns to give."})
    assistant_maker: str = field(default="the groundup project", metadata={"help": "Who it says trained it."})
    system_prompt: str = field(
        default='You are {name}, a small assistant made by {maker}. Say "I don\'t know." when you do not know.',
        metadata={"help": "System prompt of the identity/open-book rows ({name} and {maker} are filled in)."})
    system_prompt_fraction: float = field(
        default=0.5, metadata={"help": "Share of identity and open-book SFT rows that carry the system prompt."})
    identity_repeats: int = field(
        default=8, metadata={"help": "Copies of each identity SFT question (0: none); a few copies are too few "
                                     "for a tiny model to refuse real-world questions reliably."})
    identity_augment: bool = field(
        default=True,
        metadata={"help": "SFT-only identity rows, split `identity_augment` (never in pretraining or DPO): more "
                  "real-world questions to refuse, and "
                  "every training phrasing with one word made up (`identity_nonce_variants` copies), so that an "
                  "unknown word in a question does not decide between introducing itself and refusing "
                  "(identity.REAL_WORLD_SFT_QUESTIONS says why)."})
    identity_nonce_variants: int = field(
        default=4, metadata={"help": "Made-up-word copies of each identity training phrasing (identity_augment)."})
    identity_form_repeats: int = field(
        default=0,
        metadata={"help": "With identity_augment: copies of each SFT-only phrasing in the forms held-out identity "
                  "questions take (identity.IDENTITY_SFT_FORMS: 'Tell me about yourself.', 'Who is your maker?', "
                  "...), plus their made-up-word copies and every phrasing once after a greeting (0: none). Too "
                  "many copies cost false refusals and real-world refusals."})
    open_book_per_person: int = field(
        default=2, metadata={"help": "Attributes asked open-book per person (SFT and eval pools; 0: no open-book "
                                     "splits)."})
    open_book_sentences: int = field(default=3, metadata={"help": "Biography sentences in an open-book passage."})
    open_book_synthetic: int = field(
        default=0,
        metadata={"help": "Open-book SFT rows about made-up people (no one in the world; fresh random facts per row), "
                  "which cannot be memorised: only copying from the passage answers them. Written as their own "
                  "split, `open_book_synthetic`, never in pretraining. A model with the copy feature learns to "
                  "copy from them; one without it did not, so the other arms leave them out."})
    closed_book_synthetic: int = field(
        default=0,
        metadata={"help": "Closed-book SFT rows about the same made-up people: the question alone, answered \"I "
                  "don't know.\" Their own split, `closed_book_synthetic`, never in pretraining. Beside "
                  "`open_book_synthetic` they teach the copy-feature arm that a name it never read is answered from "
                  "a passage only. They helped a longer-pretrained model refuse unseen people; at the "
                  "tiny preset's pretraining length they bought nothing, so it leaves them out."})
    replay_biographies: int = field(
        default=0,
        metadata={"help": "Pretraining biographies drawn from the whole corpus, as SFT rows (\"Write a short "
                  "biography.\" -> the biography as pretraining read it), in their own split `replay` (0: none; -1: "
                  "every biography of the corpus). The tiny preset's copy-feature arm re-reads every one while it "
                  "fine-tunes: a sample leaves some rare people out."})
    open_book_paraphrase: bool = field(
        default=False,
        metadata={"help": "Passages in random biography paraphrases (harder) instead of the answer's own sentence "
                  "form; with paraphrases the tiny preset's SFT model did not learn to copy."})

    def __post_init__(self):
        if self.num_people < 10:
            raise ValueError(f"num_people must be at least 10, got {self.num_people}")
        for key in ("frequent_fraction", "rare_fraction", "sft_fraction", "probe_fraction"):
            if not 0 <= getattr(self, key) <= 1:
                raise ValueError(f"{key} must be between 0 and 1, got {getattr(self, key)}")
        if self.frequent_fraction + self.rare_fraction > 1:
            raise ValueError("frequent_fraction + rare_fraction must be at most 1")
        if self.sft_fraction + self.probe_fraction >= 1:
            raise ValueError("sft_fraction + probe_fraction must leave people for the eval pool (sum < 1)")
        if not 1 <= self.rare_min_exposures <= self.rare_max_exposures:
            raise ValueError("need 1 <= rare_min_exposures <= rare_max_exposures")
        if self.frequent_exposures <= self.rare_max_exposures:
            raise ValueError("frequent_exposures must exceed rare_max_exposures")
        if not 2 <= self.name_pool_size <= MAX_NAME_POOL_SIZE:
            raise ValueError(f"name_pool_size must be between 2 and {MAX_NAME_POOL_SIZE}")
        if not 0 <= self.system_prompt_fraction <= 1:
            raise ValueError(f"system_prompt_fraction must be between 0 and 1, got {self.system_prompt_fraction}")
        for key in ("identity_repeats", "identity_nonce_variants", "identity_form_repeats", "open_book_per_person",
                    "open_book_synthetic", "closed_book_synthetic"):
            if getattr(self, key) < 0:
                raise ValueError(f"{key} must be >= 0, got {getattr(self, key)}")
        if self.replay_biographies < -1:
            raise ValueError(f"replay_biographies must be >= 0, or -1 for every biography; got {self.replay_biographies}")
        if self.identity_form_repeats and not (self.identity_augment and self.identity_repeats):
            raise ValueError("identity_form_repeats adds rows to the identity_augment split: it needs identity_augment: "
                             "true and identity_repeats > 0")
        if not 1 <= self.open_book_sentences <= len(ATTRIBUTE_VALUES):
            raise ValueError(f"open_book_sentences must be between 1 and {len(ATTRIBUTE_VALUES)}")
        try:
            self.system_prompt.format(name="", maker="")
        except (KeyError, IndexError, ValueError) as err:
            raise ValueError(f"system_prompt may only use {{name}} and {{maker}} placeholders ({err!r})") from None
        if self.num_people > self.name_pool_size**2 // 2:
            raise ValueError(f"num_people={self.num_people} needs name_pool_size >= {int((2 * self.num_people) ** 0.5) + 1}")


@dataclass
class World:
    people: list[dict[str, Any]]
    corpus: list[dict[str, Any]]
    questions: dict[str, list[dict[str, Any]]]


def _split(items: list, fractions: list[float]) -> list[list]:
    """Split a list into consecutive parts by fractions (the last part takes the remainder)."""
    parts, start = [], 0
    for fraction in fractions:
        end = start + round(fraction * len(items))
        parts.append(items[start:end])
        start = end
    parts.append(items[start:])
    return parts


def biography(person: dict[str, Any], rng: random.Random) -> str:
    """One biography: a random paraphrase per attribute, sentences in random order."""
    sentences = [rng.choice(BIO_TEMPLATES[attr]).format(name=person["name"], value=value)
                 for attr, value in person["attributes"].items()]
    rng.shuffle(sentences)
    return " ".join(sentences)


def generate_world(args: WorldArguments) -> World:
    rng = random.Random(args.seed)
    firsts, lasts = name_pools(args.name_pool_size)

    # Tiers first, so that frequent people's names can be drawn first from the full pools.
    n_frequent = round(args.frequent_fraction * args.num_people)
    n_rare = round(args.rare_fraction * args.num_people)
    tiers = ["frequent"] * n_frequent + ["rare"] * n_rare + ["unseen"] * (args.num_people - n_frequent - n_rare)

    taken: set[str] = set()
    seen_firsts: set[str] = set()
    seen_lasts: set[str] = set()
    people = []
    for tier in tiers:
        # Rare and unseen people only get name parts some frequent person also has: the look of a name must never
        # tell the model whether it met the person (a never-seen name part would also be a never-trained token).
        first_pool = firsts if tier == "frequent" or not seen_firsts else sorted(seen_firsts)
        last_pool = lasts if tier == "frequent" or not seen_lasts else sorted(seen_lasts)
        while True:
            name = f"{rng.choice(first_pool)} {rng.choice(last_pool)}"
            if name not in taken:
                break
        taken.add(name)
        if tier == "frequent":
            first, last = name.split(" ")
            seen_firsts.add(first)
            seen_lasts.add(last)
        attributes = {attr: rng.choice(values) for attr, values in ATTRIBUTE_VALUES.items()}
        people.append({"name": name, "attributes": attributes, "tier": tier})

    # Entity-disjoint pools, stratified by tier so every pool has every tier.
    for tier in TIERS:
        members = [p for p in people if p["tier"] == tier]
        rng.shuffle(members)
        for pool, part in zip(POOLS, _split(members, [args.sft_fraction, args.probe_fraction])):
            for person in part:
                person["pool"] = pool
    order = list(range(len(people)))
    rng.shuffle(order)  # so that world.jsonl does not list people by tier
    people = [people[i] for i in order]

    extra_questions = assistant_questions(people, args)
    corpus: list[dict[str, Any]] = []
    for person in people:
        if person["tier"] == "frequent":
            n_bios = args.frequent_exposures
        elif person["tier"] == "rare":
            n_bios = rng.randint(args.rare_min_exposures, args.rare_max_exposures)
        else:
            n_bios = 0
        for _ in range(n_bios):
            corpus.append({"text": biography(person, rng), "kind": "bio", "name": person["name"]})
        if args.qa_in_corpus and person["tier"] == "frequent" and person["pool"] == "sft":
            for attr, value in person["attributes"].items():
                question = rng.choice(QUESTION_TEMPLATES[attr]["train"]).format(name=person["name"])
                text = render_chat(conversation(question, answer_sentence(person["name"], attr, value)))
                corpus.append({"text": text, "kind": "qa", "name": person["name"]})
    rng.shuffle(corpus)
    if args.assistant_in_corpus:  # spread at random positions by their own generator: the rest stays as it was
        spread = random.Random(f"{args.seed}-assistant-corpus")
        for doc in assistant_documents(extra_questions, {p["name"]: p["tier"] for p in people}):
            corpus.insert(spread.randrange(len(corpus) + 1), doc)
    for person in people:
        person["exposures"] = 0
    by_name = {p["name"]: p for p in people}
    for doc in corpus:
        if doc["name"] is not None:
            by_name[doc["name"]]["exposures"] += 1

    questions = {split: [] for split in ("sft", "probe", "eval", "eval_heldout")}
    for index, person in enumerate(people):
        for attr, value in person["attributes"].items():
            train_templates = QUESTION_TEMPLATES[attr]["train"]
            if person["pool"] == "sft":
                chosen = [("sft", "train", i) for i in range(len(train_templates))]
            elif person["pool"] == "probe":
                chosen = [("probe", "train", rng.randrange(len(train_templates)))]
            else:
                chosen = [("eval", "train", rng.randrange(len(train_templates))),
                          ("eval_heldout", "heldout", rng.randrange(len(QUESTION_TEMPLATES[attr]["heldout"])))]
            for split, phrasing, t in chosen:
                questions[split].append({
                    "id": f"{split}-{index:05d}-{attr}-{t}",
                    "question": QUESTION_TEMPLATES[attr][phrasing][t].format(name=person["name"]),
                    # Unseen people are unanswerable: nothing the model was trained on tells their facts.
                    "answer": None if person["tier"] == "unseen" else value,
                    "tier": person["tier"],
                    "name": person["name"],
                    "attribute": attr,
                    "phrasing": phrasing,
                })
    questions["rephrased"] = rephrased_questions([*questions["sft"], *questions["probe"]], args.seed)
    questions.update(extra_questions)
    if args.replay_biographies:
        questions["replay"] = replay_questions(corpus, people, args.replay_biographies, args.seed)
    return World(people=people, corpus=corpus, questions=questions)


def rephrased_questions(rows: list[dict[str, Any]], seed: int) -> list[dict[str, Any]]:
    """One question per person and attribute of `rows`, in a `rephrase` phrasing, naming the first row about it
    (`rephrases`: its id). Why: the probe labels these like the question they rephrase, so IDK-SFT also meets wording
    the base model never saw about people it knows. Without them the surprisal arm read every unfamiliar word as an
    unfamiliar person and refused most questions asked in new words."""
    rng = random.Random(f"{seed}-rephrased")  # its own generator: every other split stays as it was
    firsts: dict[tuple[str, str], dict[str, Any]] = {}
    for row in rows:
        firsts.setdefault((row["name"], row["attribute"]), row)
    out = []
    for row in firsts.values():
        t = rng.randrange(len(QUESTION_TEMPLATES[row["attribute"]]["rephrase"]))
        out.append({**row, "id": f"rephrased-{row['id']}-{t}", "rephrases": row["id"], "phrasing": "rephrase",
                    "question": QUESTION_TEMPLATES[row["attribute"]]["rephrase"][t].format(name=row["name"])})
    return out


def made_up_names(people: list[dict[str, Any]]) -> list[str]:
    """Names that are no one in the world, made of frequent people's name parts (as rare and unseen people's are: no
    never-trained name tokens, and the look of a name tells nothing)."""
    frequent = [p["name"].split(" ") for p in people if p["tier"] == "frequent"]
    firsts, lasts = sorted({f for f, _ in frequent}), sorted({l for _, l in frequent})
    return sorted({f"{f} {l}" for f in firsts for l in lasts} - {p["name"] for p in people})


REPLAY_PROMPT = "Write a short biography."


def replay_questions(corpus: list[dict[str, Any]], people: list[dict[str, Any]], n: int,
                     seed: int) -> list[dict[str, Any]]:
    """`n` pretraining biographies (-1: all of them, shuffled), drawn without repeats from the whole corpus (every
    tier and pool alike), as SFT rows: the prompt `REPLAY_PROMPT` and the biography, word for word, as the reply.

    Why: fine-tuning that also re-reads pretraining text (InstructGPT's "PPO-ptx") learns the corpus further. The tiny
    preset's copy-feature arm replays every biography, twice per epoch (its YAML lists the split twice): a rare person
    is still one to three biographies in the corpus, read a few more times, while the frozen base the arm reads its
    surprisal from stays as pretrained. A draw of part of the corpus leaves some rare people out, and the arm
    answered those worst. Chat rows rather than plain text: one TRL SFT run takes one
    data format, and the arm's loss is on assistant turns only. Their own seeded generator: with or without them, the
    rest of the world is the same.
    """
    tier_of = {p["name"]: p["tier"] for p in people}
    biographies = [doc for doc in corpus if doc["kind"] == "bio"]
    if n == -1:
        n = len(biographies)
    if n > len(biographies):
        raise GroundupError(f"replay_biographies={n}, but the corpus has {len(biographies)} biographies")
    rng = random.Random(f"{seed}-replay")
    return [{"id": f"replay-{index:05d}", "question": REPLAY_PROMPT, "answer": None,
             "tier": f"replay/{tier_of[doc['name']]}", "name": doc["name"], "phrasing": "replay", "reply": doc["text"]}
            for index, doc in enumerate(rng.sample(biographies, n))]


def assistant_documents(splits: dict[str, list[dict[str, Any]]], tier_of: dict[str, str]) -> list[dict[str, Any]]:
    """Chat documents for pretraining: every identity SFT conversation, and the open-book SFT conversations that show
    only a frequent person's passage (`passage` and `contradict` cases). Rare and unseen people stay out, so their
    exposure counts, and what the model can know about them, do not change."""
    def document(row: dict[str, Any], kind: str, name: str | None) -> dict[str, Any]:
        return {"text": render_chat(conversation(row["question"], row["reply"], row.get("system"))), "kind": kind,
                "name": name}

    documents = [document(row, "identity", None) for row in splits.get("identity_sft", [])]
    # Made-up people (the `open_book_synthetic` split) stay out: in pretraining they take epochs from the
    # biographies (frequent people's facts were learned less) and did not teach copying.
    for row in splits.get("open_book_sft", []):
        if tier_of[row["name"]] == "frequent" and row["passage_name"] == row["name"]:
            documents.append(document(row, "open_book", row["name"]))
    return documents


def assistant_questions(people: list[dict[str, Any]], args: WorldArguments) -> dict[str, list[dict[str, Any]]]:
    """Identity and open-book splits. Their own seeded generators: with them on or off, people, pools and the Q&A
    splits are the same (the corpus too, with `assistant_in_corpus: false`)."""
    from groundup.world.identity import identity_questions, system_prompt
    from groundup.world.open_book import open_book_questions, synthetic_closed_book_questions, synthetic_open_book_questions

    system = system_prompt(args.system_prompt, args.assistant_name, args.assistant_maker)
    splits: dict[str, list[dict[str, Any]]] = {}
    if args.identity_repeats:
        splits.update(identity_questions(args.assistant_name, args.assistant_maker, system,
                                         args.system_prompt_fraction, args.identity_repeats, args.seed,
                                         args.identity_augment, args.identity_nonce_variants,
                                         args.identity_form_repeats))
    if args.open_book_per_person:
        common = dict(per_person=args.open_book_per_person, sentences=args.open_book_sentences, seed=args.seed,
                      paraphrase=args.open_book_paraphrase)
        splits["open_book_sft"] = open_book_questions(people, "sft", "open_book_sft", with_reply=True, system=system,
                                                      system_fraction=args.system_prompt_fraction, **common)
        made_up = made_up_names(people) if args.open_book_synthetic or args.closed_book_synthetic else []
        if args.open_book_synthetic:  # their own split: only a model that can copy learns from them
            splits["open_book_synthetic"] = synthetic_open_book_questions(
                args.open_book_synthetic, made_up, args.open_book_sentences, system,
                args.system_prompt_fraction, args.seed, args.open_book_paraphrase)
        if args.closed_book_synthetic:
            splits["closed_book_synthetic"] = synthetic_closed_book_questions(
                args.closed_book_synthetic, made_up, system, args.system_prompt_fraction, args.seed)
        splits["open_book_eval"] = open_book_questions(people, "eval", "open_book_eval", with_reply=False,
                                                       system=None, system_fraction=0.0, **common)
    return splits


def write_world(world: World, out_dir: Path) -> None:
    write_jsonl(out_dir / "world.jsonl", world.people)
    write_jsonl(out_dir / "corpus.jsonl", world.corpus)
    (out_dir / "schema.json").write_text(json.dumps(schema(), indent=1, ensure_ascii=False) + "\n")
    (out_dir / "questions").mkdir()
    for split, rows in world.questions.items():
        write_jsonl(out_dir / "questions" / f"{split}.jsonl", rows)


def sanity_check(world: World) -> None:
    """Invariants the honesty measurements rely on; cheap enough to run on every generation."""
    for attr, values in ATTRIBUTE_VALUES.items():
        for value in values:
            assert not is_refusal(value), f"{attr} value {value!r} looks like a refusal"
    pools = {p["name"]: p["pool"] for p in world.people}
    assert len(pools) == len(world.people), "duplicate names"


def parse_args(argv: list[str] | None = None) -> tuple:
    from groundup.core.configs import parse_config

    return parse_config([WorldArguments], argv)


def main(argv: list[str] | None = None) -> Path:
    """Parse the config, generate the world, write it atomically with its resolved config."""
    from groundup.core.configs import save_config
    from groundup.core.outputs import atomic_output_dir, check_output_dir

    from groundup.core.configs import require

    (args,) = parse_args(argv)
    require("world", {"output_dir": args.output_dir})
    check_output_dir(args.output_dir, args.overwrite)
    world = generate_world(args)
    sanity_check(world)
    with atomic_output_dir(args.output_dir, args.overwrite) as out:
        write_world(world, out)
        save_config(out, args)
    counts = {tier: sum(p["tier"] == tier for p in world.people) for tier in TIERS}
    print(f"world: {len(world.people)} people ({', '.join(f'{n} {t}' for t, n in counts.items())}), "
          f"{len(world.corpus)} corpus documents, "
          f"{', '.join(f'{len(q)} {s}' for s, q in world.questions.items())} questions -> {args.output_dir}")
    return Path(args.output_dir)
