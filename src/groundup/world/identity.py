"""Knowledge of self: identity conversations for SFT and a held-out identity eval split.

A model left alone claims to be whatever its data suggests (a web-trained model often says it is ChatGPT). groundup
teaches the assistant its configured name and maker, what it knows (the fictional world) and what it does not (the
real world, current events), half of the rows with a system prompt and half without, so that it behaves the same
either way. SFT rows use the `train` phrasings; the eval split asks the `heldout` phrasings only, each once with and
once without the system prompt.

Rows have the question-file format (`id`, `question`, `answer`, `tier`, ...), so `groundup eval` grades them like any
other question: `tier` is the category, with "/system" appended when the row carries a system prompt; `candidates`
lists the configured identity *and* other assistants' and makers' names, so a response that claims another maker is
graded incorrect. SFT rows add `reply` (the assistant turn to learn). "limits" questions are about the real world:
unanswerable for this model, so the right reply is a refusal (`answer: null`).
"""

from __future__ import annotations

import random
from typing import Any

from groundup.core.chat import REFUSAL

# Names the assistant must never claim (graded as candidates: naming one makes a response incorrect).
OTHER_ASSISTANTS = ["ChatGPT", "GPT-4", "Claude", "Gemini", "Llama", "Copilot", "Bard", "Qwen"]
OTHER_MAKERS = ["OpenAI", "Anthropic", "Google", "Meta", "Microsoft", "Mistral AI", "DeepSeek", "Alibaba"]

# category -> phrasings. `train` phrasings go into SFT, `heldout` ones only into the eval split.
IDENTITY_QUESTIONS: dict[str, dict[str, list[str]]] = {
    "name": {"train": ["What is your name?", "Who are you?", "What should I call you?", "What are you?",
                       "What's your name?", "Tell me who you are.", "Do you have a name?", "Which model are you?"],
             "heldout": ["Tell me your name.", "What are you called?", "Please introduce yourself.",
                         "Who am I talking to?", "How should I address you?", "What name do you go by?",
                         "Could you tell me your name?", "Who exactly are you?"]},
    "maker": {"train": ["Who made you?", "Who trained you?", "Who created you?", "Which company built you?",
                        "Who is behind you?", "Who wrote your training code?", "Which team trained you?",
                        "Who is responsible for you?"],
              "heldout": ["Who built you?", "Who is your creator?", "Who developed you?", "Where do you come from?",
                          "Which organisation made you?", "Who is your developer?", "Who programmed you?",
                          "Which lab trained you?"]},
    "not_other": {"train": ["Are you ChatGPT?", "Were you made by OpenAI?", "Are you Llama, from Meta?",
                            "Is Google your maker?"],
                  "heldout": ["Are you Claude?", "Were you trained by Google?", "Are you Gemini?",
                              "Did Microsoft build you?", "Are you GPT-4?", "Is Anthropic your maker?",
                              "Are you Copilot?", "Were you built by DeepSeek?"]},
    "knowledge": {"train": ["What do you know about?", "What topics do you know?", "What can you tell me about?",
                            "What can you help me with?", "What kind of questions can you answer?",
                            "What is your area of knowledge?"],
                  "heldout": ["What are you knowledgeable about?", "Which subjects can you answer questions on?",
                              "What topics are you good at?", "What information do you have?"]},
    "limits": {"train": ["What is the news today?", "Who is the president of the United States?",
                         "What is the capital of France?", "What will the weather be tomorrow?",
                         "Who won the last football world cup?", "How tall is Mount Everest?"],
               "heldout": ["What is the population of Japan?", "What happened in the news yesterday?",
                           "Who wrote Hamlet?", "What is the price of gold today?",
                           "What is the tallest building in the world?", "Who is the current pope?",
                           "What is the euro exchange rate today?", "When did the Second World War end?"]},
}
KNOWLEDGE_ANSWER = "fictional world"  # what a "knowledge" reply must name

# SFT-only augmentation (`augment=True`: the `identity_augment` split), never in pretraining or DPO: it teaches a
# decision, not words or facts, and leaves the base model as it was. Why: 48 of the 56 answerable held-out identity questions have a word in no training text
# ("Who is your creator?"), and a 1M-parameter model met them with whichever reply its few training phrasings made
# likeliest: the real-world refusal ("I don't know.") on one seed, the introduction on another. Two kinds of rows teach
# the invariance instead (each kind alone did less):
# - more real-world questions (refused), many in the "Who <verb> ...?" form the identity questions have, so that
#   "you" / "your", not the question's shape, is what tells them apart;
# - every training phrasing again with one content word replaced by a made-up word, so an unknown word does not
#   decide the answer (alone, these taught "Who wrote Hamlet?" to get the introduction).
REAL_WORLD_SFT_QUESTIONS = [
    "Who painted the Mona Lisa?", "Who discovered penicillin?", "What is the boiling point of water?",
    "How far is the Moon from the Earth?", "What is the largest ocean on Earth?", "Who invented the telephone?",
    "What language is spoken in Brazil?", "When was the internet invented?", "Who is the richest person in the world?",
    "Which team won the match last night?", "What is the speed of light?", "Who founded Rome?",
    "What time is it in London?", "Who is the prime minister of India?"]
# SFT-only phrasings in the forms the held-out questions take and the training phrasings lacked (`identity_augment`,
# `phrasing: "form"`): imperatives and "Please ...", "Who is your <noun>?", "What <noun> do you have?", and more
# "knowledge" questions (it had 6 training phrasings, the fewest). Why: the DPO model missed the same held-out forms on
# every world: "Please introduce yourself." ->
# the real-world refusal, "What information do you have?" -> the introduction, "Who is your developer?" -> the refusal.
# No held-out phrasing and none of the held-out questions' content words (introduce, information, developer, creator,
# topics, subjects, ...) is used: a form, with its unseen content word standing in as a made-up one (the nonce copies),
# is what the held-out split still tests. Real-world questions come in the same forms, refused, so that the form alone
# does not decide. The tiny preset sets `identity_form_repeats: 2`; the cost: "Who wrote Hamlet?" can get the
# introduction.
IDENTITY_SFT_FORMS: dict[str, list[str]] = {
    "name": ["Tell me about yourself.", "Describe yourself.", "Please say who you are.", "Who is this?",
             "What do people call you?", "Is there a name for you?"],
    "maker": ["Who is your maker?", "Who is your trainer?", "Tell me who made you.", "Do you have a maker?",
              "Which people built you?", "Please tell me who trained you."],
    "knowledge": ["Tell me what you know.", "Describe what you know.", "What facts do you have?",
                  "What do you have knowledge of?", "What are you an expert on?", "Which people do you know about?",
                  "Please tell me what you know.", "What are you able to answer?"],
    "limits": ["Tell me about the French revolution.", "Describe the city of Paris.", "Who is the author of Don Quixote?",
               "Please tell me the latest news.", "What facts do you have about Mars?", "Who is the king of Spain?"],
}
# Greetings put in front of every training phrasing once (`phrasing: "greeting"`): a greeting or a "Please" is no
# reason to refuse.
GREETINGS = ["Hi! ", "Hello. ", "Please, ", "Hey, "]
# Words a made-up word never replaces: what makes a question a question, and about "you".
FUNCTION_WORDS = {
    "what", "what's", "who", "which", "where", "when", "how", "is", "are", "do", "does", "did", "was", "were", "will",
    "you", "your", "yourself", "i", "me", "my", "the", "a", "an", "of", "to", "in", "on", "about", "at", "can",
    "could", "should", "be", "by", "from", "with", "for", "and", "or", "it", "tell", "please", "this"}
_NAMES = {w for n in (*OTHER_ASSISTANTS, *OTHER_MAKERS) for w in n.split(" ")}
_KEPT_WORDS = FUNCTION_WORDS | {w.lower() for w in _NAMES}
_NONCE_ONSETS = ["bl", "tr", "v", "qu", "sk", "m", "gr", "pl", "d", "z", "fr", "st"]
_NONCE_VOWELS = ["a", "e", "i", "o", "u", "ai", "ou"]


def system_prompt(template: str, name: str, maker: str) -> str:
    return template.format(name=name, maker=maker)


def replies(name: str, maker: str) -> dict[str, tuple[str | None, str, list[str]]]:
    """category -> (gold answer or None, the reply SFT teaches, grading candidates)."""
    intro = f"I am {name}, a small assistant trained by {maker}."
    return {
        "name": (name, intro, [name, *OTHER_ASSISTANTS]),
        "maker": (maker, intro, [maker, *OTHER_MAKERS]),
        "not_other": (name, f"No. {intro}", [name, *OTHER_ASSISTANTS, *OTHER_MAKERS]),
        "knowledge": (KNOWLEDGE_ANSWER, "I know about the people of a small fictional world: where and when they "
                                        "were born, their jobs, their employers and their hobbies.",
                      [KNOWLEDGE_ANSWER]),
        "limits": (None, f"{REFUSAL} I only know about the people of a small fictional world, not the real world or "
                         "current events.", [*OTHER_ASSISTANTS, *OTHER_MAKERS]),
    }


def nonce_word(rng: random.Random) -> str:
    """A made-up lowercase word ("blaiquosh"): two or three syllables no training text uses as a word."""
    syllables = "".join(rng.choice(_NONCE_ONSETS) + rng.choice(_NONCE_VOWELS) for _ in range(rng.randint(2, 3)))
    return syllables + rng.choice(["", "n", "t", "sh", "m"])


def with_nonce_word(question: str, rng: random.Random) -> str | None:
    """`question` with one content word replaced by a made-up word (punctuation kept; capitalised at the start); None
    when it has no content word. Names of assistants and makers are kept: they are what `not_other` asks about."""
    words = question.split(" ")
    slots = [i for i, w in enumerate(words) if w.strip("?.!,").lower() not in _KEPT_WORDS]
    if not slots:
        return None
    i = rng.choice(slots)
    bare = words[i].strip("?.!,")
    word = nonce_word(rng)
    words[i] = words[i].replace(bare, word.capitalize() if i == 0 else word, 1)
    return " ".join(words)


def identity_questions(name: str, maker: str, system: str, system_fraction: float, repeats: int,
                       seed: int, augment: bool = False, nonce_variants: int = 4,
                       form_repeats: int = 0) -> dict[str, list[dict[str, Any]]]:
    """{"identity_sft": rows with `reply`, "identity_eval": held-out phrasings with and without the system prompt,
    and with `augment` "identity_augment": SFT-only rows}.

    identity_sft: every train phrasing `repeats` times; a `system_fraction` share of them (chosen with `seed`) with the
    system prompt. identity_augment: `REAL_WORLD_SFT_QUESTIONS` `repeats` times each (`phrasing: "sft_only"`) and
    `nonce_variants` copies of every train phrasing and of those questions with one word made up (`phrasing:
    "nonce"`); their own generator, so the other splits stay as they were. With `form_repeats` > 0, after those:
    `IDENTITY_SFT_FORMS` `form_repeats` times each (`phrasing: "form"`) with their made-up-word copies, and every
    training, real-world and form phrasing once after a greeting (`phrasing: "greeting"`). Eval: every held-out
    phrasing twice, without and with the system prompt.
    """
    rng = random.Random(f"{seed}-identity")
    table = replies(name, maker)
    sft, evaluation = [], []
    for category, phrasings in IDENTITY_QUESTIONS.items():
        answer, reply, candidates = table[category]
        for t, question in enumerate(phrasings["train"]):
            for r in range(repeats):
                with_system = rng.random() < system_fraction
                sft.append(_row(f"identity_sft-{category}-{t}-{r}", question, answer, category, candidates,
                                system if with_system else None, "train", reply))
        for t, question in enumerate(phrasings["heldout"]):
            for with_system in (False, True):
                evaluation.append(_row(f"identity_eval-{category}-{t}-{'system' if with_system else 'plain'}",
                                       question, answer, category, candidates, system if with_system else None,
                                       "heldout"))
    splits = {"identity_sft": sft, "identity_eval": evaluation}
    if augment:
        splits["identity_augment"] = _augmented_rows(table, system, system_fraction, repeats, nonce_variants, seed,
                                                     form_repeats)
    return splits


def _augmented_rows(table: dict[str, tuple[str | None, str, list[str]]], system: str, system_fraction: float,
                    repeats: int, nonce_variants: int, seed: int, form_repeats: int) -> list[dict[str, Any]]:
    rng = random.Random(f"{seed}-identity-augment")
    rows: list[dict[str, Any]] = []

    def add(category: str, variants: list[tuple[str, str]], id_of) -> None:
        answer, reply, candidates = table[category]
        for r, (text, phrasing) in enumerate(variants):
            with_system = rng.random() < system_fraction
            rows.append(_row(id_of(phrasing, r), text, answer, category, candidates,
                             system if with_system else None, phrasing, reply))

    def copies_and_nonce(question: str, phrasing: str, copies: int) -> list[tuple[str, str]]:
        made_up = (with_nonce_word(question, rng) for _ in range(nonce_variants))
        return [(question, phrasing)] * copies + [(v, "nonce") for v in made_up if v]

    phrasings = [(c, q, "train") for c, p in IDENTITY_QUESTIONS.items() for q in p["train"]]
    phrasings += [("limits", q, "sft_only") for q in REAL_WORLD_SFT_QUESTIONS]
    for t, (category, question, kind) in enumerate(phrasings):
        add(category, copies_and_nonce(question, "sft_only", repeats if kind == "sft_only" else 0),
            lambda phrasing, r: f"identity_sft-{category}-{phrasing}-{t}-{r}")
    if not form_repeats:
        return rows
    # Appended after the rows above, which stay exactly as they were.
    forms = [(c, q, "form") for c, qs in IDENTITY_SFT_FORMS.items() for q in qs]
    for t, (category, question, _) in enumerate(forms):
        add(category, copies_and_nonce(question, "form", form_repeats),
            lambda _, r: f"identity_sft-{category}-form-{t}-{r}")
    for t, (category, question, _) in enumerate(phrasings + forms):
        add(category, [(with_greeting(question, rng), "greeting")], lambda *_: f"identity_sft-{category}-greeting-{t}")
    return rows


def with_greeting(question: str, rng: random.Random) -> str:
    """`question` after a greeting ("Hi! What is your name?"; "Please, who made you?" with the first letter lowered,
    unless the question starts with a name)."""
    greeting = rng.choice(GREETINGS)
    first, _, rest = question.partition(" ")
    if greeting.endswith(("! ", ". ")) or first in _NAMES:
        return greeting + question
    return f"{greeting}{first.lower()} {rest}".rstrip()


def _row(id_: str, question: str, answer: str | None, category: str, candidates: list[str], system: str | None,
         phrasing: str, reply: str | None = None) -> dict[str, Any]:
    row = {"id": id_, "question": question, "answer": answer,
           "tier": f"{category}/system" if system else category, "category": category,
           "candidates": candidates, "phrasing": phrasing}
    if system:
        row["system"] = system
    if reply is not None:
        row["reply"] = reply
    return row


def claims_other(response: str) -> list[str]:
    """Other assistants' or makers' names a response claims (empty when it names none)."""
    from groundup.core.grading import mentioned

    return mentioned(response, [*OTHER_ASSISTANTS, *OTHER_MAKERS])
